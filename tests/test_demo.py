"""The demo a newcomer runs first (``python -m pyro_kl demo``), its command line and
the binomial VAE recipe it is built on."""

import json
import math
import os
import re
import signal
import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_kl import RateDistortionELBO
from pyro_kl.cli import main
from pyro_kl.recipes import VAE

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from pyro_kl.cli import demo  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The demo's networks are small: more threads only contend (as the command line knows)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_binomial_vae():
    vae = VAE(dim=5, latent_dim=2, hidden_dim=7, likelihood="binomial", total_count=4)
    (x,) = vae.make_data(12, seed=0)
    return vae, x


# ---- the binomial VAE recipe -------------------------------------------------


def test_binomial_data_are_counts_and_bad_options_name_the_fix():
    vae, x = small_binomial_vae()
    assert x.shape == (12, 5)
    assert torch.equal(x, x.round()) and x.min() >= 0 and x.max() <= 4
    assert len(set(x.flatten().tolist())) > 2
    with pytest.raises(ValueError, match="binomial"):
        VAE(likelihood="poisson")
    with pytest.raises(ValueError, match="total_count"):
        VAE(likelihood="binomial", total_count=0)


def test_binomial_terms_are_the_closed_forms():
    vae, x = small_binomial_vae()
    elbo = RateDistortionELBO(analytic_kl=True)
    vae.guide(x)
    pyro.set_rng_seed(3)
    terms = elbo.estimate_terms(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    z = poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"]
    with torch.no_grad():
        loc, scale = vae.encoder(x / 4)
        logits = vae.decoder(z)
    log_choose = (math.lgamma(5) - torch.lgamma(x + 1) - torch.lgamma(5 - x)).sum()
    log_pmf = log_choose + (x * logits.sigmoid().log() + (4 - x) * (-logits).sigmoid().log()).sum()
    rate = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum()
    assert terms["distortion"] == pytest.approx(-log_pmf.item(), rel=1e-5)
    assert terms["rate"] == pytest.approx(rate.item(), rel=1e-5)


def test_binomial_unit_weights_give_pyro_loss():
    vae, x = small_binomial_vae()
    vae.guide(x)
    pyro.set_rng_seed(1)
    loss = RateDistortionELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(1)
    assert loss == pytest.approx(Trace_ELBO().loss(vae.model, vae.guide, x), rel=1e-6)


def test_reconstruction_is_the_decoders_mean_count():
    vae, x = small_binomial_vae()
    with torch.no_grad():
        loc, _ = vae.encoder(x / 4)
        expected = 4 * torch.sigmoid(vae.decoder(loc))
    assert torch.allclose(vae.reconstruct(x), expected)


# ---- the pieces of the demo --------------------------------------------------


def test_digits_split_is_fixed_and_disjoint():
    training, held_out = demo.load_digits_split()
    assert training.shape == (1500, 64) and held_out.shape == (297, 64)
    again, _ = demo.load_digits_split()
    assert torch.equal(training, again)
    rows = {tuple(row.tolist()) for row in training}
    assert sum(tuple(row.tolist()) in rows for row in held_out) < 5  # a few digits repeat


def test_training_records_per_digit_terms_that_add_up_and_keeps_the_store():
    pyro.param("users_own", torch.tensor(2.0))
    training, _ = demo.load_digits_split()
    history = demo.train(demo.digits_vae(), training, beta=0.5, steps=5, batch_size=32)
    assert len(history) == 5
    for record in history:
        assert record["rate"] >= 0  # analytic KL
        assert record["loss"] == pytest.approx(record["distortion"] + 0.5 * record["rate"],
                                               rel=1e-6)
    assert 100 < history[0]["distortion"] < 2000  # nats per digit, not per batch
    assert list(pyro.get_param_store().keys()) == ["users_own"]


def test_training_lowers_the_loss():
    training, _ = demo.load_digits_split()
    history = demo.train(demo.digits_vae(), training, beta=1.0, steps=60, batch_size=64)
    first = sum(r["loss"] for r in history[:10])
    last = sum(r["loss"] for r in history[-10:])
    assert last < 0.8 * first


def test_sweep_warm_starts_from_neighbours_and_keeps_the_start():
    training, _ = demo.load_digits_split()
    start = demo.digits_vae()
    before = {k: v.clone() for k, v in start.state_dict().items()}
    models = demo.sweep(start, training[:256], start_beta=1.0, betas=[0.5, 2.0, 4.0], steps=3,
                        batch_size=32)
    assert list(models) == [0.5, 1.0, 2.0, 4.0]
    assert models[1.0] is start
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in before.items())
    weights = {beta: m.decoder[0].weight for beta, m in models.items()}
    assert len({id(w) for w in weights.values()}) == 4
    # 4.0 started from 2.0, which started from 1.0: a few steps stay close to it
    assert (weights[4.0] - weights[2.0]).abs().max() < (weights[4.0] - weights[1.0]).abs().max()


def test_per_digit_terms_divide_the_sums_by_the_number_of_digits():
    vae, x = small_binomial_vae()
    pyro.set_rng_seed(0)
    terms = demo.per_digit_terms(vae, x, num_particles=1)
    elbo = RateDistortionELBO(analytic_kl=True, num_particles=1, vectorize_particles=True,
                              max_plate_nesting=1)
    pyro.set_rng_seed(0)
    sums = elbo.estimate_terms(vae.model, vae.guide, x)
    assert terms["distortion"] == pytest.approx(sums["distortion"] / 12, rel=1e-6)
    assert terms["rate"] == pytest.approx(sums["rate"] / 12, rel=1e-6)


def linear_gaussian(guide_scale=None):
    """z ~ N(0, 1), x ~ N(z, 1): the dream world's marginal of x is N(0, 2)."""

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):  # the exact posterior N(x / 2, 1 / 2), or a wrong one
        with pyro.plate("data", len(x)):
            scale = math.sqrt(0.5) if guide_scale is None else guide_scale
            pyro.sample("z", dist.Normal(x / 2 if guide_scale is None else 0.3 * x, scale))

    return model, guide


def test_marginal_code_length_is_exact_with_the_exact_posterior():
    model, guide = linear_gaussian()
    x = torch.tensor([-2.0, 0.0, 0.5, 3.0])
    exact = -dist.Normal(0.0, math.sqrt(2.0)).log_prob(x)
    lengths = demo.dream_marginal_code_length(model, guide, x, num_samples=3)
    assert lengths.shape == (4,)
    assert torch.allclose(lengths, exact, atol=1e-5)


def test_marginal_code_length_is_per_example_and_tightens_with_samples():
    model, guide = linear_gaussian(guide_scale=1.0)
    x = torch.tensor([-2.0, 0.0, 0.5, 3.0])
    exact = -dist.Normal(0.0, math.sqrt(2.0)).log_prob(x)
    one = torch.stack([demo.dream_marginal_code_length(model, guide, x, num_samples=1)
                       for _ in range(200)]).mean(0)
    many = demo.dream_marginal_code_length(model, guide, x, num_samples=20000)
    assert torch.allclose(many, exact, atol=0.03)  # one logsumexp per example
    assert (one > exact + 0.05).all()  # a single sample is the ELBO: looser


def test_monotone_means_rate_falls_and_distortion_rises():
    points = [{"rate": 9.0, "distortion": 60.0}, {"rate": 7.0, "distortion": 61.0},
              {"rate": 7.0, "distortion": 65.0}]
    assert demo.is_monotone(points)
    assert not demo.is_monotone(points[::-1])
    assert not demo.is_monotone([points[0], {"rate": 8.0, "distortion": 59.0}])


def test_run_without_sweep_writes_no_rate_distortion_plot(tmp_path):
    lines = []
    summary = demo.run_demo(str(tmp_path), steps=3, sweep_betas=[], progress=False,
                            picture_format="gv", echo=lines.append)
    assert sorted(os.listdir(tmp_path)) == ["reconstructions.png", "summary.json", "worlds.gv"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert "sweep" not in summary and "rate_distortion" not in summary["files"]
    held_out = summary["main"]["held_out"]
    assert held_out["d_plus_r"] == pytest.approx(held_out["distortion"] + held_out["rate"])
    assert held_out["dream_marginal_code_length"] < held_out["d_plus_r"]
    with pytest.raises(ValueError, match="--steps"):
        demo.run_demo(str(tmp_path), steps=0)
    with pytest.raises(ValueError, match="--beta"):
        demo.run_demo(str(tmp_path), beta=-1.0)


# ---- the command line --------------------------------------------------------


def help_text(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["demo", "gallery"])
def test_help_shows_every_default(capsys, command):
    text = help_text(capsys, command)
    options = re.findall(r"^  (--[a-z-]+)", text, re.M)
    assert "--out" in options
    blocks = re.split(r"\n  (?=--)", text.split("options:")[1])[1:]
    for block in blocks:
        name = block.split()[0]
        if name not in ("--help", "--version"):
            assert "(default:" in block, name


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert re.fullmatch(r"pyro_kl \d+\.\d+\.\d+\n", capsys.readouterr().out)


def fails_before_training(monkeypatch, capsys, argv):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the output folder")

    monkeypatch.setattr(demo, "train", no_training)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_an_existing_file_as_out_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    target = tmp_path / "results"
    target.write_text("mine")
    err = fails_before_training(monkeypatch, capsys, ["demo", "--out", str(target)])
    assert "existing file" in err
    assert target.read_text() == "mine"


def test_an_unwritable_out_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    err = fails_before_training(monkeypatch, capsys,
                                ["demo", "--out", str(tmp_path / "file" / "demo")])
    assert "not a folder" in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="permissions do not bind the superuser")
def test_a_read_only_parent_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    parent = tmp_path / "read_only"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        err = fails_before_training(monkeypatch, capsys, ["demo", "--out", str(parent / "d")])
    finally:
        parent.chmod(0o700)
    assert "not writable" in err


def test_a_folder_with_other_files_is_not_replaced(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    err = fails_before_training(monkeypatch, capsys, ["demo", "--out", str(tmp_path)])
    assert "notes.txt" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    raise AssertionError("SIGTERM did not interrupt the run")


@pytest.mark.parametrize("interrupted", [ctrl_c, killed], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_leaves_the_earlier_output_as_it_was(
    tmp_path, monkeypatch, capsys, interrupted
):
    out = tmp_path / "pyro_kl_demo"
    out.mkdir()
    (out / "summary.json").write_text('{"earlier": true}')
    handler = signal.getsignal(signal.SIGTERM)

    monkeypatch.setattr(demo, "train", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(out), "--no-progress"])
    assert exit_info.value.code == 130
    assert "left as it was" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["pyro_kl_demo"]  # no staging folder left behind
    assert os.listdir(out) == ["summary.json"]
    assert json.loads((out / "summary.json").read_text()) == {"earlier": True}
    assert signal.getsignal(signal.SIGTERM) is handler


def test_gallery_has_a_default_out_and_writes_dot_sources(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["gallery", "--format", "gv"])
    printed = capsys.readouterr().out.split()
    assert printed[0] == os.path.join("pyro_kl_gallery", "density_estimation.gv")
    assert sorted(os.listdir(tmp_path)) == ["pyro_kl_gallery"]
    assert len(os.listdir(tmp_path / "pyro_kl_gallery")) == len(printed)


def test_gallery_without_dot_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["gallery", "--out", str(tmp_path / "g"), "--format", "svg"])
    assert exit_info.value.code == 2
    assert "--format gv" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def numbers_in(value):
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers_in(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers_in(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return []


@pytest.mark.slow
def test_command_line_tiny_run_replaces_the_earlier_output(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "worlds.pdf").write_text("from an earlier run")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-m", "pyro_kl", "demo", "--steps", "20", "--beta", "0.5",
         "--sweep-betas", "0.25,0.5,2", "--sweep-steps", "5", "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d+/\d+ \[\d\d:\d\d<\d\d:\d\d, ", result.stderr)  # steps, ETA
    assert not (out / "worlds.pdf").exists()  # the whole folder was replaced
    assert os.listdir(tmp_path) == ["demo"]
    for name in ("reconstructions.png", "rate_distortion.png", "summary.json", "worlds.gv"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["beta"] == 0.5 and summary["steps"] == 20 and summary["seed"] == 3
    assert summary["torch_threads"] == 1  # the demo's own setting, whatever the environment
    assert summary["model"]["likelihood"] == "binomial" and summary["model"]["latent_dim"] == 8
    assert [p["beta"] for p in summary["sweep"]["points"]] == [0.25, 0.5, 2.0]
    assert set(summary["sweep"]["monotone"]) == {"training", "held_out"}
    assert all(math.isfinite(n) for n in numbers_in(summary))
    # every figure printed is in summary.json, at the precision printed
    values = numbers_in(summary)
    for token in re.findall(r"-?\d+\.\d+", result.stdout):
        places = len(token.split(".")[1])
        assert any(f"{v:.{places}f}" == token for v in values), token
    wall, cpu = re.search(r"Finished in (\d+) s wall \((\d+) s CPU", result.stdout).groups()
    assert f"{summary['seconds']['wall']:.0f}" == wall
    assert f"{summary['seconds']['cpu']:.0f}" == cpu
