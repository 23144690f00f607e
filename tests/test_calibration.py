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
    (dict(y={"z": np.zeros(50)}), "y"),
    (dict(y=np.zeros(50), levels=1.5), "levels"),
    (dict(y=np.zeros(50), kind="box"), "kind"),
])
def test_bad_inputs_name_the_argument(well_specified, kwargs, field):
    X, _ = cm.linear_data(50, 105, "normal")
    with pytest.raises(InputError) as info:
        calibration(well_specified, X, **kwargs)
    assert info.value.field == field
