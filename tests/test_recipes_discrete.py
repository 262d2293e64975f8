"""Recipes with discrete latents: the Gaussian mixture (summed in the dream world) and
Kingma's M2 (the hidden label summed in the real world), and the Figure 7 recipe whose
masked label is the exact marginal."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_kl import BetaGammaELBO, WeightedELBO
from pyro_kl.recipes import GaussianMixture, SemiSupervisedM2, SemiSupervisedVAE
from pyro_kl.recipes.m2 import join_label


def params_of(recipe, *data):
    """Run both programs once so every parameter exists, and return them."""
    recipe.guide(*data)
    recipe.model(*data)
    return [p.unconstrained() for p in pyro.get_param_store().values()]


def loss_and_grads(elbo, recipe, data, params, seed=3):
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(recipe.model, recipe.guide, *data)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.item(), grads


def assert_same_grads(grads, expected):
    for grad, want in zip(grads, expected):
        if want is None:
            assert grad is None or torch.all(grad == 0)
        else:
            assert torch.allclose(grad, want, rtol=1e-5, atol=1e-5)


def mixture_by_hand(x, weights, locs, scales):
    """-sum_n log sum_k weights_k N(x_n | locs_k, scales_k^2), written out."""
    total = 0.0
    for point in x:
        densities = [
            weights[k] * torch.exp(dist.Normal(locs[k], scales[k]).log_prob(point).sum())
            for k in range(len(weights))
        ]
        total -= math.log(sum(d.item() for d in densities))
    return total


@pytest.mark.parametrize("recipe_class", [GaussianMixture, SemiSupervisedM2])
def test_recipe_trains_a_few_steps(recipe_class):
    recipe = recipe_class()
    data = recipe.make_data(seed=0)
    losses = recipe.fit(*data, num_steps=40, lr=0.03)
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_mixture_loss_is_the_exact_marginal():
    mixture = GaussianMixture(num_components=3)
    (x,) = mixture.make_data(40, seed=1)
    mixture.model(x)
    store = pyro.get_param_store()
    store["gaussian_mixture.locs"] = torch.tensor([[0.0, 1.0], [2.0, -1.0], [-1.5, 0.5]])
    store["gaussian_mixture.scales"] = torch.tensor([[0.5, 1.0], [1.5, 0.7], [0.8, 0.8]])
    store["gaussian_mixture.weights"] = torch.tensor([0.2, 0.5, 0.3])
    expected = mixture_by_hand(x, *mixture.mixture_params(x))
    assert mixture.make_elbo().loss(mixture.model, mixture.guide, x) == pytest.approx(
        expected, rel=1e-5
    )
    assert -mixture.log_marginal(x).sum().item() == pytest.approx(expected, rel=1e-5)
    elbo = WeightedELBO(max_plate_nesting=1)
    assert elbo.loss_and_grads(mixture.model, mixture.guide, x) == pytest.approx(expected, rel=1e-5)
    assert elbo.last_terms == pytest.approx({"distortion": expected}, rel=1e-5)


def test_mixture_weight_two_doubles_the_marginal():
    mixture = GaussianMixture()
    (x,) = mixture.make_data(30, seed=2)
    expected = -mixture.log_marginal(x).sum().item()
    doubled = mixture.make_elbo(beta=2.0).loss(mixture.model, mixture.guide, x)
    assert doubled == pytest.approx(2 * expected, rel=1e-5)


def test_mixture_unit_weights_equal_trace_enum_elbo():
    mixture = GaussianMixture()
    data = mixture.make_data(50, seed=3)
    params = params_of(mixture, *data)
    expected, expected_grads = loss_and_grads(
        TraceEnum_ELBO(max_plate_nesting=1), mixture, data, params
    )
    elbo = WeightedELBO(max_plate_nesting=1)
    loss, grads = loss_and_grads(elbo, mixture, data, params)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert_same_grads(grads, expected_grads)
    assert sum(elbo.last_terms.values()) == pytest.approx(loss, rel=1e-6)


def m2_and_data(**kwargs):
    m2 = SemiSupervisedM2(**kwargs)
    data = m2.make_data(60, seed=4)
    return m2, data, params_of(m2, *data)


@pytest.mark.parametrize("total_count", [None, 5])
def test_m2_unit_weights_equal_trace_enum_elbo(total_count):
    m2, data, params = m2_and_data(total_count=total_count)
    expected, expected_grads = loss_and_grads(
        TraceEnum_ELBO(max_plate_nesting=1), m2, data, params
    )
    elbo = BetaGammaELBO(
        beta=1.0, gamma=1.0, site_terms={"label": "classification"}, max_plate_nesting=1
    )
    loss, grads = loss_and_grads(elbo, m2, data, params)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert_same_grads(grads, expected_grads)
    assert set(elbo.last_terms) == set(m2.objective_terms)
    assert sum(elbo.last_terms.values()) == pytest.approx(loss, rel=1e-6)


def test_m2_classification_term_is_the_classifiers_cross_entropy_on_shown_labels():
    m2, (x, y, labelled), params = m2_and_data()
    logits = m2.classifier(x[labelled])
    cross_entropy = torch.nn.functional.cross_entropy(logits, y[labelled], reduction="sum").item()
    pyro.set_rng_seed(5)
    at_one = m2.make_elbo(beta=1.0, gamma=1.0).loss(m2.model, m2.guide, x, y, labelled)
    pyro.set_rng_seed(5)
    at_four = m2.make_elbo(beta=1.0, gamma=4.0).loss(m2.model, m2.guide, x, y, labelled)
    assert at_four - at_one == pytest.approx(3.0 * cross_entropy, rel=1e-4)


def test_m2_guessed_label_is_summed_exactly():
    """With one unlabelled example and the style fixed by the seed, the loss is the
    classifier-weighted sum over every label, computed here class by class."""
    m2 = SemiSupervisedM2(num_classes=3, latent_dim=2)
    x = torch.randn(2, m2.dim)
    y = torch.tensor([1, 0])
    labelled = torch.tensor([True, False])
    params_of(m2, x, y, labelled)
    pyro.set_rng_seed(6)
    loss = m2.make_elbo().loss(m2.model, m2.guide, x, y, labelled)

    noise = torch.randn  # the same draws, in the guide's order: labelled z, then unlabelled z
    pyro.set_rng_seed(6)
    eps_labelled, eps_unlabelled = noise(1, 2), noise(3, 1, 2)
    with torch.no_grad():
        prior_y = math.log(1.0 / 3)
        standard = dist.Normal(torch.zeros(2), 1.0).to_event(1)

        def cost(x_row, label, eps):
            loc, scale = m2.encoder(join_label(x_row, label, 3))
            z = loc + scale * eps
            decoded = m2.decoder(join_label(z, label, 3))
            noise_scale = pyro.param("semi_supervised_m2.log_noise").exp()
            log_x = dist.Normal(decoded, noise_scale).to_event(1).log_prob(x_row)
            log_e = dist.Normal(loc, scale).to_event(1).log_prob(z)
            return (log_e - standard.log_prob(z) - log_x - prior_y).item()

        labelled_cost = cost(x[:1], y[:1], eps_labelled[0]) + torch.nn.functional.cross_entropy(
            m2.classifier(x[:1]), y[:1]
        ).item()
        guess = m2.classifier(x[1:]).softmax(-1)[0]
        unlabelled_cost = sum(
            guess[k].item()
            * (cost(x[1:], torch.tensor([k]), eps_unlabelled[k, 0]) + math.log(guess[k].item()))
            for k in range(3)
        )
    assert loss == pytest.approx(labelled_cost + unlabelled_cost, rel=1e-4)


def test_m2_rejects_a_mask_that_is_not_boolean():
    m2 = SemiSupervisedM2()
    x, y, labelled = m2.make_data(20, seed=0)
    with pytest.raises(ValueError, match="boolean mask"):
        m2.model(x, y, labelled.long())


def test_figure7_masking_equals_summing_out_the_hidden_label():
    """In Figure 7 the label is a leaf of z: the masked loss equals the loss whose
    hidden labels are enumerated in the dream world (their sum over labels is 1)."""
    recipe = SemiSupervisedVAE()
    x, y, labelled = recipe.make_data(40, seed=7)
    assert 0 < labelled.sum() < len(labelled)

    def summed_model(x, y, labelled):
        recipe.module("decoder", recipe.decoder)
        recipe.module("classifier", recipe.classifier)
        noise = recipe.param("log_noise", lambda: torch.full((recipe.dim,), -1.0)).exp()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(recipe.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(recipe.decoder(z), noise).to_event(1), obs=x)
            logits = recipe.classifier(z)
            pyro.sample("y", dist.Categorical(logits=logits).mask(labelled), obs=y)
            # a mask would make each enumerated value weigh 1 (a sum of K); a point
            # mass on the labelled rows makes their hidden label sum to exactly 1
            point_mass = torch.full_like(logits, -1e30)
            point_mass[..., 0] = 0.0
            hidden = torch.where(labelled.unsqueeze(-1), point_mass, logits)
            pyro.sample("y_hidden", dist.Categorical(logits=hidden),
                        infer={"enumerate": "parallel"})

    recipe.guide(x, y, labelled)
    pyro.set_rng_seed(8)
    masked = Trace_ELBO().loss(recipe.model, recipe.guide, x, y, labelled)
    pyro.set_rng_seed(8)
    summed = TraceEnum_ELBO(max_plate_nesting=1).loss(summed_model, recipe.guide, x, y, labelled)
    assert summed == pytest.approx(masked, rel=1e-5)
