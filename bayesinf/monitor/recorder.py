"""``Recorder``: every prediction and failed request of a service, written to a database off the
request path.

``record_prediction`` and ``record_error`` only put a tuple of references on a bounded queue
(a few microseconds); a background writer thread turns queued records into table rows and
inserts them in batches, one transaction per batch (it lets a batch gather for 250 ms, so steady
traffic costs one transaction per 250 ms, not one per request). A full queue or a failing database drops
records, counted in ``stats()`` and logged, and never raises to the caller: monitoring must not
fail or slow a prediction. After a failed write the writer backs off (50 ms doubling to 2 s),
discards its connections and tries again, so writing resumes by itself when the database is back.

The writer runs in the server's process, so its work per record is CPU and interpreter time
taken from the event loop, and is kept small (about 15 us for a single-row request): JSON text
is written by orjson (the standard library takes over where the two would write differently),
rows are tuples handed straight to the driver, in multi-row ``INSERT`` statements (SQLite) or
``COPY`` (PostgreSQL), with no per-row work in SQLAlchemy, and a long batch lets other threads
take the interpreter every ``YIELD_EVERY_S``.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa

from ..errors import InputError
from . import db

__all__ = ["Recorder"]

logger = logging.getLogger("bayesinf.monitor")

#: Longest pause between write attempts while the database is failing, seconds.
MAX_BACKOFF_S = 2.0
#: How long the writer lets records gather before writing a batch that is not full, seconds.
#: Measured with ``benchmarks/serve_load.py --monitor-db`` at 300 requests/s: 50 ms added 14% to
#: the median latency, 250 ms 2% (fewer wake-ups and transactions of the writer thread).
LINGER_S = 0.25
#: Least time between two log lines about dropped records, seconds.
REPORT_EVERY_S = 60.0
#: Longest stretch of the writer's own Python work between two moments it lets other threads
#: take the interpreter (``time.sleep(0)``), seconds: without them a large batch would hold it
#: until the interpreter's switch interval (5 ms) forces a switch, delaying the event loop by as
#: much. Each yield costs about 80 us of the writer's wall time (no CPU).
YIELD_EVERY_S = 0.0002
#: Most rows per ``INSERT`` statement (SQLite), and most parameters: SQLite before 3.32 takes
#: at most 999 in a statement.
INSERT_CHUNK = 128
MAX_PARAMETERS = 999


class _Pacer:
    """Call between units of work: sleeps 0 s once ``YIELD_EVERY_S`` has passed since the last yield."""

    __slots__ = ("_next",)

    def __init__(self):
        self._next = time.perf_counter() + YIELD_EVERY_S

    def __call__(self) -> None:
        if time.perf_counter() >= self._next:
            time.sleep(0)
            self._next = time.perf_counter() + YIELD_EVERY_S


class _RecordQueue(queue.Queue):
    """A bounded FIFO queue the writer drains a batch at a time: one lock round per batch, not
    one per record."""

    def get_batch(self, max_items: int) -> list:
        """Up to ``max_items`` queued records, oldest first, without waiting (possibly none)."""
        with self.mutex:
            batch = [self._get() for _ in range(min(max_items, self._qsize()))]
            if batch:
                self.not_full.notify(len(batch))
        return batch

    def batch_done(self, num_items: int) -> None:
        """``task_done`` for ``num_items`` records at once."""
        with self.all_tasks_done:
            self.unfinished_tasks -= num_items
            if self.unfinished_tasks <= 0:
                self.all_tasks_done.notify_all()


class Recorder:
    """Records predictions, failed requests and outcome feedback of a prediction service.

    Parameters
    ----------
    url : str or Path
        Database: a SQLite file path (default ``"monitor.db"``), ``sqlite:///path`` or
        ``postgresql://user:password@host:port/dbname`` (driver psycopg 3). Tables are created
        on first use (see ``bayesinf.monitor.db`` for the schema).
    store : ModelStore or str or Path, optional
        The served models' store: the monitoring report's drift check compares live inputs with
        the training-input statistics saved there. Without it, reports carry no drift section.
    max_queue : int
        Records held while waiting to be written; more are dropped (and counted).
    batch_size : int
        Most records written per transaction.
    timeout : float
        Seconds a write waits for the database (SQLite lock wait, PostgreSQL connect timeout)
        before it counts as failed.

    Examples
    --------
    >>> recorder = Recorder("postgresql://monitor@db/monitor", store="models/")   # doctest: +SKIP
    >>> app = create_app("models/", monitor=recorder)                            # doctest: +SKIP
    >>> recorder.stats()                                                          # doctest: +SKIP
    {'recorded': 1041, 'recorded_rows': 1311, 'dropped': 0, 'db_errors': 0, 'queue': 0, ...}
    """

    def __init__(self, url="monitor.db", *, store=None, max_queue: int = 10_000, batch_size: int = 500,
                 timeout: float = 5.0):
        for field, value in (("max_queue", max_queue), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(field, f"of Recorder must be a positive integer; got {value!r}")
        self.url = db.normalize_url(url)
        _check_sqlite_directory(self.url)
        self.engine = db.create_engine(self.url, timeout=timeout)
        if store is not None and not hasattr(store, "metadata"):
            from ..store import ModelStore

            store = ModelStore(store)
        self.store = store
        self.batch_size = batch_size
        self._queue = _RecordQueue(maxsize=max_queue)
        dialect = self.engine.dialect
        self._targets = insert_targets(dialect)
        self._copy = dialect.name == "postgresql"
        self._placeholder = _PLACEHOLDERS.get(dialect.paramstyle, "?")
        self._statements: dict[tuple[str, int], str] = {}  # (table, rows) -> INSERT of that many rows
        self._chunk_rows = {table: min(INSERT_CHUNK, MAX_PARAMETERS // len(columns))
                            for table, columns in COLUMNS.items()}
        self._lock = threading.Lock()
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._closed = False
        self._stop = threading.Event()
        self._counts = {"recorded": 0, "recorded_rows": 0, "dropped": 0, "db_errors": 0}
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._reported = (0, -float("inf"))  # (dropped count last logged, when)
        self._writer = threading.Thread(target=self._run, name="bayesinf-monitor-writer", daemon=True)
        self._writer.start()

    def __repr__(self):
        return f"Recorder({sa.make_url(self.url).render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------------ the request path
    def record_prediction(self, *, request_id: str, model: str, version: int, received_at: float,
                          latency_ms: float, inputs: dict[str, np.ndarray], rows: list[dict],
                          levels: tuple[float, ...], kind: str) -> None:
        """Queue an answered prediction request (returns at once; never raises).

        Parameters
        ----------
        request_id : str
            Id returned to the client, the key of later feedback.
        model, version
            The model that answered.
        received_at : float
            Arrival time, Unix seconds.
        latency_ms : float
            Time to answer, milliseconds.
        inputs : dict of str -> np.ndarray
            Validated input arguments, rows first, ``(rows, ...)``.
        rows : list of dict
            The per-row payloads returned (site -> mean, sd, median, intervals, probs).
        levels : tuple of float
            Interval levels served.
        kind : {"eti", "hdi"}
            Interval kind served.
        """
        self._put(("p", request_id, model, version, received_at, latency_ms, inputs, rows, levels, kind))

    def record_error(self, *, model: str | None, version: int | None, status: int, received_at: float,
                     latency_ms: float) -> None:
        """Queue a failed request (HTTP ``status``; model and version None when unknown). Never raises."""
        self._put(("e", model, version, status, received_at, latency_ms))

    def _put(self, record: tuple) -> None:
        try:
            if self._closed:
                raise queue.Full
            self._queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self._counts["dropped"] += 1

    # ------------------------------------------------------------------ state
    def stats(self) -> dict[str, Any]:
        """Counters: ``recorded`` (requests and errors written), ``recorded_rows`` (data rows
        written), ``dropped`` (records lost to a full queue or a failed write), ``db_errors``
        (failed write attempts), ``queue`` (records waiting), ``queue_capacity``,
        ``writer_alive``, ``failing`` (the latest write attempt failed) and ``last_error``
        (message of the latest database error, or None)."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["last_error"] = self._last_error
            out["failing"] = self._failing_since is not None
        out.update(queue=self._queue.qsize(), queue_capacity=self._queue.maxsize,
                   writer_alive=self._writer.is_alive())
        return out

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is written or dropped; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        q = self._queue
        with q.all_tasks_done:
            while q.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._writer.is_alive():
                    return False
                q.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (waiting up to ``timeout`` seconds), stop the writer and release
        the database connections. Records queued afterwards are dropped."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout)
        self._stop.set()
        self._writer.join(timeout)
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def router(self, store=None):
        """The feedback and report routes (``fastapi.APIRouter``) for this recorder.

        ``POST /v1/models/{name}/feedback`` and ``GET /v1/models/{name}/monitor``; see
        ``bayesinf.monitor.routes``. ``store`` defaults to the recorder's. Included in an app
        whose ``state.metrics`` has ``watch_monitor`` (``bayesinf.serve.create_app``), it hands
        ``stats`` to it at start-up, so ``/metrics`` exports records dropped, database errors and
        the queue depth.
        """
        from .routes import make_router

        return make_router(self, store if store is not None else self.store)

    def ensure_schema(self) -> None:
        """Create the tables now (the writer also does on its first write)."""
        with self._schema_lock:
            if not self._schema_ready:
                db.ensure_schema(self.engine)
                self._schema_ready = True

    # ------------------------------------------------------------------ the writer
    def _run(self) -> None:
        q = self._queue
        backoff = 0.0
        while True:
            try:
                first = q.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if q.qsize() < self.batch_size - 1:
                # Let a batch gather: one transaction per LINGER_S instead of one per request
                # keeps the writer's share of the interpreter small under steady traffic.
                self._stop.wait(LINGER_S)
            batch = [first, *q.get_batch(self.batch_size - 1)]
            try:
                ok = self._write(batch)
            except Exception as exc:  # never let the writer die
                ok = False
                self._failed(exc, len(batch))
            finally:
                q.batch_done(len(batch))
            self._report_drops()
            if ok:
                backoff = 0.0
            elif self._stop.is_set():  # closing with the database failing: drop the rest and stop
                self._drop_queued()
                return
            else:
                backoff = min(MAX_BACKOFF_S, max(0.05, 2 * backoff))
                self._stop.wait(backoff)

    def _report_drops(self) -> None:
        """Log records dropped since the last report, at most once per ``REPORT_EVERY_S``."""
        now = time.monotonic()
        if now - self._reported[1] < REPORT_EVERY_S:
            return
        with self._lock:
            dropped = self._counts["dropped"]
        if dropped > self._reported[0]:
            logger.warning("%d monitoring records dropped (%d in all): the queue was full or the database "
                           "failing; see Recorder.stats()", dropped - self._reported[0], dropped)
            self._reported = (dropped, now)

    def _drop_queued(self) -> None:
        q = self._queue
        while True:
            try:
                q.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._counts["dropped"] += 1
            q.task_done()

    def _write(self, batch: list[tuple]) -> bool:
        """Insert a batch in one transaction; True on success. Failures are counted, not raised."""
        preds, errs, dropped = [], [], 0  # preds: (predictions row, its prediction_rows)
        pace = _Pacer()
        for record in batch:
            try:
                if record[0] == "p":
                    preds.append(_prediction_rows(record))
                else:
                    errs.append(_error_row(record))
            except Exception as exc:  # a record that cannot be serialized is dropped alone
                dropped += 1
                logger.warning("monitoring record dropped: %s", exc)
            pace()
        if dropped:
            with self._lock:
                self._counts["dropped"] += dropped
        if not (preds or errs):
            return True
        try:
            self.ensure_schema()
            with self.engine.begin() as conn:
                self._insert(conn, preds, errs)
        except sa.exc.IntegrityError:
            # A repeated request id: write the records one by one, dropping the repeats.
            self._write_one_by_one(preds, errs)
            return True
        except Exception as exc:
            self._failed(exc, len(preds) + len(errs))
            return False
        self._succeeded(len(preds) + len(errs), sum(len(pred_rows) for _, pred_rows in preds))
        return True

    def _insert(self, conn, preds: list[tuple[tuple, list[tuple]]], errs: list[tuple]) -> None:
        """Insert the rows in ``conn``'s transaction, straight through the driver, raising
        SQLAlchemy's errors: ``COPY`` for PostgreSQL (psycopg's ``executemany`` costs three times
        as much per row); otherwise multi-row ``INSERT`` statements of up to ``INSERT_CHUNK`` rows
        (one per table for a batch of steady traffic) rather than ``executemany``, which would
        release and retake the interpreter lock once per row, and each retaking while the event
        loop runs costs both threads a switch."""
        pace = _Pacer()
        tables = (("predictions", [pred for pred, _ in preds]),
                  ("prediction_rows", [row for _, pred_rows in preds for row in pred_rows]), ("errors", errs))
        for table, params in tables:
            if not params:
                continue
            if self._copy:
                _copy_rows(conn, f"COPY {self._targets[table]} FROM STDIN", params, pace)
                continue
            start = 0
            while start < len(params):
                num_rows = min(self._chunk_rows[table], len(params) - start)
                statement = self._statements.get((table, num_rows))
                if statement is None:
                    statement = self._statements[table, num_rows] = values_statement(
                        self._targets[table], len(COLUMNS[table]), num_rows, self._placeholder)
                pace()
                conn.exec_driver_sql(statement, tuple(itertools.chain.from_iterable(params[start:start + num_rows])))
                start += num_rows

    def _write_one_by_one(self, preds: list[tuple[tuple, list[tuple]]], errs: list[tuple]) -> None:
        written = written_rows = 0
        for pred, pred_rows in preds:
            try:
                with self.engine.begin() as conn:
                    self._insert(conn, [(pred, pred_rows)], [])
                written += 1
                written_rows += len(pred_rows)
            except sa.exc.IntegrityError:
                with self._lock:
                    self._counts["dropped"] += 1
                logger.warning("monitoring record dropped: request id %r was recorded before", pred[0])
        if errs:
            with self.engine.begin() as conn:
                self._insert(conn, [], errs)
        self._succeeded(written + len(errs), written_rows)

    def _succeeded(self, records: int, num_rows: int) -> None:
        with self._lock:
            self._counts["recorded"] += records
            self._counts["recorded_rows"] += num_rows
            if self._failing_since is not None:
                logger.warning("monitoring database reachable again after %.1f s; %d records dropped so far",
                               time.time() - self._failing_since, self._counts["dropped"])
                self._failing_since = None

    def _failed(self, exc: Exception, records: int) -> None:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        with self._lock:
            self._counts["db_errors"] += 1
            self._counts["dropped"] += records
            self._last_error = message
            first = self._failing_since is None
            if first:
                self._failing_since = time.time()
        if first:
            logger.error("monitoring database write failed (%s); records are dropped until it succeeds", message)
        self._schema_ready = False
        self.engine.dispose()  # reconnect on the next attempt


def _check_sqlite_directory(url: str) -> None:
    """Refuse a SQLite file whose directory does not exist: the database could never be
    written, which is a configuration error rather than an outage to ride out."""
    from pathlib import Path

    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return  # create_engine names the bad URL
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return
    parent = Path(database).expanduser().parent
    if not parent.is_dir():
        raise InputError("url", f"names the SQLite file {database!r}, whose directory {str(parent)!r} does not exist",
                         "an existing directory (the file is created there)")


# ----------------------------------------------------------------------------- records -> table rows
#: The columns written, in the order of the row tuples built below (``errors.id`` is assigned by
#: the database).
COLUMNS = {
    "predictions": ("request_id", "model", "version", "received_at", "latency_ms", "num_rows", "kind", "levels",
                    "input_summary"),
    "prediction_rows": ("request_id", "row", "inputs", "outputs"),
    "errors": ("model", "version", "status", "received_at", "latency_ms"),
}
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def insert_targets(dialect) -> dict[str, str]:
    """Table name -> ``table (column, ...)`` of its ``COLUMNS``, quoted for ``dialect``."""
    quote = dialect.identifier_preparer
    tables = {t.name: t for t in (db.predictions, db.prediction_rows, db.errors)}
    return {name: f"{quote.format_table(tables[name])} "
                  f"({', '.join(quote.format_column(tables[name].c[c]) for c in columns)})"
            for name, columns in COLUMNS.items()}


def values_statement(target: str, num_columns: int, num_rows: int, placeholder: str) -> str:
    """``INSERT INTO target VALUES (...), (...)`` of ``num_rows`` rows, positional parameters."""
    row = f"({', '.join([placeholder] * num_columns)})"
    return f"INSERT INTO {target} VALUES {', '.join([row] * num_rows)}"


def _copy_rows(conn: sa.Connection, statement: str, rows: list[tuple], pace: _Pacer) -> None:
    """Write ``rows`` with PostgreSQL's ``COPY`` through psycopg, inside ``conn``'s transaction;
    driver errors are raised as SQLAlchemy's (a repeated key as ``IntegrityError``), and a lost
    connection is invalidated, as ``Connection.execute`` does."""
    fairy = conn.connection
    dialect = conn.dialect
    cursor = fairy.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                pace()
    except dialect.loaded_dbapi.Error as exc:
        is_disconnect = dialect.is_disconnect(exc, fairy.dbapi_connection, cursor)
        if is_disconnect:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error,
                                         connection_invalidated=is_disconnect, dialect=dialect) from exc
    finally:
        cursor.close()


_stdlib_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _dumps(data) -> str:
    """JSON text of ``data`` (plain Python values) that ``json.loads`` reads back as the standard
    library's encoder would have written it.

    orjson writes it, several times faster; the standard library takes over for what orjson
    writes differently or refuses: ``NaN`` and infinities (orjson writes ``null``, so a ``null``
    anywhere sends the value there), integers beyond 64 bits, non-string keys, subclasses of
    ``float`` and ``int`` such as NumPy scalars. What neither writes raises ``TypeError`` or
    ``ValueError``.
    """
    try:
        text = orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError
        return _stdlib_dumps(data)
    return _stdlib_dumps(data) if b"null" in text else text.decode()


def _prediction_rows(record: tuple) -> tuple[tuple, list[tuple]]:
    """A queued prediction as a ``predictions`` row and its ``prediction_rows``, tuples in the
    order of ``COLUMNS``.

    Arrays are converted by ``tolist`` before encoding: it gives the float64 value of a float32
    input, as stored before, and orjson writes Python floats faster than NumPy arrays.
    """
    _, request_id, model, version, received_at, latency_ms, inputs, rows, levels, kind = record
    request_id = str(request_id)
    summary, per_row = {}, {}
    for name, value in inputs.items():
        values = np.asarray(value)
        if values.ndim == 0:
            continue
        per_row[name] = values.tolist()
        if values.shape[0] == 0 or values.dtype.kind not in "biuf":
            continue
        flat = values.reshape(values.shape[0], -1)
        if flat.shape[0] == 1:  # one row: its values are mean, min and max
            mean = low = high = flat[0].astype(np.float64).tolist()
        else:
            mean = flat.mean(axis=0, dtype=np.float64).tolist()
            low, high = flat.min(axis=0).astype(np.float64).tolist(), flat.max(axis=0).astype(np.float64).tolist()
        summary[name] = {"mean": mean, "min": low, "max": high}
    table_rows = []
    for i, payload in enumerate(rows):
        if any("draws" in entry for entry in payload.values()):
            payload = {site: {k: v for k, v in entry.items() if k != "draws"} for site, entry in payload.items()}
        row_inputs = {name: values[i] for name, values in per_row.items() if i < len(values)}
        table_rows.append((request_id, i, _dumps(row_inputs), _dumps(payload)))
    pred = (request_id, str(model), int(version), float(received_at), float(latency_ms), len(rows), str(kind),
            _dumps([float(v) for v in levels]), _dumps(summary))
    return pred, table_rows


def _error_row(record: tuple) -> tuple:
    _, model, version, status, received_at, latency_ms = record
    return (None if model is None else str(model), None if version is None else int(version), int(status),
            float(received_at), float(latency_ms))
