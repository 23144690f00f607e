"""Minibatch SVI (``bayesinf.minibatch.fit_minibatch``) from arrays, memory-mapped ``.npy`` files
and Parquet: the posterior matches the full-data posterior, the batch stream covers the rows,
bad input is named, and the result predicts and saves like any SVI posterior."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesinf as bi
from bayesinf.errors import InputError
from bayesinf.minibatch import fit_minibatch
from bayesinf.sources import ROW_INDEX, ArraySource, ParquetSource, batches

N, D, BATCH = 20_000, 3, 256
A_TRUE, B_TRUE = 0.3, np.array([1.0, -0.5, 0.25])
PRIOR_SD = 2.0
#: 8000 steps of 256 rows (about 100 epochs; 0.3 s per fit once compiled), 4000 guide draws.
FIT = dict(batch_size=BATCH, num_steps=8000, draws=4000, progress=False, warn=False)


def logistic(X, y=None, num_rows=None):
    """Logistic regression written for minibatches: the rows plate subsamples ``num_rows``."""
    a = numpyro.sample("a", dist.Normal(0.0, PRIOR_SD))
    b = numpyro.sample("b", dist.Normal(0.0, PRIOR_SD).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("rows", num_rows or X.shape[0], subsample_size=X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=a + X @ b), obs=y)


def with_deterministic(X, y=None, num_rows=None):
    """``logistic`` plus a deterministic site (the odds ratio of the first feature)."""
    a = numpyro.sample("a", dist.Normal(0.0, PRIOR_SD))
    b = numpyro.sample("b", dist.Normal(0.0, PRIOR_SD).expand([X.shape[1]]).to_event(1))
    numpyro.deterministic("odds_ratio", jnp.exp(b[0]))
    with numpyro.plate("rows", num_rows or X.shape[0], subsample_size=X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=a + X @ b), obs=y)


def unscaled(X, y=None, num_rows=None):
    """The same model without the subsampling plate: its likelihood would not be scaled."""
    b = numpyro.sample("b", dist.Normal(0.0, PRIOR_SD).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=X @ b), obs=y)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2024)
    X = rng.normal(size=(N, D)).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-(A_TRUE + X @ B_TRUE)))
    y = (rng.uniform(size=N) < p).astype(np.int8)
    return X, y


@pytest.fixture(scope="module")
def laplace(data):
    """Full-data reference: the posterior mode and Hessian by Newton's method (float64). At
    N = 20,000 the posterior is Gaussian to O(1/N): its mean differs from the mode by about
    1e-4, under 0.01 posterior sd. A mean-field normal guide (KL(q||p) optimum for a Gaussian
    p) has the posterior mean and sd ``1 / sqrt(diag(H))``."""
    X, y = data
    Z = np.column_stack([np.ones(N), X.astype(np.float64)])
    w = np.zeros(D + 1)
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-Z @ w))
        H = (Z * (p * (1 - p))[:, None]).T @ Z + np.eye(D + 1) / PRIOR_SD**2
        w = w + np.linalg.solve(H, Z.T @ (y - p) - w / PRIOR_SD**2)
    return w, 1.0 / np.sqrt(np.diag(H))


@pytest.fixture(scope="module")
def source_of(data, tmp_path_factory):
    """The same rows as an in-memory mapping, as memory-mapped .npy files and as a directory of
    two Parquet files with row groups of 2,500 rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    X, y = data
    root = tmp_path_factory.mktemp("minibatch")
    np.save(root / "X.npy", X)
    np.save(root / "y.npy", y)
    (root / "pq").mkdir()
    half = N // 2
    for i, rows in enumerate((slice(0, half), slice(half, N))):
        table = pa.table({**{f"x{j}": X[rows, j] for j in range(D)}, "label": y[rows]})
        pq.write_table(table, root / "pq" / f"part-{i}.parquet", row_group_size=2500)
    return {
        "array": lambda: {"X": X, "y": y},
        "npy": lambda: {"X": str(root / "X.npy"), "y": str(root / "y.npy")},
        "parquet": lambda: ParquetSource(root / "pq", columns={"X": [f"x{j}" for j in range(D)], "y": "label"}),
    }


@pytest.fixture(scope="module")
def array_fit(source_of):
    return fit_minibatch(logistic, source_of["array"](), seed=0, **FIT)


# ----------------------------------------------------------------------------- correctness
def test_minibatch_log_density_is_unbiased():
    """Over one epoch (a partition of the rows into batches), the mean of the minibatch
    log joint densities equals the full-data log joint: the plate scales each batch's log
    likelihood by num_rows / batch_size, so the ELBO and its gradient are unbiased."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    from bayesinf.inference.binding import BoundModel
    from bayesinf.inference.minibatch import Subsampled

    rng = np.random.default_rng(0)
    n, batch = 1024, 128
    X = rng.normal(size=(n, D))
    y = (rng.uniform(size=n) < 0.5).astype(np.int32)
    params = {"a": jnp.asarray(0.2), "b": jnp.asarray([0.5, -1.0, 0.3])}
    full, _ = log_density(logistic, (X, y), {}, params)
    model = Subsampled(BoundModel(logistic, {"num_rows": n}), n, batch)
    batch_log_density = jax.jit(lambda rows, X, y: log_density(model, (), dict(_rows=rows, X=X, y=y), params)[0])
    order = rng.permutation(n)
    parts = [batch_log_density(rows, X[rows], y[rows]) for rows in order.reshape(-1, batch)]
    # float32 sums of 1024 terms: relative rounding error ~1e-7 x sqrt(terms); 1e-5 is far above it
    # and far below the 1/8 = 12.5% a missing num_rows / batch_size scale would cause.
    np.testing.assert_allclose(np.mean(parts), float(full), rtol=1e-5)


@pytest.mark.parametrize("kind", ["array", "npy", "parquet"])
def test_recovers_full_data_posterior(kind, source_of, laplace, array_fit):
    """Each source kind recovers the full-data posterior.

    Tolerances, in units of the mean-field posterior sd (about 0.017), from 6 seeds x 4
    coefficients on these data: the guide means differed from the Laplace means by 0.025 sd
    (standard deviation; the SGD noise left in the averaged iterates), and the 4000 draws add
    1/sqrt(4000) = 0.016 sd, so 0.03 sd in all: 0.2 sd is over 6 of those. The guide sd was
    within 2.6% of 1/sqrt(diag H) (spread 0.012; the draws add 1/sqrt(2 * 4000) = 0.011), so
    0.016 in all: we allow 10% (6 of those).
    """
    post = array_fit if kind == "array" else fit_minibatch(logistic, source_of[kind](), seed=0, **FIT)
    mode, sd = laplace
    draws = post.flat_draws()
    mean = np.r_[draws["a"].mean(), draws["b"].mean(0)]
    spread = np.r_[draws["a"].std(), draws["b"].std(0)]
    assert np.all(np.abs(mean - mode) < 0.2 * sd), (mean, mode, sd)
    assert np.all(np.abs(spread / sd - 1) < 0.10), (spread, sd)
    # and the truth lies within 4 posterior sd (the data were drawn from it)
    assert np.all(np.abs(mean - np.r_[A_TRUE, B_TRUE]) < 4 * sd)
    assert post.method == "svi" and post.info["num_rows"] == N and post.info["converged"]
    assert post.settings["source"]["kind"] == ("parquet" if kind == "parquet" else "arrays")


def test_same_seed_same_numbers(source_of):
    # the settings of the other fits, so the compiled program is reused (0.3 s per fit)
    one = fit_minibatch(logistic, source_of["npy"](), seed=3, **FIT)
    two = fit_minibatch(logistic, source_of["npy"](), seed=3, **FIT)
    other = fit_minibatch(logistic, source_of["npy"](), seed=4, **FIT)
    np.testing.assert_array_equal(one.draws["b"], two.draws["b"])
    np.testing.assert_array_equal(one.losses, two.losses)
    assert not np.array_equal(one.draws["b"], other.draws["b"])
    assert two.info["cached_program"] and other.info["cached_program"]


def test_step_compiles_once(array_fit):
    """Every chunk of steps has the same shapes: the jitted chunk was traced and compiled once
    for all the fits of this module (same model, batch shape and settings)."""
    from bayesinf.inference.minibatch import _PROGRAMS

    chunks = [p.chunk for key, p in _PROGRAMS.items() if key[0].model.model is logistic]
    assert chunks and all(c._cache_size() == 1 for c in chunks)


def test_stop_early(source_of):
    post = fit_minibatch(logistic, source_of["array"](), seed=0, stop_early=True, **FIT)
    assert post.info["converged"] and post.info["num_steps"] < FIT["num_steps"]
    assert post.info["num_steps"] % 500 == 0  # whole chunks of check_every steps


@pytest.mark.parametrize("kind", ["array", "parquet"])
def test_batches_cover_the_rows(kind, source_of):
    """Over k epochs' worth of batches every row is drawn k times, but for the fewer than
    batch_size rows carried over an epoch boundary (drawn once more or less)."""
    source = ArraySource(source_of["array"]()) if kind == "array" else source_of["parquet"]()
    batch, epochs = 200, 3
    stream = batches(source, batch, seed=0, buffer_rows=6000, dtype="float32")
    counts = np.zeros(N, dtype=int)
    for _ in range(epochs * N // batch):
        rows = next(stream)[ROW_INDEX]
        assert rows.shape == (batch,)
        counts[rows] += 1
    assert set(np.unique(counts)) <= {epochs - 1, epochs, epochs + 1}
    assert np.sum(counts != epochs) < 2 * batch
    # rows arrive shuffled: a batch spans most of the buffer, not one contiguous block
    rows = next(stream)[ROW_INDEX]
    assert np.ptp(rows) > 10 * batch


def test_batch_values_match_their_rows(source_of, data):
    X, y = data
    stream = batches(source_of["parquet"](), 128, seed=1, dtype="float32")
    batch = next(stream)
    np.testing.assert_array_equal(batch["X"], X[batch[ROW_INDEX]])
    np.testing.assert_array_equal(batch["y"], y[batch[ROW_INDEX]])
    assert batch["X"].dtype == np.float32 and batch["y"].dtype == np.int32


# ----------------------------------------------------------------------------- the Posterior
def test_posterior_predicts_and_saves(array_fit, data, tmp_path):
    X, _ = data
    pred = array_fit.predict(X[:50], seed=0)
    logits = array_fit.flat_draws()["a"].mean() + X[:50] @ array_fit.flat_draws()["b"].mean(0)
    p = 1.0 / (1.0 + np.exp(-logits))
    # predictive mean of a Bernoulli over 4000 draws: sd <= 0.5 / sqrt(4000) = 0.008; 0.05 is 6 sd
    assert np.all(np.abs(pred.mean - p) < 0.05)
    assert array_fit.summary().shape[0] == D + 1
    array_fit.save(tmp_path / "m")
    loaded = bi.load(tmp_path / "m", model=logistic)
    np.testing.assert_array_equal(loaded.draws["b"], array_fit.draws["b"])
    np.testing.assert_array_equal(loaded.predict(X[:50], seed=0).mean, pred.mean)
    assert loaded.settings["minibatch"] is True and loaded.data["X"].shape == (BATCH, D)


# ----------------------------------------------------------------------------- bad input
def test_batch_size_larger_than_rows(source_of):
    with pytest.raises(InputError, match="'batch_size' .* 20000 rows"):
        fit_minibatch(logistic, source_of["array"](), batch_size=N + 1, progress=False)


def test_missing_parquet_column(source_of, tmp_path):
    root = source_of["parquet"]().path
    with pytest.raises(InputError, match=r"columns\['X'\]' names column 'x9'"):
        fit_minibatch(logistic, root, columns={"X": ["x0", "x9"], "y": "label"}, progress=False)


def test_nan_in_a_batch_names_row_and_column(data):
    X, y = data
    X = X.copy()
    X[12_345, 1] = np.nan
    with pytest.raises(InputError, match=r"'X' has value nan at row 12345, column 1 \(read in rows"):
        fit_minibatch(logistic, {"X": X, "y": y}, batch_size=BATCH, num_steps=500, progress=False)


def test_null_in_parquet_names_row_and_column(data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X, y = data
    x1 = pa.array(X[:, 1], mask=np.arange(N) == 777)
    pq.write_table(pa.table({"x0": X[:, 0], "x1": x1, "x2": X[:, 2], "label": y}), tmp_path / "d.parquet",
                   row_group_size=5000)
    with pytest.raises(InputError, match=r"'X' has a missing \(null\) value at row 777, column 'x1'"):
        fit_minibatch(logistic, tmp_path / "d.parquet", columns={"X": ["x0", "x1", "x2"], "y": "label"},
                      batch_size=BATCH, num_steps=500, progress=False)


def test_wrong_dtype(data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X, y = data
    with pytest.raises(InputError, match=r"source\['X'\]' has dtype <U1"):
        fit_minibatch(logistic, {"X": np.full((N, D), "a"), "y": y}, progress=False)
    pq.write_table(pa.table({"x0": X[:, 0], "label": np.where(y == 1, "yes", "no")}), tmp_path / "s.parquet")
    with pytest.raises(InputError, match="column 'label'' has Parquet type string"):
        fit_minibatch(logistic, tmp_path / "s.parquet", columns={"X": ["x0"], "y": "label"}, progress=False)


def test_rows_of_unequal_length_and_bad_model(data):
    X, y = data
    with pytest.raises(InputError, match=r"source\['y'\]' has 19999 rows but 'X' has 20000"):
        fit_minibatch(logistic, {"X": X, "y": y[:-1]}, progress=False)
    with pytest.raises(InputError, match="has no 'num_rows' argument"):
        fit_minibatch(lambda X, y=None: None, {"X": X, "y": y}, progress=False)
    with pytest.raises(InputError, match="scales the log likelihood of site 'y' by 1"):
        fit_minibatch(unscaled, {"X": X, "y": y}, batch_size=BATCH, num_steps=500, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("guide", ["mvn", "lowrank"])
def test_other_guides_recover_the_means(guide, source_of, laplace):
    """The full-covariance guides (no control variate on their scales: plain Trace_ELBO) recover
    the means to the tolerance above."""
    post = fit_minibatch(logistic, source_of["array"](), guide=guide, seed=0, **FIT)
    mode, sd = laplace
    draws = post.flat_draws()
    mean = np.r_[draws["a"].mean(), draws["b"].mean(0)]
    assert np.all(np.abs(mean - mode) < 0.2 * sd), (mean, mode, sd)


@pytest.mark.slow
def test_deterministic_sites(source_of):
    post = fit_minibatch(with_deterministic, source_of["array"](), seed=0, **FIT)
    np.testing.assert_allclose(post.draws["odds_ratio"], np.exp(post.draws["b"][..., 0]), rtol=1e-5)
