"""``Posterior.update``: a warm refit agrees with a cold refit on the same rows, the sequential
update matches the exact conjugate posterior, updates are reproducible, survive save/load, record
their lineage (also in a ``ModelStore``), and bad new rows are refused naming the field; NUTS's
``init="map"``/``"svi"``/``init_params`` starts; an updated formula model keeps per-column input
statistics over all its rows (``merge_column_statistics``)."""

import json

import numpy as np
import pandas as pd
import pytest

import bayesinf as bi
import models
from bayesinf.store import ModelStore
from bayesinf.update import WARM_WARMUP, lineage_of
from conftest import NUTS, TINY_SVI

#: The parent sees the first 160 of the 200 rows of ``linreg_problem``; updates add the last 40.
SPLIT = 160


@pytest.fixture(scope="module")
def parent(linreg_problem):
    p = linreg_problem
    return bi.fit(models.linreg, p.X[:SPLIT], p.y[:SPLIT], sigma=p.sigma, tau=p.tau, seed=3, **NUTS)


@pytest.fixture(scope="module")
def new_rows(linreg_problem):
    return linreg_problem.X[SPLIT:], linreg_problem.y[SPLIT:]


@pytest.fixture(scope="module")
def warm(parent, new_rows):
    return parent.update(*new_rows, seed=5, warn=False, progress=False)


def _means_agree(a, b, k=4.0):
    """Per-coordinate |mean_a - mean_b| <= k * sqrt(mcse_a^2 + mcse_b^2): independent runs, each
    mean off its target by about N(0, mcse^2); k = 4 puts a false alarm per coordinate at 6e-5."""
    sa, sb = a.summary(), b.summary()
    diff = np.abs(sa["mean"] - sb["mean"])
    bound = k * np.sqrt(sa["mcse_mean"] ** 2 + sb["mcse_mean"] ** 2)
    assert (diff <= bound).all(), (diff / np.sqrt(sa["mcse_mean"] ** 2 + sb["mcse_mean"] ** 2)).max()


# ----------------------------------------------------------------------------- refit
def test_refit_agrees_with_cold_refit_after_a_short_warmup(parent, warm, linreg_nuts, linreg_problem):
    assert warm.schema.num_rows == 200 and warm.data["X"].shape == (200, 3)
    np.testing.assert_array_equal(warm.data["y"][SPLIT:], linreg_problem.y[SPLIT:].astype(np.float32))
    # fewer warmup iterations than the parent, the mass matrix taken from it, not re-adapted
    assert warm.settings["warmup"] == WARM_WARMUP < parent.settings["warmup"]
    assert warm.settings["adapt_mass_matrix"] is False and warm.info["warm_start"] is True
    _means_agree(warm, linreg_nuts)  # the cold refit on all 200 rows
    assert warm.diagnose().ok
    # ESS per draw comparable: at least half the cold refit's smallest bulk ESS (NUTS on this
    # Gaussian posterior gives ESS near the number of draws; a badly tuned sampler gives far less)
    assert warm.summary()["ess_bulk"].min() >= 0.5 * linreg_nuts.summary()["ess_bulk"].min()


def test_refit_is_reproducible_and_leaves_the_parent_alone(parent, warm, new_rows):
    before = {k: v.copy() for k, v in parent.draws.items()}
    again = parent.update(*new_rows, seed=5, warn=False, progress=False)
    for k in warm.draws:
        np.testing.assert_array_equal(again.draws[k], warm.draws[k])
    assert again.info["cached_sampler"] is True  # start values are arguments: no recompiling
    other = parent.update(*new_rows, seed=6, warn=False, progress=False)
    assert not np.array_equal(other.draws["b"], warm.draws["b"])
    for k, v in before.items():
        np.testing.assert_array_equal(parent.draws[k], v)
    assert parent.schema.num_rows == SPLIT


def test_lineage_survives_save_load_and_a_loaded_posterior_updates_the_same(parent, warm, new_rows, tmp_path):
    lineage = warm.info["lineage"]
    assert lineage["parent"] == {"fitted_at": parent.info["fitted_at"], "seed": 3, "num_rows": SPLIT,
                                 "method": "nuts"}
    assert lineage["mode"] == "refit" and lineage["rows_added"] == 40 and lineage["num_rows"] == 200
    assert lineage["generation"] == 1 and lineage["warmup"] == WARM_WARMUP
    parent.save(tmp_path / "parent")
    loaded = bi.load(tmp_path / "parent")
    again = loaded.update(*new_rows, seed=5, warn=False, progress=False)
    for k in warm.draws:  # same draws, step sizes and data after the round trip: same numbers
        np.testing.assert_array_equal(again.draws[k], warm.draws[k])
    warm.save(tmp_path / "child")
    child = bi.load(tmp_path / "child")
    assert lineage_of(child) == lineage and child.settings["warmup"] == WARM_WARMUP


def test_store_records_the_parent_version(parent, new_rows, tmp_path):
    store = ModelStore(tmp_path / "models")
    assert store.save(parent, name="lin") == 1
    assert store.metadata("lin", 1)["lineage"] is None
    loaded = store.load("lin", version=1)
    child = loaded.update(*new_rows, seed=2, warn=False, progress=False)
    assert store.save(child, name="lin") == 2
    lineage = store.metadata("lin", 2)["lineage"]
    assert lineage["parent"]["store_name"] == "lin" and lineage["parent"]["store_version"] == 1
    assert lineage["rows_added"] == 40 and lineage["mode"] == "refit"
    # a posterior just saved is the parent of its next update: it knows its name and version
    assert child.info["store"] == {"name": "lin", "version": 2}


# ----------------------------------------------------------------------------- sequential
def test_sequential_update_matches_the_exact_conjugate_posterior(parent, new_rows, linreg_problem):
    p = linreg_problem
    seq = parent.update(*new_rows, mode="sequential", seed=4, warn=False, progress=False)
    assert seq.info["lineage"]["mode"] == "sequential" and seq.schema.num_rows == 200
    assert set(seq.draws) == {"b"} and seq.draws["b"].shape == (4, 500, 3)
    assert seq.diagnose().ok
    flat = seq.flat_draws()["b"]
    sd_exact = np.sqrt(np.diag(p.cov_post))
    ess_new = seq.summary()["ess_bulk"].to_numpy()
    ess_old = parent.summary()["ess_bulk"].to_numpy()
    sd_old = parent.flat_draws()["b"].std(axis=0)
    mean_old = parent.flat_draws()["b"].mean(axis=0)
    # The mean is off the exact one by (a) its own Monte Carlo error sd/sqrt(ESS_new), (b) the
    # error of the prior's fitted mean, sd_old/sqrt(ESS_old), shrunk by the update (factor <= 1),
    # (c) the error of the prior's fitted covariance (relative sqrt(2/ESS_old)) times the pull of
    # the new rows, |mean_old - mean_exact|. Each is about normal; 4 x their root sum of squares.
    bound = 4 * np.sqrt(sd_exact**2 / ess_new + sd_old**2 / ess_old
                        + (np.sqrt(2 / ess_old) * np.abs(mean_old - p.mu_post)) ** 2)
    assert np.all(np.abs(flat.mean(axis=0) - p.mu_post) <= bound), np.abs(flat.mean(axis=0) - p.mu_post) / bound
    # The sd is off by its relative Monte Carlo error 1/sqrt(2 ESS) (normal draws) and that of the
    # prior's sd, 1/sqrt(2 ESS_old); 4 x their root sum of squares.
    rel = 4 * np.sqrt(1 / (2 * ess_new) + 1 / (2 * ess_old))
    assert np.all(np.abs(flat.std(axis=0) / sd_exact - 1) <= rel), flat.std(axis=0) / sd_exact - 1


def test_unknown_mode_is_refused(tiny_linreg, small_data):
    with pytest.raises(bi.InputError) as info:
        tiny_linreg.update(small_data["X"][:5], small_data["y"][:5], mode="batch")
    assert info.value.field == "mode"


# ----------------------------------------------------------------------------- SVI
def test_svi_update_starts_from_the_previous_guide(small_data):
    X, y = small_data["X"], small_data["y"]
    svi = dict(method="svi", num_steps=4000, check_every=200, draws=400, warn=False, progress=False)
    parent = bi.fit(models.linreg, X[:50], y[:50], seed=0, **svi)
    saved = bi.fitting.guide_params_of(parent.settings)
    assert set(saved) == {"auto_loc", "auto_scale_tril"}
    child = parent.update(X[50:], y[50:], seed=1, warn=False, progress=False)
    assert child.info["lineage"]["warm_start"] is True and child.info["warm_start"] is True
    assert child.info["num_steps"] <= max(2 * 200, 4000 // 4)
    # Started at the previous optimum, the first losses are already at the converged level of a
    # cold fit on the same rows (within 5 sds of its loss noise over its last 200 steps), where a
    # cold start's first losses are far above it.
    cold = bi.fit(models.linreg, X, y, seed=1, **svi)
    level, noise = cold.losses[-200:].mean(), cold.losses[-200:].std()
    assert abs(child.losses[:10].mean() - level) < 5 * noise
    assert cold.losses[:10].mean() > level + 5 * noise


@pytest.mark.slow
def test_sequential_svi_update_is_near_the_refit(small_data):
    X, y = small_data["X"], small_data["y"]
    svi = dict(method="svi", num_steps=4000, check_every=200, draws=2000, warn=False, progress=False)
    parent = bi.fit(models.linreg, X[:50], y[:50], seed=0, **svi)
    seq = parent.update(X[50:], y[50:], mode="sequential", seed=1, warn=False, progress=False)
    refit = parent.update(X[50:], y[50:], seed=1, warn=False, progress=False)
    assert seq.draws["b"].shape == (1, 2000, 2) and seq.method == "svi"
    # Both approximate the same Gaussian posterior; means agree to within 4 x the Monte Carlo
    # error of 2000 iid guide draws (sd / sqrt(2000) each) plus the optimizer's error in the
    # guide's mean, bounded here by 0.1 sd (the averaged iterates of Adam at step 0.01).
    sd = refit.flat_draws()["b"].std(0)
    bound = 4 * sd * np.sqrt(2 / 2000) + 0.1 * sd
    assert np.all(np.abs(seq.flat_draws()["b"].mean(0) - refit.flat_draws()["b"].mean(0)) < bound)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("case, field", [
    ("missing_y", "y"), ("wrong_columns", "X"), ("empty", "X"), ("row_mismatch", "y"), ("static_changed", "sigma"),
    ("unknown_argument", "z"), ("nan", "y"),
])
def test_bad_new_rows_name_the_field(tiny_linreg, small_data, case, field):
    X, y = small_data["X"][:10], small_data["y"][:10]
    call = {
        "missing_y": lambda: tiny_linreg.update(X),
        "wrong_columns": lambda: tiny_linreg.update(np.ones((10, 3)), y),
        "empty": lambda: tiny_linreg.update(X[:0], y[:0]),
        "row_mismatch": lambda: tiny_linreg.update(X, y[:9]),
        "static_changed": lambda: tiny_linreg.update(X, y, sigma=2.0),
        "unknown_argument": lambda: tiny_linreg.update(X, y, z=np.ones(10)),
        "nan": lambda: tiny_linreg.update(X, np.where(np.arange(10) == 3, np.nan, y)),
    }[case]
    with pytest.raises(bi.InputError) as info:
        call()
    assert info.value.field == field, str(info.value)


def test_unseen_index_and_dataframe_columns_are_refused(tiny_grouped, tiny_frame, small_data):
    X, y = small_data["X"][:4], small_data["y"][:4]
    with pytest.raises(bi.InputError, match="outside the range") as info:
        tiny_grouped.update(X, np.array([0, 1, 2, 3]), y)
    assert info.value.field == "g"
    with pytest.raises(bi.InputError, match="missing column") as info:
        tiny_frame.update(pd.DataFrame(X, columns=["a", "c"]), y)
    assert info.value.field == "X"


@pytest.mark.slow  # a formula model's SVI program takes long to compile
def test_formula_update_takes_a_dataframe_and_refuses_new_groups(small_data):
    frame = pd.DataFrame({"x": small_data["X"][:, 0], "g": small_data["g"], "y": small_data["y"]})
    post = bi.Model.from_formula("y ~ x + (1 | g)", data=frame[:50]).fit(seed=0, **TINY_SVI)
    child = post.update(frame[50:], seed=0, warn=False, progress=False)
    assert child.schema.num_rows == 60 and child.info["lineage"]["rows_added"] == 10
    unseen = frame[50:].assign(g=9)
    with pytest.raises(bi.InputError, match="new group level") as info:
        post.update(unseen)
    assert info.value.field == "g"
    with pytest.raises(bi.InputError) as info:
        post.update(frame[50:].drop(columns="y"))
    assert info.value.field == "y"
    with pytest.raises(bi.InputError) as info:
        post.update(frame[:0])
    assert info.value.field == "data"


# ----------------------------------------------------------------------------- NUTS starts
SHORT = dict(chains=2, draws=200, warmup=200, warn=False, progress=False)


def _check_svi_start(post, p):
    assert post.info["init_fallback"] is None and post.info["init_num_steps"] >= 250
    # 400 draws of the exact Gaussian posterior: the means are off by about sd / sqrt(ESS) with
    # ESS >= 100 here, so |error| < 0.5 sd is a 5-sigma bound
    assert np.all(np.abs(post.flat_draws()["b"].mean(0) - p.mu_post) < 0.5 * np.sqrt(np.diag(p.cov_post)))


@pytest.mark.slow
def test_nuts_starts_from_svi_draws(linreg_problem):
    p = linreg_problem
    _check_svi_start(bi.fit(models.linreg, p.X, p.y, init="svi", seed=0, sigma=p.sigma, tau=p.tau, **SHORT), p)


def test_nuts_starts_from_map_or_given_values(linreg_problem):
    p = linreg_problem
    short = dict(SHORT, sigma=p.sigma, tau=p.tau)
    _check_svi_start(bi.fit(models.linreg, p.X, p.y, init="map", seed=0, **short), p)
    post = bi.fit(models.linreg, p.X, p.y, init_params={"b": [1.0, -0.5, 0.25]}, seed=0, **short)
    assert post.summary().shape[0] == 3
    with pytest.raises(bi.InputError) as info:
        bi.fit(models.linreg, p.X, p.y, init_params={"b": [1.0, 2.0]}, **short)
    assert info.value.field == "init_params['b']"
    with pytest.raises(bi.InputError) as info:
        bi.fit(models.linreg, p.X, p.y, init_params={"c": 1.0}, **short)
    assert info.value.field == "init_params"


# ----------------------------------------------------------------------------- radon
@pytest.mark.slow
def test_radon_warm_update_matches_a_cold_refit():
    """90% of the radon rows fitted, the other 10% added: the warm update (WARM_WARMUP warmup) and a cold
    refit (1000 warmup) on the same 919 rows agree on all 89 posterior means."""
    from bayesinf.demo import radon_varying_intercept

    frame = bi.datasets.load_radon().frame
    county, floor = frame["county"].to_numpy(np.int64), frame["floor"].to_numpy(np.float32)
    y = frame["log_radon"].to_numpy(np.float32)
    order = np.random.default_rng(0).permutation(len(frame))
    old, new = order[:827], order[827:]
    fit = dict(chains=4, draws=1000, int_ranges={"county": (0, 85)}, warn=False, progress=False)
    parent = bi.fit(radon_varying_intercept, county[old], floor[old], 85, log_radon=y[old], seed=0, **fit)
    warm = parent.update(county[new], floor[new], log_radon=y[new], seed=1, warn=False, progress=False)
    both = np.concatenate([old, new])
    cold = bi.fit(radon_varying_intercept, county[both], floor[both], 85, log_radon=y[both], seed=2, **fit)
    assert warm.settings["warmup"] == WARM_WARMUP < cold.settings["warmup"]
    assert warm.diagnose().ok and cold.diagnose().ok
    # 89 means, each |z| <= 4.5 (a false alarm per parameter 7e-6, for the test 6e-4)
    _means_agree(warm, cold, k=4.5)
    # ESS per draw comparable: measured 0.35 (warm, 50 warmup) and 0.34 (cold), medians of 5 seeds
    assert warm.summary()["ess_bulk"].min() >= 0.6 * cold.summary()["ess_bulk"].min()


# ----------------------------------------------------------------------------- input statistics
def _merge_cases():
    """(old values, new values, categorical) for ``merge_column_statistics``."""
    rng = np.random.default_rng(42)
    return {
        "continuous": (rng.normal(2.0, 1.0, 400), rng.normal(3.0, 2.0, 150), False),
        "few_old_rows": (rng.gamma(2.0, 1.5, 30), rng.gamma(2.0, 1.5, 300), False),
        "integer": (rng.integers(0, 5, 300), rng.integers(2, 8, 90), False),
        "boolean": (rng.uniform(size=200) < 0.3, rng.uniform(size=50) < 0.6, False),
        "coded_floats": (rng.integers(0, 3, 200) * 0.1, rng.integers(0, 4, 60) * 0.1, False),
        "factor_floats": (rng.integers(0, 40, 100) * 0.5, rng.integers(0, 50, 40) * 0.5, True),
        "discrete_becomes_continuous": (rng.integers(0, 3, 200) * 1.0, rng.normal(size=50), False),
        "too_many_levels_before": (np.arange(1200), rng.integers(0, 5, 50), False),
        "too_many_levels_after": (np.arange(990), np.arange(990, 1010), False),
        "text": (rng.choice(["a", "b", "c"], 100).astype(object), rng.choice(["b", "d"], 30).astype(object), True),
        "text_too_many_levels": (np.array([f"l{i}" for i in range(1001)], dtype=object), np.array(["a"], dtype=object),
                                 True),
    }


@pytest.mark.parametrize("case", list(_merge_cases()))
def test_merge_column_statistics_agrees_with_the_statistics_of_all_rows(case):
    from bayesinf.store import PERCENTILE_PROBS, QUANTILE_PROBS, column_statistics, merge_column_statistics

    old_values, new_values, categorical = _merge_cases()[case]
    both = np.concatenate([old_values, new_values])
    exact = column_statistics(both, categorical=categorical)
    merged = merge_column_statistics(column_statistics(old_values, categorical=categorical), new_values,
                                     categorical=categorical)
    assert set(merged) == set(exact) and merged["count"] == exact["count"] == both.size
    assert merged.get("value_counts") == exact.get("value_counts")
    if exact["mean"] is None:  # text: count and value counts only
        assert merged == exact
        return
    for key in ("mean", "sd", "min", "max"):  # pooled formulas: exact up to rounding
        np.testing.assert_allclose(merged[key], exact[key], rtol=1e-12, err_msg=key)
    # The old part's CDF, interpolated through its 101 percentiles, is within 0.01 + 1/n_old of the
    # old rows' empirical CDF (between neighbouring percentiles it rises by 0.01, and np.quantile's
    # interpolation puts each percentile within one row of its rank). The mixture weights it by
    # n_old / n, so the merged CDF is within eps_cdf = 0.01 n_old / n + 1 / n of the empirical CDF of all
    # rows; inverting it, each merged quantile at q lies between the empirical quantiles at q -/+ eps_cdf,
    # which are within one more row (1 / n) of np.quantile's. Hence the bracket below.
    n_old, n = old_values.size, both.size
    eps = 0.01 * n_old / n + 2 / n
    probs = np.concatenate([QUANTILE_PROBS, PERCENTILE_PROBS])
    values = np.concatenate([list(merged["quantiles"].values()), merged["percentiles"]])
    assert list(merged["quantiles"]) == list(exact["quantiles"]) and len(merged["percentiles"]) == 101
    lower = np.quantile(both.astype(np.float64), np.clip(probs - eps, 0, 1))
    upper = np.quantile(both.astype(np.float64), np.clip(probs + eps, 0, 1))
    assert np.all((lower <= values) & (values <= upper)), probs[(values < lower) | (values > upper)]
    assert np.all(np.diff(merged["percentiles"]) >= 0)
    assert merged["percentiles"][0] == exact["min"] and merged["percentiles"][-1] == exact["max"]


def test_merge_column_statistics_edge_cases():
    from bayesinf.store import column_statistics, merge_column_statistics

    old = column_statistics(np.arange(10.0))
    assert merge_column_statistics(old, np.empty(0)) == old
    # an earlier merge, saved as JSON, merges again
    twice = merge_column_statistics(json.loads(json.dumps(merge_column_statistics(old, [3.5, 20.0]))), [-1.0])
    assert twice["count"] == 13 and twice["min"] == -1.0 and twice["max"] == 20.0
    np.testing.assert_allclose(twice["mean"], np.mean([*range(10), 3.5, 20.0, -1.0]), rtol=1e-12)
    for old_stats, values, field in [
        ({"mean": 1.0}, [1.0], "old"),
        ({"count": 3, "mean": 1.0}, [1.0], "old"),
        ({k: v for k, v in old.items() if k not in ("percentiles", "quantiles")}, [1.0], "old"),
        (old, np.ones((3, 2)), "new_values"),
        (old, [1.0, np.nan], "new_values"),
        (old, np.array(["a", "b"], dtype=object), "new_values"),
    ]:
        with pytest.raises(bi.InputError) as info:
            merge_column_statistics(old_stats, values)
        assert info.value.field == field, str(info.value)


@pytest.fixture(scope="module")
def formula_frame():
    rng = np.random.default_rng(12)
    n = 80
    frame = pd.DataFrame({"x": rng.normal(2.0, 1.0, n), "c": rng.choice(["a", "b", "c"], n)})
    frame["y"] = 0.5 * frame["x"] + frame["c"].map({"a": 0.0, "b": 1.0, "c": -1.0}) + rng.normal(size=n)
    return frame


def test_updated_formula_posterior_keeps_column_statistics(formula_frame, tmp_path):
    from bayesinf.monitor.drift import input_drift
    from bayesinf.store import merge_column_statistics

    old, new = formula_frame[:60], formula_frame[60:]
    parent = bi.Model.from_formula("y ~ x + c", data=old).fit(seed=0, **TINY_SVI)
    child = parent.update(new, seed=1, warn=False, progress=False)
    expected = {col: merge_column_statistics(parent.settings["input_statistics"][col], new[col].to_numpy(),
                                             categorical=col == "c") for col in ("x", "c")}
    assert child.settings["input_statistics"] == expected
    assert parent.settings["input_statistics"]["x"]["count"] == 60  # the parent is left alone

    store = ModelStore(tmp_path / "models")
    store.save(child, name="formula")
    arguments = store.metadata("formula", 1)["inputs"]["arguments"]
    assert set(arguments) == {"x", "c"}  # described by its data columns, not its design arrays
    for col in ("x", "c"):
        assert arguments[col]["statistics"] == {col: expected[col]} and expected[col]["count"] == 80
    assert arguments["c"]["statistics"]["c"]["value_counts"] == formula_frame["c"].value_counts().to_dict()
    # the drift check finds every column of live rows (as the monitoring report reads them)
    live = {"x": formula_frame["x"].to_numpy(np.float64), "c": formula_frame["c"].to_numpy(object)}
    drift = {d.feature: d for d in input_drift(arguments, live)}
    assert set(drift) == {"x", "c"}
    assert all(d.num_rows == 80 and d.num_train == 80 and d.status != "no data" for d in drift.values())
    # the training rows themselves: the test statistics of identical distributions (only the
    # percentile interpolation of the continuous column differs) are far from any drift status
    assert drift["c"].statistic == 0.0 and drift["x"].status == "stable"


@pytest.mark.slow  # two more fits of a formula model
def test_sequential_and_second_updates_keep_column_statistics(formula_frame, tmp_path):
    from bayesinf.store import column_statistics

    first, second, third = formula_frame[:40], formula_frame[40:60], formula_frame[60:]
    parent = bi.Model.from_formula("y ~ x + c", data=first).fit(seed=0, **TINY_SVI)
    store = ModelStore(tmp_path / "models")
    store.save(parent.update(second, mode="sequential", seed=1, warn=False, progress=False), name="formula")
    child = store.load("formula", version=1).update(third, seed=2, warn=False, progress=False)
    assert child.info["lineage"]["generation"] == 2
    stats = child.settings["input_statistics"]
    exact = column_statistics(formula_frame["c"].to_numpy(), categorical=True)
    assert stats["c"] == exact and stats["x"]["count"] == 80
    np.testing.assert_allclose(stats["x"]["mean"], formula_frame["x"].mean(), rtol=1e-12)
    np.testing.assert_allclose(stats["x"]["sd"], formula_frame["x"].std(ddof=1), rtol=1e-12)


def test_warm_start_adapts_the_step_size_in_one_window():
    """With the mass matrix given, the warm warmup is one dual averaging window: the step size is
    never restarted from ten times its value, as it is at the end of each of NumPyro's windows."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import NUTS

    from bayesinf.inference.nuts import _with_tuning

    def model():
        numpyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))

    def step_sizes(step_size_only):
        kernel = NUTS(model, adapt_mass_matrix=False)
        state = kernel.init(jax.random.PRNGKey(0), 50, None, (), {})
        state = _with_tuning(state, jnp.asarray(0.8), jnp.ones(3), False, step_size_only=step_size_only)
        _, sizes = jax.lax.scan(lambda s, _: (kernel.sample(s, (), {}),) * 2, state, None, length=50)
        return np.asarray(sizes.adapt_state.step_size)

    # a jump of more than 4x from one iteration to the next after the first two is a restart
    jumps = lambda sizes: int(np.sum(sizes[2:] / sizes[1:-1] > 4.0))
    assert jumps(step_sizes(None)) >= 1  # NumPyro's schedule for 50 iterations has window ends
    assert jumps(step_sizes(50)) == 0
