"""The objective a (model, guide) pair derives: terms, weights, text and LaTeX."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_kl import LinearWarmup, RateDistortionELBO, TherMLELBO, WeightedELBO, derive_objective
from pyro_kl.weighting import Weighting
from pyro_kl.objective import elbo_weighting, objective_from, summed_out_sites, trace_pair
from pyro_kl.weighting import Controller

from .model_zoo import global_local


def test_unit_weights_give_the_identity_with_minus_the_data_entropy():
    model, guide, args = global_local()
    objective = derive_objective(model, guide, args)
    assert objective.weights == {"distortion": 1.0, "rate": 1.0, "complexity": 1.0}
    assert objective.unit_weights
    assert objective.equation == "I[P;Q] = D + R + S + const"
    assert objective.latex == r"I[P;Q] = D + R + S + \mathrm{const}"
    # Trace_ELBO's loss is I[P;Q] + H, so const is minus the entropy H
    assert "const = −H" in objective.relation and objective.relation in objective.text
    plain = derive_objective(model, guide, args, elbo=Trace_ELBO())
    assert plain == objective


def test_weighted_objective_is_a_lagrangian_not_the_identity():
    model, guide, args = global_local()
    objective = derive_objective(model, guide, args, elbo=RateDistortionELBO(beta=0.37))
    assert objective.sites_by_term == {
        "distortion": ("x",), "rate": ("z",), "complexity": ("mu",)
    }
    assert objective.weights == pytest.approx({"distortion": 1.0, "rate": 0.37, "complexity": 0.37})
    assert not objective.unit_weights
    assert objective.equation == "L = D + 0.37·(R + S)"
    assert not objective.equation.startswith("I[P;Q]")
    # one line relates it to I[P;Q], which holds only at unit weights
    assert objective.relation.startswith("weighted (a Lagrangian), not I[P;Q]")
    assert "with every weight 1 it is I[P;Q] = D + R + S + const" in objective.relation
    lines = objective.text.splitlines()
    assert lines[0] == objective.equation and lines[1].strip() == objective.relation
    assert len(lines) == 5
    assert "rate" in lines[3] and "0.37" in lines[3] and lines[3].endswith("sites: z")
    assert lines[4].endswith("sites: mu") and str(objective) == objective.text


def test_latex_holds_the_weights_and_renders_in_notebooks():
    model, guide, args = global_local()
    elbo = TherMLELBO(gamma=3.0, delta=0.25, sigma=0.5)
    objective = derive_objective(model, guide, args, elbo=elbo)
    assert objective.latex == r"\mathcal{L} = 0.25\,D + R + 0.5\,S"
    assert objective._repr_latex_() == f"${objective.latex}$"
    unit = derive_objective(model, guide, args, elbo=TherMLELBO())
    assert unit._repr_latex_() == r"$I[P;Q] = D + R + S + \mathrm{const}$"


def test_no_data_means_no_constant():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(0.5)), 1.0))

    objective = derive_objective(model, guide)
    assert objective.equation == "I[P;Q] = S"
    assert "const" not in objective.latex


def test_schedules_are_evaluated_and_described():
    model, guide, args = global_local()
    elbo = WeightedELBO(weights={"rate": LinearWarmup(1.0, steps=10)}, site_terms={"mu": "rate"})
    elbo.step = 5
    objective = derive_objective(model, guide, args, elbo=elbo)
    assert objective.sites_by_term == {"distortion": ("x",), "rate": ("mu", "z")}
    assert objective.weights["rate"] == pytest.approx(0.5)
    assert objective.equation == "L = D + 0.5·R"
    assert set(objective.weight_notes) == {"rate"}
    assert "0.5" in objective.weight_notes["rate"]
    rate_line = objective.text.splitlines()[3]
    assert objective.weight_notes["rate"] in rate_line
    elbo.step = 10
    assert derive_objective(model, guide, args, elbo=elbo).equation == "I[P;Q] = D + R + const"


def test_elbo_weights_come_through_one_typed_path():
    assert elbo_weighting(None) == (Weighting(), 0, {})
    assert elbo_weighting(Trace_ELBO()) == (Weighting(), 0, {})
    elbo = RateDistortionELBO(beta=0.5, site_terms={"z": "rate"})
    weighting = elbo_weighting(elbo)
    assert weighting.weighting is elbo.weighting
    assert weighting.weighting.weights == {"rate": 0.5, "complexity": 0.5}
    assert weighting.weighting.site_terms == {"z": "rate"} and weighting.step == 0

    class NotAnELBO:
        weights = {"rate": 0.1}

    with pytest.raises(ValueError, match="elbo must be a pyro.infer.ELBO"):
        elbo_weighting(NotAnELBO())


def test_guide_side_enumeration_is_summed_out():
    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(2.0 * c - 1.0, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(logits=x), infer={"enumerate": "parallel"})

    args = (torch.randn(4),)
    pair = trace_pair(model, guide, args)
    assert summed_out_sites(pair) == ("c",)
    objective = objective_from(pair)
    assert objective.summed_out == ("c",)
    assert objective.text.splitlines()[-1].endswith("summed out exactly (enumerated, not "
                                                    "sampled): c")

    def sampling_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(logits=x))

    sampled = derive_objective(model, sampling_guide, args)
    assert sampled.summed_out == () and "summed out" not in sampled.text


def test_bad_input_is_named():
    model, guide, args = global_local()
    with pytest.raises(ValueError, match="model_args must be a tuple"):
        derive_objective(model, guide, list(args))
    with pytest.raises(ValueError, match="elbo must be a pyro.infer.ELBO"):
        derive_objective(model, guide, args, elbo={"rate": 0.5})


def test_model_side_enumeration_is_summed_out():
    @pyro.infer.config_enumerate
    def mixture(x):
        weights = pyro.param("weights", torch.tensor([0.3, 0.7]),
                             constraint=dist.constraints.simplex)
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(weights))
            pyro.sample("x", dist.Normal(torch.tensor([-1.0, 2.0])[c], 1.0), obs=x)

    def no_guide(x):
        pass

    objective = derive_objective(mixture, no_guide, (torch.randn(4),))
    assert objective.summed_out == ("c",)
    assert objective.sites_by_term == {"distortion": ("x",)}
    assert objective.equation == "I[P;Q] = D + const"


class HalfOfTheEstimate(Controller):
    """A weight that responds to the term it weighs."""

    def weight(self, step, estimate):
        return 0.5 * estimate

    def describe(self, step, *, terms=()):
        return f"half of {' + '.join(terms)} per datapoint"


def test_controller_weight_is_the_one_used_at_the_last_step():
    model, guide, args = global_local()
    elbo = WeightedELBO(weights={"rate": HalfOfTheEstimate()})
    before = derive_objective(model, guide, args, elbo=elbo)
    assert before.weights["rate"] is None and before.equation == "L = D + S + ?·R"
    assert before.weight_notes == {"rate": "half of rate per datapoint"}
    elbo.loss_and_grads(model, guide, *args)
    after = derive_objective(model, guide, args, elbo=elbo)
    assert after.weights["rate"] == pytest.approx(elbo.last_weights["rate"])
    assert after.weights["rate"] != 1.0 and "half of rate per datapoint" in after.text


def test_a_controller_shared_by_two_terms_is_described_on_both():
    from pyro_kl.controllers import GECO

    model, guide, args = global_local()
    objective = derive_objective(model, guide, args, elbo=RateDistortionELBO(beta=GECO(3.0)))
    assert objective.weight_notes["rate"].startswith("GECO on R + S, target 3")
    assert objective.weight_notes["complexity"] == objective.weight_notes["rate"]
    assert not objective.unit_weights
