"""Response distributions (families) and link functions of formula models.

A family checks the response at fit, names its auxiliary parameters (``sigma``, ``nu``, ...) and
builds the NumPyro likelihood from the linear predictor. Link functions are pure ``jax.numpy``
functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError

__all__ = ["Family", "FAMILIES", "LINKS", "get_family", "inverse_link"]


def _inverse(name: str) -> Callable:
    import jax
    import jax.numpy as jnp

    return {
        "identity": lambda eta: eta,
        "log": jnp.exp,
        "logit": jax.nn.sigmoid,
        "probit": lambda eta: jax.scipy.stats.norm.cdf(eta),
        "cloglog": lambda eta: -jnp.expm1(-jnp.exp(eta)),
        "inverse": lambda eta: 1.0 / eta,
    }[name]


LINKS = ("identity", "log", "logit", "probit", "cloglog", "inverse")


def inverse_link(name: str, eta):
    """Mean of the response given the linear predictor ``eta`` (any shape) under link ``name``."""
    return _inverse(name)(eta)


@dataclass(frozen=True)
class Family:
    """A response distribution.

    Attributes
    ----------
    name : str
    links : tuple of str
        Allowed links; the first is the default.
    aux : tuple of str
        Names of the auxiliary parameters, each with a positive support.
    unit_scale : bool
        Whether the linear predictor is on a unit scale whatever the data (logit, log links), so
        the default priors do not scale with the response's sd.
    """

    name: str
    links: tuple[str, ...]
    aux: tuple[str, ...]
    check: Callable[[np.ndarray, str, np.ndarray | None], np.ndarray]
    make: Callable  # (eta, link, aux: dict, trials) -> numpyro distribution

    @property
    def default_link(self) -> str:
        return self.links[0]

    def check_link(self, link: str | None) -> str:
        link = self.default_link if link is None else link
        if link not in self.links:
            raise InputError("link", f"{link!r} is not available for family '{self.name}'", f"one of {self.links}")
        return link

    def is_unit_scale(self, link: str) -> bool:
        return not (self.name in ("gaussian", "student_t") and link == "identity")

    def likelihood(self, eta, link: str, aux: dict, trials=None):
        """The NumPyro distribution of the response, batch shape ``eta.shape``."""
        return self.make(eta, link, aux, trials)


def _values(y, name: str, family: str) -> np.ndarray:
    values = np.asarray(y)
    if values.dtype == bool:
        values = values.astype(np.int64)
    if not np.issubdtype(values.dtype, np.number):
        raise InputError(name, f"is not numeric (dtype {values.dtype}); family '{family}' needs numbers",
                         hint="Convert the column to numbers, or choose another family.")
    if not np.isfinite(values).all():
        raise InputError(name, "has missing or infinite values", "finite numbers")
    return values


def _check_real(y, name, trials):
    return _values(y, name, "gaussian").astype(np.float64)


def _check_binary(y, name, trials):
    values = _values(y, name, "bernoulli")
    bad = ~np.isin(values, (0, 1))
    if bad.any():
        raise InputError(name, f"has value {values[bad][0]!r}; family 'bernoulli' needs a binary response",
                         "only 0 and 1 (or False/True)")
    return values.astype(np.int64)


def _check_counts(family):
    def check(y, name, trials):
        values = _values(y, name, family)
        bad = (values < 0) | (values != np.round(values))
        if bad.any():
            raise InputError(name, f"has value {values[bad][0]!r}; family '{family}' needs counts",
                             "non-negative integers")
        if trials is not None and (values > trials).any():
            row = int(np.flatnonzero(values > trials)[0])
            raise InputError(name, f"has {values[row]} successes at row {row}, more than its {trials[row]} trials")
        return values.astype(np.int64)
    return check


def _check_positive(y, name, trials):
    values = _values(y, name, "gamma")
    if (values <= 0).any():
        raise InputError(name, f"has value {values[values <= 0][0]!r}; family 'gamma' needs positive values")
    return values.astype(np.float64)


def _gaussian(eta, link, aux, trials):
    import numpyro.distributions as dist

    return dist.Normal(inverse_link(link, eta), aux["sigma"])


def _student_t(eta, link, aux, trials):
    import numpyro.distributions as dist

    return dist.StudentT(aux["nu"], inverse_link(link, eta), aux["sigma"])


def _bernoulli(eta, link, aux, trials):
    import numpyro.distributions as dist

    if link == "logit":
        return dist.BernoulliLogits(eta)
    return dist.BernoulliProbs(_clip_probs(inverse_link(link, eta)))


def _binomial(eta, link, aux, trials):
    import numpyro.distributions as dist

    if link == "logit":
        return dist.BinomialLogits(eta, total_count=trials)
    return dist.BinomialProbs(_clip_probs(inverse_link(link, eta)), total_count=trials)


def _clip_probs(p):
    import jax.numpy as jnp

    eps = jnp.finfo(jnp.result_type(p)).eps
    return jnp.clip(p, eps, 1 - eps)


def _poisson(eta, link, aux, trials):
    import numpyro.distributions as dist

    return dist.Poisson(inverse_link(link, eta))


def _negative_binomial(eta, link, aux, trials):
    import numpyro.distributions as dist

    return dist.NegativeBinomial2(inverse_link(link, eta), aux["alpha"])


def _gamma(eta, link, aux, trials):
    import numpyro.distributions as dist

    mean = inverse_link(link, eta)
    return dist.Gamma(aux["shape"], aux["shape"] / mean)


FAMILIES = {
    "gaussian": Family("gaussian", ("identity", "log", "inverse"), ("sigma",), _check_real, _gaussian),
    "student_t": Family("student_t", ("identity", "log", "inverse"), ("sigma", "nu"), _check_real, _student_t),
    "bernoulli": Family("bernoulli", ("logit", "probit", "cloglog"), (), _check_binary, _bernoulli),
    "binomial": Family("binomial", ("logit", "probit", "cloglog"), (), _check_counts("binomial"), _binomial),
    "poisson": Family("poisson", ("log", "identity"), (), _check_counts("poisson"), _poisson),
    "negative_binomial": Family("negative_binomial", ("log", "identity"), ("alpha",),
                                _check_counts("negative_binomial"), _negative_binomial),
    "gamma": Family("gamma", ("log", "inverse", "identity"), ("shape",), _check_positive, _gamma),
}


def get_family(name: str) -> Family:
    """The family called ``name``; raises ``InputError`` listing the known ones."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise InputError("family", f"{name!r} is not a known family", f"one of {sorted(FAMILIES)}")
    return FAMILIES[name]
