"""Both worlds: the spec of the real world P (data + guide) and the dream world
Q (model), its DOT drawing and files. Pictures are read back from graphviz's
own layout (``dot -Tjson``), never from pixels."""

import functools
import json
import shutil
import subprocess

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_kl import (
    BetaGammaELBO,
    LinearWarmup,
    RateDistortionELBO,
    WeightedELBO,
    derive_objective,
    render_worlds,
)
from pyro_kl.recipes import BayesianInference, SemiSupervisedVAE, VIB
from pyro_kl.worlds.colors import TERM_COLORS, USER_TERM_COLORS
from pyro_kl.worlds import dot as worlds_dot
from pyro_kl.worlds import worlds_spec
from pyro_kl.worlds.spec import WORLD_LABELS

from .model_zoo import global_local

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed")

N, X_DIM, Z_DIM, CLASSES = 4, 5, 2, 3


# ---- small (model, guide, args) triples -----------------------------------


def vae():
    decoder, encoder = nn.Linear(Z_DIM, X_DIM), nn.Linear(X_DIM, 2 * Z_DIM)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = encoder(x).split(Z_DIM, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, (torch.randn(N, X_DIM),)


def vib():
    """The model generates only the label y from z; the guide reads x."""
    classifier, encoder = nn.Linear(Z_DIM, CLASSES), nn.Linear(X_DIM, 2 * Z_DIM)

    def model(x, y):
        with pyro.plate("data", y.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z_DIM), 1.0).to_event(1))
            pyro.sample("y", dist.Categorical(logits=classifier(z)), obs=y)

    def guide(x, y):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = encoder(x).split(Z_DIM, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, (torch.randn(N, X_DIM), torch.tensor([0, 1, 2, 1]))


def semi_supervised():
    """Labelled data (y observed) and unlabelled data (y latent) in one call."""
    decoder = nn.Linear(Z_DIM + CLASSES, X_DIM)
    classifier = nn.Linear(X_DIM, CLASSES)
    encoder = nn.Linear(X_DIM + CLASSES, 2 * Z_DIM)

    def generate(suffix, xs, ys):
        z = pyro.sample(f"z_{suffix}", dist.Normal(torch.zeros(Z_DIM), 1.0).to_event(1))
        y = pyro.sample(f"y_{suffix}", dist.OneHotCategorical(logits=torch.zeros(CLASSES)),
                        obs=ys)
        loc = decoder(torch.cat([z, y], -1))
        pyro.sample(f"x_{suffix}", dist.Normal(loc, 1.0).to_event(1), obs=xs)

    def encode(suffix, xs, y):
        loc, log_scale = encoder(torch.cat([xs, y], -1)).split(Z_DIM, -1)
        pyro.sample(f"z_{suffix}", dist.Normal(loc, log_scale.exp()).to_event(1))

    def model(x_l, y_l, x_u):
        with pyro.plate("labelled", x_l.shape[0]):
            generate("l", x_l, y_l)
        with pyro.plate("unlabelled", x_u.shape[0]):
            generate("u", x_u, None)

    def guide(x_l, y_l, x_u):
        with pyro.plate("labelled", x_l.shape[0]):
            encode("l", x_l, y_l)
        with pyro.plate("unlabelled", x_u.shape[0]):
            y_u = pyro.sample("y_u", dist.OneHotCategorical(logits=classifier(x_u)))
            encode("u", x_u, y_u)

    y_l = nn.functional.one_hot(torch.tensor([0, 2]), CLASSES).float()
    return model, guide, (torch.randn(2, X_DIM), y_l, torch.randn(3, X_DIM))


def bnn():
    """A global weight vector theta outside the data plate: complexity."""

    def model(x, y):
        theta = pyro.sample("theta", dist.Normal(torch.zeros(X_DIM), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(x @ theta, 0.5), obs=y)

    def guide(x, y):
        loc = pyro.param("theta_loc", torch.zeros(X_DIM))
        scale = pyro.param("theta_scale", torch.ones(X_DIM), constraint=dist.constraints.positive)
        pyro.sample("theta", dist.Normal(loc, scale).to_event(1))

    return model, guide, (torch.randn(N, X_DIM), torch.randn(N))


def diffusion():
    """A 3-step hierarchical VAE: x -> z1 -> z2 -> z3 in the real world, the
    reverse chain z3 -> z2 -> z1 -> x in the dream world."""
    up = nn.ModuleList([nn.Linear(X_DIM, Z_DIM)] + [nn.Linear(Z_DIM, Z_DIM) for _ in range(2)])
    down = nn.ModuleList([nn.Linear(Z_DIM, X_DIM)] + [nn.Linear(Z_DIM, Z_DIM) for _ in range(2)])

    def model(x):
        with pyro.plate("data", x.shape[0]):
            h = pyro.sample("z3", dist.Normal(torch.zeros(Z_DIM), 1.0).to_event(1))
            for k in (2, 1):
                h = pyro.sample(f"z{k}", dist.Normal(down[k](h), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(down[0](h), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            h = x
            for k in (1, 2, 3):
                h = pyro.sample(f"z{k}", dist.Normal(up[k - 1](h), 1.0).to_event(1))

    return model, guide, (torch.randn(N, X_DIM),)


# ---- helpers ----------------------------------------------------------------


def nodes(spec, world):
    return {n["name"]: n for n in spec["worlds"][world]["nodes"]}


def edges(spec, world):
    return {
        (e["source"].split("/", 1)[1], e["target"].split("/", 1)[1])
        for e in spec["worlds"][world]["edges"]
    }


def kinds(spec, world):
    return {
        (e["source"].split("/", 1)[1], e["target"].split("/", 1)[1]): e["kind"]
        for e in spec["worlds"][world]["edges"]
    }


def assert_same_colour_both_worlds(spec):
    real, dream = nodes(spec, "real"), nodes(spec, "dream")
    for name in set(real) & set(dream):
        assert real[name]["term"] == dream[name]["term"], name
        assert real[name]["color"] == dream[name]["color"], name


# ---- spec level (no dot needed) ---------------------------------------------


def test_vae_spec():
    model, guide, args = vae()
    spec = worlds_spec(model, guide, args, elbo=RateDistortionELBO(beta=0.37))
    assert spec["worlds"]["real"]["label"] == "Real world P (data + guide)"
    assert spec["worlds"]["dream"]["label"] == "Dream world Q (model)"
    real, dream = nodes(spec, "real"), nodes(spec, "dream")
    assert set(real) == set(dream) == {"x", "z"}
    assert real["x"]["id"] == "real/x" and dream["x"]["id"] == "dream/x"
    # the data are shaded in the real world only; the dream world generates them
    assert real["x"]["shaded"] and real["x"]["kind"] == "data"
    assert not real["z"]["shaded"] and not dream["x"]["shaded"]
    assert real["x"]["term"] == "distortion" and real["z"]["term"] == "rate"
    assert real["x"]["color"] == TERM_COLORS["distortion"]
    assert real["z"]["color"] == TERM_COLORS["rate"]
    assert_same_colour_both_worlds(spec)
    # Figure 5 of the essay: the encoder x -> z, the generative story z -> x
    assert edges(spec, "real") == {("x", "z")}
    assert edges(spec, "dream") == {("z", "x")}
    assert spec["levels"] == {"x": 0, "z": 1}
    (dream_edge,) = spec["worlds"]["dream"]["edges"]
    (real_edge,) = spec["worlds"]["real"]["edges"]
    assert dream_edge["upward"] and not real_edge["upward"]
    for world in ("real", "dream"):
        assert set(spec["worlds"][world]["plates"]) == {"data"}
        assert spec["worlds"][world]["plates"]["data"]["parent"] is None
        assert all(n["plates"] == ["data"] for n in spec["worlds"][world]["nodes"])
    assert [row["term"] for row in spec["legend"]] == ["distortion", "rate"]
    assert spec["legend"][1]["weight"] == pytest.approx(0.37)
    assert spec["objective"]["equation"] == "L = D + 0.37·R"


def test_vib_spec_guide_input_is_data():
    model, guide, args = vib()
    spec = worlds_spec(model, guide, args)
    real, dream = nodes(spec, "real"), nodes(spec, "dream")
    assert set(real) == {"x", "y", "z"}
    assert set(dream) == {"y", "z"}  # the model never touches x
    # x is data the guide reads but the model does not observe: shaded, no term
    assert real["x"]["shaded"] and real["x"]["term"] is None and real["x"]["color"] == "white"
    assert real["x"]["plates"] == ["data"]  # drawn in the plate of the latent reading it
    assert real["y"]["shaded"] and real["y"]["term"] == "distortion"
    # the guide reads x; the model observes y beside it without reading x:
    # nature drew y given x (the essay's x -> y), untagged as it is
    assert kinds(spec, "real") == {("x", "z"): "guide", ("x", "y"): "nature"}
    assert edges(spec, "dream") == {("z", "y")}
    assert_same_colour_both_worlds(spec)


def test_vib_label_is_natures_conditional_on_the_input():
    model, guide, args = vib()
    spec = worlds_spec(model, guide, args, elbo=WeightedELBO(site_terms={"y": "classification"}))
    assert kinds(spec, "real") == {("x", "z"): "guide", ("x", "y"): "nature"}
    assert kinds(spec, "dream") == {("z", "y"): "model"}


def test_semi_supervised_spec():
    model, guide, args = semi_supervised()
    elbo = BetaGammaELBO(beta=2.0, gamma=10.0, site_terms={"y_l": "classification"})
    spec = worlds_spec(model, guide, args, elbo=elbo)
    real, dream = nodes(spec, "real"), nodes(spec, "dream")
    assert {n for n, v in real.items() if v["shaded"]} == {"x_l", "y_l", "x_u"}
    assert real["y_l"]["term"] == "classification"
    assert real["y_l"]["color"] == TERM_COLORS["classification"]
    assert real["y_u"]["term"] == "rate" and not real["y_u"]["shaded"]
    assert dream["x_u"]["term"] == dream["x_l"]["term"] == "distortion"
    assert kinds(spec, "real") == {
        ("x_l", "z_l"): "guide", ("y_l", "z_l"): "guide", ("x_u", "y_u"): "guide",
        ("x_u", "z_u"): "guide", ("y_u", "z_u"): "guide",
        ("x_l", "y_l"): "nature",  # the shown label, given its input
    }
    assert edges(spec, "dream") == {("z_l", "x_l"), ("y_l", "x_l"), ("z_u", "x_u"), ("y_u", "x_u")}
    assert real["x_l"]["plates"] == ["labelled"] and real["y_u"]["plates"] == ["unlabelled"]
    assert set(spec["worlds"]["real"]["plates"]) == {"labelled", "unlabelled"}
    assert_same_colour_both_worlds(spec)
    assert spec["objective"]["equation"] == "L = 2·D + 10·C + R"


def test_bnn_spec_global_latent_is_complexity():
    model, guide, args = bnn()
    spec = worlds_spec(model, guide, args, elbo=RateDistortionELBO(beta=0.1))
    real, dream = nodes(spec, "real"), nodes(spec, "dream")
    assert real["theta"]["term"] == dream["theta"]["term"] == "complexity"
    assert real["theta"]["color"] == TERM_COLORS["complexity"]
    assert real["theta"]["plates"] == [] and dream["y"]["plates"] == ["data"]
    # the guide reads no datum, but its parameters are fit to the data set:
    # D -> theta; and the model reads x to draw y: nature's x -> y
    assert kinds(spec, "real") == {
        ("x", "y"): "nature", ("x", "theta"): "fit", ("y", "theta"): "fit",
    }
    assert edges(spec, "dream") == {("theta", "y")}
    # the data set sits above the posterior fit to it, in both worlds
    assert spec["levels"] == {"x": 0, "y": 1, "theta": 2}
    assert real["x"]["shaded"] and real["x"]["term"] is None
    assert spec["objective"]["equation"] == "L = D + 0.1·S"


def test_diffusion_spec_chains_run_opposite_ways():
    model, guide, args = diffusion()
    spec = worlds_spec(model, guide, args)
    assert edges(spec, "real") == {("x", "z1"), ("z1", "z2"), ("z2", "z3")}
    assert edges(spec, "dream") == {("z3", "z2"), ("z2", "z1"), ("z1", "x")}
    assert spec["levels"] == {"x": 0, "z1": 1, "z2": 2, "z3": 3}
    assert all(e["upward"] for e in spec["worlds"]["dream"]["edges"])
    assert not any(e["upward"] for e in spec["worlds"]["real"]["edges"])
    assert {n["term"] for n in spec["worlds"]["dream"]["nodes"] if n["name"] != "x"} == {"rate"}
    assert_same_colour_both_worlds(spec)
    assert spec["objective"]["equation"] == "I[P;Q] = D + R + const"


def test_model_tag_on_latent_gets_its_own_colour():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0), infer={"kl_term": "nuisance"})
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.5 * x, 1.0))

    spec = worlds_spec(model, guide, (torch.randn(3),), elbo=WeightedELBO(weights={"nuisance": 3}))
    assert nodes(spec, "real")["z"]["term"] == nodes(spec, "dream")["z"]["term"] == "nuisance"
    assert nodes(spec, "real")["z"]["color"] == USER_TERM_COLORS[0]
    assert spec["objective"]["equation"] == "L = D + 3·nuisance"
    assert r"3\,\mathrm{nuisance}" in spec["objective"]["latex"]


def test_render_params_adds_parameter_nodes():
    model, guide, args = bnn()
    spec = worlds_spec(model, guide, args, render_params=True)
    params = {n["name"] for n in spec["worlds"]["real"]["nodes"] if n["kind"] == "param"}
    assert params == {"theta_loc", "theta_scale"}
    assert {("theta_loc", "theta"), ("theta_scale", "theta")} <= edges(spec, "real")
    assert not any(n["kind"] == "param" for n in spec["worlds"]["dream"]["nodes"])


def test_spec_leaves_random_state_and_gradients_alone():
    model, guide, args = vae()
    state = torch.get_rng_state()
    worlds_spec(model, guide, args)
    assert torch.equal(state, torch.get_rng_state())
    assert all(p.grad is None for p in pyro.get_param_store().values())


# ---- the derived objective ------------------------------------------------


# ---- DOT and files --------------------------------------------------------


def test_dot_source_without_writing():
    model, guide, args = vae()
    graph = render_worlds(model, guide, args, elbo=RateDistortionELBO(beta=0.37))
    source = graph.source
    for label in WORLD_LABELS.values():
        assert label in source
    assert "newrank=true" in source
    assert '"real/x" -> "real/z"' in source
    assert '"dream/x" -> "dream/z" [dir=back]' in source  # z -> x drawn upward
    assert source.count("rank=same") == 2
    assert "subgraph cluster_real_data" in source and "subgraph cluster_dream_data" in source
    assert "L = D + 0.37·R" in source and "I[P;Q] = D + R + const" in source


def test_render_distributions_labels():
    model, guide, args = vae()
    source = render_worlds(model, guide, args, render_distributions=True).source
    assert "~ Normal" in source and "~ data" in source


def test_writing_without_dot_raises_clearly(monkeypatch, tmp_path):
    model, guide, args = vae()
    monkeypatch.setattr(worlds_dot.shutil, "which", lambda name: None)
    graph = render_worlds(model, guide, args)  # no file: fine without dot
    assert "Dream world Q (model)" in graph.source
    with pytest.raises(RuntimeError, match="needs graphviz's `dot`"):
        render_worlds(model, guide, args, filename=str(tmp_path / "worlds.svg"))


def test_unknown_suffix_is_refused(tmp_path):
    model, guide, args = vae()
    with pytest.raises(ValueError, match="suffix"):
        render_worlds(model, guide, args, filename=str(tmp_path / "worlds.nope"))


@needs_dot
@pytest.mark.parametrize("triple", [vae, vib, semi_supervised, bnn, diffusion])
def test_writes_svg(triple, tmp_path):
    model, guide, args = triple()
    path = tmp_path / "worlds.svg"
    render_worlds(model, guide, args, filename=str(path))
    svg = path.read_text()
    assert "Real world P (data + guide)" in svg and "Dream world Q (model)" in svg
    assert "I[P;Q] =" in svg


@needs_dot
def test_writes_png(tmp_path):
    model, guide, args = vib()
    path = tmp_path / "vib.png"
    render_worlds(model, guide, args, filename=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_autoguide_joint_site_feeds_the_joint_term():
    from pyro.infer.autoguide import AutoMultivariateNormal

    model, _, args = global_local()
    guide = AutoMultivariateNormal(model)
    spec = worlds_spec(model, guide, args)
    latent = "_AutoMultivariateNormal_latent"
    real = nodes(spec, "real")
    # the joint latent is folded into the sites it produces: each feeds its term
    assert latent not in real
    assert real["mu"]["term"] == real["z"]["term"] == "joint"
    assert real["z"]["color"] == TERM_COLORS["joint"]
    assert real["mu"]["distribution"] == "MultivariateNormal"
    assert kinds(spec, "real") == {("x", "mu"): "fit", ("x", "z"): "fit"}
    assert edges(spec, "dream") == {("mu", "z"), ("z", "x")}
    objective = derive_objective(model, guide, args, elbo=RateDistortionELBO(beta=0.5))
    assert objective.sites_by_term["joint"] == (latent,)
    assert objective.weights["joint"] == 0.5  # it spans rate and complexity, both 0.5


# ---- graphviz's own layout, read back with dot -Tjson -----------------------


def laid_out(graph):
    """The picture as graphviz lays it out: nodes by id, arrows as drawn, caption lines."""
    layout = json.loads(
        subprocess.run(
            ["dot", "-Tjson"], input=graph.source, capture_output=True, text=True, check=True
        ).stdout
    )
    objects = {o["_gvid"]: o for o in layout["objects"]}
    nodes = {o["name"]: o for o in layout["objects"] if "nodes" not in o}
    arrows = {}
    for edge in layout.get("edges", []):
        if edge.get("style") == "invis":  # keeps a row in order; not drawn
            continue
        tail, head = objects[edge["tail"]]["name"], objects[edge["head"]]["name"]
        if edge.get("dir") == "back":  # laid out downward, the arrow points up
            tail, head = head, tail
        arrows[(tail, head)] = edge
    caption = [op["text"] for op in layout["_ldraw_"] if op["op"] == "T"]
    return nodes, arrows, caption


def height(node):
    return float(node["pos"].split(",")[1])  # graphviz's y grows upward


@needs_dot
def test_vib_real_world_draws_natures_x_to_y():
    recipe = VIB()
    data = recipe.make_data(num_data=8, seed=0)
    graph = render_worlds(recipe.model, recipe.guide, data, elbo=recipe.make_elbo())
    nodes, arrows, caption = laid_out(graph)
    nature = arrows[("real/x", "real/y")]
    assert nature["style"] == "bold" and nature["arrowhead"] == "empty"
    assert "style" not in arrows[("real/x", "real/z")]  # the encoder's edge is plain
    assert "dream/x" in nodes  # x ~ p(x), apart from (z, y)
    assert not any("dream/x" in arrow for arrow in arrows)
    assert height(nodes["real/x"]) > height(nodes["real/y"])
    assert any(line.startswith("nature's conditional") for line in caption)


@needs_dot
def test_bayes_data_set_comes_before_the_posterior_over_theta():
    recipe = BayesianInference()
    data = recipe.make_data(num_data=5, seed=0)
    graph = render_worlds(recipe.model, recipe.guide, data, elbo=recipe.make_elbo())
    nodes, arrows, caption = laid_out(graph)
    fit = arrows[("real/x", "real/theta")]
    assert fit["style"] == "dashed" and fit["ltail"] == "cluster_real_data"
    assert height(nodes["real/x"]) > height(nodes["real/theta"])
    # the dream world's story theta -> x, drawn pointing up at the same heights
    assert ("dream/theta", "dream/x") in arrows
    assert height(nodes["dream/theta"]) == height(nodes["real/theta"])
    assert any(line.startswith("fit to the data set") for line in caption)


@needs_dot
def test_semi_supervised_mask_is_not_drawn():
    recipe = SemiSupervisedVAE()
    x, y, labelled = recipe.make_data(num_data=16, seed=0)
    graph = render_worlds(recipe.model, recipe.guide, (x, y, labelled), elbo=recipe.make_elbo())
    nodes, arrows, _ = laid_out(graph)
    assert {name.split("/", 1)[1] for name in nodes} == {"x", "y", "z"}
    assert ("real/x", "real/y") in arrows  # the shown labels, given their inputs
    assert not any("labelled" in end for arrow in arrows for end in arrow)


@needs_dot
def test_weighted_objective_is_not_printed_as_the_identity():
    model, guide, args = vae()
    _, _, caption = laid_out(render_worlds(model, guide, args, elbo=RateDistortionELBO(0.37)))
    assert caption[0] == "L = D + 0.37·R"
    assert not any(line.startswith("I[P;Q] =") for line in caption)
    assert "with every weight 1 it is I[P;Q] = D + R + const" in caption[1]
    _, _, unit = laid_out(render_worlds(model, guide, args))
    assert unit[0] == "I[P;Q] = D + R + const" and unit[1].startswith("const = −H")


@needs_dot
def test_schedule_weight_says_what_it_is_and_its_value():
    model, guide, args = vae()
    elbo = RateDistortionELBO(beta=LinearWarmup(1.0, steps=300))
    elbo.step = 100
    _, _, caption = laid_out(render_worlds(model, guide, args, elbo=elbo))
    (weight,) = [line for line in caption if line.startswith("weight 0.333")]
    assert "now 0.333" in weight


@needs_dot
def test_enumerated_site_is_drawn_summed_out():
    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(2.0 * c - 1.0, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(logits=x), infer={"enumerate": "parallel"})

    spec = worlds_spec(model, guide, (torch.randn(3),))
    assert nodes(spec, "real")["c"]["summed_out"] and nodes(spec, "dream")["c"]["summed_out"]
    assert not nodes(spec, "real")["x"]["summed_out"]
    layout_nodes, _, caption = laid_out(render_worlds(model, guide, (torch.randn(3),)))
    for world in ("real", "dream"):
        assert layout_nodes[f"{world}/c"]["peripheries"] == "2"
        assert "summed out" in layout_nodes[f"{world}/c"]["label"]
    assert "peripheries" not in layout_nodes["real/x"]
    assert any("summed out exactly" in line and line.endswith(": c") for line in caption)


# ---- the same-data check, the height normalisation, render_model's options --


def test_guide_argument_named_otherwise_is_matched_to_its_observed_site():
    def model(data):
        with pyro.plate("N", len(data)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=data)

    def guide(data):
        with pyro.plate("N", len(data)):
            pyro.sample("z", dist.Normal(0.5 * data, 1.0))

    spec = worlds_spec(model, guide, (torch.randn(4),))
    assert set(nodes(spec, "real")) == {"x", "z"}  # one datum, under the site's name
    assert edges(spec, "real") == {("x", "z")}


def test_heights_start_at_zero_above_a_latent_drawn_from_nothing():
    # the guide draws a and b independently; the dream world has a -> b, so a
    # goes one above b, and the heights are shifted so that the top is 0
    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(a, 1.0))

    def guide():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, 1.0))

    spec = worlds_spec(model, guide)
    assert spec["levels"] == {"a": 0, "b": 1}
    (edge,) = spec["worlds"]["dream"]["edges"]
    assert not edge["upward"] and not edge["level"]


def test_render_deterministic_as_pyro_render_model():
    def model(x):
        with pyro.plate("data", len(x)):
            x = pyro.deterministic("x", x)  # nature's input: drawn either way
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            mean = pyro.deterministic("mean", 2.0 * z + x)
            pyro.sample("y", dist.Normal(mean, 1.0), obs=torch.zeros(len(x)))

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.1 * x, 1.0))

    args = (torch.randn(3),)
    hidden = worlds_spec(model, guide, args)
    assert set(nodes(hidden, "dream")) == {"x", "z", "y"}
    assert ("x", "y") in edges(hidden, "dream") and ("z", "y") in edges(hidden, "dream")
    shown = worlds_spec(model, guide, args, render_deterministic=True)
    assert set(nodes(shown, "dream")) == {"x", "z", "mean", "y"}
    assert {("z", "mean"), ("mean", "y")} <= edges(shown, "dream")
    source = render_worlds(model, guide, args, render_deterministic=True).source
    assert '"dream/mean" [label=mean' in source
    assert source.count("style=\"filled,dashed\"") == 1  # mean, as render_model draws it
    dream_x = nodes(shown, "dream")["x"]  # nature's x ~ p(x) in the dream world too: not dashed
    assert dream_x["from_nature"] and dream_x["distribution"] == "p(x)"


# ---- each variable once, named as the program names it, in its order --------


def names_drawn(layout_nodes, world):
    return [name.split("/", 1)[1] for name in layout_nodes if name.startswith(f"{world}/")]


@needs_dot
def test_m2_draws_each_variable_once_and_the_labels_parents():
    from pyro_kl.recipes import SemiSupervisedM2

    recipe = SemiSupervisedM2()
    data = recipe.make_data(num_data=16, seed=0)
    state = torch.get_rng_state()
    graph = render_worlds(recipe.model, recipe.guide, data, elbo=recipe.make_elbo())
    assert torch.equal(state, torch.get_rng_state())  # the parts were read without drawing
    layout_nodes, arrows, _ = laid_out(graph)
    real = names_drawn(layout_nodes, "real")
    # x is split by the mask into x_labelled and x: the argument itself is no variable
    assert sorted(real) == ["label", "x", "x_labelled", "y", "y_labelled", "z", "z_labelled"]
    assert not any("argument" in name for name in layout_nodes)
    # the encoder reads the labelled rows of x and the shown label, from its first record
    real_arrows = {(t.split("/")[1], h.split("/")[1]) for t, h in arrows if t.startswith("real/")}
    assert {("x_labelled", "z_labelled"), ("y_labelled", "z_labelled")} <= real_arrows
    assert {("x", "y"), ("x", "z"), ("y", "z")} <= real_arrows
    assert ("label", "z_labelled") not in real_arrows
    assert not {("x", "z_labelled"), ("x_labelled", "z")} & real_arrows
    # the dream world's copy of the label is read from the generated input, as in the model
    dream_arrows = {(t.split("/")[1], h.split("/")[1]) for t, h in arrows if t.startswith("dream/")}
    assert dream_arrows == {
        ("y_labelled", "x_labelled"), ("z_labelled", "x_labelled"), ("x_labelled", "label"),
        ("y", "x"), ("z", "x"),
    }


def regression(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(X @ w, 1.0), obs=y)


REGRESSION_DATA = (torch.randn(4, 3), torch.randn(4))


class Regression(pyro.nn.PyroModule):
    def forward(self, covariates, y):
        return regression(covariates, y)

    def method(self, inputs, y):
        return regression(inputs, y)


@needs_dot
@pytest.mark.parametrize(
    "model, name",
    [
        (regression, "X"),
        (functools.partial(lambda scale, X, y: regression(X * scale, y), 2.0), "X"),
        (Regression(), "covariates"),
        (Regression().method, "inputs"),
        (lambda *data: regression(*data), "data[0]"),
    ],
)
def test_inputs_are_named_from_the_signature(model, name):
    from pyro.infer.autoguide import AutoDiagonalNormal

    guide = AutoDiagonalNormal(model)  # its forward takes *args, so the model's names are used
    layout_nodes, arrows, _ = laid_out(render_worlds(model, guide, REGRESSION_DATA))
    assert f"real/{name}" in layout_nodes and f"dream/{name}" not in layout_nodes
    assert not any("arg0" in node for node in layout_nodes)
    assert arrows[(f"real/{name}", "real/y")]["style"] == "bold"  # nature's X -> y


def test_input_name_falls_back_to_its_position():
    from pyro_kl.worlds.provenance import _input_names

    names = _input_names([max], (torch.ones(1), torch.ones(1)), {"mask": torch.ones(1)})
    assert names == {0: "input 0", 1: "input 1", "mask": "mask"}


@needs_dot
@pytest.mark.parametrize(
    "autoguide, joint",
    [
        ("AutoDiagonalNormal", True),
        ("AutoMultivariateNormal", True),
        ("AutoLowRankMultivariateNormal", True),
        ("AutoNormal", False),
        ("AutoDelta", False),
    ],
)
def test_autoguide_latents_are_folded_into_the_model_sites(autoguide, joint):
    from pyro.infer import autoguide as autoguides

    model, _, args = global_local()
    guide = getattr(autoguides, autoguide)(model)
    spec = worlds_spec(model, guide, args)
    layout_nodes, arrows, caption = laid_out(render_worlds(model, guide, args))
    assert sorted(names_drawn(layout_nodes, "real")) == ["mu", "x", "z"]
    assert sorted(names_drawn(layout_nodes, "dream")) == ["mu", "x", "z"]
    assert not any("_Auto" in node or "_unconstrained" in node for node in layout_nodes)
    assert arrows[("real/x", "real/mu")]["style"] == "dashed"  # mu is fit to the data set
    real = nodes(spec, "real")
    if joint:  # one joint density over (mu, z): both feed its term, both fit to the data
        assert real["mu"]["term"] == real["z"]["term"] == "joint"
        assert real["mu"]["color"] == TERM_COLORS["joint"]
        (row,) = [row for row in spec["legend"] if row["term"] == "joint"]
        assert row["sites"] == ["mu", "z"]
        assert any(line == "sites: mu, z" for line in caption)
        assert ("real/x", "real/z") in arrows
    else:
        assert real["mu"]["term"] == "complexity" and real["z"]["term"] == "rate"
        assert_same_colour_both_worlds(spec)
    expected = "Delta" if autoguide == "AutoDelta" else ("Normal" if not joint else None)
    if expected:
        assert real["mu"]["distribution"] == expected


def hmm(steps=4):
    def model(xs):
        z = torch.tensor(0.0)
        for t in range(steps):
            z = pyro.sample(f"z_{t}", dist.Normal(0.9 * z, 1.0))
            pyro.sample(f"x_{t}", dist.Normal(z, 0.5), obs=xs[t])

    def guide(xs):
        z = torch.tensor(0.0)
        for t in range(steps):
            z = pyro.sample(f"z_{t}", dist.Normal(0.5 * z + 0.5 * xs[t], 1.0))

    return model, guide, (torch.randn(steps),)


def left(node):
    return float(node["pos"].split(",")[0])


@needs_dot
def test_hmm_chain_is_drawn_in_order():
    model, guide, args = hmm()
    spec = worlds_spec(model, guide, args)
    # each z_t reads its own x_t (found by changing xs[t]), and z_{t-1}
    assert kinds(spec, "real") == {
        **{(f"x_{t}", f"z_{t}"): "guide" for t in range(4)},
        **{(f"z_{t}", f"z_{t + 1}"): "guide" for t in range(3)},
    }
    layout_nodes, arrows, _ = laid_out(render_worlds(model, guide, args))
    assert "real/xs" not in layout_nodes
    for world in ("real", "dream"):
        xs = [layout_nodes[f"{world}/x_{t}"] for t in range(4)]
        assert len({height(x) for x in xs}) == 1
        assert [left(x) for x in xs] == sorted(left(x) for x in xs)
        zs = [left(layout_nodes[f"{world}/z_{t}"]) for t in range(4)]
        assert zs == sorted(zs)
    heights = [height(layout_nodes[f"real/z_{t}"]) for t in range(4)]
    assert heights == sorted(heights, reverse=True)  # the chain runs down the page


@needs_dot
def test_untagged_pair_draws_natures_x_to_y():
    model, guide, args = vib()  # the guide reads x, the model observes y, no tag
    layout_nodes, arrows, caption = laid_out(render_worlds(model, guide, args))
    nature = arrows[("real/x", "real/y")]
    assert nature["style"] == "bold" and nature["arrowhead"] == "empty"
    assert ("dream/x", "dream/y") not in arrows
    assert height(layout_nodes["real/x"]) > height(layout_nodes["real/y"])
    assert any(line.startswith("nature's conditional") for line in caption)


def test_parts_are_located_by_mask_row_or_run_and_never_guessed():
    from pyro_kl.worlds.parts import locate

    xs = torch.arange(12.0).reshape(4, 3)
    mask = torch.tensor([True, False, False, True])
    assert locate(xs[mask], xs, [mask]).tolist() == [True, False, False, True]
    assert locate(xs[~mask], xs, [mask]).tolist() == [False, True, True, False]
    assert locate(xs[2], xs, []).tolist() == [False, False, True, False]
    assert locate(xs[1:3], xs, []).tolist() == [False, True, True, False]
    assert locate(xs[1] + 0.5, xs, []) is None  # not a piece of it
    labels = torch.tensor([0, 1, 1, 2])
    assert locate(labels[1], labels, []) is None  # found twice: ambiguous, not taken
    assert locate(labels[:2], labels, []).tolist() == [True, True, False, False]
