"""Scoring a posterior predictive against held-out outcomes: coverage, sharpness, PIT, CRPS,
interval (Winkler) score and log predictive density, gathered in a ``CalibrationReport``.

The scoring functions are pure numpy over predictive draws laid out ``(rows, draws)`` (draws on
the **last** axis, as ``bayesinf.intervals`` takes them) or over interval bounds ``(rows,)``;
``CalibrationReport`` is a value built from their results.

References
----------
Gneiting, T. & Raftery, A. E. (2007). Strictly proper scoring rules, prediction, and estimation.
JASA 102(477), 359-378. (CRPS energy form, interval score.)
Czado, C., Gneiting, T. & Held, L. (2009). Predictive model assessment for count data.
Biometrics 65(4), 1254-1261. (Randomized PIT for discrete outcomes.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..intervals import check_kind, check_levels, summarize

__all__ = [
    "DEFAULT_LEVELS", "CalibrationReport", "UniformityTest", "coverage", "pit", "crps", "interval_score",
    "log_predictive_density", "uniformity_test", "binomial_se",
]

#: Nominal levels a calibration report checks unless asked otherwise.
DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)
#: A level is flagged when its coverage is more than this many binomial SEs from nominal.
FLAG_SE = 3.0


# ----------------------------------------------------------------------------- scoring functions
def binomial_se(level, num_rows: int) -> np.ndarray:
    """Standard error of an empirical coverage over ``num_rows`` rows if the intervals are calibrated:
    ``sqrt(level * (1 - level) / num_rows)``."""
    level = np.asarray(level, dtype=np.float64)
    return np.sqrt(level * (1.0 - level) / num_rows)


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Share of rows whose outcome lies in ``[lower, upper]``.

    Parameters
    ----------
    y : np.ndarray
        Outcomes, ``(rows,)``.
    lower, upper : np.ndarray
        Interval bounds, ``(rows,)`` or ``(levels, rows)``.

    Returns
    -------
    np.ndarray
        Coverage, ``()`` or ``(levels,)``.
    """
    inside = (lower <= y) & (y <= upper)
    return inside.mean(axis=-1)


def pit(draws: np.ndarray, y: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Probability integral transform of outcomes under their predictive draws.

    ``PIT = P(Y < y) + U * P(Y = y)`` with ``U ~ Uniform(0, 1)``: for continuous outcomes the share
    of draws below ``y``; for discrete outcomes the randomized PIT, uniform when the predictive is
    calibrated (Czado et al. 2009).

    Parameters
    ----------
    draws : np.ndarray
        Predictive draws, ``(rows, draws)``.
    y : np.ndarray
        Outcomes, ``(rows,)``.
    rng : np.random.Generator, optional
        Source of ``U`` (default: seeded with 0, so results repeat).

    Returns
    -------
    np.ndarray
        PIT values in [0, 1], ``(rows,)``.
    """
    y = np.asarray(y)[:, None]
    below = (draws < y).mean(axis=-1)
    ties = (draws == y).mean(axis=-1)
    if not ties.any():
        return below
    rng = rng if rng is not None else np.random.default_rng(0)
    return below + rng.uniform(size=below.shape) * ties


def crps(draws: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Continuous ranked probability score of each row (lower is better), from predictive draws.

    Energy form ``CRPS = E|X - y| - E|X - X'| / 2`` with ``X, X'`` independent predictive draws.
    With the draws sorted, ``sum_{i,j} |x_i - x_j| = 2 sum_i (2i - m - 1) x_(i)`` (1-based ``i``),
    so a row of ``m`` draws costs ``O(m log m)`` instead of ``O(m^2)``. This is the "NRG" estimator
    (the plain sample version of both expectations).

    Parameters
    ----------
    draws : np.ndarray
        Predictive draws, ``(rows, draws)``.
    y : np.ndarray
        Outcomes, ``(rows,)``.

    Returns
    -------
    np.ndarray
        CRPS per row, ``(rows,)``, in the units of ``y``, computed in float64: each term is
        divided by the number of draws before summing, so no intermediate sum overflows where
        the score itself is within float64's range; a row whose score is not (an outcome near
        1e308) gets ``inf``, without a warning.
    """
    x = np.sort(np.asarray(draws, dtype=np.float64), axis=-1)
    m = x.shape[-1]
    y = np.asarray(y, dtype=np.float64)
    weights = (2.0 * np.arange(1, m + 1) - m - 1) / m**2
    with np.errstate(over="ignore", invalid="ignore"):
        absolute = (np.abs(x - y[:, None]) / m).sum(axis=-1)  # E|X - y|
        spread = 2.0 * (x @ weights)  # E|X - X'|
        out = absolute - spread / 2.0
    return np.where(np.isnan(out) & np.isinf(absolute), np.inf, out)


def interval_score(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float) -> np.ndarray:
    """Interval (Winkler) score of central ``level`` intervals; lower is better.

    ``(upper - lower) + (2 / a) (lower - y) 1{y < lower} + (2 / a) (y - upper) 1{y > upper}``
    with ``a = 1 - level`` (Gneiting & Raftery 2007, eq. 43): width plus a penalty for misses.

    Parameters
    ----------
    y : np.ndarray
        Outcomes, ``(rows,)``.
    lower, upper : np.ndarray
        Interval bounds, ``(rows,)``.
    level : float
        Nominal level of the intervals.

    Returns
    -------
    np.ndarray
        Score per row, ``(rows,)``, in float64; ``inf`` (without a warning) where the score is
        beyond float64's range (an outcome near 1e308).
    """
    a = 1.0 - level
    y, lower, upper = (np.asarray(v, dtype=np.float64) for v in (y, lower, upper))
    with np.errstate(over="ignore"):
        return (upper - lower) + (2.0 / a) * (np.maximum(lower - y, 0.0) + np.maximum(y - upper, 0.0))


def log_predictive_density(log_lik: np.ndarray) -> np.ndarray:
    """Log pointwise predictive density ``log mean_s p(y_i | theta_s)`` from log-likelihood draws.

    Parameters
    ----------
    log_lik : np.ndarray
        Log likelihood of each row under each posterior draw, ``(rows, draws)``.

    Returns
    -------
    np.ndarray
        ``(rows,)``.
    """
    log_lik = np.asarray(log_lik, dtype=np.float64)
    top = log_lik.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(log_lik - top).mean(axis=-1, keepdims=True)))[..., 0]


@dataclass(frozen=True)
class UniformityTest:
    """A test that values in [0, 1] (or integer ranks) are uniform.

    ``method`` is "ks" (Kolmogorov-Smirnov, continuous values; ``df`` is None) or "chi2" (Pearson
    chi-square over equal bins, ``df = bins - 1``; ``counts`` per bin). ``is_uniform`` is
    ``p_value >= alpha``.
    """

    method: str
    statistic: float
    p_value: float
    alpha: float
    df: int | None = None
    counts: np.ndarray | None = None

    @property
    def is_uniform(self) -> bool:
        return bool(self.p_value >= self.alpha)

    def __str__(self):
        verdict = "uniform" if self.is_uniform else "NOT uniform"
        stat = f"chi2={self.statistic:.2f} (df={self.df})" if self.method == "chi2" else f"KS D={self.statistic:.3f}"
        return f"{stat}, p={self.p_value:.3g}: {verdict} at alpha={self.alpha:g}"


def uniformity_test(values: np.ndarray, alpha: float = 0.01, num_values: int | None = None,
                    num_bins: int | None = None, method: str | None = None) -> UniformityTest:
    """Test that PIT values in [0, 1] or integer ranks are uniform.

    Continuous values (PIT, randomized PIT, LOO-PIT) get a Kolmogorov-Smirnov test by default: it
    needs no binning and is the more powerful against the usual departures (U shape, hump,
    slope). Ranks (``num_values`` given) get a chi-square test over equal bins, each holding the
    same number of rank values so all bins are equally likely under uniformity.

    Parameters
    ----------
    values : np.ndarray
        PIT values in [0, 1], or integer ranks in ``0..num_values - 1``; any shape, flattened.
    alpha : float
        Level of the test.
    num_values : int, optional
        Number of possible ranks when ``values`` are ranks (e.g. ``L + 1`` for ``L`` draws).
    num_bins : int, optional
        Chi-square bins. Default: about ``n / 10`` (expected count 10 per bin) between 2 and 20;
        for ranks, the largest divisor of ``num_values`` not above that.
    method : {"ks", "chi2"}, optional
        Default "chi2" for ranks, "ks" otherwise.

    Returns
    -------
    UniformityTest
    """
    from scipy import stats  # scipy comes with arviz-stats

    values = np.asarray(values).ravel()
    n = values.size
    if n < 2:
        raise InputError("values", f"has {n} value(s); a uniformity test needs at least 2")
    method = method or ("chi2" if num_values is not None else "ks")
    if method not in ("ks", "chi2"):
        raise InputError("method", f"of uniformity_test must be 'ks' or 'chi2'; got {method!r}")
    if method == "ks":
        if num_values is not None:
            raise InputError("method", "'ks' is for continuous values, not ranks", "method='chi2'")
        result = stats.kstest(values.astype(np.float64), "uniform")
        return UniformityTest("ks", float(result.statistic), float(result.pvalue), float(alpha))
    target = num_bins or int(np.clip(n // 10, 2, 20))
    if num_values is not None:
        divisors = [b for b in range(2, min(target, num_values) + 1) if num_values % b == 0]
        num_bins = divisors[-1] if divisors else num_values
        index = (values.astype(np.int64) * num_bins) // num_values
    else:
        num_bins = target
        index = np.minimum((values * num_bins).astype(np.int64), num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    expected = n / num_bins
    statistic = float(((counts - expected) ** 2 / expected).sum())
    return UniformityTest("chi2", statistic, float(stats.chi2.sf(statistic, num_bins - 1)), float(alpha),
                          num_bins - 1, counts)


# ----------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class CalibrationReport:
    """How well a posterior predictive matches held-out outcomes of one observed site.

    Build it with ``bayesinf.calibration.calibration(post, X, y=y)`` or, from predictive draws
    you already have, with ``CalibrationReport.from_draws``.

    Attributes
    ----------
    site : str
        Observed site scored.
    levels : tuple of float
        Nominal interval levels, ascending.
    kind : {"eti", "hdi"}
        Interval kind.
    num_rows : int
        Held-out rows.
    coverage : np.ndarray
        Empirical coverage per level, ``(levels,)``.
    coverage_se : np.ndarray
        Binomial standard error of the coverage if the intervals were calibrated,
        ``sqrt(level (1 - level) / rows)``, ``(levels,)``.
    mean_width : np.ndarray
        Mean interval width per level (sharpness), ``(levels,)``.
    interval_score : np.ndarray
        Mean interval (Winkler) score per level, ``(levels,)``.
    pit : np.ndarray
        PIT value per row, ``(rows,)``.
    crps : np.ndarray
        CRPS per row, ``(rows,)``.
    lpd : np.ndarray or None
        Log predictive density per row, ``(rows,)`` (None when not computable, e.g. for models
        with per-row latent variables).
    pit_test : UniformityTest
        Kolmogorov-Smirnov uniformity test of the PIT values.
    """

    site: str
    levels: tuple[float, ...]
    kind: str
    num_rows: int
    coverage: np.ndarray
    coverage_se: np.ndarray
    mean_width: np.ndarray
    interval_score: np.ndarray
    pit: np.ndarray
    crps: np.ndarray
    lpd: np.ndarray | None
    pit_test: UniformityTest
    info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_draws(cls, draws: np.ndarray, y: np.ndarray, levels=DEFAULT_LEVELS, kind: str = "eti",
                   log_lik: np.ndarray | None = None, site: str = "y", alpha: float = 0.01) -> "CalibrationReport":
        """Score predictive draws against outcomes.

        Parameters
        ----------
        draws : np.ndarray
            Predictive draws, ``(rows, draws)``.
        y : np.ndarray
            Outcomes, ``(rows,)``.
        levels : float or sequence of float
            Nominal levels in (0, 1).
        kind : {"eti", "hdi"}
        log_lik : np.ndarray, optional
            Log likelihood of the outcomes, ``(rows, draws)``, for the log predictive density.
        site : str
            Name shown in the report.
        alpha : float
            Level of the PIT uniformity test.
        """
        levels = check_levels(levels, "calibration")
        kind = check_kind(kind, "calibration")
        draws = np.asarray(draws)
        y = np.asarray(y)
        if draws.ndim != 2 or y.shape != draws.shape[:1]:
            raise InputError("draws", f"has shape {draws.shape} for outcomes of shape {y.shape}",
                             "(rows, draws) predictive draws and (rows,) outcomes")
        acc = _Accumulator(levels, kind)
        acc.add(draws, y, log_lik)
        return acc.report(site, alpha)

    # ------------------------------------------------------------------ verdicts
    @property
    def z(self) -> np.ndarray:
        """``(coverage - level) / coverage_se`` per level: negative means under-coverage."""
        return (self.coverage - np.asarray(self.levels)) / self.coverage_se

    def is_calibrated(self, k: float = FLAG_SE) -> np.ndarray:
        """Per level: is the coverage within ``k`` binomial SEs of nominal? ``(levels,)`` booleans."""
        return np.abs(self.z) <= k

    @property
    def problems(self) -> list[str]:
        """Readable findings: levels more than 3 SEs off nominal and a non-uniform PIT."""
        out = []
        for level, cov, z in zip(self.levels, self.coverage, self.z):
            if abs(z) > FLAG_SE:
                word = "under" if z < 0 else "over"
                out.append(f"{word}-coverage at {level:.0%}: {cov:.3f} ({abs(z):.1f} SE {'below' if z < 0 else 'above'})")
        if not self.pit_test.is_uniform:
            out.append(f"PIT not uniform ({self.pit_test})")
        return out

    @property
    def ok(self) -> bool:
        """No level more than 3 SEs off nominal and a uniform PIT."""
        return not self.problems

    def scores(self) -> dict[str, float]:
        """Mean proper scores: ``crps`` (lower is better), ``lpd`` (higher is better) and the
        interval score at each level (``interval_score_<level>``, lower is better)."""
        out = {"crps": float(self.crps.mean()), "lpd": float(self.lpd.mean()) if self.lpd is not None else np.nan}
        out.update({f"interval_score_{v:g}": float(s) for v, s in zip(self.levels, self.interval_score)})
        return out

    # ------------------------------------------------------------------ exports
    def to_pandas(self):
        """One row per nominal level: ``nominal, coverage, se, z, mean_width, interval_score, ok``."""
        import pandas as pd

        return pd.DataFrame({
            "nominal": self.levels,
            "coverage": self.coverage,
            "se": self.coverage_se,
            "z": self.z,
            "mean_width": self.mean_width,
            "interval_score": self.interval_score,
            "ok": self.is_calibrated(),
        }).set_index("nominal")

    def pointwise(self):
        """One row per held-out row: ``pit``, ``crps`` and ``lpd``."""
        import pandas as pd

        columns = {"pit": self.pit, "crps": self.crps}
        if self.lpd is not None:
            columns["lpd"] = self.lpd
        return pd.DataFrame(columns)

    def plot(self, num_bins: int = 20):
        """Reliability diagram (observed vs nominal coverage with 3-SE bands) and PIT histogram.

        Returns
        -------
        matplotlib.figure.Figure
            Two axes.
        """
        from ..plots import plot_calibration

        return plot_calibration(self, num_bins=num_bins)

    def __repr__(self):
        lines = [f"CalibrationReport(site={self.site!r}, rows={self.num_rows}, kind={self.kind!r})",
                 "  level  coverage     se      z   width  int.score"]
        for i, v in enumerate(self.levels):
            flag = "" if abs(self.z[i]) <= FLAG_SE else "  <-"
            lines.append(f"  {v:5.2f}  {self.coverage[i]:8.3f}  {self.coverage_se[i]:5.3f}  {self.z[i]:5.1f}"
                         f"  {self.mean_width[i]:6.3g}  {self.interval_score[i]:9.4g}{flag}")
        s = self.scores()
        lines.append(f"  CRPS {s['crps']:.4g}   LPD {s['lpd']:.4g}   PIT: {self.pit_test}")
        lines.append("  " + ("no problems found" if self.ok else "; ".join(self.problems)))
        return "\n".join(lines)

    def _repr_html_(self):
        table = self.to_pandas().to_html(float_format=lambda v: f"{v:.4g}")
        s = self.scores()
        verdict = "no problems found" if self.ok else "; ".join(self.problems)
        return (f"<p><b>CalibrationReport</b> site={self.site!r}, rows={self.num_rows}, kind={self.kind!r}</p>"
                f"{table}<p>CRPS {s['crps']:.4g} &middot; LPD {s['lpd']:.4g} &middot; PIT: {self.pit_test}</p>"
                f"<p>{verdict}</p>")


class _Accumulator:
    """Per-row scores gathered chunk by chunk (so predictive draws never need to be held at once)."""

    def __init__(self, levels, kind: str, rng: np.random.Generator | None = None):
        self.levels = levels
        self.kind = kind
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.hits, self.widths, self.scores = [], [], []
        self.pit, self.crps, self.lpd = [], [], []

    def add(self, row_draws: np.ndarray, y: np.ndarray, log_lik: np.ndarray | None = None) -> None:
        """Score rows given predictive draws ``(rows, draws)``, outcomes ``(rows,)`` and optionally
        the log likelihood ``(rows, draws)``."""
        s = summarize(row_draws, self.levels, self.kind)
        lower, upper = s["lower"].astype(np.float64), s["upper"].astype(np.float64)
        yf = y.astype(np.float64)
        self.hits.append((lower <= yf) & (yf <= upper))
        self.widths.append(upper - lower)
        self.scores.append(np.stack([interval_score(yf, lower[i], upper[i], v) for i, v in enumerate(self.levels)]))
        self.pit.append(pit(row_draws, y, self.rng))
        self.crps.append(crps(row_draws, y))
        if log_lik is not None:
            self.lpd.append(log_predictive_density(log_lik))

    def report(self, site: str, alpha: float, info=None) -> CalibrationReport:
        hits = np.concatenate(self.hits, axis=1)
        n = hits.shape[1]
        pit_values = np.concatenate(self.pit)
        return CalibrationReport(
            site=site, levels=self.levels, kind=self.kind, num_rows=n,
            coverage=hits.mean(axis=1), coverage_se=binomial_se(self.levels, n),
            mean_width=np.concatenate(self.widths, axis=1).mean(axis=1),
            interval_score=np.concatenate(self.scores, axis=1).mean(axis=1),
            pit=pit_values, crps=np.concatenate(self.crps),
            lpd=np.concatenate(self.lpd) if self.lpd else None,
            pit_test=uniformity_test(pit_values, alpha=alpha), info=dict(info or {}),
        )
