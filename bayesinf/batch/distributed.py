"""``predict_dask``: batch prediction over the partitions of a Dask DataFrame.

Workers get the posterior once each, not once per task: its arrays and JSON description (a
``PosteriorPayload``) are scattered with ``broadcast=True``, and each worker rebuilds the
``Posterior`` (re-importing the model by its import path, or rebuilding a formula model from its
saved spec, as ``bayesinf.load`` does) the first time a task needs it, caching it on the payload
object it holds. Each partition is scored with its rows' global indices, so the result equals
``bayesinf.batch.predict`` and ``Posterior.predict`` on the whole input with the same seed.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from ._io import atomic_table_writer, table_format
from ._plan import InputPlan, make_plan
from .scoring import check_settings, score_frame

__all__ = ["predict_dask", "PosteriorPayload"]

#: Partitions computed ahead of the one being written when streaming to a file, per worker.
IN_FLIGHT_PER_WORKER = 2


class PosteriorPayload:
    """What a worker needs to rebuild a ``Posterior`` for prediction: the latent draws, the fit's
    non-row arrays, the schema and sites as JSON, and the model (a formula model as its spec, any
    other by reference through Dask's serialization). ``posterior()`` rebuilds it once per process
    holding the payload and caches it here."""

    def __init__(self, post):
        spec = getattr(post.model, "__bayesinf_spec__", None)
        self.model_spec = spec() if spec is not None else None
        self.model = None if spec is not None else post.model
        keep = [s for s in post.sites.latent if s in post.draws]
        self.draws = {k: np.asarray(post.draws[k]) for k in keep}
        array_args = set(post.schema.names("array"))
        self.data = {k: np.asarray(v) for k, v in post.data.items() if k in array_args}
        self.description = {"method": post.method, "schema": post.schema.to_json(), "sites": post.sites.to_json(),
                            "dtype": post.dtype, "seed": post.seed, "model_path": post.model_path}
        self._posterior = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_posterior"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def posterior(self):
        """The rebuilt ``Posterior`` (built on first use, then cached)."""
        with self._lock:
            if self._posterior is None:
                from ..data import InputSchema
                from ..persistence import import_model
                from ..posterior import Posterior
                from ..sites import ModelSites

                d = self.description
                model = self.model
                if self.model_spec is not None:
                    model = import_model(self.model_spec["builder"])(self.model_spec["spec"])
                self._posterior = Posterior(
                    model=model, method=d["method"], draws=self.draws, sample_stats={},
                    schema=InputSchema.from_json(d["schema"]), data=self.data, sites=ModelSites.from_json(d["sites"]),
                    settings={}, info={}, dtype=d["dtype"], seed=d["seed"], model_path=d["model_path"])
            return self._posterior


def _score_partition(frame, payload: PosteriorPayload, offsets, plan: InputPlan, levels, kind, seed, dtypes,
                     partition_info=None):
    if len(frame) == 0:
        import pandas as pd

        return pd.DataFrame({c: np.empty(0, dtype=t) for c, t in dtypes})
    start = int(offsets[partition_info["number"]]) if partition_info is not None else 0
    return score_frame(payload.posterior(), plan, frame, start, levels, kind, seed)


def _meta(post, plan: InputPlan, sample, levels, kind, seed):
    """The empty output frame (columns and dtypes) from scoring the first row of ``sample``."""
    if len(sample) == 0:
        raise InputError("ddf", "has no rows to take the output's column types from", "at least one row")
    return score_frame(post, plan, sample.iloc[:1], 0, levels, kind, seed).iloc[:0]


@contextlib.contextmanager
def _client(client, address, cluster_options):
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    if address is not None:
        with Client(address) as own:
            yield own
        return
    options = {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"}  # any free port
    options.update(cluster_options or {})
    with LocalCluster(**options) as cluster, Client(cluster) as own:
        yield own


def predict_dask(post, ddf, sink=None, *, levels=(0.5, 0.9), kind: str = "eti", seed: int = 0,
                 columns: Mapping[str, Any] | None = None, keep=(), extra: str = "error", new_groups: str = "sample",
                 overwrite: bool = False, client=None, address: str | None = None,
                 cluster_options: Mapping[str, Any] | None = None):
    """Score every row of a Dask DataFrame on a Dask cluster.

    Parameters
    ----------
    post : Posterior
    ddf : dask.dataframe.DataFrame
        Input rows (partitions in order); columns as for ``bayesinf.batch.predict``.
    sink : str or Path, optional
        Output ``.csv`` or ``.parquet`` file, written in partition order with a bounded number of
        partitions in flight and renamed into place when complete (atomic). Without it the
        result is gathered and returned as a pandas DataFrame.
    levels, kind, seed, columns, keep, extra, new_groups, overwrite
        As for ``bayesinf.batch.predict``.
    client : distributed.Client, optional
        Cluster to run on (left open).
    address : str, optional
        Scheduler address to connect to when no ``client`` is given.
    cluster_options : mapping, optional
        Options of the ``distributed.LocalCluster`` started (and closed) for the call when
        neither ``client`` nor ``address`` is given; default two single-threaded workers.

    Returns
    -------
    pandas.DataFrame or Path
        The predictions (kept columns first), or ``sink``.
    """
    from pathlib import Path

    levels, kind, seed = check_settings(levels, kind, seed, extra, "batch.predict_dask")
    if not hasattr(ddf, "map_partitions") or not hasattr(ddf, "npartitions"):
        raise InputError("ddf", f"is a {type(ddf).__name__}", "a dask.dataframe.DataFrame")
    fmt = None
    if sink is not None:
        sink = Path(sink)
        fmt = table_format(sink, "sink")
        if sink.exists() and not overwrite:
            raise InputError("sink", f"'{sink}' exists", hint="Pass overwrite=True to replace it.")
    plan = make_plan(post, columns, keep, new_groups)
    plan.check_columns(list(ddf.columns), extra)
    ddf = ddf[list(plan.read_columns)]
    with _client(client, address, cluster_options) as cl:
        lengths = np.asarray(cl.compute(ddf.map_partitions(len)).result(), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        first = int(np.flatnonzero(lengths)[0]) if lengths.sum() else None
        if first is None:
            raise InputError("ddf", "has no rows", "at least one row to predict")
        meta = _meta(post, plan, cl.compute(ddf.partitions[first].head(1, compute=False)).result(),
                     levels, kind, seed)
        [payload] = cl.scatter([PosteriorPayload(post)], broadcast=True, hash=False)
        try:
            dtypes = [(c, str(t)) for c, t in meta.dtypes.items()]
            scored = ddf.map_partitions(_score_partition, payload, offsets, plan, levels, kind, seed, dtypes,
                                        meta=meta, align_dataframes=False)
            if sink is None:
                out = cl.compute(scored).result()
                return out.reset_index(drop=True)
            parts = scored.to_delayed()
            window = IN_FLIGHT_PER_WORKER * max(1, len(cl.scheduler_info().get("workers", {})))
            futures = [cl.compute(p) for p in parts[:window]]
            with atomic_table_writer(sink, fmt) as write:
                for i in range(len(parts)):
                    if i + window < len(parts):
                        futures.append(cl.compute(parts[i + window]))
                    frame = futures[i].result()
                    futures[i] = None
                    if len(frame):
                        write(frame)
            return sink
        finally:
            cl.cancel([payload])
