"""Shared data and fitted posteriors (session-scoped: each model is fitted once per test run).

Fits that are meant to be short pass ``warn=False``; the statistical tests check convergence
themselves with ``Posterior.diagnose()``.
"""

from dataclasses import dataclass

import numpy as np
import pytest

import bayesinf as bi
import models

#: The short fit used by the input and persistence tests: SVI, 200 steps, 200 draws.
TINY_SVI = dict(method="svi", num_steps=200, check_every=100, draws=200, warn=False, progress=False)
#: The NUTS fit used by the statistical tests: 4 chains x 500 draws after 500 warmup.
NUTS = dict(method="nuts", chains=4, draws=500, warmup=500, warn=False, progress=False)


def draws_ess(pred_draws, num_chains, method="bulk", prob=None):
    """ArviZ ESS per column of predictive draws ``(draws, rows)`` laid out chain after chain
    (as ``Posterior.flat_draws`` and ``Prediction.draws`` are)."""
    from arviz_stats.base import array_stats

    rows = pred_draws.shape[1]
    by_chain = np.asarray(pred_draws, dtype=np.float64).T.reshape(rows, num_chains, -1)
    return np.asarray(array_stats.ess(by_chain, chain_axis=-2, draw_axis=-1, method=method, prob=prob))


# ----------------------------------------------------------------------------- exact problem
@dataclass(frozen=True)
class LinregProblem:
    """Bayesian linear regression with known noise and its exact Gaussian posterior."""

    X: np.ndarray
    y: np.ndarray
    b_true: np.ndarray
    sigma: float
    tau: float
    mu_post: np.ndarray
    cov_post: np.ndarray

    def predictive(self, x_new):
        """Exact posterior predictive mean and sd at the rows of ``x_new``."""
        x_new = np.atleast_2d(x_new)
        mean = x_new @ self.mu_post
        var = np.einsum("ij,jk,ik->i", x_new, self.cov_post, x_new) + self.sigma**2
        return mean, np.sqrt(var)


@pytest.fixture(scope="session")
def linreg_problem():
    rng = np.random.default_rng(20240611)
    n, d, sigma, tau = 200, 3, 1.5, 2.0
    X = rng.normal(size=(n, d))
    b_true = np.array([1.0, -0.5, 0.25])
    y = X @ b_true + sigma * rng.normal(size=n)
    cov_post = np.linalg.inv(X.T @ X / sigma**2 + np.eye(d) / tau**2)
    mu_post = cov_post @ X.T @ y / sigma**2
    return LinregProblem(X, y, b_true, sigma, tau, mu_post, cov_post)


#: SVI settings for the exact test: small steps and 16 particles keep the optimizer's error in
#: the guide's mean small (measured in tests/test_exact.py), and 4000 iid draws from the guide.
SVI_EXACT = dict(method="svi", guide="mvn", learning_rate=0.0005, num_particles=16, num_steps=40_000,
                 check_every=1000, draws=4000, warn=False, progress=False)


@pytest.fixture(scope="session")
def linreg_nuts(linreg_problem):
    p = linreg_problem
    return bi.fit(models.linreg, p.X, p.y, sigma=p.sigma, tau=p.tau, seed=1, **NUTS)


@pytest.fixture(scope="session")
def linreg_svi(linreg_problem):
    p = linreg_problem
    return bi.fit(models.linreg, p.X, p.y, sigma=p.sigma, tau=p.tau, seed=1, **SVI_EXACT)


# ----------------------------------------------------------------------------- small problems
@pytest.fixture(scope="session")
def small_data():
    """60 rows: two features, a group index in 0..2 and outcomes for every test model."""
    rng = np.random.default_rng(7)
    n = 60
    X = rng.normal(size=(n, 2))
    g = rng.integers(0, 3, size=n)
    g[:3] = [0, 1, 2]  # every group seen at fit
    eta = X @ np.array([0.8, -0.6])
    return {
        "X": X,
        "g": g,
        "y": eta + np.array([-1.0, 0.0, 1.0])[g] + rng.normal(size=n),
    }


@pytest.fixture(scope="session")
def tiny_linreg(small_data):
    return bi.fit(models.linreg, small_data["X"], small_data["y"], seed=0, **TINY_SVI)


@pytest.fixture(scope="session")
def tiny_grouped(small_data):
    return bi.fit(models.grouped, small_data["X"], small_data["g"], small_data["y"], seed=0, **TINY_SVI)


@pytest.fixture(scope="session")
def tiny_frame(small_data):
    """``linreg`` fitted with a DataFrame ``X`` (columns 'a', 'b')."""
    import pandas as pd

    X = pd.DataFrame(small_data["X"], columns=["a", "b"])
    return bi.fit(models.linreg, X, small_data["y"], seed=0, **TINY_SVI)


# ----------------------------------------------------------------------------- outcome models
@pytest.fixture(scope="session")
def glm_data():
    """300 rows, two features, and outcomes for the logistic, Poisson, log-normal and two-output models."""
    rng = np.random.default_rng(11)
    n = 300
    X = rng.normal(size=(n, 2))
    logit = 0.3 + X @ np.array([1.0, -1.0])
    return {
        "X": X,
        "bernoulli": (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int64),
        "poisson": rng.poisson(np.exp(0.5 + X @ np.array([0.3, -0.2]))),
        "lognormal": np.exp(X @ np.array([0.3, 0.2]) + 0.8 * rng.normal(size=n)),
        "y1": X @ np.array([1.0, 2.0]) + rng.normal(size=n),
        "y2": X @ np.array([-1.0, 0.5]) + 0.5 * rng.normal(size=n),
    }


@pytest.fixture(scope="session")
def logistic_nuts(glm_data):
    return bi.fit(models.logistic, glm_data["X"], glm_data["bernoulli"], seed=2, **NUTS)


@pytest.fixture(scope="session")
def poisson_nuts(glm_data):
    return bi.fit(models.poisson, glm_data["X"], glm_data["poisson"], seed=3, **NUTS)


@pytest.fixture(scope="session")
def lognormal_nuts(glm_data):
    return bi.fit(models.lognormal, glm_data["X"], glm_data["lognormal"], seed=4, **NUTS)


@pytest.fixture(scope="session")
def two_outputs_nuts(glm_data):
    return bi.fit(models.two_outputs, glm_data["X"], glm_data["y1"], glm_data["y2"], seed=5, **NUTS)


# ----------------------------------------------------------------------------- notebooks
#: stderr lines of the notebook kernel that are not problems of the notebook: tqdm.auto (imported
#: by NumPyro) cannot find ipywidgets in a bare kernel, and ipykernel >= 7 logs that a kernel
#: started by nbclient talks over unencrypted local TCP.
KNOWN_KERNEL_STDERR = ("TqdmWarning: IProgress not found", "from .autonotebook import tqdm",
                       "Kernel is running over TCP without encryption")


@pytest.fixture
def interpreter_kernel(tmp_path, monkeypatch):
    """A kernelspec that runs this interpreter (the venv's), found before any other python kernel."""
    import json
    import sys

    spec = tmp_path / "jupyter" / "kernels" / "bayesinf-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bayesinf tests", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "bayesinf-test"


@pytest.fixture
def run_notebook(tmp_path, interpreter_kernel):
    """Execute a notebook (committed without outputs) on this interpreter in a scratch folder.

    Returns ``(text, images)``: everything the cells printed or displayed as text, and the number
    of PNG images shown. Fails on kernel stderr other than ``KNOWN_KERNEL_STDERR``.
    """
    import sys

    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    def run(path):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
            "commit the notebook without outputs"
        nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print('kernel:', sys.executable)"))
        workdir = tmp_path / "run"
        workdir.mkdir(exist_ok=True)
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name=interpreter_kernel,
                                         resources={"metadata": {"path": str(workdir)}})
        client.execute()
        stdout, stderr, images = [], [], 0
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                if output.output_type == "stream":
                    (stdout if output.name == "stdout" else stderr).append(output.text)
                elif output.output_type in ("execute_result", "display_data"):
                    stdout.append(output.data.get("text/plain", ""))
                    images += "image/png" in output.data
        text = "".join(stdout)
        assert f"kernel: {sys.executable}" in text
        unexpected = [line for line in "".join(stderr).splitlines()
                      if line.strip() and not any(k in line for k in KNOWN_KERNEL_STDERR)]
        assert not unexpected, "\n".join(unexpected)
        return text, images

    return run
