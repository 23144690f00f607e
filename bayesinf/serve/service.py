"""The served models and their predict path: the store's catalog, the loaded and compiled versions,
and per-row response payloads.

A request is predicted straight from the compiled ``Predictor`` (``Predictor.chunks``) and the
summaries of ``bayesinf.prediction.assemble`` -- the functions ``Posterior.predict`` runs, so a
solo request's numbers equal ``post.predict(rows, seed=seed)`` exactly -- without repeating the
argument checks the request parser already made.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..data import InputSchema, prepare_predict_inputs
from ..errors import BayesinfError, InputError
from ..posterior import summary_executor
from ..prediction import BLOCK_ROWS, assemble
from ..predictive import bucket_size
from ..runtime import precision
from ..store import ModelStore
from .columns import locate_error, to_array, to_frame
from .schema import Limits, PredictOptions

__all__ = ["HTTPError", "ServedModel", "Service", "row_payload"]

logger = logging.getLogger("bayesinf.serve")


class HTTPError(Exception):
    """An error response ``{"detail": {"field": ..., "message": ...}}`` with HTTP status ``status``."""

    def __init__(self, status: int, field: str, message: str):
        self.status, self.field, self.message = status, field, message
        super().__init__(message)


def _draw_index(num_draws: int, wanted: int) -> np.ndarray:
    return np.unique(np.linspace(0, num_draws - 1, min(wanted, num_draws)).round().astype(int))


def _finite_rows(pred, num_rows: int, return_draws: int) -> np.ndarray:
    """Rows whose summaries (and returned draws) are all finite numbers, ``(rows,)`` bool."""
    ok = np.ones(num_rows, dtype=bool)
    for s in pred.sites.values():
        for a in (s.mean, s.sd, s.median):
            ok &= np.isfinite(a.reshape(num_rows, -1)).all(axis=1)
        for a in (s.lower, s.upper):
            ok &= np.isfinite(a.reshape(a.shape[0], num_rows, -1)).all(axis=(0, 2))
        if return_draws and s.row_draws is not None and s.row_draws.dtype.kind == "f":
            ok &= np.isfinite(s.row_draws.reshape(num_rows, -1)).all(axis=1)
    return ok


def row_payload(pred, i: int, return_draws: int) -> dict:
    """The summaries of row ``i`` of a ``Prediction``, one entry per observed site."""
    out = {}
    for site, s in pred.sites.items():
        entry = {
            "mean": s.mean[i].tolist(), "sd": s.sd[i].tolist(), "median": s.median[i].tolist(),
            "intervals": {f"{level:g}": {"lower": s.lower[j, i].tolist(), "upper": s.upper[j, i].tolist()}
                          for j, level in enumerate(pred.levels)},
        }
        if s.probs is not None:
            entry["probs"] = s.probs[i].tolist()
        if return_draws and s.row_draws is not None:
            entry["draws"] = s.row_draws[i][..., _draw_index(s.row_draws.shape[-1], return_draws)].tolist()
        out[site] = entry
    return out


def example_row(columns) -> dict[str, np.ndarray]:
    """One row of valid values of a formula model's input columns (a level seen at fit for a
    factor, 1 for a number), to warm up the request path at start-up."""
    row = {}
    for c in columns:
        value = c.levels[0] if c.levels else {"number": 1.0, "integer": 1, "boolean": True, "string": ""}[c.value_type]
        row[c.name] = to_array(c, [value])
    return row


@dataclass
class ServedModel:
    """One loaded, compiled version of a stored model.

    ``columns`` are a formula model's input columns (``InputColumn``s; requests name them), None
    for other models (requests name the model's row arguments).
    """

    name: str
    version: int
    posterior: Any
    metadata: dict
    schema: InputSchema
    compile_count: int = 0

    def __post_init__(self):
        self.predictor = self.posterior.predict_fn()
        self.row_args = self.schema.names("rows")
        self.sites_info = {s: {"num_classes": self.posterior.sites.num_classes.get(s)}
                           for s in self.posterior.sites.observed}
        model = self.posterior.model
        input_columns = getattr(model, "input_columns", None)
        is_formula = callable(input_columns) and callable(getattr(model, "__bayesinf_arguments__", None))
        self.columns = tuple(input_columns()) if is_formula else None

    def check(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's arguments for new rows (rows plus the fit's other arrays), checked as
        ``Posterior.predict`` checks them; raises ``InputError`` naming the field."""
        _, arrays, _ = prepare_predict_inputs(self.posterior.model, self.schema, self.posterior.data, (), rows)
        return arrays

    def check_columns(self, values: dict[str, np.ndarray], new_groups: str, columnar: bool = False
                      ) -> dict[str, np.ndarray]:
        """A formula model's arguments for new rows given by data column (``(rows,)`` each), built
        by the formula layer from a DataFrame as ``Posterior.predict(df, new_groups=...)`` builds
        them; its ``InputError`` is re-aimed at the row at fault (``instances[i].column``)."""
        model = self.posterior.model
        try:
            args, kwargs = model.__bayesinf_arguments__(to_frame(values), new_groups=new_groups)
            _, arrays, _ = prepare_predict_inputs(model, self.schema, self.posterior.data, args, kwargs)
        except InputError as exc:
            raise locate_error(exc, self.columns, values, new_groups, columnar) from None
        return arrays

    def predict(self, requests: Sequence[tuple[int, dict[str, np.ndarray]]], options: PredictOptions
                ) -> list[list[dict] | None]:
        """Row payloads of several requests predicted in one compiled call.

        ``requests`` are ``(num_rows, arguments from check)`` pairs; their rows are concatenated in
        order. Returns one list of row payloads per request, or None for a request some of whose
        predictions are not finite numbers (inputs far outside the training data can overflow).
        """
        counts = [n for n, _ in requests]
        num_rows = sum(counts)
        # Each request's rows are numbered 0..n-1, as alone: a micro-batched row gets the draws a
        # solo request gets (row-keyed draws, see ``bayesinf.predictive``).
        row_ids = None if len(requests) == 1 else np.concatenate([np.arange(n) for n in counts])
        if len(requests) == 1:
            arrays = requests[0][1]
        else:
            first = requests[0][1]
            arrays = {k: (np.concatenate([a[k] for _, a in requests]) if k in self.row_args else v)
                      for k, v in first.items()}
        # Overflow far outside the training data is reported per request (as None), not as warnings.
        with precision(self.posterior.dtype), np.errstate(all="ignore"):
            chunks = self.predictor.chunks(arrays, num_rows, options.seed, row_ids=row_ids)
            pred = assemble(chunks, num_rows, self.sites_info, options.levels, options.kind, options.seed,
                            options.return_draws > 0,
                            executor=summary_executor() if num_rows > BLOCK_ROWS else None)
            finite = _finite_rows(pred, num_rows, options.return_draws)
        out, start = [], 0
        for n in counts:
            stop = start + n
            out.append([row_payload(pred, i, options.return_draws) for i in range(start, stop)]
                       if finite[start:stop].all() else None)
            start = stop
        return out


@dataclass
class Service:
    """State of a running service: the store, the served models and the micro-batcher settings."""

    store: ModelStore
    limits: Limits = field(default_factory=Limits)
    max_batch: int = 32
    all_versions: bool = False
    catalog: dict = field(default_factory=dict)  # name -> {"versions", "aliases", "serve", "schemas", "columns"}
    models: dict = field(default_factory=dict)  # (name, version) -> ServedModel
    failed: dict = field(default_factory=dict)  # "name/version" -> message
    ready: bool = False
    incoming: int = 0  # predict requests being received and checked, not yet predicting

    def read_catalog(self) -> None:
        """Names, versions, aliases and input schemas from the store's metadata (no posterior loaded).

        A formula model's metadata also lists its input columns (``inputs.columns``), which its
        requests name.
        """
        from ..formula.design import InputColumn

        for name in self.store.names():
            versions = self.store.versions(name)
            try:
                aliases = self.store.aliases(name)
            except BayesinfError as exc:  # its versions are still served; its aliases answer 503
                aliases = {}
                self.failed[f"{name}/aliases"] = str(exc)
                logger.error("not serving the aliases of %s: %s", name, exc)
            serve = versions if self.all_versions else sorted({versions[-1], *aliases.values()})
            schemas, columns = {}, {}
            for v in serve:
                try:
                    inputs = self.store.metadata(name, v)["inputs"]
                    schemas[v] = InputSchema.from_json(inputs["schema"])
                    if inputs.get("columns") is not None:
                        columns[v] = tuple(InputColumn.from_json(c) for c in inputs["columns"])
                except (BayesinfError, KeyError, TypeError, ValueError) as exc:
                    self.failed[f"{name}/{v}"] = str(exc)
            self.catalog[name] = {"versions": versions, "aliases": aliases, "serve": sorted(schemas),
                                  "schemas": schemas, "columns": columns}

    def bucket_sizes(self, predictor) -> list[int]:
        """Every row bucket that a request of up to ``max_rows`` rows or a batch can compile."""
        largest = max(predictor.chunk_rows(n) for n in {1, min(self.limits.max_rows, 512), self.limits.max_rows,
                                                         self.max_batch})
        largest = max(largest, bucket_size(self.max_batch, predictor.max_rows))
        return [1 << i for i in range(largest.bit_length()) if 1 << i <= largest]

    def load(self) -> None:
        """Load every served version, check its files and compile its predictive function."""
        for name, entry in self.catalog.items():
            for v in entry["serve"]:
                try:
                    self.models[(name, v)] = self._load_one(name, v)
                except Exception as exc:  # a tampered or unloadable version is reported, not served
                    logger.error("not serving %s version %s: %s", name, v, exc)
                    self.failed[f"{name}/{v}"] = str(exc)
        self.ready = True

    def _load_one(self, name: str, version: int) -> ServedModel:
        t0 = time.perf_counter()
        metadata = self.store.metadata(name, version)
        post = self.store.load(name, version)
        rows = {n: post.data[n][:1] for n in post.schema.names("rows")}
        served = ServedModel(name, version, post, metadata, post.schema)
        arrays = served.check(rows)
        if served.columns is not None:  # the DataFrame -> design path of a formula model's requests
            try:
                served.check_columns(example_row(served.columns), "population")
            except InputError as exc:  # no valid example row known: the first request pays instead
                logger.info("%s version %s: no warm-up of the column path (%s)", name, version, exc)
        with precision(post.dtype):
            served.predictor.warm_up(arrays, buckets=self.bucket_sizes(served.predictor))
        served.predict([(1, arrays)], PredictOptions((0.5, 0.9), "eti", 0, 0))  # the host-side path too
        served.compile_count = served.predictor.compile_count()
        logger.info("serving %s version %s (%d compiled buckets, %.1f s)", name, version, served.compile_count,
                    time.perf_counter() - t0)
        return served

    def lookup(self, name: str, version: str | None) -> ServedModel:
        """The served model for a route's ``name`` and ``version`` (number, alias, ``latest`` or None)."""
        if name not in self.catalog:
            raise HTTPError(404, "name", f"model '{name}'"[:200] + f" is not in the store; served: {sorted(self.catalog)}")
        entry = self.catalog[name]
        if version is None or version == "latest":
            number = entry["versions"][-1]
        elif version.isdigit() and len(version) < 10:
            number = int(version)
        elif version in entry["aliases"]:
            number = entry["aliases"][version]
        elif f"{name}/aliases" in self.failed:
            raise HTTPError(503, "version", f"the aliases of '{name}' could not be read: {self.failed[f'{name}/aliases']}")
        else:
            raise HTTPError(404, "version", f"'{version}'"[:200] + f" is neither a version nor an alias of '{name}'; "
                            f"versions {entry['versions']}, aliases {sorted(entry['aliases'])}")
        if (name, number) in self.models:
            return self.models[(name, number)]
        if f"{name}/{number}" in self.failed:
            raise HTTPError(503, "version", f"version {number} of '{name}' could not be loaded: "
                            f"{self.failed[f'{name}/{number}']}")
        if not self.ready and number in entry["serve"]:
            raise HTTPError(503, "version", "the service is still loading models")
        if number in entry["versions"]:
            raise HTTPError(404, "version", f"version {number} of '{name}' is in the store but not served "
                            "(the service serves the latest version and aliased ones; start it with --all-versions)")
        if number in self.store.versions(name):  # saved after start-up
            raise HTTPError(404, "version", f"version {number} of '{name}' was saved after the service started; "
                            "versions are read at start-up: restart the service to serve it")
        raise HTTPError(404, "version", f"version {number} of '{name}' is not in the store; versions {entry['versions']}")
