import math
import shutil

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.optim import ClippedAdam

from pyro_kl import WeightedELBO, derive_objective, render_worlds
from pyro_kl.recipes import (
    RECIPES,
    BayesianInference,
    BayesianNeuralNetwork,
    DensityEstimation,
    SemiSupervisedVAE,
    VariationalDiffusion,
    VariationalPrediction,
)
from pyro_kl.terms import term_symbol
from pyro_kl.worlds import worlds_spec

NAMES = list(RECIPES)
ENUMERATED = {"gaussian_mixture", "semi_supervised_m2"}  # Pyro's reference: TraceEnum_ELBO


def build(name, **kwargs):
    recipe = RECIPES[name](**kwargs)
    return recipe, recipe.make_data(seed=0)


def edges(spec, world):
    return {
        (edge["source"].split("/", 1)[1], edge["target"].split("/", 1)[1])
        for edge in spec["worlds"][world]["edges"]
    }


def nodes(spec, world):
    return {node["name"]: node for node in spec["worlds"][world]["nodes"]}


def test_registry_follows_the_essay():
    assert NAMES == [
        "density_estimation",
        "gaussian_mixture",
        "supervised_learning",
        "vae",
        "vib",
        "semi_supervised_vae",
        "semi_supervised_m2",
        "variational_diffusion",
        "bayesian_inference",
        "bayesian_neural_network",
        "therml",
        "variational_prediction",
    ]
    for name, recipe_class in RECIPES.items():
        assert recipe_class.name == name


@pytest.mark.parametrize("name", NAMES)
def test_trains_with_finite_decreasing_loss(name):
    recipe, data = build(name)
    losses = recipe.fit(*data, num_steps=40, lr=0.02)
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-5:]) < sum(losses[:5])


@pytest.mark.parametrize("name", NAMES)
def test_vectorised_particles_give_pyros_loss(name):
    """Every recipe is vectorisation-safe: three particles at once give Pyro's loss."""
    recipe, data = build(name)
    recipe.guide(*data)
    options = dict(num_particles=3, vectorize_particles=True, max_plate_nesting=2)
    pyro.set_rng_seed(1)
    reference = TraceEnum_ELBO(**options) if name in ENUMERATED else Trace_ELBO(**options)
    expected = reference.loss(recipe.model, recipe.guide, *data)
    pyro.set_rng_seed(1)
    loss = WeightedELBO(**options).loss(recipe.model, recipe.guide, *data)
    assert loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_unit_weights_give_pyro_loss_and_terms_sum_to_it(name):
    recipe, data = build(name)
    elbo = recipe.make_elbo()
    recipe.guide(*data)  # create the parameters before seeding both estimates
    pyro.set_rng_seed(1)
    loss = elbo.loss_and_grads(recipe.model, recipe.guide, *data)
    pyro.set_rng_seed(1)
    reference = TraceEnum_ELBO(max_plate_nesting=1) if name in ENUMERATED else Trace_ELBO()
    expected = reference.loss(recipe.model, recipe.guide, *data)
    assert loss == pytest.approx(expected, rel=1e-5, abs=1e-4)
    total = sum(elbo.last_weights.get(t, 1.0) * v for t, v in elbo.last_terms.items())
    assert total == pytest.approx(loss, rel=1e-5, abs=1e-4)
    assert set(elbo.last_terms) == set(recipe.objective_terms)


@pytest.mark.parametrize("name", NAMES)
def test_derived_objective_lists_the_promised_terms(name):
    recipe, data = build(name)
    objective = derive_objective(recipe.model, recipe.guide, data, elbo=recipe.make_elbo())
    assert set(objective.sites_by_term) == set(recipe.objective_terms)
    doc = " ".join(type(recipe).__doc__.split())
    for term in recipe.objective_terms:
        assert term_symbol(term) in objective.equation
        assert term_symbol(term) in recipe.objective.split("=")[-1]
        assert f"{term_symbol(term)}``" in doc or f"{term_symbol(term)} " in doc
    assert "Real world P (data + guide)" in doc and "Dream world Q (model)" in doc


@pytest.mark.parametrize("name", NAMES)
def test_renders_both_worlds(name, tmp_path):
    recipe, data = build(name)
    elbo = recipe.make_elbo()
    spec = worlds_spec(recipe.model, recipe.guide, data, elbo=elbo)
    objective = derive_objective(recipe.model, recipe.guide, data, elbo=elbo)
    dream, real = nodes(spec, "dream"), nodes(spec, "real")
    for term, sites in objective.sites_by_term.items():
        for site in sites:
            assert dream[site]["term"] == term
            assert real[site]["term"] == term
    shaded = {name for name, node in real.items() if node["shaded"]}
    observed = set(objective.sites_by_term.get("distortion", ())) | set(
        objective.sites_by_term.get("classification", ())
    )
    assert observed <= shaded
    graph = render_worlds(recipe.model, recipe.guide, data, elbo=elbo)
    assert "Real world P (data + guide)" in graph.source
    assert "Dream world Q (model)" in graph.source
    if shutil.which("dot") is not None:
        path = tmp_path / f"{name}.svg"
        render_worlds(recipe.model, recipe.guide, data, elbo=elbo, filename=str(path))
        assert path.stat().st_size > 0


@pytest.mark.parametrize(
    "name, real_edges, dream_edges",
    [
        ("vae", {("x", "z")}, {("z", "x")}),
        ("supervised_learning", {("x", "y")}, {("x", "y")}),
        ("vib", {("x", "z"), ("x", "y")}, {("z", "y")}),
        ("semi_supervised_vae", {("x", "z"), ("x", "y")}, {("z", "x"), ("z", "y")}),
        (
            "variational_diffusion",
            {("x", "z1"), ("z1", "z2"), ("z2", "z3")},
            {("z3", "z2"), ("z2", "z1"), ("z1", "x")},
        ),
        ("bayesian_inference", {("x", "theta")}, {("theta", "x")}),
        ("bayesian_neural_network", {("x", "y"), ("x", "w1"), ("y", "w1")}, {("w1", "y")}),
        (
            "therml",
            {("x", "z"), ("theta", "z"), ("x", "y"), ("x", "theta"), ("y", "theta")},
            {("z", "x"), ("z", "y")},
        ),
        (
            "variational_prediction",
            {("x_query", "y_query"), ("y_query", "theta"), ("x", "y"), ("y", "theta")},
            {("theta", "y"), ("theta", "y_query")},
        ),
    ],
)
def test_worlds_point_the_essay_way(name, real_edges, dream_edges):
    recipe, data = build(name)
    spec = worlds_spec(recipe.model, recipe.guide, data, elbo=recipe.make_elbo())
    assert real_edges <= edges(spec, "real")
    assert dream_edges <= edges(spec, "dream")
    # only nature's own arrows run into nature's data; none runs back from a latent
    data_nodes = {n for n, node in nodes(spec, "real").items() if node["shaded"]}
    for edge in spec["worlds"]["real"]["edges"]:
        if edge["target"].split("/", 1)[1] in data_nodes:
            assert edge["kind"] == "nature"
            assert edge["source"].split("/", 1)[1] in data_nodes


def test_masks_are_not_data():
    recipe, data = build("semi_supervised_vae")
    spec = worlds_spec(recipe.model, recipe.guide, data, elbo=recipe.make_elbo())
    assert set(nodes(spec, "real")) == set(nodes(spec, "dream")) == {"x", "y", "z"}


def test_vib_files_the_label_under_classification():
    recipe, data = build("vib")
    elbo = recipe.make_elbo(beta=0.5)
    objective = derive_objective(recipe.model, recipe.guide, data, elbo=elbo)
    assert objective.sites_by_term == {"classification": ("y",), "rate": ("z",)}
    assert objective.equation == "L = C + 0.5·R"


def test_vib_dream_world_draws_x_from_nature_apart_from_z_and_y():
    recipe, data = build("vib")
    spec = worlds_spec(recipe.model, recipe.guide, data, elbo=recipe.make_elbo())
    dream_x = nodes(spec, "dream")["x"]
    assert dream_x["from_nature"] and dream_x["term"] is None
    assert not any("x" in edge for edge in edges(spec, "dream"))
    assert nodes(spec, "real")["x"]["shaded"]


@pytest.mark.parametrize(
    "name", ["supervised_learning", "vib", "bayesian_neural_network", "variational_prediction"]
)
def test_dream_world_inputs_are_drawn_sampled_from_nature(name):
    recipe, data = build(name)
    graph = render_worlds(recipe.model, recipe.guide, data, elbo=recipe.make_elbo())
    assert 'style="filled,dashed"' not in graph.source
    spec = worlds_spec(recipe.model, recipe.guide, data, elbo=recipe.make_elbo())
    assert nodes(spec, "dream")["x"]["distribution"] == "p(x)"


@pytest.mark.parametrize(
    "name, entropy",
    [("supervised_learning", "H[Y|X]"), ("vib", "H[Y|X]"), ("bayesian_neural_network", "H[Y|X]"),
     ("variational_prediction", "H[Y|X]"), ("bayesian_inference", "H[D]"),
     ("density_estimation", "H[data]"), ("vae", "H[data]")],
)
def test_each_recipe_names_its_constant(name, entropy):
    recipe, data = build(name)
    unit = derive_objective(recipe.model, recipe.guide, data)
    assert unit.relation.startswith(f"const = −{entropy}:")
    spec = worlds_spec(recipe.model, recipe.guide, data)
    assert spec["objective"]["relation"] == unit.relation
    weighted = derive_objective(
        recipe.model, recipe.guide, data,
        elbo=WeightedELBO(weights={"rate": 0.5, "distortion": 0.5, "classification": 0.5}),
    )
    assert weighted.relation.endswith(f"const = −{entropy}")


def test_bnn_weights_are_global_complexity():
    recipe, data = build("bayesian_neural_network")
    spec = worlds_spec(recipe.model, recipe.guide, data, elbo=recipe.make_elbo())
    dream = nodes(spec, "dream")
    for weight in BayesianNeuralNetwork().weight_shapes():
        assert dream[weight]["term"] == "complexity"
        assert dream[weight]["plates"] == []
    assert dream["y"]["plates"] == ["data"]


def test_semi_supervised_classification_counts_shown_labels_only():
    recipe, (x, y, labelled) = build("semi_supervised_vae")
    assert 0 < labelled.sum() < len(labelled)
    elbo = recipe.make_elbo(beta=0.5, gamma=3.0)
    hidden_changed = torch.where(labelled, y, (y + 1) % recipe.num_classes)
    pyro.set_rng_seed(2)
    terms = elbo.estimate_terms(recipe.model, recipe.guide, x, y, labelled)
    pyro.set_rng_seed(2)
    terms_changed = elbo.estimate_terms(recipe.model, recipe.guide, x, hidden_changed, labelled)
    assert terms_changed == pytest.approx(terms)
    pyro.set_rng_seed(2)
    shown_changed = torch.where(labelled, (y + 1) % recipe.num_classes, y)
    terms_shown = elbo.estimate_terms(recipe.model, recipe.guide, x, shown_changed, labelled)
    assert terms_shown["classification"] != pytest.approx(terms["classification"])
    assert terms_shown["distortion"] == pytest.approx(terms["distortion"])


def test_diffusion_forward_process_has_no_parameters():
    recipe, data = build("variational_diffusion")
    trace = pyro.poutine.trace(pyro.poutine.block(recipe.guide, hide_types=[])).get_trace(*data)
    assert not [site for site in trace.nodes.values() if site["type"] == "param"]
    assert recipe.site_names() == ("x", "z1", "z2", "z3")


def test_density_estimation_reaches_maximum_likelihood():
    recipe, (x,) = build("density_estimation")
    recipe.fit(x, num_steps=600, lr=0.05)
    scale_tril = pyro.param("density_estimation.scale_tril").detach()
    assert pyro.param("density_estimation.loc").detach() == pytest.approx(x.mean(0), abs=1e-2)
    covariance = scale_tril @ scale_tril.T
    assert covariance.flatten() == pytest.approx(torch.cov(x.T, correction=0).flatten(), abs=2e-2)


def set_guide_to(recipe, posterior):
    store = pyro.get_param_store()
    store["bayesian_inference.theta_loc"] = posterior.loc.clone()
    store["bayesian_inference.theta_scale"] = posterior.scale.clone()


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_bayesian_inference_exact_posterior_is_the_optimum(beta):
    # At the tempered posterior, log guide - log prior - beta log likelihood is the
    # same for every theta: the loss has zero variance and equals -log Z_beta.
    recipe, (x,) = build("bayesian_inference")
    elbo = recipe.make_elbo(beta=beta)
    posterior = recipe.exact_posterior(x, beta=beta)
    recipe.guide(x)  # create the guide's parameters
    set_guide_to(recipe, posterior)
    losses = [elbo.loss(recipe.model, recipe.guide, x) for _ in range(5)]
    assert max(losses) - min(losses) < 1e-3
    if beta == 1.0:
        n, dim = x.shape
        covariance = recipe.noise_scale**2 * torch.eye(n) + recipe.prior_scale**2
        evidence = dist.MultivariateNormal(torch.zeros(n), covariance).log_prob(x.T).sum()
        assert losses[0] == pytest.approx(-evidence.item(), rel=1e-4)
    # any other guide has a larger loss on average (KL to the posterior > 0)
    set_guide_to(recipe, dist.Normal(posterior.loc + 0.3, posterior.scale))
    pyro.set_rng_seed(3)
    worse = [elbo.loss(recipe.model, recipe.guide, x) for _ in range(20)]
    assert sum(worse) / len(worse) > losses[0]


def test_bayesian_inference_guide_learns_the_posterior():
    recipe, (x,) = build("bayesian_inference")
    elbo = recipe.make_elbo(beta=0.5, analytic_kl=True)
    svi = pyro.infer.SVI(
        recipe.model, recipe.guide, ClippedAdam({"lr": 0.05, "lrd": 0.995}), loss=elbo
    )
    for _ in range(600):
        svi.step(x)
    posterior = recipe.exact_posterior(x, beta=0.5)
    loc = pyro.param("bayesian_inference.theta_loc").detach()
    scale = pyro.param("bayesian_inference.theta_scale").detach()
    assert loc == pytest.approx(posterior.loc, abs=0.05)
    assert scale == pytest.approx(posterior.scale, rel=0.15)


def test_variational_prediction_exact_predictive_matches_sampling():
    recipe, (x, y, x_query) = build("variational_prediction")
    exact = recipe.exact_predictive(x, y, x_query)
    # the posterior of theta by brute-force importance weighting of prior draws
    theta = dist.Normal(0.0, recipe.prior_scale).sample((200000, 2))
    features = recipe.features(x)
    log_weights = dist.Normal(theta @ features.T, recipe.noise_scale).log_prob(y).sum(-1)
    weights = (log_weights - log_weights.logsumexp(0)).exp()
    means = theta @ recipe.features(x_query).T
    loc = (weights[:, None] * means).sum(0)
    variance = (weights[:, None] * (means - loc) ** 2).sum(0) + recipe.noise_scale**2
    assert exact.loc == pytest.approx(loc, abs=0.03)
    assert exact.scale == pytest.approx(variance.sqrt(), rel=0.03)
    assert isinstance(recipe, VariationalPrediction)


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="labelled_fraction"):
        SemiSupervisedVAE(labelled_fraction=0.0)
    with pytest.raises(ValueError, match="num_data"):
        DensityEstimation().make_data(num_data=1)
    with pytest.raises(ValueError, match="num_steps"):
        VariationalDiffusion(num_steps=0)
    recipe, data = build("bayesian_inference")
    with pytest.raises(ValueError, match="num_steps"):
        recipe.fit(*data, num_steps=-1)
    assert isinstance(recipe, BayesianInference)
