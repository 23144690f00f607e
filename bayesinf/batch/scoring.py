"""``predict``: score a table in chunks with resumable part files and an atomic output."""

from __future__ import annotations

import hashlib
import json
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..data import check_seed
from ..errors import InputError
from ..intervals import check_kind, check_levels
from ._io import atomic_table_writer, open_source, part_rows, table_format, write_part
from ._plan import EXTRA, InputPlan, make_plan, prediction_columns

__all__ = ["predict", "score_frame", "BatchResult", "DEFAULT_CHUNK_ROWS", "model_fingerprint", "check_settings"]

#: Rows per chunk (and part file) by default.
DEFAULT_CHUNK_ROWS = 1 << 18
#: Version of the part-file layout, part of every fingerprint.
PARTS_VERSION = 1


@dataclass(frozen=True)
class BatchResult:
    """What a batch prediction did.

    Attributes
    ----------
    path : Path
        The output file.
    num_rows : int
        Rows scored.
    num_chunks : int
        Chunks (part files) of ``chunk_rows`` rows.
    computed_chunks : int
        Chunks computed by this run.
    reused_chunks : int
        Chunks finished by an earlier, interrupted run with the same input, model and settings.
    seconds : float
        Wall time of the run.
    """

    path: Path
    num_rows: int
    num_chunks: int
    computed_chunks: int
    reused_chunks: int
    seconds: float


def check_settings(levels, kind, seed, extra, owner: str) -> tuple[tuple[float, ...], str, int]:
    """Validated ``(levels, kind, seed)``; ``InputError`` naming the bad one."""
    if extra not in EXTRA:
        raise InputError("extra", f"of {owner} must be one of {EXTRA}; got {extra!r}")
    return check_levels(levels, owner), check_kind(kind, owner), check_seed(seed, owner)


def score_frame(post, plan: InputPlan, frame, start: int, levels, kind: str, seed: int):
    """Output rows (a pandas DataFrame) for ``frame``, whose first row is row ``start`` of the input:
    the kept columns, then the prediction columns. Errors name the column and the input rows."""
    import pandas as pd

    args, kwargs = plan.arguments_for(frame, start)
    try:
        pred = post.predict(*args, levels=levels, kind=kind, seed=seed, return_draws=False, row_offset=start, **kwargs)
    except InputError as exc:
        raise InputError(exc.field, f"{exc.problem} (in input rows {start}-{start + len(frame) - 1})",
                         exc.expected, exc.hint) from None
    out = {c: frame[c].to_numpy() for c in plan.keep}
    for name, values in prediction_columns(pred).items():
        if name in out:
            raise InputError("keep", f"lists {name!r}, which is also a prediction column", "other column names")
        out[name] = values
    return pd.DataFrame(out)


def model_fingerprint(post) -> str:
    """Hash of everything a posterior's predictions depend on: model identity, schema, sites,
    precision, and the posterior draws and fit arrays."""
    spec = getattr(post.model, "__bayesinf_spec__", None)
    model = spec() if spec is not None else (post.model_path or getattr(post.model, "__qualname__", repr(post.model)))
    h = hashlib.sha256(json.dumps({"model": model, "schema": post.schema.to_json(), "sites": post.sites.to_json(),
                                   "dtype": post.dtype}, sort_keys=True, default=str).encode())
    for group in (post.draws, post.data):
        for name in sorted(group):
            value = np.ascontiguousarray(group[name])
            h.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
            h.update(value.tobytes())
    return h.hexdigest()


def _prefetch(iterator, depth: int = 1):
    """Iterate ``iterator`` in a background thread, ``depth`` items ahead (the next chunk is read
    while this one is scored); exceptions are re-raised in the caller."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as exc:  # handed to the consumer
            items.put((done, exc))

    thread = threading.Thread(target=run, name="bayesinf-batch-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def predict(post, source, sink, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, levels=(0.5, 0.9), kind: str = "eti",
            seed: int = 0, columns: Mapping[str, Any] | None = None, keep=(), extra: str = "error",
            new_groups: str = "sample", overwrite: bool = False, progress: bool = True) -> BatchResult:
    """Score every row of ``source`` and write the predictions to ``sink``, in bounded memory.

    Rows are read ``chunk_rows`` at a time; each chunk's output is written as a part file in a
    hidden work directory beside ``sink`` (``.<sink name>.parts-<fingerprint>``, the fingerprint
    hashing the input file, the posterior and the settings), and a re-run with the same input,
    posterior and settings skips the parts already written. Once every chunk is done, the parts are
    joined into a temporary file beside ``sink``, which is renamed to ``sink`` (atomic: ``sink``
    never holds a partial output) and the work directory is removed. A run that fails before any
    part is written removes its work directory; to discard the parts of an abandoned run, delete
    ``.<sink name>.parts-*``.

    Parameters
    ----------
    post : Posterior
    source : str, Path or pandas.DataFrame
        A ``.csv`` or ``.parquet`` file, or a DataFrame. Formula models read the formula's columns
        by name; plain models see ``columns``.
    sink : str or Path
        Output ``.csv`` or ``.parquet`` file.
    chunk_rows : int
        Rows per chunk (memory grows with it; predictive draws are computed within the posterior's
        memory budget whatever the chunk).
    levels : float or sequence of float
        Interval levels in (0, 1).
    kind : {"eti", "hdi"}
    seed : int
        Same seed, same numbers as ``post.predict`` on the whole input.
    columns : mapping of str -> str or list of str, optional
        Plain models: input column(s) of each row argument, e.g. ``{"X": ["x1", "x2"]}`` (see
        ``bayesinf.batch.make_plan``).
    keep : sequence of str
        Input columns copied to the output before the predictions (ids, say). CSV inputs keep
        them as text, exactly as written.
    extra : {"error", "ignore"}
        Input columns neither read by the model nor kept: an error, or skipped (not even read).
    new_groups : {"sample", "population", "error"}
        Formula models: prediction for group levels not seen at fit.
    overwrite : bool
        Replace an existing ``sink``; otherwise an existing ``sink`` is an error.
    progress : bool
        Show a progress bar (tqdm) on stderr.

    Returns
    -------
    BatchResult

    Output columns: the kept columns, then per observed site ``mean, sd, median,
    lower_<level>, upper_<level>`` and, for discrete outcomes, ``p_<k>`` (see
    ``bayesinf.batch.prediction_columns``).

    Raises
    ------
    InputError
        Bad settings; a missing, unused (``extra="error"``), mistyped or non-finite column, an
        unseen category, or an unreadable file: the message names the column and the input rows.
    """
    t0 = time.perf_counter()
    levels, kind, seed = check_settings(levels, kind, seed, extra, "batch.predict")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise InputError("chunk_rows", f"must be a positive int; got {chunk_rows!r}")
    chunk_rows = int(chunk_rows)
    sink = Path(sink)
    fmt = table_format(sink, "sink")
    if sink.exists() and not overwrite:
        raise InputError("sink", f"'{sink}' exists", hint="Pass overwrite=True (--overwrite) to replace it.")
    if sink.is_dir():
        raise InputError("sink", f"'{sink}' is a directory", "a file path")
    src = open_source(source)
    if src.path is not None and sink.exists() and sink.resolve() == src.path.resolve():
        raise InputError("sink", f"'{sink}' is the input file", "another path")
    plan = make_plan(post, columns, keep, new_groups)
    plan.check_columns(src.columns, extra)
    settings = {"parts": PARTS_VERSION, "levels": levels, "kind": kind, "seed": seed, "chunk_rows": chunk_rows,
                "plan": plan.to_json(), "source": src.fingerprint(), "model": model_fingerprint(post)}
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    sink.parent.mkdir(parents=True, exist_ok=True)
    work = sink.parent / f".{sink.name}.parts-{fingerprint}"
    work.mkdir(exist_ok=True)
    (work / "settings.json").write_text(json.dumps(settings, indent=1))

    from tqdm import tqdm

    parts, computed, reused, num_rows = [], 0, 0, 0
    try:
        with tqdm(total=src.num_rows, unit="row", unit_scale=True, desc="predict", disable=not progress) as bar:
            for index, (start, frame) in enumerate(_prefetch(src.chunks(plan.read_columns, chunk_rows,
                                                                       plan.csv_types()))):
                part = work / f"part-{index:06d}.parquet"
                if part_rows(part) == len(frame):
                    reused += 1
                else:
                    write_part(score_frame(post, plan, frame, start, levels, kind, seed), part)
                    computed += 1
                parts.append(part)
                num_rows += len(frame)
                bar.update(len(frame))
    except BaseException:
        # Keep the work directory only if it holds finished parts a re-run can resume from.
        if not any(work.glob("part-*.parquet")):
            shutil.rmtree(work, ignore_errors=True)
        raise
    if not parts:
        shutil.rmtree(work, ignore_errors=True)
        raise InputError("source", "has no rows", "at least one row to predict")
    import pyarrow.parquet as pq

    with atomic_table_writer(sink, fmt) as write:
        for part in parts:
            write(pq.read_table(part))
    shutil.rmtree(work, ignore_errors=True)
    return BatchResult(sink, num_rows, len(parts), computed, reused, time.perf_counter() - t0)
