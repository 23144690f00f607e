"""NumPyro models shared by the tests.

They live in an importable module (``import models`` works because pytest puts ``tests/`` on
``sys.path`` for the rootdir conftest), so a saved posterior records the import path
``models:<name>`` and ``bayesinf.load`` finds the model again without ``model=``.
"""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


def linreg(X, y=None, sigma=1.0, tau=2.0):
    """Conjugate linear regression with known noise: b ~ N(0, tau^2 I), y ~ N(X b, sigma^2)."""
    b = numpyro.sample("b", dist.Normal(0.0, tau).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ b, sigma), obs=y)


def grouped(X, g, y=None, n_groups=3):
    """Linear regression with a per-group intercept indexed by the integer row argument ``g``."""
    a = numpyro.sample("a", dist.Normal(0.0, 1.0).expand([n_groups]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ b + a[g], 1.0), obs=y)


def logistic(X, y=None):
    """Bernoulli logistic regression."""
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=a + X @ b), obs=y)


def poisson(X, y=None):
    """Poisson regression with a log link."""
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Poisson(jnp.exp(a + X @ b)), obs=y)


def lognormal(X, y=None):
    """Log-normal regression: a right-skewed predictive distribution."""
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.LogNormal(X @ b, s), obs=y)


def two_outputs(X, y1=None, y2=None):
    """Two observed sites sharing the design matrix; noise sd 1 for y1 and 0.5 for y2."""
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2, X.shape[1]]).to_event(2))
    numpyro.sample("y1", dist.Normal(X @ b[0], 1.0), obs=y1)
    numpyro.sample("y2", dist.Normal(X @ b[1], 0.5), obs=y2)
