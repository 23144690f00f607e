"""Reads of the monitoring database for a report: one model (and version) over a time window."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from .db import errors, feedback, prediction_rows, predictions

__all__ = ["Records", "newest_version", "read_records"]


@dataclass(frozen=True)
class Records:
    """What a report reads: per request, per error, sampled rows' inputs, and outcomes."""

    received_at: np.ndarray  # (requests,) Unix seconds
    latency_ms: np.ndarray  # (requests,)
    num_rows: np.ndarray  # (requests,)
    error_at: np.ndarray  # (errors,) Unix seconds
    error_status: np.ndarray  # (errors,)
    error_latency_ms: np.ndarray  # (errors,)
    inputs: list  # JSON objects of the newest rows (argument -> value)
    outcomes: list  # (site, y, outputs, levels, kind) per feedback received


def _window(column, start, end):
    clauses = [column <= end]
    if start is not None:
        clauses.append(column >= start)
    return clauses


def newest_version(conn, model: str, start: float | None, end: float) -> int | None:
    """The highest version of ``model`` with a prediction recorded in the window (None if none)."""
    query = sa.select(sa.func.max(predictions.c.version)).where(predictions.c.model == model,
                                                                 *_window(predictions.c.received_at, start, end))
    return conn.execute(query).scalar()


def read_records(conn, model: str, version: int | None, start: float | None, end: float,
                 max_rows: int) -> Records:
    """Requests, errors, the newest ``max_rows`` rows' inputs and every outcome of ``model``
    (``version``; errors also when their version is unknown) received in ``[start, end]``."""
    p = predictions.c
    where = [p.model == model, *_window(p.received_at, start, end)]
    if version is not None:
        where.append(p.version == version)
    requests = conn.execute(sa.select(p.received_at, p.latency_ms, p.num_rows).where(*where)
                            .order_by(p.received_at)).all()
    e = errors.c
    error_where = [e.model == model, *_window(e.received_at, start, end)]
    if version is not None:
        error_where.append(sa.or_(e.version == version, e.version.is_(None)))
    failed = conn.execute(sa.select(e.received_at, e.status, e.latency_ms).where(*error_where)
                          .order_by(e.received_at)).all()
    r = prediction_rows.c
    rows = conn.execute(sa.select(r.inputs).join_from(prediction_rows, predictions, r.request_id == p.request_id)
                        .where(*where).order_by(p.received_at.desc(), r.row).limit(max_rows)).scalars().all()
    f = feedback.c
    joined = feedback.join(prediction_rows, sa.and_(f.request_id == r.request_id, f.row == r.row)) \
        .join(predictions, f.request_id == p.request_id)
    outcomes = conn.execute(sa.select(f.site, f.y, r.outputs, p.levels, p.kind).select_from(joined)
                            .where(*where)).all()
    return Records(
        received_at=np.array([x[0] for x in requests], dtype=np.float64),
        latency_ms=np.array([x[1] for x in requests], dtype=np.float64),
        num_rows=np.array([x[2] for x in requests], dtype=np.int64),
        error_at=np.array([x[0] for x in failed], dtype=np.float64),
        error_status=np.array([x[1] for x in failed], dtype=np.int64),
        error_latency_ms=np.array([x[2] for x in failed], dtype=np.float64),
        inputs=[json.loads(text) for text in rows],
        outcomes=[(site, y, json.loads(out), tuple(json.loads(levels)), kind)
                  for site, y, out, levels, kind in outcomes],
    )
