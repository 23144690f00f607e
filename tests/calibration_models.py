"""Models and simulated data for the calibration, conformal, SBC and comparison tests.

Importable (``tests/`` is on ``sys.path``), so a saved posterior finds its model again by the
import path ``calibration_models:<name>``.
"""

import functools

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist


def normal_regression(X, y=None):
    """Homoscedastic Normal linear regression with unknown intercept, slopes and noise sd."""
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    numpyro.sample("y", dist.Normal(a + X @ b, sigma), obs=y)


def hetero_regression(X, y=None):
    """Normal linear regression with one noise sd for rows with ``x0 > 0`` and another for the
    rest (the right model of the "hetero" data)."""
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    log_sigma = numpyro.sample("log_sigma", dist.Normal(0.0, 1.5).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(a + X @ b, jnp.exp(log_sigma[(X[:, 0] > 0).astype(jnp.int32)])), obs=y)


def correlated(X, y=None):
    """Two coefficients with N(0, 1) priors and unit noise: with nearly collinear columns of ``X``
    the posterior is a strongly correlated 2-d Gaussian (the SBC test problem)."""
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ b, 1.0), obs=y)


def linear_data(n, seed, noise="normal"):
    """``X (n, 2)``, ``y (n,)`` from ``y = 1 + X @ [1, -0.5] + e``.

    ``noise``: "normal" (sd 1), "hetero" (sd 0.2 where ``x0 <= 0`` and 3 elsewhere) or "student"
    (Student-t with 2.5 degrees of freedom). A homoscedastic Normal fit to "hetero" data covers
    about 87.9% with its 90% intervals (a two-level scale mixture is as bad as it gets at 90%;
    smooth scale mixtures and Student-t noise over-cover at 90% and under-cover only above 95%).
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    mean = 1.0 + X @ np.array([1.0, -0.5])
    if noise == "normal":
        e = rng.normal(size=n)
    elif noise == "hetero":
        e = np.where(X[:, 0] > 0, 3.0, 0.2) * rng.normal(size=n)
    else:
        e = rng.standard_t(2.5, size=n)
    return X, mean + e


def collinear_design(n, rho, seed):
    """``(n, 2)`` design whose columns have correlation ``rho``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    return np.column_stack([z[:, 0], rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1]])


# ----------------------------------------------------------------------------- shared fits
# Plain cached functions rather than fixtures, so several test modules share one fit per run.
FIT = dict(method="nuts", chains=4, draws=500, warmup=500, progress=False, warn=False)


@functools.lru_cache(maxsize=None)
def fitted(model_name: str, noise: str, n: int = 1000, seed: int = 0):
    """``model_name`` fit by NUTS to ``linear_data(n, seed, noise)``."""
    import bayesinf as bi

    X, y = linear_data(n, seed, noise)
    return bi.fit(globals()[model_name], X, y, seed=seed, **FIT)
