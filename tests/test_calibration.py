"""Calibration reports: the scoring functions against closed forms, coverage of a well-specified
model on held-out data, and the flags raised by misspecified or overconfident predictives.

Tolerances are k binomial (or Monte Carlo) standard errors with k stated at each assertion.
"""

import math

import numpy as np
import pytest
from scipy import stats

import calibration_models as cm
from bayesinf.calibration import (CalibrationReport, calibration, coverage, crps, interval_score,
                                  log_predictive_density, pit, uniformity_test)
from bayesinf.errors import InputError

K = 3.0  # standard errors allowed throughout


@pytest.fixture(scope="module")
def well_specified():
    return cm.fitted("normal_regression", "normal")


@pytest.fixture(scope="module")
def misspecified():
    return cm.fitted("normal_regression", "hetero")


# ----------------------------------------------------------------------------- scoring functions
def test_crps_matches_normal_closed_form():
    rng = np.random.default_rng(0)
    rows, m, sigma = 400, 4000, 1.7
    y = rng.normal(size=rows) * 2
    draws = sigma * rng.normal(size=(rows, m))
    z = y / sigma
    exact = sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi))
    got = crps(draws, y)
    # The NRG estimator is biased by E|X - X'| / (2m) (~1e-4 here); the Monte Carlo error of the
    # mean over rows is about sigma / sqrt(rows * m) * 1.
    assert abs(got.mean() - exact.mean()) < K * sigma / math.sqrt(rows * m) + sigma / m
    assert np.corrcoef(got, exact)[0, 1] > 0.999


def test_crps_sorted_form_equals_pairwise_form():
    rng = np.random.default_rng(1)
    draws, y = rng.gamma(2.0, size=(5, 60)), rng.normal(size=5)
    pairwise = np.abs(draws - y[:, None]).mean(1) - 0.5 * np.abs(draws[:, :, None] - draws[:, None, :]).mean((1, 2))
    np.testing.assert_allclose(crps(draws, y), pairwise, rtol=1e-12)


def test_interval_score_and_coverage():
    y = np.array([0.0, 2.0, -3.0])
    lower, upper = np.full(3, -1.0), np.full(3, 1.0)
    np.testing.assert_allclose(interval_score(y, lower, upper, 0.9), [2.0, 2 + 20 * 1.0, 2 + 20 * 2.0])
    assert coverage(y, lower, upper) == pytest.approx(1 / 3)
    assert coverage(y, np.stack([lower, lower - 5]), np.stack([upper, upper + 5])).tolist() == pytest.approx([1 / 3, 1])


def test_pit_is_randomized_for_ties_and_uniform_for_calibrated_counts():
    rng = np.random.default_rng(2)
    rows = 4000
    y = rng.poisson(3.0, size=rows)
    draws = rng.poisson(3.0, size=(rows, 500))
    values = pit(draws, y, rng)
    assert uniformity_test(values).is_uniform
    # negative control: the unrandomized share of draws below y is far from uniform for counts
    assert not uniformity_test((draws < y[:, None]).mean(1)).is_uniform


def test_log_predictive_density_matches_logsumexp():
    ll = np.log(np.array([[0.1, 0.3], [0.5, 0.5]]))
    np.testing.assert_allclose(log_predictive_density(ll), np.log([0.2, 0.5]))
    assert np.isfinite(log_predictive_density(np.array([[-1e4, -1e4 - 1]])))[0]


def test_uniformity_test_of_ranks_uses_equal_bins():
    ranks = np.repeat(np.arange(100), 3)  # perfectly uniform ranks 0..99
    t = uniformity_test(ranks, num_values=100)
    assert 100 % (t.df + 1) == 0 and t.statistic == 0 and t.is_uniform
    assert not uniformity_test(np.r_[np.zeros(150, int), np.full(150, 99)], num_values=100).is_uniform


# ----------------------------------------------------------------------------- reports from draws
def test_report_of_exact_predictive_is_calibrated_and_overconfident_one_is_flagged():
    rng = np.random.default_rng(3)
    rows = 2000
    y = rng.normal(size=rows)
    good = CalibrationReport.from_draws(rng.normal(size=(rows, 1000)), y)
    assert good.ok, good
    assert np.all(np.abs(good.z) <= K)
    # negative control: predictive sd 0.7 of the truth must under-cover at every level
    bad = CalibrationReport.from_draws(0.7 * rng.normal(size=(rows, 1000)), y)
    assert not bad.ok
    assert np.all(bad.z < -K)
    assert not bad.pit_test.is_uniform
    assert any("under-coverage at 90%" in p for p in bad.problems)
    # sharper but wrong: the proper scores prefer the calibrated predictive
    assert good.scores()["crps"] < bad.scores()["crps"]
    assert good.interval_score[2] < bad.interval_score[2]


# ----------------------------------------------------------------------------- reports of fitted models
def test_well_specified_model_covers_at_every_level(well_specified):
    X, y = cm.linear_data(2000, 101, "normal")
    report = calibration(well_specified, X, y=y)
    assert report.num_rows == 2000 and report.levels == (0.5, 0.8, 0.9, 0.95)
    # within K = 3 binomial SEs of nominal at every level (SE = sqrt(l (1 - l) / 2000))
    assert np.all(np.abs(report.coverage - np.array(report.levels)) <= K * report.coverage_se), report
    assert report.pit_test.is_uniform, report
    assert report.ok
    # the log predictive density of Normal(1) noise is about -1.42 per row (+ parameter uncertainty)
    assert report.lpd is not None and report.lpd.mean() == pytest.approx(-0.5 * math.log(2 * math.pi) - 0.5, abs=0.1)
    # an ideal N(mu, 1) forecast has expected CRPS 1 / sqrt(pi) = 0.564
    assert report.crps.mean() == pytest.approx(1 / math.sqrt(math.pi), abs=0.05)


def test_misspecified_model_under_covers_at_90(misspecified):
    X, y = cm.linear_data(4000, 102, "hetero")
    report = calibration(misspecified, X, y=y)
    i90 = report.levels.index(0.9)
    assert report.z[i90] < -K, report
    assert not report.ok and not report.pit_test.is_uniform
    assert any(p.startswith("under-coverage at 90%") for p in report.problems)


def test_report_exports(well_specified):
    X, y = cm.linear_data(300, 103, "normal")
    report = calibration(well_specified, X, y=y, levels=(0.9, 0.5), seed=4)
    table = report.to_pandas()
    assert list(table.index) == [0.5, 0.9]
    assert list(table.columns) == ["nominal", "coverage", "se", "z", "mean_width", "interval_score", "ok"][1:]
    assert report.pointwise().shape == (300, 3)
    text = repr(report)
    assert "CalibrationReport" in text and "0.90" in text and "CRPS" in text
    assert "<table" in report._repr_html_()
    again = calibration(well_specified, X, y=y, levels=(0.9, 0.5), seed=4)
    np.testing.assert_array_equal(report.pit, again.pit)


def test_outcomes_by_argument_name_or_dict(well_specified):
    X, y = cm.linear_data(50, 104, "normal")
    a = calibration(well_specified, X, y=y)
    b = calibration(well_specified, X, y={"y": y})
    np.testing.assert_array_equal(a.crps, b.crps)


@pytest.mark.parametrize("kwargs, field", [
    (dict(), "y"),
    (dict(y=np.zeros(3)), "y"),
    (dict(y="y"), "y"),
    (dict(y={"z": np.zeros(50)}), "y"),
    (dict(y=np.zeros(50), levels=1.5), "levels"),
    (dict(y=np.zeros(50), kind="box"), "kind"),
])
def test_bad_inputs_name_the_argument(well_specified, kwargs, field):
    X, _ = cm.linear_data(50, 105, "normal")
    with pytest.raises(InputError) as info:
        calibration(well_specified, X, **kwargs)
    assert info.value.field == field


# ----------------------------------------------------------------------------- formula models
@pytest.fixture(scope="module")
def radon():
    """A small varying-intercept fit on a random 600 of the 919 radon rows; the rest held out."""
    import bayesinf as bi

    frame = bi.datasets.load_radon().frame
    order = np.random.default_rng(0).permutation(len(frame))
    train, test = frame.iloc[order[:600]], frame.iloc[order[600:]]
    post = bi.Model.from_formula("log_radon ~ floor + log_uppm + (1 | county)", data=train).fit(
        chains=2, draws=200, warmup=200, seed=0, progress=False, warn=False)
    return post, test


def _assert_same_report(a, b):
    for name in ("coverage", "mean_width", "interval_score", "pit", "crps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.site == b.site and a.num_rows == b.num_rows


def test_formula_calibration_scores_what_predict_predicts(radon):
    post, test = radon
    y = test["log_radon"].to_numpy()
    report = calibration(post, test, y=y, seed=3)
    assert report.site == "log_radon" and report.num_rows == len(test)
    # The same rows through Posterior.predict with the same seed: the same predictive draws, so
    # the same report (outcomes in the fit dtype, as calibration scores them).
    pred = post.predict(test, seed=3, return_draws=True)
    expected = CalibrationReport.from_draws(pred["log_radon"].row_draws, y.astype(np.float32), site="log_radon")
    _assert_same_report(report, expected)
    # lpd: the log likelihood of the held-out rows, finite, and a sane value for log radon
    assert report.lpd is not None and np.all(np.isfinite(report.lpd))
    # The response column is the default outcome, or named by y=; columns are read by name, so
    # another order (a three-column frame without the response, too) gives the same report.
    _assert_same_report(report, calibration(post, test, seed=3))
    _assert_same_report(report, post.calibration(test, y="log_radon", seed=3))
    _assert_same_report(report, post.calibration(test[["county", "log_uppm", "floor"]], y=y, seed=3))
    _assert_same_report(report, post.calibration(data=test[["log_uppm", "log_radon", "county", "floor"]], seed=3))
    # negative control: another seed gives other draws (so equality above is not vacuous)
    assert not np.array_equal(calibration(post, test, seed=4).pit, report.pit)


def test_formula_calibration_new_groups_as_predict(radon):
    post, test = radon
    fitted = set(post.model.design.groups[0].levels)
    assert not set(test["county"].astype(str)) <= fitted  # some held-out counties are new
    y = test["log_radon"].to_numpy().astype(np.float32)
    report = calibration(post, test, new_groups="population", seed=1)
    pred = post.predict(test, new_groups="population", seed=1, return_draws=True)
    _assert_same_report(report, CalibrationReport.from_draws(pred["log_radon"].row_draws, y, site="log_radon"))
    with pytest.raises(InputError) as info:
        calibration(post, test, new_groups="error")
    assert info.value.field == "county"


@pytest.mark.parametrize("drop, field", [("floor", "floor"), ("county", "county"), ("log_uppm", "log_uppm")])
def test_formula_calibration_missing_column_is_named(radon, drop, field):
    post, test = radon
    with pytest.raises(InputError) as info:
        calibration(post, test.drop(columns=drop))
    assert info.value.field == field


def test_formula_calibration_without_outcomes(radon):
    post, test = radon
    with pytest.raises(InputError, match="'log_radon'") as info:
        calibration(post, test.drop(columns="log_radon"))
    assert info.value.field == "y"
    with pytest.raises(InputError, match="'outcome'") as info:
        calibration(post, test, y="outcome")
    assert info.value.field == "y"
    with pytest.raises(InputError) as info:
        calibration(post, test, y=np.zeros(3))
    assert info.value.field == "y"


# ----------------------------------------------------------------------------- several observed sites
def two_sites(X, y1=None, y2=None):
    """A Gaussian and a Bernoulli outcome; scoring one leaves the other to be sampled."""
    import numpyro
    import numpyro.distributions as dist

    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    c = numpyro.sample("c", dist.Normal(0.0, 1.0))
    with numpyro.plate("rows", X.shape[0]):
        numpyro.sample("y1", dist.Normal(X @ b, s), obs=y1)
        numpyro.sample("y2", dist.Bernoulli(logits=c * X[:, 0]), obs=y2)


def test_calibration_of_each_site_of_a_two_site_model():
    import bayesinf as bi
    from bayesinf.calibration import recalibrate

    rng = np.random.default_rng(5)
    X = rng.normal(size=(80, 2))
    y1 = X @ np.array([1.0, -1.0]) + rng.normal(size=80)
    y2 = (rng.uniform(size=80) < 1 / (1 + np.exp(-X[:, 0]))).astype(np.int64)
    post = bi.fit(two_sites, X, y1=y1, y2=y2, chains=2, draws=100, warmup=100, seed=0, progress=False, warn=False)
    loglik = post.log_likelihood()  # on the fit rows, every site observed
    for site, outcomes, report in [
        ("y1", y1, calibration(post, X[:20], y1=y1[:20])),
        ("y1", y1, calibration(post, X[:20], y={"y1": y1[:20]})),
        ("y2", y2, calibration(post, X[:20], y={"y2": y2[:20]})),
        ("y2", y2, calibration(post, X[:20], y1=y1[:20], y2=y2[:20], site="y2")),
    ]:
        assert report.site == site and report.num_rows == 20
        # the lpd of rows 0..19 equals the one from the full log likelihood of the fit (float32
        # arithmetic in differently shaped programs: agreement to ~1e-6 relative)
        ll = loglik[site].reshape(-1, 80)[:, :20].T
        np.testing.assert_allclose(report.lpd, log_predictive_density(ll), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError) as info:
        calibration(post, X[:20], y1=y1[:20], y2=y2[:20])
    assert info.value.field == "site"
    assert recalibrate(post, X[:20], y1=y1[:20]).site == "y1"
