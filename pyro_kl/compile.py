"""Compiled training: trace a model/guide pair once with Pyro, then run plain tensor code.

:class:`CompiledSVI` is a drop-in for :class:`pyro.infer.SVI` with a
:class:`~pyro_kl.WeightedELBO` loss (any preset). For each new *structure*
(the shapes, dtypes and devices of the step's tensor arguments, its other
arguments, the param store's names and the set of terms whose weight is 0) it

1. takes one ordinary eager step through Pyro (validation, parameter
   initialisation, term assignment, plates and enumeration are decided there);
2. records the loss computation of that step as a graph of tensor operations
   with :func:`torch.fx.experimental.proxy_tensor.make_fx`: Pyro's effect
   handlers run at trace time like JAX's tracing, so only the tensor
   operations are kept, with the parameters (the param store's unconstrained
   tensors, which include every ``pyro.module`` parameter) and the tensor
   arguments as the graph's inputs;
3. compiles that graph with :func:`torch.compile` (``fullgraph=True``, no
   graph breaks: Pyro is no longer in it) and runs every later step of that
   structure through it.

The graph returns each term's value and its surrogate; the weights (constants,
schedules, controllers) are applied outside it, by the same rules as the eager
ELBO, so a weight that changes at every step never recompiles. Random numbers
are drawn by the same ATen operators in the same order as in eager mode
(inductor's ``fallback_random``), so under the same seed a compiled step gives
the eager step's loss and gradients, to float tolerance.

Structure that the cheap key cannot see is refused at trace time: a model that
reads a tensor's value in Python (``if x.sum() > 0``, ``.item()``) may change
its structure from step to step, so tracing it fails and :class:`CompiledSVI`
warns and keeps training on the eager path. A structure key never seen before
is traced again, with a warning, up to ``max_structures`` of them; beyond that
every step is eager, with a warning.
"""

import warnings
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import pyro
import torch
from pyro.optim import PyroOptim
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as pytree

from ._checks import whole_number
from .elbo import WeightedELBO
from .estimate import Estimate, particle_terms
from .estimators import check_finite, mean_of
from .terms import num_datapoints

__all__ = ["CompiledSVI", "CompileFallbackWarning"]

_MODES = {
    None: {},
    "default": {},
    "reduce-overhead": {"triton.cudagraphs": True},
    "max-autotune-no-cudagraphs": {"max_autotune": True},
    "max-autotune": {"max_autotune": True, "triton.cudagraphs": True},
}


class CompileFallbackWarning(UserWarning):
    """A compiled step re-traced its model or fell back to Pyro's eager path."""


class _Traced:
    """One traced structure: its graph (compiled lazily), terms, sites and weighting facts."""

    def __init__(self, graph, full, names, terms, sites, assignment, num_data, trainable, zero):
        self.graph = graph  # params, tensors -> values, surrogates, summands
        self.full = full  # params, tensors, weights -> values, summands, gradients
        self.param_names = names
        self.terms = terms  # term names, in the order of the graph's value vector
        self.sites = sites  # (site, term) of each summand, for error messages
        self.assignment = assignment
        self.num_data = num_data
        self.trainable = trainable
        self.zero = zero  # terms of weight 0, left out of the surrogate


class _LazyTerms(Mapping):
    """Term name -> float, read from the device only when first looked at."""

    def __init__(self, names: List[str], values: torch.Tensor):
        self._names = names
        self._values = values
        self._floats: Optional[Dict[str, float]] = None

    def _read(self) -> Dict[str, float]:
        if self._floats is None:
            self._floats = dict(zip(self._names, self._values.tolist()))
        return self._floats

    def __getitem__(self, key):
        return self._read()[key]

    def __iter__(self) -> Iterator:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return repr(self._read())


def _particle_terms(elbo: WeightedELBO, model, guide, args, kwargs):
    """One call's unweighted terms (tensors), with the facts the weighting needs."""
    particles, first, trainable = [], None, False
    for pair in elbo._traced_pairs(model, guide, args, kwargs):
        first = pair if first is None else first
        particles.append(particle_terms(pair, use_analytic_kl=elbo.analytic_kl))
        trainable = trainable or any(
            site["type"] == "param"
            for trace in (pair.model_trace, pair.guide_trace)
            for site in trace.nodes.values()
        )
    terms = mean_of(particles, elbo.num_particles)
    return terms, first.assignment, num_datapoints(first.model_trace), trainable


def _backend_options(mode: Optional[str]) -> Dict[str, Any]:
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r}; use one of {sorted(m for m in _MODES if m)} or None.")
    return {"fallback_random": True, **_MODES[mode]}


class CompiledSVI:
    r"""Stochastic variational inference whose steps run as one compiled graph.

    A drop-in for :class:`pyro.infer.SVI` (same arguments, same ``step``)
    for models of static structure; see :mod:`pyro_kl.compile` for what it
    does. Under the same seed it takes the same steps as
    ``SVI(model, guide, optim, loss)``, to float tolerance: terms, weights,
    schedules and controllers included. :attr:`~pyro_kl.WeightedELBO.last_terms`
    is read from the device lazily, when looked at (controllers, and Pyro's
    validation on the CPU, read the terms at every step: a non-finite loss is
    reported with its sites, as in eager mode).

    :param model: the model (dream world).
    :param guide: the guide (the real world's latent part).
    :param optim: a :class:`pyro.optim.PyroOptim` (as for ``SVI``) or a
        :class:`torch.optim.Optimizer` over the parameters.
    :param loss: a :class:`~pyro_kl.WeightedELBO` (or a preset).
    :param str mode: :func:`torch.compile`'s ``mode`` (``"reduce-overhead"``
        uses CUDA graphs on a GPU).
    :param str backend: :func:`torch.compile`'s backend (default ``"inductor"``).
    :param int max_structures: how many structures are traced before every
        step falls back to the eager path.
    :param bool compile: ``False`` runs the traced graph without compiling it
        (for debugging).

    Example (needs inductor's C++ toolchain; tests/test_compile.py runs the same)::

        elbo = RateDistortionELBO(beta=0.5)
        svi = CompiledSVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), elbo)
        for x, y in batches:
            loss = svi.step(x, y)  # a 0-d tensor; float(loss) reads it
        print(elbo.last_terms)
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim: Any,
        loss: WeightedELBO,
        *,
        mode: Optional[str] = None,
        backend: str = "inductor",
        max_structures: int = 8,
        compile: bool = True,
    ):
        if not isinstance(loss, WeightedELBO):
            raise TypeError(
                f"CompiledSVI needs a pyro_kl WeightedELBO (or a preset) as loss, got "
                f"{type(loss).__name__}; e.g. loss=RateDistortionELBO(beta=1.0)."
            )
        if getattr(loss, "rao_blackwell", False):
            raise ValueError(
                "CompiledSVI does not run rao_blackwell=True (TraceGraph_ELBO's estimator): "
                "its provenance tensors and baselines stay on the eager path. Train this ELBO "
                "with pyro.infer.SVI, or build it with rao_blackwell=False for CompiledSVI."
            )
        if not isinstance(optim, (PyroOptim, torch.optim.Optimizer)):
            raise TypeError(
                f"optim must be a pyro.optim optimizer or a torch.optim.Optimizer, got "
                f"{type(optim).__name__}; e.g. pyro.optim.Adam({{'lr': 1e-3}})."
            )
        self.model, self.guide, self.optim, self.loss = model, guide, optim, loss
        self._options = _backend_options(mode)
        if not (isinstance(backend, str) or callable(backend)):
            raise TypeError(
                f"backend={backend!r}; pass a torch.compile backend's name (e.g. 'inductor', "
                "'aot_eager'; torch._dynamo.list_backends() lists them) or a backend callable."
            )
        self.backend = backend
        self.max_structures = whole_number(
            "max_structures", max_structures, minimum=1,
            meaning="how many structures are traced before the eager path",
        )
        self.compile = compile
        self._traced: Dict[tuple, Optional[_Traced]] = {}
        self._eager_only = False
        self.compile_seconds: Dict[tuple, float] = {}

    # ---- one step -------------------------------------------------------

    def step(self, *args, **kwargs) -> torch.Tensor:
        """Takes one gradient step on the weighted loss.

        :returns: the weighted loss of this step as a detached 0-d tensor.
        """
        leaves, spec = pytree.tree_flatten((args, kwargs))
        key = self._key(leaves, spec)
        if key is None or self._eager_only:
            return self._eager_step(args, kwargs)
        if key not in self._traced:
            if len(self._traced) >= self.max_structures:
                self._eager_only = True
                warnings.warn(
                    f"CompiledSVI has traced {len(self._traced)} structures (max_structures); "
                    "the model's structure keeps changing, so every further step runs on "
                    "Pyro's eager path. Keep shapes fixed (e.g. drop_last=True) or raise "
                    "max_structures.", CompileFallbackWarning, stacklevel=2,
                )
                return self._eager_step(args, kwargs)
            if self._traced:
                warnings.warn(
                    "CompiledSVI: the step's structure changed (argument shapes, dtypes or "
                    "devices, the param store, or which weights are 0); tracing and "
                    "compiling it again.", CompileFallbackWarning, stacklevel=2,
                )
            loss = self._eager_step(args, kwargs)  # Pyro decides the structure here
            key = self._key(leaves, spec)  # the step may have created parameters
            self._traced[key] = self._trace(leaves, spec)
            return loss
        traced = self._traced[key]
        if traced is None:
            return self._eager_step(args, kwargs)
        return self._compiled_step(traced, leaves)

    def _key(self, leaves: list, spec) -> Optional[tuple]:
        parts: List[Any] = [spec, torch.is_grad_enabled(), pyro.infer.util.is_validation_enabled()]
        for leaf in leaves:
            if torch.is_tensor(leaf):
                parts.append((tuple(leaf.shape), leaf.dtype, leaf.device, leaf.requires_grad))
            else:
                try:
                    hash(leaf)
                except TypeError:
                    return None
                parts.append((type(leaf), leaf))
        parts.append(tuple(pyro.get_param_store().keys()))
        fixed = self.loss.weighting.at(self.loss.step)
        parts.append(frozenset(t for t, w in fixed.items() if w == 0.0))
        return tuple(parts)

    def _eager_step(self, args, kwargs) -> torch.Tensor:
        """Pyro's SVI step, through the ELBO's own path."""
        with pyro.poutine.trace(param_only=True) as capture:
            loss = self.loss.loss_and_grads(self.model, self.guide, *args, **kwargs)
        params = [site["value"].unconstrained() for site in capture.trace.nodes.values()]
        self._used_names = list(capture.trace.nodes)
        self._update(params)
        return torch.as_tensor(loss)

    def _update(self, params: List[torch.Tensor]) -> None:
        if isinstance(self.optim, PyroOptim):
            self.optim(set(params))
        else:
            self.optim.step()
        for p in params:
            p.grad = None

    # ---- tracing --------------------------------------------------------

    def _trace(self, leaves: list, spec) -> Optional[_Traced]:
        store = pyro.get_param_store()
        names = [n for n in self._used_names if n in store]
        unconstrained = dict(store.named_parameters())
        params = [unconstrained[n] for n in names]
        tensor_at = [i for i, leaf in enumerate(leaves) if torch.is_tensor(leaf)]
        info: Dict[str, Any] = {}
        fixed = self.loss.weighting.at(self.loss.step)
        zero = frozenset(t for t, w in fixed.items() if w == 0.0)

        def forward(params: List[torch.Tensor], tensors: List[torch.Tensor]):
            filled = list(leaves)
            for i, tensor in zip(tensor_at, tensors):
                filled[i] = tensor
            args, kwargs = pytree.tree_unflatten(filled, spec)
            terms, assignment, num_data, trainable = _particle_terms(
                self.loss, self.model, self.guide, args, kwargs
            )
            order = list(terms.values)
            info.update(terms=order, assignment=assignment, num_data=num_data,
                        trainable=trainable, sites=[(n, t) for n, t, _ in terms.contributions])
            like = next(iter(terms.values.values()))
            surrogates = [
                terms.surrogates[t] if t in terms.surrogates and t not in zero
                else torch.zeros_like(like) for t in order
            ]
            return (
                torch.stack([torch.as_tensor(terms.values[t]).detach() for t in order]),
                torch.stack(surrogates),
                torch.stack([v.detach() for _, _, v in terms.contributions]),
            )

        tensors = [leaves[i] for i in tensor_at]
        devices = [t.device for t in params + tensors if t.device.type == "cuda"]
        try:
            with torch.random.fork_rng(devices=sorted(set(devices), key=str)), \
                    pyro.validation_enabled(False):
                graph = make_fx(forward)(params, tensors)
        except RuntimeError as error:
            if "_local_scalar_dense" not in str(error) and "data-dependent" not in str(error):
                raise
            warnings.warn(
                "CompiledSVI cannot trace this model: it reads a tensor's value in Python "
                "(an `if` on a tensor, .item(), .tolist()), so its structure may change from "
                "step to step. Training continues on Pyro's eager path for this structure.",
                CompileFallbackWarning, stacklevel=3,
            )
            return None
        full = None
        if info["trainable"] and params and not self.loss.weighting.controllers:
            full = self._trace_full(graph, params, tensors, len(info["terms"]), devices)
        graph = self._compile(graph)
        full = None if full is None else self._compile(full)
        return _Traced(graph, full, names, info["terms"], info["sites"], info["assignment"],
                       info["num_data"], info["trainable"], zero)

    def _trace_full(self, forward, params, tensors, num_terms, devices):
        """The whole step as one graph: terms, summands and the weighted gradients.

        Weights are an input, so it serves steps whose weights are known before the
        loss (constants and schedules); a controller's weight depends on this step's
        terms, and those steps use the forward graph and autograd instead.
        """
        def step(params, tensors, weights):
            values, surrogates, summands = forward(params, tensors)
            grads = torch.autograd.grad((weights * surrogates).sum(), params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            return values, summands, grads

        weights = torch.ones(num_terms, dtype=params[0].dtype, device=params[0].device)
        with torch.random.fork_rng(devices=sorted(set(devices), key=str)):
            return make_fx(step)(params, tensors, weights)

    def _compile(self, graph):
        if not self.compile:
            return graph
        options = self._options if self.backend == "inductor" else None
        return torch.compile(graph, backend=self.backend, fullgraph=True, dynamic=False,
                             options=options)

    # ---- a compiled step ------------------------------------------------

    def _compiled_step(self, traced: _Traced, leaves: list) -> torch.Tensor:
        elbo = self.loss
        store = pyro.get_param_store()
        unconstrained = dict(store.named_parameters())
        params = [unconstrained[n] for n in traced.param_names]
        tensors = [leaf for leaf in leaves if torch.is_tensor(leaf)]
        step = elbo.step
        controllers = elbo.weighting.controllers
        full = traced.full if not controllers else None
        if self._options.get("triton.cudagraphs"):
            torch.compiler.cudagraph_mark_step_begin()
        if full is not None:  # the weights are known before the loss: one graph
            weights, offset = elbo.weighting.resolve(
                {t: 0.0 for t in traced.terms}, traced.assignment, step, traced.num_data
            )
            w = torch.tensor([weights[t] for t in traced.terms], dtype=params[0].dtype,
                             device=params[0].device)
            with torch.no_grad():
                values, summands, grads = full(params, tensors, w)
            surrogates = None
        else:
            values, surrogates, summands = traced.graph(params, tensors)
        if values.device.type != "cpu":  # CUDA graphs overwrite their outputs at the next step
            values, summands = values.clone(), summands.clone()
        needs_floats = bool(controllers) or (
            values.device.type == "cpu" or pyro.infer.util.is_validation_enabled()
        )
        terms: Mapping[str, float] = (
            dict(zip(traced.terms, values.tolist())) if needs_floats
            else _LazyTerms(traced.terms, values)
        )
        if full is None:
            as_floats = terms if needs_floats else {t: 0.0 for t in traced.terms}
            weights, offset = elbo.weighting.resolve(
                as_floats, traced.assignment, step, traced.num_data
            )
            w = torch.tensor([weights[t] for t in traced.terms], dtype=values.dtype,
                             device=values.device)
        if needs_floats:
            loss_float = sum(weights[t] * v for t, v in terms.items() if weights[t] != 0.0)
            check_finite(loss_float + offset, [
                (n, t, v) for (n, t), v in zip(traced.sites, summands.tolist())
            ])
            loss = torch.tensor(loss_float + offset)
        else:
            loss = (w * values).sum() + offset
        if full is not None:
            for p, g in zip(params, grads):
                p.grad = g
        elif traced.trainable:
            (w * surrogates).sum().backward()
        elbo._record(Estimate(loss, None, terms, dict(weights), traced.trainable,
                              traced.num_data, [], tuple(params)))
        self._update(params)
        return loss.detach()
