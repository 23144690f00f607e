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
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelFileError
from ..intervals import check_levels, eti_probs, quantiles
from ._heldout import predictive_chunks, split_outcomes

__all__ = ["Recalibrated", "recalibrate", "conformal_quantile", "load", "METHODS", "SCORES"]

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
            New values of the model's row arguments, as for ``Posterior.predict``.
        levels : float or sequence of float, optional
            Interval levels (default: the recalibrated ones).
        seed : int
            Seed of the predictive draws.

        Returns
        -------
        Prediction
            ``lower``/``upper`` of ``site`` are the conformal bounds, ``(levels, rows)``; other
            observed sites are the model's. Raw draws are not kept: the conformal bounds are not
            quantiles of them.
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
        site = dataclasses.replace(base, lower=np.stack(lower), upper=np.stack(upper), row_draws=None)
        sites = dict(pred.sites)
        sites[self.site] = site
        return dataclasses.replace(pred, sites=sites)

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
        The calibration rows' inputs (the model's row arguments), as for ``Posterior.predict``.
    y : array or dict of str -> array
        Calibration outcomes, ``(rows,)``: an array for a one-site model or a dict site -> array.
        The model's own observed argument name works too (``kidscore=...``). These rows must not
        have been used to fit ``post``, or the guarantee is lost.
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
    """
    if method not in METHODS:
        raise InputError("method", f"of recalibrate must be one of {METHODS}; got {method!r}")
    if score not in SCORES:
        raise InputError("score", f"of recalibrate must be one of {SCORES}; got {score!r}")
    levels = check_levels(levels, "recalibrate")
    site, outcomes, kwargs = split_outcomes(post, y, kwargs, site, "recalibrate")
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
    return Recalibrated(post, site, score, levels, np.sort(scores, axis=-1),
                        sd_floor, seed)

