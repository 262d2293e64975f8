"""DistributedDataParallel over an ELBOModule: two processes, each on half the batch,
give the gradients and (all-reduced) terms of one process on the whole batch."""

import os

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributed as torch_dist
from pyro.nn import PyroModule, PyroParam

from pyro_kl import RateDistortionELBO
from pyro_kl.distributed import all_reduce_terms

pytestmark = pytest.mark.skipif(
    not torch_dist.is_available(), reason="torch.distributed is not available in this torch build"
)

N, X_DIM, Z_DIM, W_DIM = 8, 5, 3, 2
WORLD_SIZE = 2


class FixedNoiseNormal(dist.Normal):
    """A Normal whose reparameterized draw uses given standard-normal noise, so
    that a split batch draws exactly the numbers the whole batch draws."""

    def __init__(self, loc, scale, noise):
        super().__init__(loc, scale)
        self.noise = noise

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return FixedNoiseNormal(
            self.loc.expand(batch_shape),
            self.scale.expand(batch_shape),
            self.noise.expand(batch_shape),
        )

    def rsample(self, sample_shape=torch.Size()):
        assert sample_shape == torch.Size()
        return self.loc + self.noise * self.scale


class Model(PyroModule):
    """Dream world Q: a global offset ``w`` (complexity), a local code ``z``
    (rate) and a Normal likelihood of ``x`` (distortion)."""

    def __init__(self):
        super().__init__()
        self.decoder = PyroModule[torch.nn.Linear](Z_DIM + W_DIM, X_DIM)

    def forward(self, x, noise_z, noise_w, idx):
        w = pyro.sample("w", dist.Normal(torch.zeros(W_DIM), 1.0).to_event(1))
        with pyro.plate("data", size=N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(idx), Z_DIM), 1.0).to_event(1))
            loc = self.decoder(torch.cat([z, w.expand(len(idx), W_DIM)], -1))
            pyro.sample("x", dist.Normal(loc, 0.5).to_event(1), obs=x)


class Guide(PyroModule):
    """Real world P's latent part: an encoder for ``z``, mean-field ``w``."""

    def __init__(self):
        super().__init__()
        self.encoder = PyroModule[torch.nn.Linear](X_DIM, 2 * Z_DIM)
        self.w_loc = PyroParam(torch.zeros(W_DIM))
        self.w_scale = PyroParam(torch.full((W_DIM,), 0.8), constraint=dist.constraints.positive)

    def forward(self, x, noise_z, noise_w, idx):
        pyro.sample("w", FixedNoiseNormal(self.w_loc, self.w_scale, noise_w).to_event(1))
        with pyro.plate("data", size=N, subsample=idx):
            loc, log_scale = self.encoder(x).split(Z_DIM, -1)
            pyro.sample("z", FixedNoiseNormal(loc, log_scale.exp(), noise_z).to_event(1))


def _data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(N, X_DIM, generator=generator)
    noise_z = torch.randn(N, Z_DIM, generator=generator)
    noise_w = torch.randn(W_DIM, generator=generator)
    return x, noise_z, noise_w


def _modules(analytic_kl):
    torch.manual_seed(0)
    elbo = RateDistortionELBO(beta=0.5, analytic_kl=analytic_kl)
    return elbo, elbo(Model(), Guide())


def _ddp_step(rank, analytic_kl):
    from torch.nn.parallel import DistributedDataParallel

    with pyro.settings.context(module_local_params=True):
        elbo, module = _modules(analytic_kl)
        ddp = DistributedDataParallel(module)
        x, noise_z, noise_w = _data()
        idx = torch.arange(rank * N // WORLD_SIZE, (rank + 1) * N // WORLD_SIZE)
        ddp(x[idx], noise_z[idx], noise_w, idx).backward()
        return {
            "grads": {name: p.grad.clone() for name, p in module.named_parameters()},
            "mean": all_reduce_terms(elbo.last_terms),
            "sum": all_reduce_terms(elbo.last_terms, op="sum"),
            "local": dict(elbo.last_terms),
        }


def _worker(rank, store_path, out_dir):
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        "gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        result = {analytic_kl: _ddp_step(rank, analytic_kl) for analytic_kl in (False, True)}
        pyro.enable_validation(False)  # the check runs without Pyro's validation too
        try:  # every process must name the same terms, even when their counts differ
            all_reduce_terms({f"only_on_rank_{rank}": 1.0, **({"extra": 2.0} if rank else {})})
            result["mismatch"] = "no error"
        except ValueError as e:
            result["mismatch"] = str(e)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of two processes computed on its half of the batch."""
    out_dir = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(
        _worker, args=(str(out_dir / "store"), str(out_dir)), nprocs=WORLD_SIZE, join=True
    )
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


def _single_process(analytic_kl):
    with pyro.settings.context(module_local_params=True):
        elbo, module = _modules(analytic_kl)
        x, noise_z, noise_w = _data()
        module(x, noise_z, noise_w, torch.arange(N)).backward()
        grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return grads, dict(elbo.last_terms)


@pytest.mark.slow
@pytest.mark.parametrize("analytic_kl", [False, True], ids=["monte_carlo", "analytic"])
def test_ddp_halves_match_whole_batch(ranks, analytic_kl):
    grads, terms = _single_process(analytic_kl)
    halves = [rank[analytic_kl] for rank in ranks]

    assert set(terms) == {"distortion", "rate", "complexity"}
    for half in halves:
        assert set(half["grads"]) == set(grads)
        for name, grad in grads.items():
            assert torch.allclose(half["grads"][name], grad, rtol=1e-5, atol=1e-6), name
        assert half["mean"].keys() == terms.keys()
        for term, value in terms.items():
            assert half["mean"][term] == pytest.approx(value, rel=1e-6)
    # each half is scaled up to the whole data set, so the halves' rates differ ...
    assert halves[0]["local"]["rate"] != pytest.approx(halves[1]["local"]["rate"], rel=1e-3)
    # ... the global term does not, and "sum" adds the processes' estimates
    assert halves[0]["local"]["complexity"] == pytest.approx(terms["complexity"], rel=1e-6)
    for term, value in terms.items():
        assert halves[0]["sum"][term] == pytest.approx(WORLD_SIZE * value, rel=1e-6)


@pytest.mark.slow
def test_all_reduce_terms_rejects_different_names(ranks):
    for rank in ranks:
        assert "name different terms" in rank["mismatch"]


def test_all_reduce_terms_single_process_returns_floats():
    terms = {"rate": torch.tensor(2.5), "distortion": 7.0}
    assert not torch_dist.is_initialized()
    assert all_reduce_terms(terms) == {"distortion": 7.0, "rate": 2.5}
    assert all_reduce_terms({}) == {}


def test_all_reduce_terms_rejects_unknown_op():
    with pytest.raises(ValueError, match="op='mean' or op='sum'"):
        all_reduce_terms({"rate": 1.0}, op="average")


# ---- ranks out of step: a collective that one process joins alone times out ------------

HANG_TIMEOUT = 1.5  # seconds; small, so that the test is quick


def _lonely_step_worker(rank, store_path, out_dir):
    """Rank 1 alone runs a training step with a GECO weight; rank 0 never joins.
    Both write what they saw; rank 0 stays up until rank 1 has finished, so that
    rank 1's all-reduce can only end by its own timeout (not a closed connection)."""
    import time

    from pyro.infer import SVI
    from pyro.optim import Adam

    from pyro_kl import GECO, WeightedELBO
    from pyro_kl.distributed import set_collective_timeout

    torch.set_num_threads(1)
    torch_dist.init_process_group(
        "gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD_SIZE
    )
    done = os.path.join(out_dir, "rank1.pt")
    if rank == 0:
        deadline = time.monotonic() + 60
        while not os.path.exists(done) and time.monotonic() < deadline:
            time.sleep(0.05)
        os._exit(0)  # the group holds rank 1's unfinished all-reduce: do not tear it down
    set_collective_timeout(HANG_TIMEOUT)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        a = pyro.param("a", torch.tensor(0.1))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(a * x, 1.0))

    svi = SVI(model, guide, Adam({"lr": 0.01}), WeightedELBO(weights={"distortion": GECO(1.0)}))
    start = time.monotonic()
    try:
        svi.step(torch.randn(4))
        svi.step(torch.randn(4))  # the first step closes when the second starts
        result = {"error": None}
    except RuntimeError as e:
        result = {"error": str(e), "type": type(e).__name__}
    result["seconds"] = time.monotonic() - start
    torch.save(result, done + ".tmp")
    os.replace(done + ".tmp", done)
    os._exit(0)


@pytest.mark.slow
def test_a_step_one_rank_runs_alone_times_out_with_a_clear_error(tmp_path):
    torch.multiprocessing.spawn(
        _lonely_step_worker, args=(str(tmp_path / "store"), str(tmp_path)),
        nprocs=WORLD_SIZE, join=True,
    )
    result = torch.load(tmp_path / "rank1.pt")
    assert result["error"] is not None, "the lonely step returned instead of timing out"
    assert "out of step" in result["error"]
    assert "set_collective_timeout" in result["error"]
    assert "drop_last=True" in result["error"]
    assert HANG_TIMEOUT <= result["seconds"] < HANG_TIMEOUT + 10


def test_collective_timeout_setting_is_checked():
    from datetime import timedelta

    from pyro_kl.distributed import get_collective_timeout, set_collective_timeout

    before = get_collective_timeout()
    try:
        set_collective_timeout(timedelta(minutes=2))
        assert get_collective_timeout() == 120.0
        for bad in (0, -1, float("nan"), float("inf"), "60", None, True):
            with pytest.raises(ValueError, match="finite number of seconds > 0"):
                set_collective_timeout(bad)
        assert get_collective_timeout() == 120.0
    finally:
        set_collective_timeout(before)
    with pytest.raises(ValueError, match="finite number of seconds > 0"):
        all_reduce_terms({"rate": 1.0}, timeout=0)


@pytest.mark.parametrize("value, shape", [
    (torch.ones(3), "shape (3,)"), (None, "None"), ("1.0", "'1.0'"), ([1.0, 2.0], "[1.0, 2.0]"),
])
def test_all_reduce_terms_refuses_values_that_are_not_one_number(value, shape):
    with pytest.raises(ValueError, match="must be one number") as info:
        all_reduce_terms({"rate": value, "distortion": 1.0})
    assert "'rate'" in str(info.value) and shape in str(info.value)


def test_all_reduce_terms_takes_numpy_and_one_element_tensors():
    import numpy as np

    assert all_reduce_terms({"rate": np.float32(0.5), "distortion": torch.tensor([[2.0]])}) == {
        "distortion": 2.0, "rate": 0.5,
    }
