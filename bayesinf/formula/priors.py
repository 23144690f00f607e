"""Priors of formula models: a small JSON-able ``Prior`` value, and the default priors, which are
weakly informative and scaled to the data.

Default rule (after rstanarm's autoscaling and Bambi's intercept rule). Let ``s_y`` be the sd of
the response for a gaussian or student_t family with identity link, and 1 otherwise (the logit,
probit and log links already put the linear predictor on a unit scale); ``m_y`` the mean of the
response for those identity-link families, 0 otherwise; ``s_j`` and ``m_j`` the sd and mean of
design column ``j`` (``s_j = 1`` where a column is constant).

- coefficient of column ``j``: ``Normal(0, 2.5 * s_y / s_j)``;
- ``Intercept``: ``Normal(m_y, sqrt((2.5 s_y)^2 + sum_j (2.5 s_y m_j / s_j)^2))`` -- the intercept is
  the prediction at x = 0, not at the means, so its prior widens with the columns' means;
- sd of a group-level effect on column ``j`` (1 for an intercept): ``HalfNormal(2.5 * s_y / s_j)``;
- correlations of a correlated group term: ``LKJ(eta=1)`` (uniform over correlation matrices);
- ``sigma`` (gaussian, student_t): ``Exponential(1 / s_y)``; ``nu`` (student_t): ``Gamma(2, 0.1)``;
  ``alpha`` (negative binomial concentration) and ``shape`` (gamma): ``Exponential(1)``.

Every prior can be replaced by name (``Model.from_formula(..., priors={"floor": Prior("normal",
mu=0, sigma=10)})``); ``Model.priors`` lists the names and the priors in use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import InputError

__all__ = ["Prior", "DISTRIBUTIONS", "default_priors", "scale_of_response"]

#: Prior families and their parameters, in order.
DISTRIBUTIONS = {
    "normal": ("mu", "sigma"),
    "student_t": ("nu", "mu", "sigma"),
    "cauchy": ("mu", "sigma"),
    "laplace": ("mu", "b"),
    "halfnormal": ("sigma",),
    "halfcauchy": ("sigma",),
    "halfstudent_t": ("nu", "sigma"),
    "exponential": ("rate",),
    "gamma": ("alpha", "beta"),
    "inverse_gamma": ("alpha", "beta"),
    "lognormal": ("mu", "sigma"),
    "uniform": ("lower", "upper"),
    "flat": (),
    "lkj": ("eta",),
}
_POSITIVE = {"halfnormal", "halfcauchy", "halfstudent_t", "exponential", "gamma", "inverse_gamma", "lognormal"}
#: Parameters that must be > 0, and what they are (scales, rates, degrees of freedom, shapes).
_MUST_BE_POSITIVE = {"sigma": "a scale", "b": "a scale", "rate": "an inverse scale", "nu": "degrees of freedom",
                     "alpha": "a shape", "beta": "an inverse scale", "eta": "the LKJ concentration"}


@dataclass(frozen=True)
class Prior:
    """A prior distribution, as plain values: ``Prior("normal", mu=0, sigma=2.5)``.

    ``"flat"`` is an improper flat prior over the parameter's support (as Stan's default);
    ``"lkj"`` is for the correlations of a correlated group term. Parameters may be scalars or
    sequences (one value per column of a categorical term).

    Raises
    ------
    InputError
        Unknown distribution, missing or extra parameters, a parameter that is not finite numbers,
        a scale (``sigma``, ``b``), rate, shape, degrees of freedom or ``eta`` that is not > 0, or
        a ``"uniform"`` with ``upper <= lower``; the error names the parameter.
    """

    dist: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __init__(self, dist: str, **params):
        if dist not in DISTRIBUTIONS:
            raise InputError("dist", f"of Prior is {dist!r}", f"one of {sorted(DISTRIBUTIONS)}")
        expected = DISTRIBUTIONS[dist]
        if set(params) != set(expected):
            raise InputError("params", f"of Prior({dist!r}) are {sorted(params)}", f"exactly {list(expected)}")
        values = {k: _check_numbers(dist, k, v) for k, v in params.items()}
        if dist == "uniform" and not np.all(values["lower"] < values["upper"]):
            raise InputError("upper", f"of Prior('uniform') is {params['upper']!r}, not above "
                             f"lower={params['lower']!r}", "upper > lower (elementwise)")
        object.__setattr__(self, "dist", dist)
        object.__setattr__(self, "params", {k: _plain(params[k]) for k in expected})

    def __repr__(self):
        inner = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        return f"Prior({self.dist!r}{', ' if inner else ''}{inner})"

    def __hash__(self):
        return hash((self.dist, repr(self.params)))

    @property
    def is_positive(self) -> bool:
        return self.dist in _POSITIVE

    def to_json(self) -> dict:
        return {"dist": self.dist, **self.params}

    @classmethod
    def from_json(cls, d: Mapping) -> "Prior":
        d = dict(d)
        return cls(d.pop("dist"), **d)

    def distribution(self, shape: tuple[int, ...] = (), support: str = "real"):
        """The NumPyro distribution, batch shape ``shape`` folded into the event (one site).

        ``support`` ("real" or "positive") is the parameter's support, used by ``"flat"``.
        """
        import jax.numpy as jnp
        import numpyro.distributions as dist
        from numpyro.distributions import constraints

        p = {k: jnp.asarray(v, dtype=jnp.result_type(float)) for k, v in self.params.items()}
        if self.dist == "flat":
            domain = constraints.positive if support == "positive" else constraints.real
            return dist.ImproperUniform(domain, batch_shape=(), event_shape=tuple(shape))
        base = {
            "normal": lambda: dist.Normal(p["mu"], p["sigma"]),
            "student_t": lambda: dist.StudentT(p["nu"], p["mu"], p["sigma"]),
            "cauchy": lambda: dist.Cauchy(p["mu"], p["sigma"]),
            "laplace": lambda: dist.Laplace(p["mu"], p["b"]),
            "halfnormal": lambda: dist.HalfNormal(p["sigma"]),
            "halfcauchy": lambda: dist.HalfCauchy(p["sigma"]),
            "halfstudent_t": lambda: dist.FoldedDistribution(dist.StudentT(p["nu"], 0.0, p["sigma"])),
            "exponential": lambda: dist.Exponential(p["rate"]),
            "gamma": lambda: dist.Gamma(p["alpha"], p["beta"]),
            "inverse_gamma": lambda: dist.InverseGamma(p["alpha"], p["beta"]),
            "lognormal": lambda: dist.LogNormal(p["mu"], p["sigma"]),
            "uniform": lambda: dist.Uniform(p["lower"], p["upper"]),
        }
        if self.dist == "lkj":
            raise InputError("prior", "'lkj' is only for the correlations of a correlated group term")
        d = base[self.dist]()
        if support == "positive" and not self.is_positive and self.dist != "uniform":
            raise InputError("prior", f"{self!r} is for a real parameter, but this parameter is positive",
                             "a positive prior such as Prior('halfnormal', sigma=1)")
        return d.expand(tuple(shape)).to_event(len(shape)) if shape else d


def _check_numbers(dist: str, name: str, value) -> np.ndarray:
    """``value`` as a float array; raises ``InputError`` naming the parameter unless it holds finite
    numbers (and numbers > 0 for a scale, rate, shape, concentration or degrees of freedom)."""
    try:
        if isinstance(value, (bool, np.bool_, str, bytes)):
            raise TypeError(type(value).__name__)
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(name, f"of Prior({dist!r}) is {value!r}", "a number or a sequence of numbers") from None
    if not np.all(np.isfinite(array)):
        raise InputError(name, f"of Prior({dist!r}) is {value!r}", "finite numbers")
    if name in _MUST_BE_POSITIVE and not np.all(array > 0):
        raise InputError(name, f"of Prior({dist!r}) is {value!r}",
                         f"numbers > 0 ({name} is {_MUST_BE_POSITIVE[name]})")
    return array


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _short(v):
    if isinstance(v, list):
        return "[" + ", ".join(f"{x:.3g}" for x in v[:4]) + (", ...]" if len(v) > 4 else "]")
    return f"{v:.4g}" if isinstance(v, float) else repr(v)


def scale_of_response(y: np.ndarray, unit_scale: bool) -> tuple[float, float]:
    """``(m_y, s_y)`` of the default rule (module docstring)."""
    if unit_scale:
        return 0.0, 1.0
    y = np.asarray(y, dtype=float)
    sd = float(np.std(y, ddof=1)) if y.size > 1 else 0.0
    return float(np.mean(y)), sd if sd > 0 else 1.0


def _column_scales(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column means, sds (1 where constant) and which columns are constant."""
    if matrix.shape[0] > 1:
        sd = np.std(matrix, axis=0, ddof=1)
    else:
        sd = np.zeros(matrix.shape[1])
    mean = matrix.mean(axis=0) if matrix.shape[0] else np.zeros(matrix.shape[1])
    constant = sd <= 1e-12 * np.maximum(1.0, np.abs(mean))
    return mean, np.where(constant, 1.0, sd), constant


def default_priors(design, X: np.ndarray, Z_by_term: list[np.ndarray], y: np.ndarray, family, link: str) -> dict:
    """Default priors by parameter name, following the rule of the module docstring.

    Parameters
    ----------
    design : Design
    X : np.ndarray, (rows, p)
        Fixed-effects design matrix.
    Z_by_term : list of np.ndarray, each (rows, k_t)
        Varying-effects design of each group term.
    y : np.ndarray, (rows,)
    family : Family
    link : str
    """
    m_y, s_y = scale_of_response(y, family.is_unit_scale(link))
    priors: dict[str, Prior] = {}
    mean, sd, constant = _column_scales(X)
    slope_scale = np.where(constant, 0.0, 2.5 * s_y / sd)  # constant columns (the intercept) get none
    intercept_sd = float(np.sqrt((2.5 * s_y) ** 2 + np.sum((slope_scale * mean) ** 2)))
    for name, idx in design.fixed.terms:
        idx = list(idx)
        if name == "Intercept":
            priors[name] = Prior("normal", mu=m_y, sigma=intercept_sd)
            continue
        scales = [float(2.5 * s_y / sd[i]) if not constant[i] else float(2.5 * s_y) for i in idx]
        priors[name] = Prior("normal", mu=0.0, sigma=scales[0] if len(scales) == 1 else scales)
    for group, Z in zip(design.groups, Z_by_term):
        _, zsd, zconst = _column_scales(Z)
        for name, idx in group.effect_names():
            scales = [float(2.5 * s_y / (1.0 if zconst[i] else zsd[i])) for i in idx]
            priors[f"{name}_sigma"] = Prior("halfnormal", sigma=scales[0] if len(scales) == 1 else scales)
        if group.term.correlated and len(group.design.columns) > 1:
            priors[f"{group.label}_cor"] = Prior("lkj", eta=1.0)
    aux = {"sigma": Prior("exponential", rate=1.0 / s_y), "nu": Prior("gamma", alpha=2.0, beta=0.1),
           "alpha": Prior("exponential", rate=1.0), "shape": Prior("exponential", rate=1.0)}
    for name in family.aux:
        priors[name] = aux[name]
    return priors
