"""HTTP routes of monitoring, mounted on the prediction service: outcome feedback and the report.

``POST /v1/models/{name}/feedback`` takes observed outcomes of earlier predictions, by the
``request_id`` the prediction returned and the row index in that request. Three body forms::

    {"request_id": "3f2a...", "outcomes": [4.1, null, 3.7]}    every row of a request, in order
                                                               (null: outcome not known)
    {"request_id": "3f2a...", "row": 2, "y": 3.7}              one row
    {"feedback": [ <either form>, ... ]}                       up to 1000 items at once

``y`` (or an ``outcomes`` entry) is a number for a model with one observed site, or an object
``{"site": number, ...}``; discrete sites (served with class probabilities) take integers >= 0.
Posting again for the same row and site replaces the outcome. Answers ``{"recorded": n}``;
404 names ``name`` for a model not in the store (without a store: with no recorded predictions)
and ``request_id`` when it is not a recorded prediction of this model; 422 names the field of a
bad value: an unknown field, ``row``/``y`` given with ``outcomes``, an outcome that is not a
finite number within float32's range (predictions are served in float32); 503 says the
monitoring database is unavailable.

``GET /v1/models/{name}/monitor?window=24h&version=3`` answers the monitoring report as JSON
(``MonitorReport.to_dict``); ``window`` as in ``parse_window`` (default: all records),
``version`` a number or alias (default: the newest version with requests in the window).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time

import numpy as np
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..errors import InputError
from . import db

__all__ = ["make_router", "FeedbackError", "parse_feedback", "MAX_FEEDBACK_ITEMS", "MAX_BODY_BYTES"]

MAX_FEEDBACK_ITEMS = 1000
#: Largest outcome magnitude taken: the largest finite float32, the precision of served predictions.
MAX_OUTCOME = float(np.finfo(np.float32).max)
_ITEM_KEYS = ("request_id", "row", "y", "outcomes")
MAX_BODY_BYTES = 1 << 20
_ID_LENGTH = 128


class FeedbackError(Exception):
    """A feedback request refused with an HTTP status and the field at fault."""

    def __init__(self, status: int, field: str, message: str):
        self.status, self.field, self.message = status, field, message
        super().__init__(message)


def _number(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FeedbackError(422, field, f"must be a finite number; got {json.dumps(value)[:60]}")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        number = math.inf
    if not math.isfinite(number) or abs(number) > MAX_OUTCOME:
        raise FeedbackError(422, field, f"must be a finite number within the float32 range predictions are served "
                            f"in (|y| <= {MAX_OUTCOME:.3g}); got {str(value)[:60]}")
    return number


def _outcome(value, field: str) -> dict | float:
    if isinstance(value, dict):
        if not value:
            raise FeedbackError(422, field, "must name at least one observed site")
        return {str(site): _number(y, f"{field}.{site}") for site, y in value.items()}
    return _number(value, field)


def parse_feedback(body) -> list[tuple[str, int | None, object, str]]:
    """Feedback items of a request body: ``(request_id, row, outcome, field)`` where ``row`` is
    None for an ``outcomes`` list (then ``outcome`` is that list of per-row outcomes or None)."""
    if not isinstance(body, dict):
        raise FeedbackError(422, "body", "must be a JSON object")
    if "feedback" in body:
        items = body["feedback"]
        if not isinstance(items, list) or not items or len(items) > MAX_FEEDBACK_ITEMS:
            raise FeedbackError(422, "feedback", f"must be a list of 1 to {MAX_FEEDBACK_ITEMS} items")
        others = sorted(str(k) for k in body if k != "feedback")
        if others:
            raise FeedbackError(422, others[0][:200], "is given with 'feedback': give either a list of items under "
                                "'feedback', or one item")
        prefixes = [f"feedback[{i}]." for i in range(len(items))]
    else:
        items, prefixes = [body], [""]
    out = []
    for item, prefix in zip(items, prefixes):
        if not isinstance(item, dict):
            raise FeedbackError(422, prefix.rstrip(".") or "body", "must be a JSON object")
        rid = item.get("request_id")
        if not isinstance(rid, str) or not rid or len(rid) > _ID_LENGTH:
            raise FeedbackError(422, f"{prefix}request_id", f"must be the request id string a prediction returned; "
                                f"got {json.dumps(rid)[:60]}")
        unknown = sorted(str(k) for k in item if k not in _ITEM_KEYS)
        if unknown:
            raise FeedbackError(422, f"{prefix}{unknown[0]}"[:200], f"is not a feedback field; the fields are "
                                f"{', '.join(_ITEM_KEYS)}" + ("" if prefix else " (or feedback, a list of items)"))
        if "outcomes" in item and ("y" in item or "row" in item):
            both = [k for k in ("row", "y") if k in item]
            raise FeedbackError(422, f"{prefix}outcomes", f"is given with {' and '.join(both)}: give either row and "
                                "y (one row), or outcomes (every row of the request)")
        if "outcomes" in item:
            outcomes = item["outcomes"]
            if not isinstance(outcomes, list) or not outcomes:
                raise FeedbackError(422, f"{prefix}outcomes", "must be a non-empty list (one outcome per row)")
            parsed = [None if y is None else _outcome(y, f"{prefix}outcomes[{i}]") for i, y in enumerate(outcomes)]
            out.append((rid, None, parsed, prefix))
        elif "y" in item:
            row = item.get("row", 0)
            if isinstance(row, bool) or not isinstance(row, int) or row < 0:
                raise FeedbackError(422, f"{prefix}row", f"must be a row index >= 0; got {json.dumps(row)[:60]}")
            out.append((rid, row, _outcome(item["y"], f"{prefix}y"), prefix))
        else:
            raise FeedbackError(422, f"{prefix}y", "is missing: give 'y' (with 'row') or 'outcomes'")
    return out


def _site_values(outcome, sites: dict, field: str) -> list[tuple[str, float]]:
    """``[(site, y)]`` of one row's outcome, checked against the request's served sites
    (site -> is discrete)."""
    named = isinstance(outcome, dict)
    if not named:
        if len(sites) != 1:
            raise FeedbackError(422, field, f"must be an object site -> outcome for a model with several observed "
                                f"sites {sorted(sites)}")
        outcome = {next(iter(sites)): outcome}
    pairs = []
    for site, y in outcome.items():
        where = f"{field}.{site}" if named else field
        if site not in sites:
            raise FeedbackError(422, where, f"is not an observed site of this model; sites: {sorted(sites)}")
        if sites[site] is None:
            raise FeedbackError(422, where, f"is for the vector-valued site '{site}'; feedback takes scalar outcomes")
        if sites[site] and (y != round(y) or y < 0):
            raise FeedbackError(422, where, f"must be an integer >= 0 for the discrete site '{site}'; got {y!r}")
        pairs.append((site, y))
    return pairs


def _served_sites(outputs: str) -> dict:
    """Site -> True (discrete, has probabilities), False (continuous scalar) or None (vector)."""
    sites = {}
    for site, entry in json.loads(outputs).items():
        sites[site] = None if not np.isscalar(entry.get("mean")) else entry.get("probs") is not None
    return sites


def _lookup(engine, request_ids: list[str]) -> dict[str, tuple]:
    p, r = db.predictions.c, db.prediction_rows.c
    with engine.connect() as conn:
        found = conn.execute(sa.select(p.request_id, p.model, p.num_rows, r.outputs)
                             .join_from(db.predictions, db.prediction_rows,
                                        sa.and_(r.request_id == p.request_id, r.row == 0))
                             .where(p.request_id.in_(request_ids))).all()
    return {rid: (model, num_rows, _served_sites(outputs)) for rid, model, num_rows, outputs in found}


def _model_known(recorder, name: str, store) -> bool:
    """Is ``name`` a model of ``store`` (when given), else one with recorded predictions?"""
    if store is not None:
        try:
            store.resolve(name)
        except InputError:
            return False
        return True
    p = db.predictions.c
    with recorder.engine.connect() as conn:
        return conn.execute(sa.select(p.request_id).where(p.model == name).limit(1)).first() is not None


def store_feedback(recorder, name: str, items: list, store=None) -> int:
    """Check feedback items against the recorded predictions and write them; returns the
    number of outcomes written. Raises ``FeedbackError`` (404, 422, 503): 404 names ``name``
    when the model is not in ``store`` (without a store: has no recorded predictions), else
    ``request_id`` when that is not a recorded prediction of the model."""
    ids = sorted({rid for rid, *_ in items})
    try:
        recorder.ensure_schema()
        known = _lookup(recorder.engine, ids)
        if len(known) < len(ids) and recorder.flush(timeout=5.0):  # the prediction may still be queued
            known = _lookup(recorder.engine, ids)
        if any(rid not in known or known[rid][0] != name for rid in ids) and not _model_known(recorder, name, store):
            where = ("in the store" if store is not None
                     else "known to the monitoring database (no recorded predictions)")
            raise FeedbackError(404, "name", f"model '{name}'"[:200] + f" is not {where}")
    except sa.exc.SQLAlchemyError as exc:
        raise FeedbackError(503, "database", f"the monitoring database is unavailable ({type(exc).__name__})") \
            from None
    now = time.time()
    values = []
    for rid, row, outcome, prefix in items:
        if rid not in known or known[rid][0] != name:
            raise FeedbackError(404, f"{prefix}request_id", f"{rid!r}"[:140] + f" is not a recorded prediction of "
                                f"model '{name}'")
        _, num_rows, sites = known[rid]
        if row is None:
            if len(outcome) != num_rows:
                raise FeedbackError(422, f"{prefix}outcomes", f"has {len(outcome)} entries for a request of "
                                    f"{num_rows} rows")
            rows = [(i, y, f"{prefix}outcomes[{i}]") for i, y in enumerate(outcome) if y is not None]
        else:
            if row >= num_rows:
                raise FeedbackError(422, f"{prefix}row", f"is {row}, outside the request's {num_rows} rows")
            rows = [(row, outcome, f"{prefix}y")]
        for i, y, field in rows:
            for site, value in _site_values(y, sites, field):
                values.append({"request_id": rid, "row": i, "site": site, "y": value, "received_at": now})
    f = db.feedback.c
    delete = db.feedback.delete().where(f.request_id == sa.bindparam("rid"), f.row == sa.bindparam("r"),
                                        f.site == sa.bindparam("s"))
    try:
        with recorder.engine.begin() as conn:
            if values:
                conn.execute(delete, [{"rid": v["request_id"], "r": v["row"], "s": v["site"]} for v in values])
                conn.execute(db.feedback.insert(), values)
    except sa.exc.SQLAlchemyError as exc:
        raise FeedbackError(503, "database", f"the monitoring database is unavailable ({type(exc).__name__})") \
            from None
    return len(values)


def make_router(recorder, store=None):
    """``fastapi.APIRouter`` with the feedback and monitor routes of ``recorder`` (see the module
    docstring); ``store`` (a ``ModelStore``) enables the drift section of reports."""
    from .report import report

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # The service's /metrics exports the recorder's counters (dropped records, DB errors).
        watch = getattr(getattr(app.state, "metrics", None), "watch_monitor", None)
        if callable(watch) and callable(getattr(recorder, "stats", None)):
            watch(recorder.stats)
        yield

    router = APIRouter(tags=["monitoring"], lifespan=lifespan)

    def answer(data, status: int = 200) -> Response:
        return Response(json.dumps(data, allow_nan=False).encode(), status_code=status,
                        media_type="application/json")

    def refuse(status: int, field: str, message: str) -> Response:
        return answer({"detail": {"field": field, "message": message}}, status)

    feedback_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": {
            "request_id": {"type": "string"}, "row": {"type": "integer", "minimum": 0},
            "y": {"oneOf": [{"type": "number"}, {"type": "object", "additionalProperties": {"type": "number"}}]},
            "outcomes": {"type": "array"}, "feedback": {"type": "array", "maxItems": MAX_FEEDBACK_ITEMS}},
        "additionalProperties": False}}}}}

    @router.post("/v1/models/{name}/feedback", openapi_extra=feedback_body,
                 responses={404: {"description": "Unknown request id"}, 422: {"description": "Invalid outcome"},
                            503: {"description": "Monitoring database unavailable"}})
    async def post_feedback(name: str, request: Request):
        """Observed outcomes of earlier predictions, by request id and row."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return refuse(413, "body", f"is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            return refuse(400, "body", f"is not valid JSON ({exc})"[:300])
        try:
            items = parse_feedback(body)
            count = await asyncio.to_thread(store_feedback, recorder, name, items, store)
        except FeedbackError as exc:
            return refuse(exc.status, exc.field, exc.message)
        return answer({"recorded": count})

    @router.get("/v1/models/{name}/monitor",
                responses={404: {"description": "Unknown model or version"}, 422: {"description": "Bad window"}})
    async def get_monitor(name: str, window: str | None = None, version: str | None = None):
        """Monitoring report: traffic, input drift and live calibration over ``window``."""
        try:
            result = await asyncio.to_thread(report, store, name, recorder, window, version)
        except InputError as exc:
            return refuse(404 if exc.field in ("name", "version") else 422, str(exc.field), str(exc))
        except sa.exc.SQLAlchemyError as exc:
            return refuse(503, "database", f"the monitoring database is unavailable ({type(exc).__name__})")
        return answer(result.to_dict())

    return router
