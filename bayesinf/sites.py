"""What a model's trace tells about its sites: which are latent, observed, deterministic, which
observed site reads which argument, and which observed sites are discrete."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .errors import InputError
from .inference.binding import BoundModel

__all__ = ["ModelSites", "inspect_model"]

#: Most classes reported for a count site; larger counts share the last class.
MAX_CLASSES = 256


@dataclass(frozen=True)
class ModelSites:
    """Sites of a model traced on its fit data.

    ``latent``: sample sites drawn by inference; ``row_latent``: the latent sites that live in a
    plate over the data rows (drawn afresh for new rows at predict time); ``observed``: sites with
    ``obs=``; ``observed_args``: observed site -> the model argument it observes;
    ``num_classes``: observed site -> classes for discrete sites (None if continuous);
    ``row_event_size``: observed site -> values per data row.
    """

    latent: tuple[str, ...]
    row_latent: tuple[str, ...]
    observed: tuple[str, ...]
    deterministic: tuple[str, ...]
    observed_args: Mapping[str, str] = field(default_factory=dict)
    num_classes: Mapping[str, int | None] = field(default_factory=dict)
    row_event_size: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else dict(v)) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: Mapping) -> "ModelSites":
        return cls(
            latent=tuple(d["latent"]), row_latent=tuple(d["row_latent"]), observed=tuple(d["observed"]),
            deterministic=tuple(d["deterministic"]), observed_args=dict(d["observed_args"]),
            num_classes={k: (None if v is None else int(v)) for k, v in d["num_classes"].items()},
            row_event_size={k: int(v) for k, v in d["row_event_size"].items()},
        )


def trace_model(model: BoundModel, arrays: Mapping[str, np.ndarray], seed: int = 0):
    """Run ``model`` once on ``arrays`` and return its NumPyro trace; errors name the data shapes."""
    from numpyro import handlers
    from numpyro.infer import init_to_uniform

    # Latent values come from ``init_to_uniform`` (as NUTS initializes), so improper priors,
    # which cannot be sampled, trace too.
    seeded = handlers.substitute(handlers.seed(model, seed), substitute_fn=init_to_uniform)
    try:
        return handlers.trace(seeded).get_trace(**arrays)
    except Exception as exc:
        shapes = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in arrays.items())
        raise InputError("model", f"raised {type(exc).__name__} when run on the data ({shapes}): "
                         f"{exc or type(exc).__doc__}") from exc


def _find_argument(value, arrays: Mapping[str, np.ndarray]) -> str | None:
    for name, array in arrays.items():
        if value is array:
            return name
    value = np.asarray(value)
    for name, array in arrays.items():
        if array.shape == value.shape and np.array_equal(array, value):
            return name
    return None


def abstract_trace(model: BoundModel, arrays: Mapping[str, np.ndarray]) -> dict:
    """The model's trace on its data with latent values abstract: the model runs under
    ``jax.eval_shape``, so nothing is computed or compiled (an eager trace compiles every
    operation it meets, about half a second for a small model in a new process).

    Sites keep ``type``, ``is_observed``, ``cond_indep_stack``, ``fn`` (distribution parameters
    may be abstract: read shapes and supports only) and ``value``: the array given as ``obs=``
    for observed sites, a ``jax.ShapeDtypeStruct`` for the others.
    """
    import jax
    from numpyro import handlers
    from numpyro.infer import init_to_uniform

    box = {}

    def run():
        seeded = handlers.substitute(handlers.seed(model, 0), substitute_fn=init_to_uniform)
        box["trace"] = handlers.trace(seeded).get_trace(**arrays)

    jax.eval_shape(run)
    out = {}
    for name, site in box["trace"].items():
        value = site.get("value")
        if isinstance(value, jax.core.Tracer):
            value = jax.ShapeDtypeStruct(value.shape, value.dtype)
        out[name] = {**site, "value": value}
    return out


def inspect_model(model: BoundModel, arrays: Mapping[str, np.ndarray]) -> tuple[ModelSites, object]:
    """Trace the model on its data; return its ``ModelSites`` and the trace (values of latent
    sites may be ``jax.ShapeDtypeStruct``: read their shapes only)."""
    try:
        return _inspect(abstract_trace(model, arrays), arrays)
    except Exception:
        # Observed values computed inside the model, or Python control flow on values, need
        # the concrete trace; so do the error messages, which name the data.
        return _inspect(trace_model(model, arrays), arrays)


def _inspect(trace, arrays) -> tuple[ModelSites, object]:
    import jax

    latent, observed, deterministic = [], [], []
    observed_args, num_classes = {}, {}
    for name, site in trace.items():
        if site["type"] == "deterministic":
            deterministic.append(name)
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            if isinstance(site["value"], (jax.core.Tracer, jax.ShapeDtypeStruct)):
                raise TypeError(f"the observed value of '{name}' is computed in the model")
            observed.append(name)
            arg = _find_argument(site["value"], arrays)
            if arg is not None:
                observed_args[name] = arg
            _check_observed_shape(name, site, arg, arrays)
            num_classes[name] = _num_classes(site)
        else:
            _check_continuous(name, site)
            latent.append(name)
    if not observed:
        raise InputError("model", "has no observed site", "a numpyro.sample(..., obs=...) statement",
                         "bayesinf fits models conditioned on data.")
    if not latent:
        raise InputError("model", "has no latent sample site", "at least one parameter to infer")
    return ModelSites(tuple(latent), (), tuple(observed), tuple(deterministic), observed_args, num_classes, {}), trace


def _check_continuous(name: str, site) -> None:
    """A discrete latent site cannot be sampled by NUTS or fitted by SVI's guides; NumPyro would
    enumerate it only when marked so and when ``funsor`` is installed."""
    support = getattr(site["fn"], "support", None)
    if not getattr(support, "is_discrete", False):
        return
    if site.get("infer", {}).get("enumerate") is None:
        raise InputError("model", f"has the discrete latent site '{name}'", "continuous latent sites",
                         "Marginalize it out of the model (sum its probabilities into the likelihood), or mark it "
                         "infer={'enumerate': 'parallel'} and install funsor for NumPyro to enumerate it.")
    try:
        import funsor  # noqa: F401
    except ImportError:
        raise InputError("model", f"marks the discrete latent site '{name}' for enumeration, which needs funsor",
                         hint="pip install funsor") from None


def with_rows(sites: ModelSites, trace, num_rows: int) -> ModelSites:
    """Fill in the row-dependent facts once the number of data rows is known."""
    row_latent = tuple(
        n for n in sites.latent
        if num_rows > 1 and any(f.size == num_rows for f in trace[n]["cond_indep_stack"])
    )
    sizes = {}
    for n in sites.observed:
        shape = np.shape(trace[n]["value"])
        sizes[n] = int(np.prod(shape[1:])) if shape and shape[0] == num_rows else int(np.prod(shape) or 1)
    return ModelSites(sites.latent, row_latent, sites.observed, sites.deterministic, sites.observed_args,
                      sites.num_classes, sizes)


def _check_observed_shape(name: str, site, arg: str | None, arrays) -> None:
    """The observed value must have the shape the site's distribution gives it (batch + event)."""
    fn = site["fn"]
    expected = tuple(fn.batch_shape) + tuple(fn.event_shape)
    got = tuple(np.shape(site["value"]))
    try:
        np.broadcast_shapes(expected, got)
        compatible = len(got) >= len(expected) or not expected
    except ValueError:
        compatible = False
    if not compatible or (got and expected and got[0] != expected[0] and expected[0] != 1):
        others = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in arrays.items() if k != arg)
        raise InputError(arg or name, f"has shape {got} but the model's site '{name}' has shape {expected} "
                         f"(given {others})", "the same number of rows in every row argument")


def _num_classes(site) -> int | None:
    fn = site["fn"]
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    if not fn.support.is_discrete:
        return None
    name = type(fn).__name__
    if name.startswith("Bernoulli"):
        return 2
    if name.startswith("Categorical"):
        return int(np.shape(getattr(fn, "probs", getattr(fn, "logits", None)))[-1])
    if name.startswith("Binomial") and np.size(fn.total_count):
        return int(min(np.max(fn.total_count) + 1, MAX_CLASSES))
    return int(min(np.max(np.asarray(site["value"])) * 2 + 2, MAX_CLASSES))
