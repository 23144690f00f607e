"""Split-conformal recalibration: the finite-sample quantile, held-out coverage of a misspecified
model before (negative control) and after recalibration, and save/load."""

import json

import numpy as np
import pytest

import calibration_models as cm
from bayesinf.calibration import calibration, conformal_quantile, load, recalibrate
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
