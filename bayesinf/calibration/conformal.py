"""Split-conformal recalibration of posterior predictive intervals.

A model that is wrong about its noise (heteroscedastic, heavy-tailed, ...) gives intervals that do
not cover what they claim. Split conformal prediction fixes the *marginal* coverage with a
finite-sample guarantee that holds whatever the model: score held-out calibration rows, take the
``ceil((n + 1) level) / n`` empirical quantile ``q`` of the scores, and widen (or narrow) every
new interval by ``q``. If calibration and new rows are exchangeable,
``level <= P(y in interval) <= level + 1 / (n + 1)`` (Vovk et al. 2005; Lei et al. 2018).

Scores (``score=``):

- ``"normalized"`` (default): ``|y - median| / sd`` of the predictive; intervals
  ``median +/- q sd``. The posterior predictive's own sd sets the width of each row, so the
  intervals keep whatever adaptivity the model has (row-wise scale, group effects, parameter
  uncertainty far from the data) and conformal only rescales it; a model whose error is mostly in
  its overall noise scale (the common failure) is fixed by one multiplicative factor.
- ``"absolute"``: ``|y - median|``; intervals ``median +/- q``, the same width on every row.
- ``"cqr"``: conformalized quantile regression on the predictive quantiles (Romano et al. 2019):
  ``max(lo - y, y - hi)`` with ``lo, hi`` the model's equal-tailed ``level`` bounds; intervals
  ``[lo - q, hi + q]``. Keeps the model's asymmetry (skewed or bounded outcomes) where the
  symmetric scores above would not, at the price of an additive (not proportional) correction and
  one set of scores per level.

All three carry the same marginal guarantee; they differ in how the width is spread over rows.

References
----------
Vovk, V., Gammerman, A. & Shafer, G. (2005). Algorithmic Learning in a Random World. Springer.
Lei, J., G'Sell, M., Rinaldo, A., Tibshirani, R. & Wasserman, L. (2018). Distribution-free
predictive inference for regression. JASA 113(523), 1094-1111.
Romano, Y., Patterson, E. & Candès, E. (2019). Conformalized quantile regression. NeurIPS.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from ..errors import CalibrationWarning, InputError, ModelFileError, warn
from ..intervals import check_kind, check_levels, eti_probs, quantiles
from ..prediction import Prediction, SitePrediction
from ._heldout import heldout_data, predictive_chunks

__all__ = ["Recalibrated", "RecalibratedPrediction", "recalibrate", "conformal_quantile",
           "min_calibration_rows", "load", "METHODS", "SCORES"]

METHODS = ("conformal",)
SCORES = ("normalized", "absolute", "cqr")
FORMAT = "bayesinf.recalibrated"
FORMAT_VERSION = 1
_MANIFEST = "recalibration.json"
_ARRAYS = "scores.npz"
_POSTERIOR_DIR = "posterior"
#: Floor on the predictive sd in normalized scores, relative to the median sd (a row with a
#: degenerate predictive must not produce an infinite score).
_SD_FLOOR = 1e-6


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) level)``-th smallest of ``n`` scores.

    Parameters
    ----------
    scores : np.ndarray
        Conformity scores of the calibration rows, ``(n,)``.
    level : float
        Target coverage in (0, 1).

    Returns
    -------
    float
        ``inf`` when ``ceil((n + 1) level) > n`` (too few calibration rows for the level: the
        only interval with the guarantee is the whole line).
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = scores.size
    k = int(np.ceil((n + 1) * level - 1e-9))
    return float(scores[k - 1]) if k <= n else float("inf")


def min_calibration_rows(level: float) -> int:
    """Fewest calibration rows whose conformal quantile at ``level`` is finite: the smallest ``n``
    with ``ceil((n + 1) level) <= n``, i.e. ``n >= level / (1 - level)`` (9 for 0.9, 19 for 0.95)."""
    level = check_levels(level, "min_calibration_rows", "level")[0]
    n = max(1, math.ceil(level / (1.0 - level) - 1e-9))
    while math.ceil((n + 1) * level - 1e-9) > n:  # guard the float rounding of the closed form
        n += 1
    while n > 1 and math.ceil(n * level - 1e-9) <= n - 1:
        n -= 1
    return n


def _warn_unbounded(levels, num_rows: int, owner: str) -> None:
    short = [v for v in levels if num_rows < min_calibration_rows(v)]
    if short:
        needs = ", ".join(f"level {v:g} needs at least {min_calibration_rows(v)}" for v in short)
        warn(CalibrationWarning(
            f"{owner}: too few calibration rows ({num_rows}) for a finite conformal interval: {needs}; "
            f"the interval at {'these levels' if len(short) > 1 else 'this level'} is unbounded (-inf, inf). "
            "Recalibrate on more rows or ask for lower levels."))


def _scores(score: str, y: np.ndarray, median, sd, lower, upper) -> np.ndarray:
    """Conformity scores ``(rows,)`` (or ``(levels, rows)`` for "cqr"); larger is worse."""
    if score == "absolute":
        return np.abs(y - median)
    if score == "normalized":
        return np.abs(y - median) / sd
    return np.maximum(lower - y, y - upper)


@dataclasses.dataclass(frozen=True)
class Recalibrated:
    """A posterior whose predictive intervals are recalibrated by split conformal prediction.

    Made by ``recalibrate``; ``predict`` returns a ``bayesinf.Prediction`` whose interval bounds
    for ``site`` are the conformal ones (mean, median and sd stay the model's).

    Attributes
    ----------
    posterior : Posterior
    site : str
        Observed site recalibrated.
    score : {"normalized", "absolute", "cqr"}
    levels : tuple of float
        Levels available to ``predict`` ("cqr" only; the symmetric scores serve every level).
    scores : np.ndarray
        Sorted calibration scores, ``(n,)``, or ``(levels, n)`` for "cqr".
    sd_floor : float
        Smallest predictive sd used in normalized scores.
    seed : int
        Seed of the calibration predictive draws.
    """

    posterior: object
    site: str
    score: str
    levels: tuple[float, ...]
    scores: np.ndarray
    sd_floor: float
    seed: int

    @property
    def num_calibration(self) -> int:
        """Number of calibration rows."""
        return int(self.scores.shape[-1])

    def quantile(self, level: float) -> float:
        """Conformal quantile ``q`` of the scores at ``level``."""
        level = check_levels(level, "quantile")[0]
        if self.score == "cqr":
            return conformal_quantile(self.scores[self._level_index(level)], level)
        return conformal_quantile(self.scores, level)

    def _level_index(self, level: float) -> int:
        for i, v in enumerate(self.levels):
            if abs(v - level) < 1e-12:
                return i
        raise InputError("levels", f"{level!r} was not recalibrated with score='cqr'", f"some of {self.levels}",
                         "Pass it to recalibrate(..., levels=...), or use score='normalized'.")

    def predict(self, *args, levels=None, seed: int = 0, memory_budget: int | None = None, **kwargs):
        """Predictive intervals with a finite-sample marginal coverage guarantee.

        Parameters
        ----------
        *args, **kwargs
            New rows exactly as ``Posterior.predict`` takes them: the model's row arguments, or
            for a formula model a DataFrame (and ``new_groups=``).
        levels : float or sequence of float, optional
            Interval levels (default: the recalibrated ones).
        seed : int
            Seed of the predictive draws.

        Returns
        -------
        RecalibratedPrediction
            A ``Prediction`` whose ``lower``/``upper`` of ``site`` are the conformal bounds,
            ``(levels, rows)``; other observed sites are the model's. Raw draws are not kept: the
            conformal bounds are not quantiles of them, so ``interval`` serves only ``levels``.

        Warns
        -----
        CalibrationWarning
            A level needs more calibration rows than there are (``min_calibration_rows``): its
            interval is ``(-inf, inf)``.
        """
        levels = check_levels(self.levels if levels is None else levels, "predict")
        if self.score == "cqr":
            for v in levels:
                self._level_index(v)
        pred = self.posterior.predict(*args, levels=levels, kind="eti", seed=seed, return_draws=False,
                                      memory_budget=memory_budget, **kwargs)
        base = pred[self.site]
        lower, upper = [], []
        for i, v in enumerate(levels):
            q = self.quantile(v)
            if self.score == "absolute":
                lower.append(base.median - q)
                upper.append(base.median + q)
            elif self.score == "normalized":
                sd = np.maximum(base.sd, self.sd_floor)
                lower.append(base.median - q * sd)
                upper.append(base.median + q * sd)
            else:
                lower.append(base.lower[i] - q)
                upper.append(base.upper[i] + q)
        _warn_unbounded(levels, self.num_calibration, "Recalibrated.predict")
        site = _ConformalSite(base.site, base.mean, base.median, base.sd, np.stack(lower), np.stack(upper),
                              base.probs, None)
        sites = dict(pred.sites)
        sites[self.site] = site
        return RecalibratedPrediction(sites, pred.levels, pred.kind, pred.seed, pred.num_rows, index=pred.index,
                                      recalibrated_site=self.site, score=self.score,
                                      recalibrated_levels=self.levels)

    def __repr__(self):
        qs = ", ".join(f"{v:g}: {self.quantile(v):.4g}" for v in (self.levels or (0.9,)))
        return (f"Recalibrated(site={self.site!r}, score={self.score!r}, calibration_rows={self.num_calibration}, "
                f"quantiles={{{qs}}})")

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """Save to directory ``path``: the posterior (``bayesinf.persistence``) under ``posterior/``,
        the sorted scores in ``scores.npz`` and ``recalibration.json`` referring to both, with
        checksums. Atomic: written beside ``path`` and renamed into place."""
        from .. import persistence

        path = Path(path)
        with persistence.atomic_directory(path, _MANIFEST, "a recalibrated bayesinf model") as tmp:
            persistence.save(self.posterior, tmp / _POSTERIOR_DIR)
            persistence.write_npz(tmp / _ARRAYS, {"scores": self.scores})
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "method": "conformal",
                "site": self.site, "score": self.score, "levels": list(self.levels),
                "sd_floor": self.sd_floor, "seed": self.seed, "num_calibration": self.num_calibration,
                "posterior": _POSTERIOR_DIR,
                "files": {_ARRAYS: persistence.sha256_file(tmp / _ARRAYS),
                          f"{_POSTERIOR_DIR}/{persistence.MANIFEST}": persistence.sha256_file(tmp / _POSTERIOR_DIR / persistence.MANIFEST)},
            }
            (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        return path


@dataclasses.dataclass(frozen=True)
class _ConformalSite(SitePrediction):
    """The recalibrated site of a ``RecalibratedPrediction``: conformal bounds, no draws."""

    @property
    def draws(self) -> np.ndarray:
        raise InputError("draws", f"of site '{self.site}' are not part of a recalibrated prediction: its "
                         "intervals are conformal bounds, not quantiles of draws",
                         hint="Use Recalibrated.posterior.predict(..., return_draws=True) for the model's draws.")


@dataclasses.dataclass(frozen=True)
class RecalibratedPrediction(Prediction):
    """The ``Prediction`` of ``Recalibrated.predict``: intervals of ``recalibrated_site`` exist at
    the levels it was asked for only (conformal bounds cannot be recomputed from draws).

    Attributes
    ----------
    recalibrated_site : str
        The observed site whose bounds are conformal.
    score : str
        Conformity score of the recalibration.
    recalibrated_levels : tuple of float
        Levels given to ``recalibrate``.
    """

    recalibrated_site: str = ""
    score: str = "normalized"
    recalibrated_levels: tuple[float, ...] = ()

    def interval(self, level: float, kind: str | None = None, site: str | None = None):
        """``(lower, upper)`` of the ``level`` interval, each ``(rows,)``: the conformal bounds for
        ``recalibrated_site`` (at the levels of this prediction only), the model's for other sites."""
        target = self[site].site if site else next(iter(self.sites))
        if target != self.recalibrated_site:
            return super().interval(level, kind, site)
        level = check_levels(level, "interval")[0]
        if kind is not None and check_kind(kind, "interval") != self.kind:
            raise InputError("kind", f"{kind!r} does not apply to the conformal intervals of site '{target}'",
                             f"kind=None or {self.kind!r}")
        for i, v in enumerate(self.levels):
            if abs(v - level) < 1e-12:
                return self.sites[target].lower[i], self.sites[target].upper[i]
        computed = ", ".join(f"{v:g}" for v in self.levels)
        if self.score == "cqr":
            hint = (f"score='cqr' keeps scores per level: recalibrate with levels=(..., {level:g}), then pass "
                    f"levels=({level:g},) to Recalibrated.predict.")
            if any(abs(v - level) < 1e-12 for v in self.recalibrated_levels):
                hint = f"Pass levels=({level:g},) to Recalibrated.predict."
        else:
            hint = f"Pass levels=({level:g},) to Recalibrated.predict."
        raise InputError("level", f"{level:g} was not recalibrated in this prediction (its levels: {computed})",
                         hint=hint)


def load(path, model=None) -> Recalibrated:
    """Load a ``Recalibrated`` saved with ``Recalibrated.save``.

    Parameters
    ----------
    path : str or Path
    model : callable, optional
        The model function, when it cannot be imported from the path recorded at save time.

    Raises
    ------
    ModelFileError
        Missing, corrupt or tampered-with files.
    """
    from .. import persistence

    path = Path(path)
    manifest = persistence.read_json_manifest(path, _MANIFEST, FORMAT, FORMAT_VERSION,
                                              "a recalibrated bayesinf model")
    manifest_path = path / _MANIFEST
    if manifest.get("posterior") != _POSTERIOR_DIR:
        raise ModelFileError(manifest_path, "refers to an unexpected posterior directory")
    posterior = persistence.load(path / _POSTERIOR_DIR, model=model)
    try:
        with np.load(path / _ARRAYS, allow_pickle=False) as npz:
            scores = npz["scores"]
        return Recalibrated(posterior, str(manifest["site"]), str(manifest["score"]),
                            tuple(float(v) for v in manifest["levels"]), scores, float(manifest["sd_floor"]),
                            int(manifest["seed"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"incomplete or invalid recalibration ({type(exc).__name__}: {exc})") from None


def recalibrate(post, *args, y=None, method: str = "conformal", score: str = "normalized", levels=(0.5, 0.8, 0.9, 0.95),
                site: str | None = None, seed: int = 0, **kwargs) -> Recalibrated:
    """Recalibrate the predictive intervals of ``post`` on held-out calibration rows.

    Parameters
    ----------
    post : Posterior
    *args, **kwargs
        The calibration rows' inputs, exactly as ``Posterior.predict`` takes them: the model's
        row arguments, or for a formula model a DataFrame (and ``new_groups=``).
    y : array, dict of str -> array, or str, optional
        Calibration outcomes, ``(rows,)``: an array for a one-site model or a dict site -> array.
        The model's own observed argument name works too (``kidscore=...``). For a formula
        model, the name of a column of the DataFrame, by default its response column. These
        rows must not have been used to fit ``post``, or the guarantee is lost.
    method : {"conformal"}
        Split conformal prediction.
    score : {"normalized", "absolute", "cqr"}
        Conformity score (see the module docstring). "normalized" is the default.
    levels : float or sequence of float
        Levels to recalibrate ("cqr" keeps scores for these only; the others serve any level).
    site : str, optional
        Observed site, when outcomes for several are given.
    seed : int
        Seed of the predictive draws on the calibration rows.

    Returns
    -------
    Recalibrated

    Warns
    -----
    CalibrationWarning
        Fewer calibration rows than a level needs for a finite interval
        (``min_calibration_rows(level)``: 9 for 0.9, 19 for 0.95): that level's interval is
        ``(-inf, inf)``, the only one with the coverage guarantee.
    """
    if method not in METHODS:
        raise InputError("method", f"of recalibrate must be one of {METHODS}; got {method!r}")
    if score not in SCORES:
        raise InputError("score", f"of recalibrate must be one of {SCORES}; got {score!r}")
    levels = check_levels(levels, "recalibrate")
    site, outcomes, args, kwargs = heldout_data(post, args, kwargs, y, site, "recalibrate")
    probs = eti_probs(levels)
    index = {p: i for i, p in enumerate(probs)}
    median, sd, lower, upper = [], [], [], []
    for _, _, row_draws, _ in predictive_chunks(post, args, kwargs, site, outcomes, seed, "recalibrate"):
        x = row_draws.astype(np.float64)
        q = quantiles(x, probs)
        median.append(q[index[0.5]])
        sd.append(x.std(axis=-1, ddof=1))
        lower.append(np.stack([q[index[(1 - v) / 2]] for v in levels]))
        upper.append(np.stack([q[index[(1 + v) / 2]] for v in levels]))
    median, sd = np.concatenate(median), np.concatenate(sd)
    lower, upper = np.concatenate(lower, axis=1), np.concatenate(upper, axis=1)
    yf = outcomes.astype(np.float64)
    sd_floor = _SD_FLOOR * max(float(np.median(sd)), np.finfo(np.float64).tiny)
    sd = np.maximum(sd, sd_floor)
    scores = _scores(score, yf, median, sd, lower, upper)
    _warn_unbounded(levels, yf.size, "recalibrate")
    return Recalibrated(post, site, score, levels, np.sort(scores, axis=-1),
                        sd_floor, seed)

