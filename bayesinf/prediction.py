"""``Prediction``: the result of ``Posterior.predict`` — per-row summaries, intervals, class or
count probabilities and (when they fit in memory) the raw predictive draws, for every observed site.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .errors import InputError
from .intervals import check_kind, check_levels, summarize

__all__ = ["Prediction", "SitePrediction", "assemble"]


@dataclass(frozen=True)
class SitePrediction:
    """Predictions of one observed site for ``rows`` new rows.

    ``mean``, ``median``, ``sd``: ``(rows, *event)``; ``lower``/``upper``: ``(levels, rows, *event)``;
    ``probs``: ``(rows, classes)`` for a discrete scalar site (the last class of a count site is
    "this many or more"), else None; ``row_draws``: ``(rows, *event, draws)`` or None.
    """

    site: str
    mean: np.ndarray
    median: np.ndarray
    sd: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    probs: np.ndarray | None = None
    row_draws: np.ndarray | None = None

    @property
    def draws(self) -> np.ndarray:
        """Predictive draws, ``(draws, rows, *event)`` (a view, no copy)."""
        if self.row_draws is None:
            raise InputError("draws", f"of site '{self.site}' were not kept",
                             hint="Call predict(..., return_draws=True) or predict fewer rows.")
        return np.moveaxis(self.row_draws, -1, 0)


@dataclass(frozen=True)
class Prediction:
    """Posterior predictive summaries for new data.

    The attributes `mean`, `median`, `sd`, `draws`, `probs` and the method `interval` refer to
    the first observed site; use `pred[site]` for the others.

    Attributes
    ----------
    sites : dict of str -> SitePrediction
        One entry per observed site; ``pred["y"]`` selects one.
    levels : tuple of float
        Interval levels computed, ascending.
    kind : {"eti", "hdi"}
        Interval kind.
    seed : int
        Seed the predictive draws came from.
    index : pandas.Index, optional
        The index of the pandas DataFrame or Series the rows came from, kept by ``to_pandas``
        and ``to_xarray`` so that results align with the input's rows.
    """

    sites: Mapping[str, SitePrediction]
    levels: tuple[float, ...]
    kind: str
    seed: int
    num_rows: int = field(default=0)
    index: Any = field(default=None, compare=False)

    def __getitem__(self, site: str) -> SitePrediction:
        if site not in self.sites:
            raise InputError("site", f"'{site}' is not an observed site of the model", f"one of {list(self.sites)}")
        return self.sites[site]

    @property
    def primary(self) -> SitePrediction:
        return next(iter(self.sites.values()))

    mean = property(lambda self: self.primary.mean, doc="Predictive mean per row (first observed site).")
    median = property(lambda self: self.primary.median, doc="Predictive median per row.")
    sd = property(lambda self: self.primary.sd, doc="Predictive standard deviation per row (ddof=1).")
    draws = property(lambda self: self.primary.draws, doc="Predictive draws, ``(draws, rows, ...)``.")
    probs = property(lambda self: self.primary.probs, doc="Class/count probabilities ``(rows, classes)``.")

    def interval(self, level: float, kind: str | None = None, site: str | None = None):
        """``(lower, upper)`` bounds of the ``level`` interval, each ``(rows, ...)``.

        Levels computed at predict time are returned directly; others are computed from the kept
        draws.
        """
        level = check_levels(level, "interval", "level")[0]
        kind = check_kind(kind or self.kind, "interval")
        target = self[site] if site else self.primary
        if kind == self.kind:
            for i, v in enumerate(self.levels):
                if abs(v - level) < 1e-12:
                    return target.lower[i], target.upper[i]
        s = summarize(target.row_draws if target.row_draws is not None else target.draws, (level,), kind)
        return s["lower"][0], s["upper"][0]

    def to_pandas(self):
        """One row per data row; columns ``mean, sd, median, lower_<level>, upper_<level>``
        (prefixed ``<site>_`` when the model has several observed sites) and ``p_<k>`` probabilities."""
        import pandas as pd

        columns = {}
        prefix_sites = len(self.sites) > 1
        for name, s in self.sites.items():
            if s.mean.ndim > 1:
                raise InputError("to_pandas", f"needs scalar sites; site '{name}' has shape {s.mean.shape[1:]} per row",
                                 hint="Use to_xarray() instead.")
            p = f"{name}_" if prefix_sites else ""
            columns[p + "mean"] = s.mean
            columns[p + "sd"] = s.sd
            columns[p + "median"] = s.median
            for i, v in enumerate(self.levels):
                columns[f"{p}lower_{v:g}"] = s.lower[i]
                columns[f"{p}upper_{v:g}"] = s.upper[i]
            if s.probs is not None:
                for k in range(s.probs.shape[1]):
                    columns[f"{p}p_{k}"] = s.probs[:, k]
        return pd.DataFrame(columns, index=self.index)

    def to_xarray(self):
        """An ``xarray.Dataset`` with variables ``<site>_mean`` etc. over dims ``row``, ``level``."""
        import xarray as xr

        data = {}
        for name, s in self.sites.items():
            event = [f"{name}_dim_{i}" for i in range(s.mean.ndim - 1)]
            dims = ["row", *event]
            data[f"{name}_mean"] = (dims, s.mean)
            data[f"{name}_sd"] = (dims, s.sd)
            data[f"{name}_median"] = (dims, s.median)
            data[f"{name}_lower"] = (["level", *dims], s.lower)
            data[f"{name}_upper"] = (["level", *dims], s.upper)
            if s.probs is not None:
                data[f"{name}_probs"] = (["row", f"{name}_class"], s.probs)
        coords = {"level": list(self.levels)}
        if self.index is not None:
            coords["row"] = np.asarray(self.index)
        return xr.Dataset(data, coords=coords, attrs={"kind": self.kind, "seed": self.seed})

    def __repr__(self):
        sites = ", ".join(self.sites)
        return f"Prediction(rows={self.num_rows}, sites=[{sites}], levels={self.levels}, kind={self.kind!r})"


def _class_probs(row_draws: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of draws equal to 0..num_classes-1 per row; the last class collects larger values."""
    values = np.clip(row_draws.astype(np.int64), 0, num_classes - 1)
    probs = np.empty((values.shape[0], num_classes))
    for k in range(num_classes):
        probs[:, k] = (values == k).mean(axis=-1)
    return probs


#: Rows summarized per task: a block of 4000 draws x 128 rows (2 MB in float32) stays in cache
#: while it is transposed and partitioned.
BLOCK_ROWS = 128


def _summarize_block(draws_first: np.ndarray, levels, kind: str, num_classes: int | None, keep: bool) -> dict:
    """Summaries of one row block given ``(draws, rows, ...)``; transposes it to rows-major first."""
    row_draws = np.ascontiguousarray(np.moveaxis(draws_first, 0, -1))
    s = summarize(row_draws, levels, kind)
    if num_classes and row_draws.ndim == 2:
        s["probs"] = _class_probs(row_draws, num_classes)
    if keep:
        s["row_draws"] = row_draws
    return s


def assemble(chunks, num_rows: int, sites_info: Mapping[str, Mapping], levels, kind: str, seed: int,
             keep_draws: bool, executor=None) -> Prediction:
    """Summarize predictive draws chunk by chunk into a ``Prediction``.

    ``chunks`` yields ``(start, stop, {site: (draws, rows, ...)})``; ``sites_info[site]`` may give
    ``num_classes`` for discrete scalar sites. Row blocks are summarized on ``executor`` (a
    ``concurrent.futures`` executor) when given: numpy's selection releases the GIL, so blocks
    run in parallel with each other and with the next chunk's draws.
    """
    parts: dict[str, dict[str, list]] = {s: {} for s in sites_info}
    for start, stop, out in chunks:
        for site, draws_first in out.items():
            k = sites_info[site].get("num_classes")
            blocks = [draws_first[:, r:r + BLOCK_ROWS] for r in range(0, draws_first.shape[1], BLOCK_ROWS)]
            if executor is None or len(blocks) == 1:
                results = [_summarize_block(b, levels, kind, k, keep_draws) for b in blocks]
            else:
                results = list(executor.map(lambda b: _summarize_block(b, levels, kind, k, keep_draws), blocks))
            for s in results:
                for key, value in s.items():
                    parts[site].setdefault(key, []).append(value)
    sites = {}
    for site, p in parts.items():
        cat = {k: np.concatenate(v, axis=1 if k in ("lower", "upper") else 0) for k, v in p.items()}
        sites[site] = SitePrediction(site=site, **cat)
    return Prediction(sites, tuple(levels), kind, seed, num_rows)
