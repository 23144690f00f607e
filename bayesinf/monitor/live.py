"""Live calibration: the intervals and summaries a service returned, scored against the outcomes
posted later as feedback.

The service returns, per row and observed site, mean, sd, median and interval bounds per level
(plus class probabilities for discrete sites), not predictive draws; the scores are computed
from those:

- **Coverage** at each served level is exact: the share of rows whose outcome lies in the served
  interval, with the binomial SE ``sqrt(level (1 - level) / rows)`` of calibrated intervals.
  A level is flagged (``coverage_status``) as under- or over-coverage only when the coverage is
  more than ``FLAG_SE`` (3) SEs off nominal *and* the exact binomial probability of a count of
  covered rows at least that far off, on that side, is below ``FLAG_P = Phi(-3) = 0.00135``
  (the one-sided tail the 3-SE rule means). For large counts the two agree, as the normal
  approximation holds; for a few outcomes the exact test decides, and a level more than 3 SEs
  off that it does not confirm is "too few outcomes" (1 of 3 outcomes inside a 90% interval:
  coverage 0.333 is 3.3 SEs low, but has probability 0.028), a note rather than a problem.
- **PIT.** Equal-tailed intervals at levels ``L`` are the predictive quantiles at
  ``(1 - L) / 2`` and ``(1 + L) / 2``; with the median they cut the predictive distribution into
  bins of known probability. An outcome in the bin between quantile probabilities ``t_k`` and
  ``t_(k+1)`` gets ``PIT = t_k + U (t_(k+1) - t_k)`` with ``U ~ Uniform(0, 1)`` (seeded): exactly
  uniform when the predictive is calibrated, like the randomized PIT of discrete outcomes
  (Czado et al. 2009). Discrete sites with class probabilities get that randomized PIT from
  their probabilities. HDI intervals are not quantiles: there the PIT is ``Phi((y - mean) / sd)``,
  a normal approximation.
- **CRPS** comes from ``bayesinf.calibration.crps`` applied to 200 quantiles of an approximate
  predictive: linear between the served quantiles, normal-shaped beyond the outermost ones (the
  normal scale matched to the two outermost quantiles of each side, else to the served sd);
  the class probabilities' quantiles for discrete sites; ``N(mean, sd)`` for HDI intervals. For
  a normal predictive served at levels (0.5, 0.9) it is within 1% of the exact CRPS.
- **Scores beyond float64.** An outcome so far outside the served intervals that its CRPS or
  interval score is not finite in float64 (an outcome near 1e308) is left out of that mean, and
  counted in ``info["excluded_scores"]``; outcomes that are not finite numbers are left out of
  the report altogether (``info["non_finite_outcomes"]``). The feedback route refuses both.

Monte Carlo error of the served quantiles themselves (from a few thousand draws) moves each
quantile's probability by about ``sqrt(t (1 - t) / draws)``, under 0.01: small next to the
binomial error of a few hundred feedback rows.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..calibration.report import FLAG_SE, CalibrationReport, binomial_se, crps, interval_score, uniformity_test

__all__ = ["NUM_QUANTILES", "FLAG_P", "live_calibration", "coverage_status", "finite_mean", "eti_knots",
           "approximate_quantiles", "randomized_pit"]

#: Quantiles of the approximate predictive used for the CRPS.
NUM_QUANTILES = 200
_TAUS = (np.arange(NUM_QUANTILES) + 0.5) / NUM_QUANTILES
#: Rows scored at once (bounds the (rows, NUM_QUANTILES) quantile arrays to about 13 MB).
CHUNK_ROWS = 8192


def _z(p):
    from scipy.special import ndtri

    return ndtri(p)


#: One-sided tail probability of ``FLAG_SE`` standard errors, ``Phi(-3)``: the exact binomial
#: test's threshold for flagging a level.
FLAG_P = 0.5 * math.erfc(FLAG_SE / math.sqrt(2.0))


def coverage_status(hits: int, rows: int, level: float) -> tuple[float, str]:
    """Verdict on ``hits`` of ``rows`` outcomes inside intervals of nominal ``level``.

    Returns
    -------
    p_value : float
        Exact binomial probability, for calibrated intervals, of a count at least as far from
        ``rows * level`` on the observed side (``P(K <= hits)`` below nominal, ``P(K >= hits)``
        above), ``K ~ Binomial(rows, level)``.
    status : {"ok", "under-coverage", "over-coverage", "too few outcomes"}
        Flagged when the coverage is more than ``FLAG_SE`` binomial SEs off nominal and
        ``p_value < FLAG_P``; "too few outcomes" when only the first holds.
    """
    from scipy import stats

    if rows == 0:
        return float("nan"), "too few outcomes"
    z = (hits / rows - level) / float(binomial_se(level, rows))
    below = hits < rows * level
    p = float(stats.binom.cdf(hits, rows, level) if below else stats.binom.sf(hits - 1, rows, level))
    if abs(z) <= FLAG_SE:
        return p, "ok"
    if p >= FLAG_P:
        return p, "too few outcomes"
    return p, "under-coverage" if below else "over-coverage"


def finite_mean(values: np.ndarray) -> tuple[float, int]:
    """Mean of the finite entries of ``values`` ``(n,)`` without overflow (scaled by the largest
    magnitude first), and the number of entries left out; NaN when none is finite."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    left_out = int(values.size - finite.size)
    if finite.size == 0:
        return float("nan"), left_out
    scale = float(np.abs(finite).max())
    if scale == 0.0:
        return 0.0, left_out
    return scale * float(np.mean(finite / scale)), left_out


# ----------------------------------------------------------------------------- per kind of served row
def eti_knots(levels) -> np.ndarray:
    """Quantile probabilities served with equal-tailed intervals at ``levels`` and the median,
    ascending, ``(knots,)``."""
    return np.array(sorted({0.5, *(round((1 - v) / 2, 12) for v in levels), *(round((1 + v) / 2, 12) for v in levels)}))


def approximate_quantiles(taus: np.ndarray, values: np.ndarray, sd: np.ndarray, at: np.ndarray = _TAUS) -> np.ndarray:
    """Quantiles at ``at`` of predictives known by their quantiles ``values`` ``(rows, knots)`` at
    ``taus`` ``(knots,)``: linear in between, normal-shaped tails with the scale of the two
    outermost quantiles of each side (``sd`` ``(rows,)`` where a side has one knot or a zero
    gap). Returns ``(rows, len(at))``."""
    z, za = _z(taus), _z(at)
    j = np.clip(np.searchsorted(taus, at, side="right") - 1, 0, taus.size - 1)
    k = np.minimum(j + 1, taus.size - 1)
    gap = np.where(k > j, taus[k] - taus[j], 1.0)
    w = np.clip((at - taus[j]) / gap, 0.0, 1.0)
    out = values[:, j] * (1 - w) + values[:, k] * w
    for edge, inner, mask in ((0, 1, at < taus[0]), (-1, -2, at > taus[-1])):
        if not mask.any():
            continue
        if taus.size > 1:
            step = values[:, inner] - values[:, edge]
            scale = np.where(np.abs(step) > 0, step / (z[inner] - z[edge]), sd)
        else:
            scale = sd
        out[:, mask] = values[:, [edge]] + scale[:, None] * (za[mask] - z[edge])[None, :]
    return out


def randomized_pit(taus: np.ndarray, values: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """PIT of outcomes ``y`` ``(rows,)`` drawn uniformly (``u``) between the probabilities of the
    served quantiles ``values`` ``(rows, knots)`` at ``taus`` just below and just above them."""
    lower = np.concatenate([[0.0], taus])[(values < y[:, None]).sum(axis=1)]
    upper = np.concatenate([taus, [1.0]])[taus.size - (values > y[:, None]).sum(axis=1)]
    return lower + u * (upper - lower)


def _discrete(probs: np.ndarray, y: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Randomized PIT ``(rows,)`` and quantiles at ``_TAUS`` ``(rows, NUM_QUANTILES)`` of outcomes
    under class probabilities ``(rows, classes)`` (the last class collects larger counts)."""
    p = np.clip(probs, 0.0, None)
    p = p / p.sum(axis=1, keepdims=True)
    cdf = np.cumsum(p, axis=1)
    k = np.clip(np.round(y), 0, p.shape[1] - 1).astype(np.int64)
    rows = np.arange(y.size)
    pit_values = cdf[rows, k] - p[rows, k] + u * p[rows, k]
    quantiles = np.minimum((cdf[:, None, :] < _TAUS[None, :, None]).sum(axis=2), p.shape[1] - 1)
    return pit_values, quantiles.astype(np.float64)


# ----------------------------------------------------------------------------- the report
def live_calibration(records, seed: int = 0, alpha: float = 0.01) -> dict[str, CalibrationReport]:
    """Calibration per observed site from served rows with feedback.

    Parameters
    ----------
    records : iterable of (site, y, outputs, levels, kind)
        One per outcome received: the site, the outcome, the served row's payload (site ->
        summaries), the levels and interval kind of its request.
    seed : int
        Seed of the PIT randomization.
    alpha : float
        Level of the PIT uniformity test (Kolmogorov-Smirnov).

    Returns
    -------
    dict of str -> CalibrationReport
        Sites with at least two scalar outcomes. ``coverage``, ``mean_width`` and
        ``interval_score`` are per level, each over the rows served that level
        (``info["rows_per_level"]``, ``info["hits_per_level"]``); ``lpd`` is None (no likelihood
        is served). ``crps`` holds every row's score (``inf`` beyond float64's range);
        ``info["crps"]`` is the mean over finite ones, ``interval_score`` likewise, and
        ``info["excluded_scores"]`` counts the rows left out (``{"crps": n, "interval_score":
        [n per level]}``). ``info["coverage_p"]`` and ``info["coverage_status"]`` are the
        per-level verdicts of ``coverage_status``; ``info["non_finite_outcomes"]`` counts
        outcomes that were not finite numbers (not scored).
    """
    by_site: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    non_finite: dict[str, int] = defaultdict(int)
    for site, y, outputs, _, kind in records:
        entry = outputs.get(site)
        if entry is None or not np.isscalar(entry.get("mean")) or y is None:
            continue
        if not np.isfinite(y):
            non_finite[site] += 1
            continue
        probs = entry.get("probs")
        # Rows served alike (kind, levels, number of classes) are scored together.
        key = (kind, tuple(entry["intervals"]), None if probs is None else len(probs))
        by_site[site][key].append((float(y), entry))
    reports = {}
    for i, (site, groups) in enumerate(sorted(by_site.items())):
        if sum(len(rows) for rows in groups.values()) >= 2:
            reports[site] = _site_report(site, groups, np.random.default_rng([seed, i]), alpha, non_finite[site])
    return reports


def _site_report(site: str, groups: dict, rng: np.random.Generator, alpha: float,
                 non_finite: int = 0) -> CalibrationReport:
    hits, widths, scores = defaultdict(list), defaultdict(list), defaultdict(list)
    pits, crps_values, kinds = [], [], set()
    chunks = [(key, rows[i:i + CHUNK_ROWS]) for key, rows in groups.items() for i in range(0, len(rows), CHUNK_ROWS)]
    for (kind, level_keys, num_classes), rows in chunks:
        kinds.add(kind)
        y = np.array([r[0] for r in rows])
        entries = [r[1] for r in rows]
        for key in level_keys:
            level = round(float(key), 12)
            lower = np.array([e["intervals"][key]["lower"] for e in entries], dtype=np.float64)
            upper = np.array([e["intervals"][key]["upper"] for e in entries], dtype=np.float64)
            hits[level].append((lower <= y) & (y <= upper))
            widths[level].append(upper - lower)
            scores[level].append(interval_score(y, lower, upper, level))
        u = rng.uniform(size=y.size)
        sd = np.maximum(np.array([e["sd"] for e in entries], dtype=np.float64), 1e-12)
        mean = np.array([e["mean"] for e in entries], dtype=np.float64)
        if num_classes is not None:
            pit_values, quantiles = _discrete(np.array([e["probs"] for e in entries], dtype=np.float64), y, u)
        elif kind == "eti":
            taus = eti_knots([float(k) for k in level_keys])
            by_tau = {0.5: [e["median"] for e in entries]}
            for key in level_keys:
                v = float(key)
                by_tau[round((1 - v) / 2, 12)] = [e["intervals"][key]["lower"] for e in entries]
                by_tau[round((1 + v) / 2, 12)] = [e["intervals"][key]["upper"] for e in entries]
            values = np.maximum.accumulate(np.array([by_tau[t] for t in taus], dtype=np.float64).T, axis=1)
            pit_values = randomized_pit(taus, values, y, u)
            quantiles = approximate_quantiles(taus, values, sd)
        else:
            from scipy.special import ndtr

            with np.errstate(over="ignore"):  # an outcome near 1e308: PIT 0 or 1
                pit_values = ndtr((y - mean) / sd)
            quantiles = mean[:, None] + sd[:, None] * _z(_TAUS)[None, :]
        pits.append(pit_values)
        crps_values.append(crps(quantiles, y))
    levels = sorted(hits)
    counts = np.array([sum(h.size for h in hits[v]) for v in levels])
    covered = [int(np.concatenate(hits[v]).sum()) for v in levels]
    verdicts = [coverage_status(k, int(n), v) for k, n, v in zip(covered, counts, levels)]
    pit_values = np.concatenate(pits)
    crps_rows = np.concatenate(crps_values)
    crps_mean, crps_left_out = finite_mean(crps_rows)
    interval_means = [finite_mean(np.concatenate(scores[v])) for v in levels]
    return CalibrationReport(
        site=site, levels=tuple(levels), kind=kinds.pop() if len(kinds) == 1 else "mixed",
        num_rows=int(pit_values.size),
        coverage=np.array([k / n for k, n in zip(covered, counts)], dtype=np.float64),
        coverage_se=np.array([binomial_se(v, n) for v, n in zip(levels, counts)], dtype=np.float64),
        mean_width=np.array([finite_mean(np.concatenate(widths[v]))[0] for v in levels]),
        interval_score=np.array([m for m, _ in interval_means]),
        pit=pit_values, crps=crps_rows, lpd=None,
        pit_test=uniformity_test(pit_values, alpha=alpha),
        info={"rows_per_level": counts.tolist(), "hits_per_level": covered,
              "coverage_p": [p for p, _ in verdicts], "coverage_status": [s for _, s in verdicts],
              "crps": crps_mean,
              "excluded_scores": {"crps": crps_left_out, "interval_score": [n for _, n in interval_means]},
              "non_finite_outcomes": int(non_finite), "source": "served summaries and posted outcomes"},
    )
