"""The monitoring hook of the prediction service.

``create_app(..., monitor=recorder)`` tells ``recorder`` about every predict request once its
response has been sent: ``record_prediction(...)`` for a success, ``record_error(...)`` for a 4xx
or 5xx. It also serves the routes of ``recorder.router()`` (a FastAPI ``APIRouter``) when the
recorder has one, and calls ``recorder.close()`` at shutdown. A recorder is expected to queue
records and return at once; whatever it raises is logged and counted, never passed on to a
request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["PredictRecord", "MonitorHook", "RECORD_KEY"]

logger = logging.getLogger("bayesinf.serve")

#: Key of the ``PredictRecord`` in the ASGI scope of a predict request.
RECORD_KEY = "bayesinf.predict"
#: Seconds between two log lines about a failing recorder.
LOG_EVERY = 60.0


@dataclass
class PredictRecord:
    """What a predict request did, filled in as it is handled.

    ``received_at`` is unix seconds; ``inputs`` are the checked row arrays of the request
    (``(rows, ...)`` each; for a formula model, its data columns as sent, ``(rows,)`` each) and
    ``rows`` the per-row payloads returned, both None until predicted.
    ``model`` and ``version`` are None until the route's model and version are resolved.
    """

    request_id: str
    received_at: float
    model: str | None = None
    version: int | None = None
    inputs: dict[str, np.ndarray] | None = None
    rows: list[dict] | None = None
    levels: tuple[float, ...] = ()
    kind: str = ""


class MonitorHook:
    """Hands finished predict requests to a recorder, shielding requests from its failures.

    Parameters
    ----------
    monitor : object
        Has ``record_prediction`` and ``record_error``; optionally ``router()`` and ``close()``.
    on_failure : callable, optional
        Called with no argument when a recorder call raises (a metrics counter).
    """

    def __init__(self, monitor: Any, on_failure: Callable[[], Any] | None = None):
        for method in ("record_prediction", "record_error"):
            if not callable(getattr(monitor, method, None)):
                raise TypeError(f"monitor must have a method '{method}'; got {type(monitor).__name__}")
        self.monitor = monitor
        self.on_failure = on_failure
        self._last_log = -float("inf")

    def finished(self, record: PredictRecord, status: int, latency_ms: float) -> None:
        """Record a predict request whose response (status ``status``) has been sent."""
        try:
            if status == 200 and record.rows is not None:
                self.monitor.record_prediction(
                    request_id=record.request_id, model=record.model, version=record.version,
                    received_at=record.received_at, latency_ms=latency_ms, inputs=record.inputs, rows=record.rows,
                    levels=record.levels, kind=record.kind)
            elif status >= 400:
                self.monitor.record_error(model=record.model, version=record.version, status=status,
                                          received_at=record.received_at, latency_ms=latency_ms)
        except Exception:  # the recorder's failure is never the request's
            self._failed("recording a request")

    def router(self):
        """The recorder's ``APIRouter``, or None when it has none."""
        make = getattr(self.monitor, "router", None)
        return make() if callable(make) else None

    def close(self) -> None:
        close = getattr(self.monitor, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                self._failed("closing the recorder")

    def _failed(self, what: str) -> None:
        if self.on_failure is not None:
            self.on_failure()
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY:  # a broken database must not flood the log
            self._last_log = now
            logger.exception("monitor failed %s (further failures within %.0f s are only counted)", what, LOG_EVERY)
