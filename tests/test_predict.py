"""The ``Prediction`` API: summaries and their shapes, intervals (stored and new levels, ETI and
HDI), pandas/xarray export, several observed sites, class/count probabilities, seeds, compiled
row buckets and memory-bounded chunks.

Statistical checks use k=4 Monte Carlo standard errors; the SE of each check is derived next to it.
"""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

import bayesinf as bi
import models
from bayesinf.predictive import bucket_size
from conftest import TINY_SVI, draws_ess

LEVELS = (0.5, 0.9)
#: Two-sided tail probability of k=4 standard errors of a normal: the level of the count checks.
ALPHA = 2 * stats.norm.sf(4)


def assert_counts_consistent(shares, p_model, n):
    """``shares * n`` are counts of ``n`` independent draws with probabilities at most ``p_model``
    on average: each lies within the central 1 - ALPHA binomial range (the k=4 analogue of a
    normal SE check, which would be wrong for classes with only a few expected draws)."""
    counts = np.rint(np.asarray(shares) * n)
    lo = stats.binom.ppf(ALPHA / 2, n, p_model)
    hi = stats.binom.isf(ALPHA / 2, n, p_model)
    bad = (counts < lo) | (counts > hi)
    assert not bad.any(), (counts[bad], lo[bad], hi[bad], p_model[bad])


@pytest.fixture(scope="module")
def linreg_pred(linreg_nuts, linreg_problem):
    return linreg_nuts.predict(linreg_problem.X[:7], levels=LEVELS, seed=3)


# ----------------------------------------------------------------------------- summaries
def test_summary_shapes(linreg_pred, linreg_nuts):
    pred = linreg_pred
    n_draws = linreg_nuts.num_chains * linreg_nuts.num_draws
    assert pred.num_rows == 7 and pred.levels == LEVELS and pred.kind == "eti" and pred.seed == 3
    assert list(pred.sites) == ["y"]
    assert pred["y"] is pred.primary
    for attr in ("mean", "median", "sd"):
        assert getattr(pred, attr).shape == (7,)
    assert pred["y"].lower.shape == pred["y"].upper.shape == (2, 7)
    assert pred.draws.shape == (n_draws, 7)
    assert pred.probs is None  # continuous outcome


def test_summaries_are_those_of_the_draws(linreg_pred):
    pred, d = linreg_pred, linreg_pred.draws.astype(np.float64)
    np.testing.assert_allclose(pred.mean, d.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.sd, d.std(axis=0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(pred.median, np.median(d, axis=0), rtol=1e-6, atol=1e-6)
    for i, level in enumerate(LEVELS):
        q = np.quantile(d, [(1 - level) / 2, (1 + level) / 2], axis=0)
        np.testing.assert_allclose(pred["y"].lower[i], q[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(pred["y"].upper[i], q[1], rtol=1e-6, atol=1e-6)
    assert np.all(pred["y"].lower[1] < pred["y"].lower[0])  # 90% contains 50%
    assert np.all(pred["y"].upper[0] < pred["y"].upper[1])


def test_interval_stored_and_new_levels(linreg_pred):
    pred = linreg_pred
    lower, upper = pred.interval(0.9)
    np.testing.assert_array_equal(lower, pred["y"].lower[1])
    np.testing.assert_array_equal(upper, pred["y"].upper[1])
    lower, upper = pred.interval(0.7)  # not computed at predict: from the kept draws
    q = np.quantile(pred.draws.astype(np.float64), [0.15, 0.85], axis=0)
    np.testing.assert_allclose(lower, q[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(upper, q[1], rtol=1e-6, atol=1e-6)
    assert np.all(pred["y"].lower[1] < lower) and np.all(lower < pred["y"].lower[0])
    # an HDI of an ETI prediction, from the draws; for a symmetric predictive it is close to the ETI
    h_lower, h_upper = pred.interval(0.9, kind="hdi")
    assert h_lower.shape == (7,)
    inside = np.mean((pred.draws >= h_lower) & (pred.draws <= h_upper), axis=0)
    n = pred.draws.shape[0]
    assert np.all((inside >= 0.9) & (inside <= 0.9 + 2 / n))


def test_hdi_narrower_than_eti_for_skewed_outcome(lognormal_nuts, glm_data):
    X = glm_data["X"][:6]
    eti = lognormal_nuts.predict(X, levels=LEVELS, seed=1)
    hdi = lognormal_nuts.predict(X, levels=LEVELS, kind="hdi", seed=1)
    assert hdi.kind == "hdi"
    np.testing.assert_array_equal(hdi.draws, eti.draws)  # same seed, same draws; only the summary differs
    n = hdi.draws.shape[0]
    for i, level in enumerate(LEVELS):
        h_lo, h_hi = hdi.interval(level)
        e_lo, e_hi = eti.interval(level)
        assert np.all(h_hi - h_lo < e_hi - e_lo)
        assert np.all(h_lo < e_lo) and np.all(h_hi < e_hi)  # right skew: the HDI sits nearer the mode
        inside = np.mean((hdi.draws >= h_lo) & (hdi.draws <= h_hi), axis=0)
        assert np.all((inside >= level) & (inside <= level + 2 / n))
        # the same HDI from the ETI prediction's kept draws
        np.testing.assert_allclose(eti.interval(level, kind="hdi")[0], h_lo)


def test_hdi_levels_are_nested_and_the_widest_is_arviz():
    from arviz_stats.base import array_stats

    from bayesinf.intervals import nested_hdi

    # 2000 rows of 600 normal draws: searched level by level, about 2.5% of rows have a 30% HDI
    # poking out of the 60% one (measured); nested, none may.
    x = np.random.default_rng(0).normal(size=(2000, 600)).astype(np.float32)
    lower, upper = nested_hdi(x, (0.3, 0.6, 0.9))
    assert np.all(lower[1:] <= lower[:-1]) and np.all(upper[:-1] <= upper[1:])
    widest = np.asarray(array_stats.hdi(x, 0.9, axis=-1))
    np.testing.assert_array_equal(lower[2], widest[..., 0])
    np.testing.assert_array_equal(upper[2], widest[..., 1])
    for i, level in enumerate((0.3, 0.6)):  # each holds floor(level * n) gaps of sorted draws
        inside = np.sum((x >= lower[i][:, None]) & (x <= upper[i][:, None]), axis=-1)
        assert np.all(inside == int(np.floor(level * 600)) + 1)
        # and is the shortest such window in most rows (all but those the nesting moved)
        free = np.asarray(array_stats.hdi(x, level, axis=-1))
        assert np.mean((lower[i] == free[..., 0]) & (upper[i] == free[..., 1])) > 0.9


def test_to_pandas(linreg_pred):
    df = linreg_pred.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["mean", "sd", "median", "lower_0.5", "upper_0.5", "lower_0.9", "upper_0.9"]
    assert len(df) == 7
    np.testing.assert_array_equal(df["mean"], linreg_pred.mean)
    np.testing.assert_array_equal(df["upper_0.9"], linreg_pred["y"].upper[1])


def test_to_xarray(linreg_pred):
    ds = linreg_pred.to_xarray()
    assert isinstance(ds, xr.Dataset)
    assert set(ds.data_vars) == {"y_mean", "y_sd", "y_median", "y_lower", "y_upper"}
    assert ds["y_mean"].dims == ("row",) and ds.sizes["row"] == 7
    assert ds["y_lower"].dims == ("level", "row")
    assert list(ds["level"].values) == list(LEVELS)
    assert ds.attrs == {"kind": "eti", "seed": 3}
    np.testing.assert_array_equal(ds["y_lower"].sel(level=0.9).values, linreg_pred["y"].lower[1])


# ----------------------------------------------------------------------------- several sites
def test_two_observed_sites(two_outputs_nuts, glm_data):
    X = glm_data["X"]
    x_new = np.array([[0.0, 0.0], [1.0, -2.0], [2.0, 2.0]])
    pred = two_outputs_nuts.predict(x_new, levels=LEVELS, seed=4)
    assert list(pred.sites) == ["y1", "y2"]
    assert pred.mean is pred["y1"].mean
    # Each site is a conjugate regression (prior N(0, 1), known noise 1 and 0.5): exact predictive.
    for site, noise, y in (("y1", 1.0, glm_data["y1"]), ("y2", 0.5, glm_data["y2"])):
        cov = np.linalg.inv(X.T @ X / noise**2 + np.eye(2))
        mean = x_new @ (cov @ X.T @ y / noise**2)
        sd = np.sqrt(np.einsum("ij,jk,ik->i", x_new, cov, x_new) + noise**2)
        s = pred[site]
        assert s.mean.shape == s.sd.shape == (3,) and s.lower.shape == (2, 3) and s.draws.shape[1] == 3
        n_mean = draws_ess(s.draws, two_outputs_nuts.num_chains, "mean")
        n_sd = draws_ess(s.draws, two_outputs_nuts.num_chains, "sd")
        np.testing.assert_array_less(np.abs(s.mean - mean), 4 * sd / np.sqrt(n_mean))
        np.testing.assert_array_less(np.abs(s.sd - sd), 4 * sd / np.sqrt(2 * n_sd))
        lo, hi = pred.interval(0.9, site=site)
        np.testing.assert_array_equal(lo, s.lower[1])
    df = pred.to_pandas()
    assert list(df.columns) == [f"{s}_{c}" for s in ("y1", "y2")
                                for c in ("mean", "sd", "median", "lower_0.5", "upper_0.5", "lower_0.9", "upper_0.9")]
    ds = pred.to_xarray()
    assert {"y1_mean", "y2_mean", "y1_lower", "y2_upper"} <= set(ds.data_vars)


# ----------------------------------------------------------------------------- discrete outcomes
def test_bernoulli_probs(logistic_nuts, glm_data):
    x_new = np.vstack([glm_data["X"][:4], [[2.5, -2.5], [-2.5, 2.5]]])  # and two near-certain rows
    pred = logistic_nuts.predict(x_new, seed=5)
    probs = pred.probs
    assert probs.shape == (6, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert set(np.unique(pred.draws)) <= {0, 1}
    np.testing.assert_allclose(probs[:, 1], pred.mean, rtol=1e-6)
    # The model's predicted probability, averaged over the posterior: E[sigmoid(a + x b)].
    d = logistic_nuts.flat_draws(["a", "b"])
    p_model = (1 / (1 + np.exp(-(d["a"][:, None] + d["b"] @ x_new.T)))).mean(axis=0)
    # Given the posterior draws, each predictive draw is an independent Bernoulli(p_s): the number
    # of ones is Poisson-binomial with mean n p and variance sum_s p_s (1 - p_s) <= n p (1 - p),
    # so the Binomial(n, p) range is a (slightly conservative) check.
    assert_counts_consistent(probs[:, 1], p_model, pred.draws.shape[0])
    assert p_model[4] > 0.95 and p_model[5] < 0.05  # the test has near-certain rows too
    df = pred.to_pandas()
    assert list(df.columns[-2:]) == ["p_0", "p_1"]
    assert pred.to_xarray()["y_probs"].dims == ("row", "y_class")


def test_poisson_probs(poisson_nuts, glm_data):
    x_new = np.array([[0.0, 0.0], [1.5, -1.5], [-1.0, 1.0]])
    pred = poisson_nuts.predict(x_new, seed=6)
    k = poisson_nuts.sites.num_classes["y"]
    assert k == min(2 * glm_data["poisson"].max() + 2, 256)
    probs = pred.probs
    assert probs.shape == (3, k)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # Model probabilities: posterior mean of the Poisson pmf, the last class "k-1 or more".
    d = poisson_nuts.flat_draws(["a", "b"])
    rate = np.exp(d["a"][:, None] + d["b"] @ x_new.T)  # (draws, rows)
    pmf = stats.poisson.pmf(np.arange(k - 1)[:, None, None], rate).mean(axis=1).T  # (rows, k-1)
    tail = stats.poisson.sf(k - 2, rate).mean(axis=0)
    p_model = np.column_stack([pmf, tail])
    assert_counts_consistent(probs, p_model, pred.draws.shape[0])  # as for the Bernoulli case
    # the probabilities and the mean agree: sum_k k p_k (no draw reached the last class here)
    assert pred.draws.max() < k - 1
    np.testing.assert_allclose(probs @ np.arange(k), pred.mean, rtol=1e-6)


# ----------------------------------------------------------------------------- seeds
def test_same_seed_same_numbers(linreg_nuts, linreg_problem):
    x = linreg_problem.X[:9]
    a = linreg_nuts.predict(x, seed=7)
    linreg_nuts.predict(x, seed=8)  # an unrelated call in between changes nothing
    b = linreg_nuts.predict(x, seed=7)
    np.testing.assert_array_equal(a.draws, b.draws)
    for attr in ("mean", "median", "sd", "lower", "upper"):
        np.testing.assert_array_equal(getattr(a["y"], attr), getattr(b["y"], attr))
    c = linreg_nuts.predict(x, seed=8)
    assert not np.any(np.isclose(a.draws, c.draws, rtol=0, atol=0))
    assert not np.array_equal(a.mean, c.mean)


# ----------------------------------------------------------------------------- compilation
def test_compile_count_one_per_bucket(small_data):
    post = bi.fit(models.linreg, small_data["X"], small_data["y"], seed=0, **TINY_SVI)  # fresh: no predictor yet
    fn = post.predict_fn()
    assert fn is post.predict_fn()  # built once and reused
    assert fn.compile_count() == 0
    X = np.concatenate([small_data["X"], small_data["X"]])  # 120 rows
    seen = set()
    for rows in (1, 3, 17, 40):  # buckets: one row block (16 rows) at least, then powers of two
        post.predict(X[:rows])
        seen.add(bucket_size(rows, fn.max_rows))
        assert fn.compile_count() == len(seen)
    assert seen == {16, 32, 64}
    for rows in (40, 33, 32, 20, 16, 7, 1):  # buckets 64, 64, 32, 32, 16, 16, 16: all compiled already
        post.predict(X[:rows], seed=rows)
    assert fn.compile_count() == 3
    post.predict(X[:100])  # bucket 128: one more
    assert fn.compile_count() == 4


# ----------------------------------------------------------------------------- chunks and draws
def test_memory_budget_chunks(linreg_nuts, linreg_problem):
    n_draws = linreg_nuts.num_chains * linreg_nuts.num_draws  # 2000, float32: 8000 bytes per row
    budget = 4000 * 4 * 8  # 16 rows per chunk
    fn = linreg_nuts.predict_fn(budget)
    assert fn.max_rows == 16
    x = linreg_problem.X[:100]
    chunked = linreg_nuts.predict(x, levels=LEVELS, seed=9, memory_budget=budget)
    # 100 rows = 6 chunks of 16 and one of 4, padded to one 16-row block: one compiled bucket
    assert fn.compile_count() == 1
    whole = linreg_nuts.predict(x, levels=LEVELS, seed=9)
    assert chunked.mean.shape == whole.mean.shape == (100,)
    assert chunked["y"].lower.shape == whole["y"].lower.shape == (2, 100)
    assert chunked.draws.shape == whole.draws.shape == (n_draws, 100)
    # A row's draws depend only on the seed, the draw and its index: chunking changes nothing.
    np.testing.assert_array_equal(chunked.draws, whole.draws)
    for attr in ("mean", "median", "sd", "lower", "upper"):
        np.testing.assert_array_equal(getattr(chunked["y"], attr), getattr(whole["y"], attr))
    again = linreg_nuts.predict(x, levels=LEVELS, seed=9, memory_budget=budget)
    np.testing.assert_array_equal(again.draws, chunked.draws)
    # the summaries are those of the draws, chunk boundaries included
    np.testing.assert_allclose(chunked.mean, chunked.draws.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)


def test_return_draws_false(linreg_nuts, linreg_problem):
    x = linreg_problem.X[:5]
    kept = linreg_nuts.predict(x, levels=LEVELS, seed=10, return_draws=True)
    lean = linreg_nuts.predict(x, levels=LEVELS, seed=10, return_draws=False)
    for attr in ("mean", "median", "sd", "lower", "upper"):
        np.testing.assert_array_equal(getattr(lean["y"], attr), getattr(kept["y"], attr))
    with pytest.raises(bi.InputError, match="return_draws=True") as info:
        lean.draws
    assert info.value.field == "draws" and "'y'" in str(info.value)
    np.testing.assert_array_equal(lean.interval(0.9)[0], kept.interval(0.9)[0])  # stored level: fine
    with pytest.raises(bi.InputError, match="return_draws=True"):
        lean.interval(0.7)  # a new level needs the draws


def test_row_draws_do_not_depend_on_the_request(linreg_nuts, linreg_problem):
    """A row's draws are a function of (seed, draw, row index): the same in a small request, a
    large one, a chunked one or one given a ``row_offset``."""
    x = linreg_problem.X[:150]
    whole = linreg_nuts.predict(x, seed=11)
    np.testing.assert_array_equal(linreg_nuts.predict(x[:3], seed=11).draws, whole.draws[:, :3])
    part = linreg_nuts.predict(x[41:120], seed=11, row_offset=41)
    np.testing.assert_array_equal(part.draws, whole.draws[:, 41:120])
    np.testing.assert_array_equal(part.mean, whole.mean[41:120])
    with pytest.raises(bi.InputError, match="row_offset"):
        linreg_nuts.predict(x, row_offset=-1)


def test_tables_keep_the_index_of_a_pandas_input(tiny_frame, small_data):
    import pandas as pd

    index = pd.Index([17, 3, 250, 0], name="home")
    frame = pd.DataFrame(small_data["X"][:4], columns=["a", "b"], index=index)
    pred = tiny_frame.predict(frame, seed=2)
    table = pred.to_pandas()
    assert table.index.equals(index)  # so frame["mean"] = table["mean"] lands on the right rows
    np.testing.assert_array_equal(table["mean"].to_numpy(), pred.mean)
    np.testing.assert_array_equal(pred.to_xarray()["row"].to_numpy(), index.to_numpy())
    plain = tiny_frame.predict(small_data["X"][:4], seed=2).to_pandas()  # numpy input: positions
    assert plain.index.equals(pd.RangeIndex(4))
    np.testing.assert_array_equal(plain.to_numpy(), table.to_numpy())
