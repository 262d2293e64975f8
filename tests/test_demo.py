"""The demo a newcomer runs first: ``python -m pyro_kl demo``."""

import json
import math
import os
import subprocess
import sys

import pyro
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from pyro_kl.demo import (  # noqa: E402
    DigitsVAE,
    load_digits_tensor,
    marginal_nll,
    per_example_terms,
    run_demo,
    train,
)


def test_command_line_writes_its_files(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-m", "pyro_kl", "demo", "--steps", "6", "--beta", "0.5",
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("reconstructions.png", "rate_distortion.png", "summary.json", "worlds.gv"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["beta"] == 0.5 and summary["steps"] == 6
    numbers = [summary["distortion"], summary["rate"], summary["marginal_nll"]]
    numbers += [p[t] for p in summary["sweep"] for t in ("distortion", "rate")]
    assert all(math.isfinite(n) for n in numbers)
    assert [p["beta"] for p in summary["sweep"]] == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert "distortion D =" in result.stdout


def test_logged_terms_add_up_to_the_loss_per_example():
    pyro.set_rng_seed(0)
    images = load_digits_tensor()
    history = train(DigitsVAE(), images, beta=0.5, steps=5, progress=False)
    for record in history:
        assert record["rate"] >= 0  # analytic KL per example
        expected = record["distortion"] + 0.5 * record["rate"]
        assert record["loss"] == pytest.approx(expected, rel=1e-6)


def test_rate_plus_distortion_bounds_the_marginal_code_length():
    # D + R >= -log q(x) >= the importance-weighted estimate's expectation: a wrong
    # per-example scaling of the terms, or a sign error, breaks the inequality.
    pyro.set_rng_seed(0)
    images = load_digits_tensor()[:300]
    vae = DigitsVAE()
    train(vae, images, beta=1.0, steps=30, batch_size=100, progress=False)
    terms = per_example_terms(vae, images, num_particles=16)
    iwae = marginal_nll(vae, images, num_particles=64)
    assert 0 < iwae < terms["distortion"] + terms["rate"]


def test_bad_arguments_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="--steps"):
        run_demo(out=str(tmp_path), steps=0)
    with pytest.raises(ValueError, match="--beta"):
        run_demo(out=str(tmp_path), beta=-1.0)
    assert torch.is_tensor(load_digits_tensor())
