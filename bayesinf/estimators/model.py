"""The NumPyro model behind the scikit-learn estimators and the pure numpy functions that turn its
draws into predictions.

The estimators standardize the features (and, for linear regression, the response) before
fitting, so the priors are fixed on the standardized scale -- ``Normal(0, 2.5)`` on the intercept
and on every coefficient, ``Exponential(1)`` on the residual sd -- which is rstanarm's autoscaling
rule written the other way round. One model function with static family and priors means that
repeated fits on data of the same shape (cross-validation folds) reuse one compilation.
"""

from __future__ import annotations

import numpy as np

from ..formula.priors import DISTRIBUTIONS, Prior

__all__ = ["glm", "prior_tuple", "linear_predictor", "sample_response", "row_uniforms", "pad"]


def bucket(n: int, minimum: int) -> int:
    """The smallest power of two >= ``max(n, minimum)``."""
    return 1 << (max(n, minimum) - 1).bit_length()


def pad(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad rows (to a power of two, at least 16) and features (to a power of two) with zeros.

    Fits of data with the same padded shape share one compilation (cross-validation folds,
    grid searches, scikit-learn's estimator checks). Padded rows are masked out of the
    likelihood; padded features are zero, so their coefficients keep their prior and are dropped.

    Returns ``(X_padded, y_padded, mask)``.
    """
    rows, features = X.shape
    out = np.zeros((bucket(rows, 16), bucket(features, 1)), dtype=X.dtype)
    out[:rows, :features] = X
    y_out = np.zeros(out.shape[0], dtype=y.dtype)
    y_out[:rows] = y
    mask = np.zeros(out.shape[0], dtype=bool)
    mask[:rows] = True
    return out, y_out, mask


def prior_tuple(prior: Prior) -> tuple:
    """A ``Prior`` as a hashable static argument: ``(dist, *params)``."""
    return (prior.dist, *(float(prior.params[k]) for k in DISTRIBUTIONS[prior.dist]))


def _prior(spec: tuple) -> Prior:
    return Prior(spec[0], **dict(zip(DISTRIBUTIONS[spec[0]], spec[1:])))


def glm(X, y=None, mask=None, family: str = "gaussian", num_classes: int = 2, intercept_prior: tuple = ("normal", 0.0, 2.5),
        coef_prior: tuple = ("normal", 0.0, 2.5), sigma_prior: tuple = ("exponential", 1.0)):
    """Generalized linear model on standardized features.

    Parameters
    ----------
    X : array (rows, features)
    y : array (rows,), optional
    mask : bool array (rows,), optional
        Rows that count; padding rows (False) add nothing to the likelihood.
        Response: real (gaussian), class index in ``[0, num_classes)`` (categorical), or count
        (poisson).
    family : {"gaussian", "categorical", "poisson"}
    num_classes : int
        Classes of a categorical response; class 0 is the baseline (its logit is 0).
    intercept_prior, coef_prior, sigma_prior : tuple
        ``prior_tuple`` of the priors.
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    outputs = () if family != "categorical" or num_classes == 2 else (num_classes - 1,)
    intercept = numpyro.sample("intercept", _prior(intercept_prior).distribution(outputs))
    coef = numpyro.sample("coef", _prior(coef_prior).distribution((X.shape[1], *outputs)))
    eta = intercept + X @ coef
    if family == "gaussian":
        sigma = numpyro.sample("sigma", _prior(sigma_prior).distribution((), "positive"))
    with numpyro.plate("rows", X.shape[0]), numpyro.handlers.mask(mask=True if mask is None else mask):
        if family == "gaussian":
            numpyro.sample("y", dist.Normal(eta, sigma), obs=y)
        elif family == "poisson":
            numpyro.sample("y", _poisson(jnp.exp(eta)), obs=y)
        elif num_classes == 2:
            numpyro.sample("y", dist.BernoulliLogits(eta), obs=y)
        else:
            logits = jnp.concatenate([jnp.zeros((*eta.shape[:-1], 1), eta.dtype), eta], axis=-1)
            numpyro.sample("y", dist.CategoricalLogits(logits), obs=y)


def _poisson(rate):
    """Poisson with its log density extended to non-negative reals, ``y log(rate) - rate -
    lgamma(y + 1)``, as scikit-learn's ``PoissonRegressor`` (Poisson deviance) accepts them;
    draws are counts."""
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from jax.scipy.special import gammaln, xlogy
    from numpyro.distributions import constraints

    class RealPoisson(dist.Poisson):
        support = constraints.nonnegative

        def log_prob(self, value):
            return xlogy(value, self.rate) - self.rate - gammaln(value + 1.0)

    return RealPoisson(jnp.asarray(rate))


def linear_predictor(X: np.ndarray, intercept: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Linear predictor per draw on the original scale.

    Parameters
    ----------
    X : (rows, features)
    intercept : (draws,) or (draws, outputs)
    coef : (draws, features) or (draws, features, outputs)

    Returns
    -------
    np.ndarray
        ``(draws, rows)`` or ``(draws, rows, outputs)``.
    """
    if coef.ndim == 2:
        return intercept[:, None] + coef @ X.T
    return intercept[:, None, :] + np.einsum("rf,dfo->dro", X, coef)


def class_probabilities(eta: np.ndarray) -> np.ndarray:
    """Class probabilities per draw, ``(draws, rows, classes)``, from a binary ``(draws, rows)`` or
    multiclass ``(draws, rows, classes - 1)`` linear predictor (class 0 the baseline)."""
    if eta.ndim == 2:
        p1 = 1.0 / (1.0 + np.exp(-eta))
        return np.stack([1.0 - p1, p1], axis=-1)
    logits = np.concatenate([np.zeros((*eta.shape[:-1], 1)), eta], axis=-1)
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def sample_response(family: str, eta: np.ndarray, sigma: np.ndarray | None, seed: int) -> np.ndarray:
    """One predictive draw of the response per posterior draw and row, ``(draws, rows)``.

    The random numbers of row ``r`` and draw ``d`` are ``row_uniforms(seed, ...)[d, r]``: a row
    gets the same numbers whatever the other rows of the request (as ``Posterior.predict``)."""
    from scipy.special import ndtri
    from scipy.stats import poisson

    u = row_uniforms(seed, eta.shape[:2])
    if family == "gaussian":
        return eta + sigma[:, None] * ndtri(u)
    if family == "poisson":
        return poisson.ppf(u, np.exp(np.minimum(eta, 50.0))).astype(float)
    cumulative = class_probabilities(eta).cumsum(axis=-1)
    return np.minimum((u[..., None] > cumulative).sum(axis=-1), cumulative.shape[-1] - 1)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on a uint64 array (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_uniforms(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Uniforms in (0, 1), ``shape = (draws, rows)``, a function of ``(seed, row, draw)`` alone:
    SplitMix64 applied to the seed, then after mixing in the row, then the draw."""
    draws, rows = shape
    key = _mix(np.full((1, 1), seed, dtype=np.uint64))
    key = _mix(key ^ np.arange(rows, dtype=np.uint64)[None, :])
    bits = _mix(key ^ np.arange(draws, dtype=np.uint64)[:, None])
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
