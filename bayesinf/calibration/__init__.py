"""Calibration of posterior predictive intervals on held-out data, and conformal recalibration.

>>> report = calibration(post, X_test, y=y_test)            # doctest: +SKIP
>>> report = calibration(formula_post, test_frame)          # doctest: +SKIP
>>> report.to_pandas(); report.plot()                        # doctest: +SKIP
>>> cal = recalibrate(post, X_cal, y=y_cal)                  # doctest: +SKIP
>>> cal.predict(X_new, levels=0.9).interval(0.9)             # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from ..intervals import check_kind, check_levels
from ._heldout import heldout_data, predictive_chunks
from .conformal import (CalibrationWarning, Recalibrated, RecalibratedPrediction, conformal_quantile, load,
                        min_calibration_rows, recalibrate)
from .report import (DEFAULT_LEVELS, CalibrationReport, UniformityTest, binomial_se, coverage, crps,
                     interval_score, log_predictive_density, pit, uniformity_test)

__all__ = [
    "calibration", "recalibrate", "load", "CalibrationReport", "Recalibrated", "RecalibratedPrediction",
    "CalibrationWarning", "UniformityTest", "DEFAULT_LEVELS", "coverage", "pit", "crps", "interval_score",
    "log_predictive_density", "uniformity_test", "binomial_se", "conformal_quantile", "min_calibration_rows",
]


def calibration(post, *args, y=None, levels=DEFAULT_LEVELS, kind: str = "eti", site: str | None = None,
                seed: int = 0, alpha: float = 0.01, **kwargs) -> CalibrationReport:
    """Score the posterior predictive of ``post`` against held-out outcomes.

    Parameters
    ----------
    post : Posterior
    *args, **kwargs
        The held-out rows' inputs, exactly as ``Posterior.predict`` takes them: the model's row
        arguments, or for a formula model a DataFrame (and ``new_groups=``).
    y : array, dict of str -> array, or str, optional
        Held-out outcomes, ``(rows,)``: an array for a one-site model or a dict site -> array.
        The model's own observed argument name works too (``kidscore=...``). For a formula
        model, the name of a column of the DataFrame, by default its response column.
    levels : float or sequence of float
        Nominal levels of the central intervals checked (default 0.5, 0.8, 0.9, 0.95).
    kind : {"eti", "hdi"}
        Interval kind.
    site : str, optional
        Observed site, when outcomes for several are given.
    seed : int
        Seed of the predictive draws.
    alpha : float
        Level of the PIT uniformity test.

    Returns
    -------
    CalibrationReport
        Coverage with binomial SEs, mean width, interval score per level; PIT, CRPS and log
        predictive density per row (the last only for models without per-row latent variables).

    Raises
    ------
    InputError
        Missing or mismatched outcomes or inputs.
    """
    from .report import _Accumulator

    levels = check_levels(levels, "calibration")
    kind = check_kind(kind, "calibration")
    site, outcomes, args, kwargs = heldout_data(post, args, kwargs, y, site, "calibration")
    acc = _Accumulator(levels, kind, np.random.default_rng(seed))
    for start, stop, row_draws, ll in predictive_chunks(post, args, kwargs, site, outcomes, seed, "calibration",
                                                        log_lik=True):
        acc.add(row_draws, outcomes[start:stop], ll)
    return acc.report(site, alpha, info={"seed": seed, "num_draws": post.num_chains * post.num_draws})
