"""pyro_kl.diagnostics against closed forms of linear-Gaussian models.

Dream world (model): z ~ N(0, I_2), x | z ~ N(W z + b, sx^2 I_3). Its marginal
is x ~ N(b, W W^T + sx^2 I) and its posterior z | x ~ N(m(x), S) with
S = (I + W^T W / sx^2)^-1 and m(x) = S W^T (x - b) / sx^2: with that posterior
as the guide every importance weight equals model(x), for any K.
"""

import functools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO
from torch.distributions import kl_divergence

from pyro_kl import WeightedELBO
from pyro_kl.diagnostics import (
    active_units,
    bits_per_dimension,
    code_length,
    elbo_surgery,
    evaluate,
    iwae_bound,
    rate_per_dimension,
)

W = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.6, -1.2]], dtype=torch.float64)
B = torch.tensor([0.2, -0.1, 0.4], dtype=torch.float64)
SX = 0.6


@pytest.fixture(autouse=True)
def double_precision():
    """Closed forms are compared in double precision; other modules keep their default."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def data(num_data, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(num_data, 2, generator=generator)
    return z @ W.T + B + SX * torch.randn(num_data, 3, generator=generator)


def log_marginal(x):
    covariance = W @ W.T + SX**2 * torch.eye(3)
    return dist.MultivariateNormal(B, covariance).log_prob(x)


def posterior(x):
    precision = torch.eye(2) + W.T @ W / SX**2
    covariance = torch.linalg.inv(precision)
    loc = (x - B) @ W / SX**2 @ covariance
    return loc, covariance


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T + B, SX).to_event(1), obs=x)


def exact_guide(x):
    loc, covariance = posterior(x)
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.MultivariateNormal(loc, covariance))


def mean_field_guide(x, shift=0.3, inflate=1.0):
    """A diagonal Gaussian off the posterior: its mean shifted, its scale inflated."""
    loc, covariance = posterior(x)
    scale = inflate * covariance.diagonal().sqrt()
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(loc + shift, scale).to_event(1))


def analytic_elbo(x, shift=0.3, inflate=1.0):
    """E_guide[log model(x|z)] - KL(guide || prior), per datapoint."""
    loc, covariance = posterior(x)
    loc, var = loc + shift, (inflate**2) * covariance.diagonal()
    residual = x - loc @ W.T - B
    expected_sq = (residual**2).sum(-1) + (W**2 @ var).sum()
    log_lik = -1.5 * math.log(2 * math.pi * SX**2) - expected_sq / (2 * SX**2)
    kl = 0.5 * (var.sum() + (loc**2).sum(-1) - 2 - var.log().sum())
    return log_lik - kl


@pytest.mark.parametrize("num_samples, chunk_size", [(1, None), (7, 3), (100, None)])
def test_exact_posterior_gives_the_exact_log_marginal(num_samples, chunk_size):
    x = data(20)
    bound = iwae_bound(model, exact_guide, x, num_samples=num_samples, chunk_size=chunk_size)
    assert bound.shape == (20,)
    assert torch.allclose(bound, log_marginal(x), atol=1e-10)


def test_one_sample_is_the_elbo_on_average():
    x = data(1).expand(20000, 3)
    bound = iwae_bound(model, mean_field_guide, x, num_samples=1)
    expected = analytic_elbo(x[:1])
    error = (bound.mean() - expected) / (bound.std() / math.sqrt(len(bound)))
    assert abs(float(error)) < 4.0
    assert bound.std() > 0.1  # a real Monte Carlo estimate, not the closed form


def test_bound_rises_towards_the_log_marginal():
    x = data(200, seed=1)
    guide = dict(shift=0.4, inflate=1.5)
    bounds = [
        iwae_bound(model, functools.partial(mean_field_guide, **guide), x, num_samples=k).mean()
        for k in (1, 10, 2000)
    ]
    exact = log_marginal(x).mean()
    assert bounds[0] < bounds[1] < bounds[2] <= exact + 1e-3
    assert exact - bounds[0] > 0.1
    assert exact - bounds[2] < 0.01


# Two local sites and nested plates: u_n ~ N(0, 1), z_nj | u_n ~ N(u_n, 1) for j < 3,
# x_nj | z_nj ~ N(z_nj, sx^2). Exact posterior: u | x ~ N(mu_u, v_u) with
# v_u = 1 / (1 + 3 / (1 + sx^2)), mu_u = v_u * sum_j x_j / (1 + sx^2), and
# z_j | u, x_j ~ N((u + x_j / sx^2) / (1 + 1 / sx^2), 1 / (1 + 1 / sx^2)).
def nested_model(x):
    with pyro.plate("data", x.shape[-1], dim=-1):
        u = pyro.sample("u", dist.Normal(0.0, 1.0))
        with pyro.plate("repeats", 3, dim=-2):
            z = pyro.sample("z", dist.Normal(u, 1.0))
            pyro.sample("x", dist.Normal(z, SX), obs=x)


def nested_guide(x, exact=True):
    v_u = 1.0 / (1.0 + 3.0 / (1.0 + SX**2))
    mu_u = v_u * x.sum(0) / (1.0 + SX**2)
    precision = 1.0 + 1.0 / SX**2
    with pyro.plate("data", x.shape[-1], dim=-1):
        u = pyro.sample("u", dist.Normal(mu_u if exact else 0.8 * mu_u, v_u**0.5))
        with pyro.plate("repeats", 3, dim=-2):
            pyro.sample("z", dist.Normal((u + x / SX**2) / precision, precision**-0.5))


def nested_log_marginal(x):
    covariance = (1.0 + SX**2) * torch.eye(3) + torch.ones(3, 3)
    return dist.MultivariateNormal(torch.zeros(3), covariance).log_prob(x.T)


def test_several_sites_and_nested_plates():
    x = torch.randn(3, 15, generator=torch.Generator().manual_seed(3)) * 1.5
    bound = iwae_bound(nested_model, nested_guide, x, num_samples=50, chunk_size=16)
    assert bound.shape == (15,)
    assert torch.allclose(bound, nested_log_marginal(x), atol=1e-10)


@pytest.mark.parametrize(
    "triple",
    [
        (model, mean_field_guide, lambda: (data(30),)),
        (nested_model, lambda x: nested_guide(x, exact=False), lambda: (torch.randn(3, 15),)),
    ],
    ids=["vae", "nested"],
)
def test_agrees_with_pyro_renyi_elbo_at_alpha_zero(triple):
    # Where every site lies in the data plate, RenyiELBO(alpha=0) with vectorised
    # particles is minus the sum over datapoints of L_K, with the same random draws.
    model_fn, guide_fn, make_args = triple
    args = make_args()
    pyro.set_rng_seed(5)
    bound = iwae_bound(model_fn, guide_fn, *args, num_samples=16)
    pyro.set_rng_seed(5)
    renyi = RenyiELBO(alpha=0.0, num_particles=16, vectorize_particles=True, max_plate_nesting=2)
    loss = renyi.loss(model_fn, guide_fn, *args)
    assert -float(bound.sum()) == pytest.approx(loss, rel=1e-9)


def test_deterministic_sites_outside_the_data_plate_do_not_make_the_bound_global():
    x = data(8)

    def model_with_deterministic(x):
        pyro.deterministic("scale_used", torch.tensor(SX))
        model(x)

    bound = iwae_bound(model_with_deterministic, exact_guide, x, num_samples=4)
    assert bound.shape == (8,)
    assert torch.allclose(bound, log_marginal(x), atol=1e-10)


def global_model(x):
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(theta, 1.0), obs=x)


def global_guide(x):
    precision = 1.0 + len(x)
    pyro.sample("theta", dist.Normal(x.sum() / precision, precision**-0.5))


def test_global_latents_give_the_bound_on_the_whole_batch():
    x = torch.randn(6)
    bound = iwae_bound(global_model, global_guide, x, num_samples=5)
    assert bound.shape == ()
    exact = dist.MultivariateNormal(torch.zeros(6), torch.eye(6) + torch.ones(6, 6)).log_prob(x)
    assert float(bound) == pytest.approx(float(exact), abs=1e-10)


# ELBO surgery on a 1-d encoder: quadrature on the batch's exact aggregate.
def scalar_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, SX), obs=x)


def scalar_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.7 * x + 0.1, 0.4 + 0.1 * x.abs()))


def test_surgery_matches_quadrature():
    x = torch.randn(40, generator=torch.Generator().manual_seed(4)) * 1.2
    parts = elbo_surgery(scalar_model, scalar_guide, x, num_samples=400)
    loc, scale = 0.7 * x + 0.1, 0.4 + 0.1 * x.abs()
    grid = torch.linspace(-12, 12, 48001)
    step = float(grid[1] - grid[0])
    aggregate = dist.Normal(loc, scale).log_prob(grid[:, None]).exp().mean(1)
    aggregate_entropy = -(aggregate * aggregate.clamp_min(1e-300).log()).sum() * step
    conditional_entropy = dist.Normal(loc, scale).entropy().mean()
    information = float(aggregate_entropy - conditional_entropy)
    marginal_kl = float(
        (aggregate * (aggregate.clamp_min(1e-300).log() - dist.Normal(0.0, 1.0).log_prob(grid)))
        .sum() * step
    )
    rate = float(kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).mean())
    assert information == pytest.approx(rate - marginal_kl, abs=1e-6)  # quadrature is exact
    assert parts["rate"] == pytest.approx(rate, abs=0.03)
    assert parts["mutual_information"] == pytest.approx(information, abs=0.03)
    assert parts["marginal_kl"] == pytest.approx(marginal_kl, abs=0.03)
    total = parts["mutual_information"] + parts["marginal_kl"]
    assert total == pytest.approx(parts["rate"], rel=1e-9)
    assert 0.0 < parts["mutual_information"] < math.log(len(x))


def test_surgery_with_a_hierarchical_guide_and_nested_plates():
    # z depends on u in the guide: the aggregate needs the whole guide re-run.
    x = torch.randn(3, 12, generator=torch.Generator().manual_seed(6))
    parts = elbo_surgery(nested_model, nested_guide, x, num_samples=30)
    total = parts["mutual_information"] + parts["marginal_kl"]
    assert total == pytest.approx(parts["rate"], rel=1e-9)
    assert 0.0 < parts["mutual_information"] < math.log(12)


def partly_active_guide(x):
    with pyro.plate("data", len(x)):
        loc = torch.stack([x[:, 0], 0.2 * x[:, 1], torch.full_like(x[:, 0], 0.5)], -1)
        pyro.sample("z", dist.Normal(loc, torch.tensor([0.3, 0.5, 0.9])).to_event(1))


def three_code_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z[..., :2], 1.0).to_event(1), obs=x)


def test_active_units_count_the_dimensions_the_data_move():
    x = torch.randn(500, 2)
    assert active_units(three_code_model, partly_active_guide, x) == {"z": 2}
    # the second dimension's mean varies by 0.2^2 = 0.04
    assert active_units(three_code_model, partly_active_guide, x, threshold=0.1) == {"z": 1}


def test_rate_per_dimension_matches_its_closed_form():
    x = torch.randn(300, 2)
    rates = rate_per_dimension(three_code_model, partly_active_guide, x)["z"]
    loc = torch.stack([x[:, 0], 0.2 * x[:, 1], torch.full_like(x[:, 0], 0.5)], -1)
    scale = torch.tensor([0.3, 0.5, 0.9])
    expected = kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).mean(0)
    assert rates.shape == (3,)
    assert torch.allclose(rates, expected, atol=1e-10)


def test_rate_per_dimension_by_monte_carlo_and_in_inner_plates():
    x = torch.randn(3, 200, generator=torch.Generator().manual_seed(7))
    rates = rate_per_dimension(nested_model, nested_guide, x, num_samples=200)
    assert rates["u"].shape == () and rates["z"].shape == (3,)
    # u's guide does not depend on z: its KL is analytic per datapoint
    v_u = 1.0 / (1.0 + 3.0 / (1.0 + SX**2))
    mu_u = v_u * x.sum(0) / (1.0 + SX**2)
    expected_u = kl_divergence(dist.Normal(mu_u, v_u**0.5), dist.Normal(0.0, 1.0)).mean()
    assert float(rates["u"]) == pytest.approx(float(expected_u), abs=1e-10)
    # z's KL against model(z | u) averaged over u: the three repeats are exchangeable
    precision = 1.0 + 1.0 / SX**2
    mean_u = mu_u.mean()
    assert torch.isfinite(rates["z"]).all() and (rates["z"] > 0).all()
    # E_u KL(N((u + x/sx^2)/prec, 1/prec) || N(u, 1)), closed form in u's mean and variance
    shift = (x / SX**2 - (precision - 1.0) * mu_u) / precision
    expected_z = 0.5 * (1 / precision + shift**2 + ((precision - 1) / precision) ** 2 * v_u
                        - 1 + math.log(precision))
    assert torch.allclose(rates["z"], expected_z.mean(1), atol=0.02)
    assert mean_u.abs() < 1.0


def test_rate_is_the_sum_of_its_dimensions_and_matches_surgery():
    x = torch.randn(200, 2)
    rates = rate_per_dimension(three_code_model, partly_active_guide, x)["z"]
    parts = elbo_surgery(three_code_model, partly_active_guide, x, num_samples=100)
    assert parts["rate"] == pytest.approx(float(rates.sum()), abs=0.05)


def test_code_length_is_the_same_in_any_units():
    x = data(50)

    def scaled(c):
        def scaled_model(x):
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(c * (z @ W.T + B), c * SX).to_event(1), obs=x)

        def scaled_guide(x):
            exact_guide(x / c)

        return scaled_model, scaled_guide

    lengths = []
    for c in (1.0, 1000.0):  # metres and millimetres
        scaled_model, scaled_guide = scaled(c)
        raw = iwae_bound(scaled_model, scaled_guide, c * x, num_samples=3)
        assert torch.allclose(raw, log_marginal(x) - 3 * math.log(c), atol=1e-8)
        lengths.append(code_length(scaled_model, scaled_guide, c * x, num_samples=3,
                                   bin_widths={"x": c / 256}))
    assert torch.allclose(lengths[0], lengths[1], atol=1e-8)
    assert torch.allclose(lengths[0], -log_marginal(x) + 3 * math.log(256), atol=1e-8)
    bits = bits_per_dimension(model, exact_guide, x, num_samples=3, bin_widths={"x": 1 / 256})
    assert torch.allclose(bits, lengths[0] / (3 * math.log(2)), atol=1e-10)


def test_continuous_data_need_a_bin_width_and_discrete_data_do_not():
    x = data(5)
    with pytest.raises(ValueError, match="bin_widths=\\{'x'"):
        code_length(model, exact_guide, x, num_samples=2)
    with pytest.raises(ValueError, match="not observed data"):
        code_length(model, exact_guide, x, num_samples=2, bin_widths={"z": 0.1})

    def coin_model(y):
        with pyro.plate("data", len(y)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Bernoulli(logits=z), obs=y)

    def coin_guide(y):
        with pyro.plate("data", len(y)):
            pyro.sample("z", dist.Normal(y - 0.5, 1.0))

    y = torch.tensor([0.0, 1.0, 1.0])
    pyro.set_rng_seed(1)
    nats = code_length(coin_model, coin_guide, y, num_samples=50)
    pyro.set_rng_seed(1)
    assert torch.equal(nats, -iwae_bound(coin_model, coin_guide, y, num_samples=50))


def test_held_out_evaluation_averages_over_batches():
    x = data(30)
    elbo = WeightedELBO(analytic_kl=True)
    whole = evaluate(model, mean_field_guide, [(x,)], elbo=elbo, num_samples=1)
    batched = evaluate(model, mean_field_guide, [x[:10], x[10:25], (x[25:],)], elbo=elbo)
    assert whole["num_data"] == batched["num_data"] == 30
    assert set(whole) >= {"distortion", "rate", "iwae_bound"}
    # the analytic rate is exact: batching must not change it
    loc, covariance = posterior(x)
    var = covariance.diagonal()
    rate = 0.5 * (var.sum() + ((loc + 0.3) ** 2).sum(-1) - 2 - var.log().sum())
    assert whole["rate"] == pytest.approx(float(rate.mean()), rel=1e-10)
    assert batched["rate"] == pytest.approx(float(rate.mean()), rel=1e-10)
    exact = evaluate(model, exact_guide, [x[:7], x[7:]], num_samples=4,
                     bin_widths={"x": 1 / 256})
    assert exact["iwae_bound"] == pytest.approx(float(log_marginal(x).mean()), abs=1e-10)
    assert exact["code_length"] == pytest.approx(
        float(-log_marginal(x).mean()) + 3 * math.log(256), abs=1e-8
    )
    assert exact["distortion_code_length"] == pytest.approx(
        exact["distortion"] + 3 * math.log(256), abs=1e-10
    )


def test_evaluation_matches_estimate_terms_under_the_same_seed():
    x = data(25)
    elbo = WeightedELBO()
    pyro.set_rng_seed(3)
    result = evaluate(model, mean_field_guide, [(x,)], elbo=elbo)
    pyro.set_rng_seed(3)
    terms = elbo.estimate_terms(model, mean_field_guide, x)
    for term, value in terms.items():
        assert result[term] == pytest.approx(value / 25, rel=1e-12)


def test_clear_errors():
    x = data(5)
    with pytest.raises(ValueError, match="num_samples"):
        iwae_bound(model, exact_guide, x, num_samples=0)

    def no_data(x):
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="observes no data"):
        iwae_bound(no_data, no_data, x, num_samples=2)

    def enumerated_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})

    def enumerated_model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0).to_event(1), obs=x)

    with pytest.raises(NotImplementedError, match="enumeration"):
        iwae_bound(enumerated_model, enumerated_guide, x, num_samples=2)
    with pytest.raises(ValueError, match="data_plate='nope'"):
        iwae_bound(model, exact_guide, x, num_samples=2, data_plate="nope")


def test_validation_off_still_gives_clear_errors():
    pyro.enable_validation(False)
    try:
        with pytest.raises(ValueError, match="bin_widths"):
            code_length(model, exact_guide, data(4), num_samples=2)
    finally:
        pyro.enable_validation(True)


def test_records_no_gradients_and_draws_like_pyro():
    x = data(10)
    weight = torch.tensor(1.0, requires_grad=True)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(weight * posterior(x)[0], 1.0).to_event(1))

    pyro.set_rng_seed(9)
    bound = iwae_bound(model, guide, x, num_samples=3)
    assert not bound.requires_grad
    # the probe run leaves the random state alone: the same draws as Pyro's vectorised ELBO
    pyro.set_rng_seed(9)
    renyi = RenyiELBO(alpha=0.0, num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    assert -float(bound.sum()) == pytest.approx(renyi.loss(model, guide, x), rel=1e-9)


def test_guide_diagnostics_example_runs_and_is_exact():
    import pathlib
    import re

    readme = pathlib.Path(__file__).parents[1] / "docs" / "guide" / "diagnostics.md"
    code = re.search(r"```python\n(.*?)```", readme.read_text(), re.S).group(1)
    namespace = {}
    torch.set_default_dtype(torch.float32)
    try:
        exec(compile(code.replace("print(", "(lambda *a: a)("), str(readme), "exec"), namespace)
    finally:
        torch.set_default_dtype(torch.float64)
    x, bound, terms = namespace["x"], namespace["bound"], namespace["terms"]
    assert torch.allclose(bound, dist.Normal(0.0, 2**0.5).log_prob(x), atol=1e-5)
    assert terms["code_length"] == pytest.approx(-float(bound.mean()) - math.log(0.01), rel=1e-5)


def test_subsampled_plates_and_masks_give_unscaled_per_datapoint_bounds():
    x = data(12)
    index = torch.tensor([1, 4, 7, 10])
    keep = torch.tensor([True, False, True, True])

    def subsampled_model(x, index):
        with pyro.plate("data", len(x), subsample=index), pyro.poutine.mask(mask=keep):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + B, SX).to_event(1), obs=x[index])

    def subsampled_guide(x, index):
        loc, covariance = posterior(x[index])
        with pyro.plate("data", len(x), subsample=index), pyro.poutine.mask(mask=keep):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance))

    bound = iwae_bound(subsampled_model, subsampled_guide, x, index, num_samples=5)
    # the plate's scale 12 / 4 is not applied; a masked datapoint contributes nothing
    expected = torch.where(keep, log_marginal(x[index]), torch.zeros(4))
    assert torch.allclose(bound, expected, atol=1e-10)
    with pytest.raises(ValueError, match="chunk_size"):
        iwae_bound(subsampled_model, subsampled_guide, x, index, num_samples=5, chunk_size=0)


def test_surgery_counts_an_autoguides_auxiliary_sites():
    from pyro.infer.autoguide import AutoNormal

    x = torch.randn(30, generator=torch.Generator().manual_seed(8))
    guide = AutoNormal(scalar_model)
    guide(x)  # create its parameters, then make it the same guide as scalar_guide
    store = pyro.get_param_store()
    store["AutoNormal.locs.z"] = (0.7 * x + 0.1).clone()
    store["AutoNormal.scales.z"] = (0.4 + 0.1 * x.abs()).clone()
    pyro.set_rng_seed(4)
    auto = elbo_surgery(scalar_model, guide, x, num_samples=50)
    pyro.set_rng_seed(4)
    manual = elbo_surgery(scalar_model, scalar_guide, x, num_samples=50)
    for key in ("rate", "mutual_information", "marginal_kl"):
        assert auto[key] == pytest.approx(manual[key], rel=1e-9, abs=1e-12)
    bound = iwae_bound(scalar_model, guide, x, num_samples=10)
    assert bound.shape == (30,)
    with pytest.raises(ValueError, match="auxiliary"):
        rate_per_dimension(scalar_model, guide, x)


# ---- edges: subsampling, shapes, NaN data, options ------------------------------------


def subsample_model(x, size=None, subsample=None):
    with pyro.plate("data", len(x), subsample_size=size, subsample=subsample) as idx:
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T + B, SX).to_event(1), obs=x[idx])


def subsample_guide(x, size=None, subsample=None, shift=0.3):
    with pyro.plate("data", len(x), subsample_size=size, subsample=subsample) as idx:
        loc, covariance = posterior(x[idx])
        pyro.sample("z", dist.Normal(loc + shift, covariance.diagonal().sqrt()).to_event(1))


def exact_rates(x, shift=0.3):
    """KL(guide || prior) of each datapoint, in closed form."""
    loc, covariance = posterior(x)
    var = covariance.diagonal()
    return 0.5 * (var.sum() + ((loc + shift) ** 2).sum(-1) - 2 - var.log().sum())


@pytest.mark.parametrize("validation", [True, False])
def test_evaluate_on_a_subsampled_plate_gives_per_datapoint_values(validation):
    pyro.enable_validation(validation)
    try:
        x = data(40)
        elbo = WeightedELBO(analytic_kl=True, num_particles=400, vectorize_particles=True,
                            max_plate_nesting=1)
        # batches of given indices covering the data set: the full data's values
        batches = [(x, None, torch.arange(i, i + 10)) for i in range(0, 40, 10)]
        result = evaluate(subsample_model, subsample_guide, batches, elbo=elbo)
        rates = exact_rates(x)
        assert result["num_data"] == 40
        assert result["rate"] == pytest.approx(float(rates.mean()), rel=1e-10)
        pyro.set_rng_seed(0)
        whole = -analytic_elbo(x).mean() - rates.mean()  # the distortion, in closed form
        assert result["distortion"] == pytest.approx(float(whole), rel=0.02)
        # one batch of 10 given indices: their own mean, not 40/10 times it
        one = evaluate(subsample_model, subsample_guide, [batches[1]], elbo=elbo)
        assert one["rate"] == pytest.approx(float(rates[10:20].mean()), rel=1e-10)
        # a random subsample of 10: the mean over some 10 datapoints
        pyro.set_rng_seed(1)
        drawn = evaluate(subsample_model, subsample_guide, [(x, 10)], elbo=elbo)
        assert drawn["num_data"] == 10
        spread = float(rates.std()) / math.sqrt(10)
        assert abs(drawn["rate"] - float(rates.mean())) < 4 * spread
    finally:
        pyro.enable_validation(True)


def test_iwae_bound_on_given_indices_agrees_across_chunks_and_refuses_random_ones():
    x = data(30)
    idx = torch.tensor([3, 7, 11, 19, 28])

    def exact(x, size=None, subsample=None):
        with pyro.plate("data", len(x), subsample_size=size, subsample=subsample) as i:
            loc, covariance = posterior(x[i])
            pyro.sample("z", dist.MultivariateNormal(loc, covariance))

    for chunk_size in (None, 2):
        bound = iwae_bound(subsample_model, exact, x, None, idx, num_samples=7,
                           chunk_size=chunk_size)
        assert torch.allclose(bound, log_marginal(x[idx]), atol=1e-10)
    with pytest.raises(ValueError, match=r"random subsample of 5 of its 30.*subsample=idx"):
        iwae_bound(subsample_model, exact, x, 5, num_samples=7, chunk_size=2)
    # with a random subsample allowed, every chunk weighs the same datapoints: each value
    # is the exact log-marginal of one datapoint, not a mixture of several
    from pyro_kl.diagnostics.bounds import importance_weighted_bound

    pyro.set_rng_seed(4)
    drawn = importance_weighted_bound(subsample_model, exact, (x, 5), {}, num_samples=7,
                                      chunk_size=2, allow_random_subsample=True).value
    distances = (drawn[:, None] - log_marginal(x)[None, :]).abs().min(-1).values
    assert distances.max() < 1e-10
    # evaluate() averages over a random subsample, every chunk on the same datapoints
    pyro.set_rng_seed(2)
    result = evaluate(subsample_model, exact, [(x, 5)], num_samples=6)
    logs = log_marginal(x)
    assert logs.min() - 1e-9 <= result["iwae_bound"] <= logs.max() + 1e-9


def test_every_chunk_replays_the_models_own_random_subsample():
    """A guide with no data plate (global latents only): the model alone draws the
    subsample, and every chunk must still weigh the first chunk's datapoints."""
    from pyro_kl.diagnostics.bounds import importance_weighted_bound

    x = torch.linspace(-1.0, 1.0, 10)
    seen = []

    def model(x):
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), subsample_size=3) as idx:
            seen.append(idx.tolist())
            pyro.sample("x", dist.Normal(theta, 1.0), obs=x[idx])

    def guide(x):
        pyro.sample("theta", dist.Normal(0.2, 0.5))

    pyro.set_rng_seed(0)
    importance_weighted_bound(model, guide, (x,), {}, num_samples=4, chunk_size=1,
                              allow_random_subsample=True)
    chunks = seen[-4:]  # the four chunks' runs (the probe ran before them)
    assert all(indices == chunks[0] for indices in chunks), chunks


@pytest.mark.parametrize("validation", [True, False])
def test_a_value_of_the_wrong_shape_is_refused_naming_the_site_and_shapes(validation):
    pyro.enable_validation(validation)
    try:
        x = data(6)[:, 0]

        def scalar_model(x):
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

        def scalar_guide(x):
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))

        def fixed_guide(x):
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Normal(0.0, 1.0))

        with pytest.raises(ValueError, match=r"Site 'z' of the guide has batch shape \(6, 6\)"):
            iwae_bound(scalar_model, scalar_guide, x.unsqueeze(-1), num_samples=3)
        with pytest.raises(ValueError, match=r"Site 'x' of the model .* dims \[-2\] of size \[6\]"):
            iwae_bound(scalar_model, fixed_guide, x.unsqueeze(-1), num_samples=3)
        with pytest.raises(ValueError, match="x.unsqueeze"):
            evaluate(scalar_model, fixed_guide, [x.unsqueeze(-1)], num_samples=2)
        assert torch.allclose(  # the right shape still gives the exact value
            iwae_bound(scalar_model, scalar_guide, x, num_samples=3),
            dist.Normal(0.0, 2**0.5).log_prob(x), atol=1e-10,
        )
    finally:
        pyro.enable_validation(True)


def test_nan_data_is_refused_naming_the_site_whatever_the_validation():
    x = data(5)
    x[2, 1] = float("nan")

    def prior_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    for validation in (True, False):
        pyro.enable_validation(validation)
        try:
            for run in (
                lambda: iwae_bound(model, prior_guide, x, num_samples=2),
                lambda: evaluate(model, prior_guide, [x]),
                lambda: code_length(model, prior_guide, x, num_samples=2,
                                    bin_widths={"x": 0.1}),
            ):
                with pytest.raises(ValueError, match=r"site 'x' holds 1 value.*NaN.*batch index "
                                                     r"\[\[2\]\].*mask"):
                    run()
        finally:
            pyro.enable_validation(True)
    # masked out, the NaN datapoint counts for nothing (validation off: NaN is not a real)
    keep = torch.tensor([True, True, False, True, True])

    def masked_model(x):
        with pyro.plate("data", len(x)), pyro.poutine.mask(mask=keep):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + B, SX).to_event(1), obs=x)

    def masked_guide(x):
        loc, covariance = posterior(x.nan_to_num(0.0))
        with pyro.plate("data", len(x)), pyro.poutine.mask(mask=keep):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance))

    pyro.enable_validation(False)
    try:
        bound = iwae_bound(masked_model, masked_guide, x, num_samples=2)
    finally:
        pyro.enable_validation(True)
    expected = torch.where(keep, log_marginal(x.nan_to_num(0.0)), torch.zeros(5))
    assert torch.allclose(bound, expected, atol=1e-10)


@pytest.mark.parametrize("threshold", [float("nan"), -1.0, float("inf"), "0.1", None])
def test_active_units_refuses_a_threshold_that_is_not_a_variance(threshold):
    with pytest.raises(ValueError, match=r"threshold is a variance, a finite number >= 0"):
        active_units(model, exact_guide, data(5), threshold=threshold)


@pytest.mark.parametrize("width", ["abc", [0.1], 0.0, -1.0, float("nan")])
def test_a_bin_width_that_is_not_a_positive_number_is_refused(width):
    with pytest.raises(ValueError, match=r"bin width of site 'x' is .*positive number"):
        code_length(model, exact_guide, data(5), num_samples=2, bin_widths={"x": width})


def test_an_undeclared_dim_right_of_the_data_plate_lies_within_a_datapoint():
    """Pyro allows batch dims right of every plate (here a plate at dim -2 over the
    data, three numbers per datapoint at dim -1): each datapoint's bound sums them."""
    x = data(4)

    def row_model(x):
        with pyro.plate("data", len(x), dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(1, 2), 1.0).to_event(1))
            loc = (z @ W.T).squeeze(-2) + B  # (4, 3): datapoints at dim -2
            pyro.sample("x", dist.Normal(loc, SX), obs=x)

    def row_guide(x):
        loc, covariance = posterior(x)
        with pyro.plate("data", len(x), dim=-2):
            pyro.sample("z", dist.MultivariateNormal(loc.unsqueeze(-2), covariance.unsqueeze(-3)))

    bound = iwae_bound(row_model, row_guide, x, num_samples=3)
    assert torch.allclose(bound, log_marginal(x), atol=1e-10)
