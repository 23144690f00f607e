"""The monitoring database: its tables and how to connect to it (SQLAlchemy Core, no ORM).

Tables (created on first use, ``CREATE TABLE IF NOT EXISTS``; times are Unix seconds as
double precision, so SQLite and PostgreSQL store and filter them alike)::

    predictions       one row per answered prediction request
        request_id    text, primary key      the id the service returned with the prediction
        model         text                   model name
        version       integer                model version
        received_at   double                 when the request arrived (Unix seconds)
        latency_ms    double                 time to answer it
        num_rows      integer                rows predicted
        kind          text                   interval kind, "eti" or "hdi"
        levels        text (JSON list)       interval levels served, e.g. [0.5, 0.9]
        input_summary text (JSON object)     per input column: mean, min, max over the request's rows
    prediction_rows   one row per predicted data row
        request_id    text, primary key part
        row           integer, primary key part (0-based index in the request)
        inputs        text (JSON object)     the row's validated inputs, argument -> value or list
        outputs       text (JSON object)     the row's served summaries as the service returned them
                                             (site -> mean, sd, median, intervals, probs; no draws)
    feedback          observed outcomes, one per (request, row, site); a later post replaces it
        request_id, row, site   primary key
        y             double                 the observed outcome
        received_at   double                 when the feedback arrived
    errors            one row per failed request
        id            integer, primary key
        model         text, nullable         None when the request named no known model
        version       integer, nullable
        status        integer                HTTP status returned
        received_at   double
        latency_ms    double
    monitor_schema    key/value: ``schema_version``

Indexes: ``predictions (model, received_at)`` and ``errors (model, received_at)`` serve the
time-window queries of a report.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import sqlalchemy as sa

from ..errors import InputError

__all__ = ["SCHEMA_VERSION", "metadata", "predictions", "prediction_rows", "feedback", "errors", "create_engine",
           "ensure_schema", "normalize_url"]

SCHEMA_VERSION = 1

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions", metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("received_at", sa.Double, nullable=False),
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Column("num_rows", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("levels", sa.Text, nullable=False),
    sa.Column("input_summary", sa.Text, nullable=False),
    sa.Index("ix_predictions_model_time", "model", "received_at"),
)

prediction_rows = sa.Table(
    "prediction_rows", metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("row", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("outputs", sa.Text, nullable=False),
)

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("row", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("site", sa.String(128), primary_key=True),
    sa.Column("y", sa.Double, nullable=False),
    sa.Column("received_at", sa.Double, nullable=False),
)

errors = sa.Table(
    "errors", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(64), nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("received_at", sa.Double, nullable=False),
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Index("ix_errors_model_time", "model", "received_at"),
)

schema_info = sa.Table(
    "monitor_schema", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),
)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def normalize_url(url) -> str:
    """A SQLAlchemy URL for ``url``: a filesystem path becomes ``sqlite:///<path>``, and
    ``postgresql://`` / ``postgres://`` select the psycopg 3 driver (``postgresql+psycopg://``).

    Raises
    ------
    InputError
        ``url`` is empty, not a string or path, or names an unsupported database.
    """
    if isinstance(url, Path):
        url = str(url)
    if not isinstance(url, str) or not url.strip():
        raise InputError("url", f"must be a database URL or a SQLite file path; got {url!r}",
                         "'monitor.db', 'sqlite:///monitor.db' or 'postgresql://user@host/db'")
    url = url.strip()
    if not _SCHEME.match(url):
        return f"sqlite:///{Path(url).expanduser()}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return f"postgresql+psycopg://{rest}"
    if scheme in ("sqlite", "sqlite+pysqlite"):
        return url
    raise InputError("url", f"names the unsupported database {scheme!r}",
                     "a 'sqlite:///' or 'postgresql://' URL, or a SQLite file path")


def create_engine(url, timeout: float = 5.0) -> sa.Engine:
    """An engine for the monitoring database at ``url`` (see ``normalize_url``).

    SQLite files use write-ahead logging, so reports read while the writer writes, and wait up
    to ``timeout`` seconds for a lock; PostgreSQL connections time out after ``timeout`` seconds
    (at least 1) and are checked before use (``pool_pre_ping``), so a restarted server is
    reconnected to instead of failing the next write.
    """
    url = normalize_url(url)
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InputError("url", f"is not a valid database URL ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": float(timeout), "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            if parsed.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return sa.create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=4,
                            connect_args={"connect_timeout": max(1, math.ceil(timeout))})


def ensure_schema(engine: sa.Engine) -> None:
    """Create the monitoring tables if missing and check the schema version of existing ones.

    Raises
    ------
    InputError
        The database holds monitoring tables of another schema version.
    """
    try:
        metadata.create_all(engine, checkfirst=True)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
        # Another process created them between the check and the create: check again.
        metadata.create_all(engine, checkfirst=True)
    select = sa.select(schema_info.c.value).where(schema_info.c.key == "schema_version")
    with engine.connect() as conn:
        found = conn.execute(select).scalar()
    if found is None:
        try:
            with engine.begin() as conn:
                conn.execute(schema_info.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        except sa.exc.IntegrityError:  # a concurrent first use inserted it
            with engine.connect() as conn:
                found = conn.execute(select).scalar()
    if found is not None and found != str(SCHEMA_VERSION):
        raise InputError("url", f"holds monitoring tables of schema version {found}",
                         f"schema version {SCHEMA_VERSION} (use a new database)")
