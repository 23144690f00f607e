"""Split-conformal recalibration: the finite-sample quantile, held-out coverage of a misspecified
model before (negative control) and after recalibration, and save/load."""

import json

import numpy as np
import pytest

import calibration_models as cm
from bayesinf.calibration import (CalibrationWarning, calibration, conformal_quantile, load, min_calibration_rows,
                                  recalibrate)
from bayesinf.errors import InputError, ModelFileError

K = 3.0  # binomial standard errors allowed


@pytest.fixture(scope="module")
def misspecified():
    return cm.fitted("normal_regression", "hetero")


@pytest.fixture(scope="module")
def splits():
    return {"cal": cm.linear_data(2000, 201, "hetero"), "test": cm.linear_data(2000, 202, "hetero")}


def _coverage(pred, y, level):
    lo, hi = pred.interval(level)
    return float(((lo <= y) & (y <= hi)).mean())


def test_conformal_quantile_has_finite_sample_coverage():
    # Exchangeable scores: with n = 19 calibration scores the conformal quantile covers a new
    # score with probability exactly ceil(20 * 0.9) / 20 = 0.9.
    rng = np.random.default_rng(0)
    reps, n, level = 20000, 19, 0.9
    scores = rng.exponential(size=(reps, n + 1))
    q = np.array([conformal_quantile(s[:n], level) for s in scores])
    hits = scores[:, n] <= q
    se = np.sqrt(level * (1 - level) / reps)
    assert abs(hits.mean() - level) <= K * se
    # negative control: the plain empirical quantile under-covers at small n
    naive = np.quantile(scores[:, :n], level, axis=1)
    assert (scores[:, n] <= naive).mean() < level - K * se
    assert conformal_quantile(np.arange(10.0), 0.95) == np.inf  # ceil(11 * 0.95) = 11 > 10


@pytest.mark.parametrize("score", ["normalized", "absolute", "cqr"])
def test_recalibration_restores_coverage(misspecified, splits, score):
    (Xc, yc), (Xt, yt) = splits["cal"], splits["test"]
    se = np.sqrt(0.9 * 0.1 / yt.size)
    before = calibration(misspecified, Xt, y=yt, levels=0.9).coverage[0]
    assert before < 0.9 - K * se  # negative control: the model under-covers at 90%
    cal = recalibrate(misspecified, Xc, y=yc, score=score, levels=(0.5, 0.9))
    pred = cal.predict(Xt, levels=(0.5, 0.9), seed=1)
    for level in (0.5, 0.9):
        se = np.sqrt(level * (1 - level) / yt.size)
        assert abs(_coverage(pred, yt, level) - level) <= K * se, (score, level)
    assert pred.levels == (0.5, 0.9) and pred["y"].row_draws is None


def test_recalibrated_prediction_keeps_model_summaries(misspecified, splits):
    (Xc, yc), (Xt, _) = splits["cal"], splits["test"]
    cal = recalibrate(misspecified, Xc[:500], y=yc[:500])
    base = misspecified.predict(Xt[:100], levels=0.9, seed=3)
    pred = cal.predict(Xt[:100], levels=0.9, seed=3)
    np.testing.assert_array_equal(pred.median, base.median)
    q = cal.quantile(0.9)
    lo, hi = pred.interval(0.9)
    np.testing.assert_allclose(hi - lo, 2 * q * base.sd, rtol=1e-5)
    assert "Recalibrated" in repr(cal) and cal.num_calibration == 500
    assert pred.to_pandas().shape == (100, 5)


def test_save_load_roundtrip(misspecified, splits, tmp_path):
    (Xc, yc), (Xt, _) = splits["cal"], splits["test"]
    for score in ("normalized", "cqr"):
        cal = recalibrate(misspecified, Xc[:300], y=yc[:300], score=score, levels=0.9)
        cal.save(tmp_path / score)
        again = load(tmp_path / score)
        assert again.score == score and again.levels == (0.9,)
        np.testing.assert_array_equal(again.scores, cal.scores)
        a, b = cal.predict(Xt[:64], levels=0.9, seed=2), again.predict(Xt[:64], levels=0.9, seed=2)
        np.testing.assert_array_equal(a.interval(0.9)[0], b.interval(0.9)[0])
        np.testing.assert_array_equal(a.interval(0.9)[1], b.interval(0.9)[1])
    manifest = json.loads((tmp_path / "cqr" / "recalibration.json").read_text())
    assert manifest["posterior"] == "posterior" and manifest["num_calibration"] == 300
    # tampered scores are refused
    with open(tmp_path / "cqr" / "scores.npz", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelFileError, match="checksum"):
        load(tmp_path / "cqr")
    with pytest.raises(ModelFileError):
        load(tmp_path / "nothing")


@pytest.mark.parametrize("kwargs, field", [
    (dict(method="isotonic"), "method"),
    (dict(score="quantile"), "score"),
    (dict(levels=0.0), "levels"),
])
def test_bad_arguments(misspecified, splits, kwargs, field):
    Xc, yc = splits["cal"]
    with pytest.raises(InputError) as info:
        recalibrate(misspecified, Xc[:50], y=yc[:50], **kwargs)
    assert info.value.field == field


def test_cqr_refuses_levels_it_was_not_calibrated_for(misspecified, splits):
    Xc, yc = splits["cal"]
    cal = recalibrate(misspecified, Xc[:50], y=yc[:50], score="cqr", levels=0.9)
    with pytest.raises(InputError, match="cqr"):
        cal.predict(Xc[:5], levels=0.8)


# ----------------------------------------------------------------------------- levels and row counts
def test_interval_at_a_level_not_recalibrated_says_so(misspecified, splits):
    Xc, yc = splits["cal"]
    cal = recalibrate(misspecified, Xc[:200], y=yc[:200])
    pred = cal.predict(Xc[:3])
    with pytest.raises(InputError, match=r"0\.7 was not recalibrated.*0\.5, 0\.8, 0\.9, 0\.95") as info:
        pred.interval(0.7)
    assert info.value.field == "level" and "levels=(0.7,)" in str(info.value)
    assert "draws" not in str(info.value)
    # what the message advises works, and gives the conformal bounds at 0.7
    lo, hi = cal.predict(Xc[:3], levels=(0.7,)).interval(0.7)
    base = misspecified.predict(Xc[:3], levels=0.7)
    np.testing.assert_allclose(hi - lo, 2 * cal.quantile(0.7) * base.sd, rtol=1e-5)
    with pytest.raises(InputError) as info:
        pred.draws
    assert info.value.field == "draws" and "conformal" in str(info.value)
    with pytest.raises(InputError) as info:
        pred.interval(0.9, kind="hdi")
    assert info.value.field == "kind"
    cqr = recalibrate(misspecified, Xc[:200], y=yc[:200], score="cqr", levels=(0.5, 0.9))
    with pytest.raises(InputError, match="recalibrate with levels") as info:
        cqr.predict(Xc[:3], levels=0.9).interval(0.8)
    assert info.value.field == "level"


def test_min_calibration_rows_matches_the_conformal_quantile():
    for level, n in [(0.5, 1), (0.8, 4), (0.9, 9), (0.95, 19), (0.99, 99), (0.7, 3)]:
        assert min_calibration_rows(level) == n
        assert np.isfinite(conformal_quantile(np.arange(float(n)), level))
        if n > 1:
            assert conformal_quantile(np.arange(float(n - 1)), level) == np.inf
    for bad in (1.0, 0.0, "x"):
        with pytest.raises(InputError, match="'level' of min_calibration_rows"):
            min_calibration_rows(bad)


def test_too_few_calibration_rows_warn_naming_level_and_rows(misspecified, splits):
    Xc, yc = splits["cal"]
    with pytest.warns(CalibrationWarning, match=r"level 0\.9 needs at least 9, level 0\.95 needs at least 19") as got:
        cal = recalibrate(misspecified, Xc[:5], y=yc[:5])
    assert len(got) == 1 and "(5)" in str(got[0].message) and "0.8 needs" not in str(got[0].message)
    assert cal.quantile(0.9) == np.inf and np.isfinite(cal.quantile(0.8))
    with pytest.warns(CalibrationWarning, match=r"level 0\.9 needs at least 9"):
        lo, hi = cal.predict(Xc[:4], levels=(0.8, 0.9)).interval(0.9)
    assert np.all(np.isneginf(lo)) and np.all(np.isposinf(hi))
    # negative control: exactly enough rows, no warning (warnings are errors in this test suite)
    cal = recalibrate(misspecified, Xc[:19], y=yc[:19], levels=0.95)
    assert np.isfinite(cal.quantile(0.95))
    assert np.all(np.isfinite(cal.predict(Xc[:4]).interval(0.95)[1]))


# ----------------------------------------------------------------------------- formula models
@pytest.fixture(scope="module")
def radon():
    """A small varying-intercept fit on a random 600 of the 919 radon rows; 150 calibration rows
    and the rest for testing."""
    import bayesinf as bi

    frame = bi.datasets.load_radon().frame
    order = np.random.default_rng(0).permutation(len(frame))
    post = bi.Model.from_formula("log_radon ~ floor + log_uppm + (1 | county)", data=frame.iloc[order[:600]]).fit(
        chains=2, draws=200, warmup=200, seed=0, progress=False, warn=False)
    return post, frame.iloc[order[600:750]], frame.iloc[order[750:]]


@pytest.mark.parametrize("score", ["normalized", "cqr"])
def test_formula_recalibration_takes_data_frames(radon, score):
    post, cal_rows, test = radon
    cal = post.recalibrate(cal_rows, score=score, levels=(0.5, 0.9), seed=2)
    assert cal.site == "log_radon" and cal.num_calibration == len(cal_rows)
    # the response column is the default outcome; columns are read by name, in any order
    same = dict(score=score, levels=(0.5, 0.9), seed=2)
    for other in (post.recalibrate(cal_rows, y=cal_rows["log_radon"].to_numpy(), **same),
                  post.recalibrate(cal_rows[["county", "log_uppm", "floor"]], y=cal_rows["log_radon"], **same),
                  recalibrate(post, cal_rows[list(reversed(cal_rows.columns))], y="log_radon", **same)):
        np.testing.assert_array_equal(other.scores, cal.scores)
    # the scores are those of Posterior.predict's draws of the same rows with the same seed
    draws = post.predict(cal_rows, seed=2, return_draws=True)["log_radon"].row_draws.astype(np.float64)
    y = cal_rows["log_radon"].to_numpy().astype(np.float32).astype(np.float64)
    if score == "normalized":
        expected = np.abs(y - np.quantile(draws, 0.5, axis=1)) / draws.std(axis=1, ddof=1)
        np.testing.assert_allclose(cal.scores, np.sort(expected), rtol=1e-6)
    # Recalibrated.predict takes the same frames (new_groups too) and serves the conformal bounds
    pred = cal.predict(test, levels=0.9, seed=5, new_groups="population")
    base = post.predict(test, levels=0.9, seed=5, new_groups="population")
    lo, hi = pred.interval(0.9)
    q = cal.quantile(0.9)
    if score == "normalized":
        np.testing.assert_allclose(lo, base.median - q * base.sd, rtol=1e-6)
        np.testing.assert_allclose(hi, base.median + q * base.sd, rtol=1e-6)
    else:
        np.testing.assert_allclose(lo, base.interval(0.9)[0] - q, rtol=1e-6)
        np.testing.assert_allclose(hi, base.interval(0.9)[1] + q, rtol=1e-6)
    reordered = cal.predict(test[["floor", "county", "log_uppm"]], levels=0.9, seed=5, new_groups="population")
    np.testing.assert_array_equal(reordered.interval(0.9)[0], lo)
    with pytest.raises(InputError) as info:
        cal.predict(test.drop(columns="log_uppm"), levels=0.9)
    assert info.value.field == "log_uppm"


def test_formula_recalibration_saved_and_loaded_predicts_frames(radon, tmp_path):
    post, cal_rows, test = radon
    cal = post.recalibrate(cal_rows, levels=0.9)
    cal.save(tmp_path / "rc")
    again = load(tmp_path / "rc")
    a, b = cal.predict(test, levels=0.9, seed=1), again.predict(test, levels=0.9, seed=1)
    np.testing.assert_array_equal(a.interval(0.9)[0], b.interval(0.9)[0])
    np.testing.assert_array_equal(a.interval(0.9)[1], b.interval(0.9)[1])
