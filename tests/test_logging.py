"""The user guide's Logging and Checkpoint pages run as written and do what they say.

The test extra installs TensorBoard and Lightning, so their examples run in CI.
"""

import pathlib
import re
import warnings

import pyro
import pytest
import torch

GUIDE = pathlib.Path(__file__).parents[1] / "docs" / "guide"
PAGES = (GUIDE / "logging.md", GUIDE / "checkpoints.md")


def readme_block(first_line: str) -> str:
    """The guide's ```python block whose first line is ``first_line``."""
    blocks = [block for page in PAGES
              for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]
    (block,) = [b for b in blocks if b.splitlines()[0].strip() == first_line]
    return block


def run(code: str, namespace: dict) -> dict:
    exec(compile(code, "<docs/guide>", "exec"), namespace)
    return namespace


@pytest.fixture
def plain_loop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return run(readme_block("# Log the terms from a plain PyTorch loop"), {})


def test_plain_loop_logs_terms_that_add_up_to_the_loss(plain_loop):
    log, elbo = plain_loop["log"], plain_loop["elbo"]
    assert len(log) == 100 and [row["step"] for row in log] == list(range(100))
    for row in log:
        assert set(row) == {"step", "loss", "distortion", "rate"}
        assert all(isinstance(row[k], float) for k in ("loss", "distortion", "rate"))
        assert row["loss"] == pytest.approx(row["distortion"] + 0.5 * row["rate"], rel=1e-5)
    assert elbo.state_dict() == {"step": 100}
    assert log[-1]["loss"] < log[0]["loss"]


def test_tensorboard_gets_one_chart_of_terms(plain_loop):
    import tensorboard  # noqa: F401  (the test extra installs it)
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    namespace = run(readme_block("# TensorBoard"), plain_loop)
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory("runs/vae")
    multiplexer.Reload()
    runs = multiplexer.Runs()
    # add_scalars writes each term as its own run under the tag "terms"
    series = {
        name: [event.value for event in multiplexer.Scalars(name, tag)]
        for name, content in runs.items()
        for tag in content["scalars"]
    }
    by_term = {name.rsplit("terms_", 1)[1]: values for name, values in series.items()
               if "terms_" in name}
    assert set(by_term) == {"distortion", "rate"}
    (loss,) = [values for name, values in series.items() if "terms_" not in name]
    assert len(loss) == len(by_term["rate"]) == 100
    for total, distortion, rate in zip(loss, by_term["distortion"], by_term["rate"]):
        assert total == pytest.approx(distortion + 0.5 * rate, rel=1e-4)
    assert namespace["elbo"].state_dict() == {"step": 200}


def test_lightning_logs_the_terms_of_each_step(plain_loop):
    import lightning  # noqa: F401  (the test extra installs it)
    with warnings.catch_warnings():
        # Lightning's advice on data-loader workers and its own deprecations are not ours
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        namespace = run(readme_block("# Lightning"), plain_loop)
    metrics = namespace["trainer"].callback_metrics
    assert {"terms/distortion", "terms/rate", "loss"} <= set(metrics)
    expected = metrics["terms/distortion"] + 0.5 * metrics["terms/rate"]
    assert metrics["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert namespace["trainer"].global_step == 5 * 2  # 5 epochs of 2 batches


# ---- checkpoint and resume ---------------------------------------------------


def continue_training(namespace, steps=20):
    return [namespace["svi"].step(namespace["x"]) for _ in range(steps)]


def resume_in_a_new_process(resume_code):
    """The uninterrupted run's next losses, and those of a run resumed by ``resume_code``."""
    first = run(readme_block("# Set up (the same code in the run that resumes)"), {})
    run(readme_block("# Train, then save a checkpoint"), first)
    uninterrupted = continue_training(first)
    # a new process: nothing in the param store, fresh networks, optimizer and ELBO
    pyro.clear_param_store()
    torch.manual_seed(123)
    second = run(readme_block("# Set up (the same code in the run that resumes)"), {})
    run(resume_code, second)
    return first, uninterrupted, second, continue_training(second)


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, uninterrupted, second, resumed = resume_in_a_new_process(
        readme_block("# Resume, after the same set-up, before the first step"))
    assert resumed == uninterrupted  # bit for bit: parameters, Adam, schedule and RNG
    assert second["elbo"].state_dict() == first["elbo"].state_dict() == {"step": 70}
    assert second["elbo"].last_weights == first["elbo"].last_weights
    assert 0.5 < first["elbo"].last_weights["rate"] < 1.0  # the warm-up is under way


def test_without_update_module_params_the_networks_would_not_resume(tmp_path, monkeypatch):
    # The guide's warning is true: restoring the param store alone leaves the
    # networks with their fresh weights (and trains copies nobody uses).
    monkeypatch.chdir(tmp_path)
    resume = readme_block("# Resume, after the same set-up, before the first step")
    without = "\n".join(line for line in resume.splitlines() if "update_module_params" not in line)
    assert len(without.splitlines()) == len(resume.splitlines()) - 2
    _, uninterrupted, _, resumed = resume_in_a_new_process(without)
    assert resumed[0] != uninterrupted[0]


def test_a_plain_pytorch_loop_resumes_from_state_dicts(tmp_path, monkeypatch):
    # The guide's other case: elbo(model, guide) with torch.optim saves the modules'
    # and the optimizer's state_dict() instead of the parameter store.
    monkeypatch.chdir(tmp_path)
    plain = readme_block("# Log the terms from a plain PyTorch loop")
    first = run(plain.replace("range(100)", "range(30)"), {})
    torch.save({"modules": first["vae"].state_dict(),
                "optimizer": first["optimizer"].state_dict(),
                "elbo": first["elbo"].state_dict(), "rng": pyro.util.get_rng_state()},
               "checkpoint.pt")

    def steps(namespace):
        losses = []
        for _ in range(10):
            namespace["optimizer"].zero_grad()
            loss = namespace["loss_fn"](namespace["x"])
            loss.backward()
            namespace["optimizer"].step()
            losses.append(loss.item())
        return losses

    uninterrupted = steps(first)
    pyro.clear_param_store()
    torch.manual_seed(123)
    second = run(plain.replace("range(100)", "range(0)"), {})
    checkpoint = torch.load("checkpoint.pt", weights_only=False)
    second["vae"].load_state_dict(checkpoint["modules"])
    second["optimizer"].load_state_dict(checkpoint["optimizer"])
    second["elbo"].load_state_dict(checkpoint["elbo"])
    pyro.util.set_rng_state(checkpoint["rng"])
    assert steps(second) == uninterrupted
