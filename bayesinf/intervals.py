"""Summaries over the draw axis: equal-tailed and highest-density intervals, quantiles.

All functions take draws on the **last** axis, e.g. ``(rows, draws)``, and work chunk by chunk
with numpy selection (``np.quantile`` partitions once for every requested quantile), which on
CPU is several times faster than sorting on the device.
"""

from __future__ import annotations

import numbers
from typing import Iterable, Sequence

import numpy as np

from .errors import InputError

__all__ = ["KINDS", "check_levels", "check_kind", "eti_probs", "quantiles", "summarize", "interval"]

KINDS = ("eti", "hdi")


def check_levels(levels, owner: str = "predict", field: str = "levels") -> tuple[float, ...]:
    """Validate interval levels: a float or a sequence of floats, each in (0, 1). ``field`` names
    the argument in errors."""
    if isinstance(levels, numbers.Real) and not isinstance(levels, (bool, np.bool_)):
        levels = (levels,)  # Python or NumPy scalar
    try:
        levels = tuple(float(v) for v in levels)
    except (TypeError, ValueError):
        raise InputError(field, f"of {owner} must be a float or a sequence of floats in (0, 1); got {levels!r}") from None
    if not levels:
        raise InputError(field, f"of {owner} is empty", "at least one float in (0, 1)")
    for v in levels:
        if not 0.0 < v < 1.0:
            raise InputError(field, f"of {owner} must be floats in (0, 1); got {v!r}")
    return tuple(sorted(set(levels)))


def check_kind(kind: str, owner: str = "predict") -> str:
    if kind not in KINDS:
        raise InputError("kind", f"of {owner} must be one of {KINDS}; got {kind!r}")
    return kind


def eti_probs(levels: Iterable[float]) -> list[float]:
    """Quantile probabilities for equal-tailed intervals at ``levels``, plus the median."""
    probs = {0.5}
    for level in levels:
        probs.update(((1 - level) / 2, (1 + level) / 2))
    return sorted(probs)


def quantiles(x: np.ndarray, probs: Sequence[float]) -> np.ndarray:
    """Quantiles of ``x`` over the last axis, numpy's default ("linear") definition.

    Equal to ``np.quantile(x, probs, axis=-1)`` but one ``np.partition`` at the lower order
    statistic of each probability, the upper neighbours read as minima of the partitioned
    segments: about a third less work than ``np.quantile`` for three probabilities.
    Returns ``(len(probs), *x.shape[:-1])``.
    """
    n = x.shape[-1]
    h = np.asarray(probs, dtype=np.float64) * (n - 1)
    lower = np.floor(h).astype(np.int64)
    kth = sorted(set(lower.tolist()))
    part = np.partition(x, kth, axis=-1)
    bounds = kth[1:] + [n]
    out = np.empty((len(probs), *x.shape[:-1]), dtype=np.result_type(x.dtype, np.float32))
    for i, (k, frac) in enumerate(zip(lower, h - lower)):
        lo = part[..., k]
        if frac == 0 or k + 1 >= n:
            out[i] = lo
            continue
        stop = bounds[kth.index(k)]  # part[k+1:stop] holds the values between two partition points
        hi = part[..., k + 1:stop].min(axis=-1) if stop > k + 1 else part[..., k + 1]
        out[i] = lo + frac * (hi - lo)
    return out


def summarize(draws: np.ndarray, levels: Sequence[float], kind: str) -> dict[str, np.ndarray]:
    """Mean, sd (ddof=1), median and interval bounds of ``draws`` over the last axis.

    Returns a dict with ``mean``, ``sd``, ``median`` of shape ``draws.shape[:-1]`` and
    ``lower``/``upper`` of shape ``(len(levels), *draws.shape[:-1])``.
    """
    x = draws.astype(np.float64) if draws.dtype.kind in "iub" else draws
    out = {"mean": x.mean(axis=-1), "sd": x.std(axis=-1, ddof=1) if x.shape[-1] > 1 else np.zeros(x.shape[:-1])}
    if kind == "eti":
        probs = eti_probs(levels)
        q = quantiles(x, probs)
        index = {p: i for i, p in enumerate(probs)}
        out["median"] = q[index[0.5]]
        out["lower"] = np.stack([q[index[(1 - v) / 2]] for v in levels])
        out["upper"] = np.stack([q[index[(1 + v) / 2]] for v in levels])
    else:
        out["median"] = quantiles(x, [0.5])[0]
        out["lower"], out["upper"] = nested_hdi(x, levels)
    return out


def nested_hdi(draws: np.ndarray, levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Highest-density intervals of ``draws`` over the last axis at ascending ``levels``, each
    inside the next wider one: ``(lower, upper)``, each ``(len(levels), *draws.shape[:-1])``.

    The widest is ArviZ's ``hdi`` (method "nearest"): the shortest window of ``floor(level * n)``
    gaps between sorted draws. Each narrower window is the shortest such window among those
    inside the wider one, so bands never cross; searched independently, Monte Carlo noise lets a
    30% window poke out of the 60% one on a few percent of rows.
    """
    ordered = np.sort(draws, axis=-1)
    n = ordered.shape[-1]
    first = np.zeros(ordered.shape[:-1], dtype=np.int64)  # the wider window's draws, by index
    last = np.full(ordered.shape[:-1], n - 1, dtype=np.int64)
    lower, upper = [None] * len(levels), [None] * len(levels)
    for i in reversed(range(len(levels))):
        gaps = min(int(np.floor(levels[i] * n)), n - 1)
        widths = np.subtract(ordered[..., gaps:], ordered[..., :n - gaps], dtype=np.float64)
        start = np.arange(n - gaps)
        inside = (start >= first[..., None]) & (start + gaps <= last[..., None])
        first = np.argmin(np.where(inside, widths, np.inf), axis=-1)
        last = first + gaps
        lower[i] = np.take_along_axis(ordered, first[..., None], axis=-1)[..., 0]
        upper[i] = np.take_along_axis(ordered, last[..., None], axis=-1)[..., 0]
    return np.stack(lower), np.stack(upper)


def interval(draws: np.ndarray, level: float, kind: str = "eti") -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` of the ``level`` interval of ``draws`` over the last axis."""
    s = summarize(draws, check_levels(level, "interval"), check_kind(kind, "interval"))
    return s["lower"][0], s["upper"][0]
