"""Prometheus metrics of the prediction service, written in the text exposition format (0.0.4)
without a client library: request counts by route, method and status code, a request latency
histogram, rows predicted, the sizes of micro-batches, failures of the prediction recorder, and,
once ``watch_monitor`` is given the recorder's ``stats``, its records written and dropped,
database errors and queue depth (so an alert sees monitoring that is down)."""

from __future__ import annotations

import bisect
import re
import threading
from collections import defaultdict
from typing import Any, Callable

__all__ = ["Metrics", "route_template", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Latency buckets in seconds (upper bounds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_ROUTES = (
    (re.compile(r"^/v1/models/[^/]+/versions/[^/]+/predict$"), "/v1/models/{name}/versions/{version}/predict"),
    (re.compile(r"^/v1/models/[^/]+/predict$"), "/v1/models/{name}/predict"),
    (re.compile(r"^/v1/models/[^/]+/feedback$"), "/v1/models/{name}/feedback"),
    (re.compile(r"^/v1/models/[^/]+/monitor$"), "/v1/models/{name}/monitor"),
    (re.compile(r"^/v1/models/[^/]+$"), "/v1/models/{name}"),
)
_FIXED = ("/v1/models", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc")


def route_template(path: str) -> str:
    """The route a path belongs to, so labels stay few whatever paths clients send."""
    if path in _FIXED:
        return path
    for pattern, template in _ROUTES:
        if pattern.match(path):
            return template
    return "other"


class _Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, cumulative = [], 0
        sep = "," if labels else ""
        for bound, n in zip(self.buckets, self.counts):
            cumulative += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {cumulative}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.total:.6f}")
        out.append(f"{name}_count{suffix} {self.count}")
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters and histograms; ``render()`` gives the Prometheus text."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = defaultdict(int)  # (route, method, code) -> count
        self.latency = defaultdict(lambda: _Histogram(LATENCY_BUCKETS))  # route -> histogram
        self.rows = defaultdict(int)  # (model, version) -> rows predicted
        self.batches = _Histogram(BATCH_BUCKETS)
        self.monitor_failures = 0
        self._monitor_stats: Callable[[], dict[str, Any]] | None = None

    def watch_monitor(self, stats: Callable[[], dict[str, Any]]) -> None:
        """Export the prediction recorder's counters: ``stats()`` (``Recorder.stats``) is read at
        each ``render``; its keys ``recorded``, ``recorded_rows``, ``dropped``, ``db_errors``,
        ``queue``, ``queue_capacity``, ``writer_alive`` and ``failing`` are used when present."""
        with self._lock:
            self._monitor_stats = stats

    def observe_request(self, path: str, method: str, code: int, seconds: float) -> None:
        route = route_template(path)
        with self._lock:
            self.requests[(route, method, code)] += 1
            self.latency[route].observe(seconds)

    def observe_rows(self, model: str, version: int, rows: int) -> None:
        with self._lock:
            self.rows[(model, version)] += rows

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self.batches.observe(size)

    def observe_monitor_failure(self) -> None:
        with self._lock:
            self.monitor_failures += 1

    def render(self) -> str:
        monitor = self._monitor_lines()
        with self._lock:
            lines = ["# HELP bayesinf_requests_total HTTP requests by route, method and status code.",
                     "# TYPE bayesinf_requests_total counter"]
            for (route, method, code), n in sorted(self.requests.items()):
                lines.append(f'bayesinf_requests_total{{route="{route}",method="{_escape(method)}",code="{code}"}} {n}')
            lines += ["# HELP bayesinf_request_errors_total HTTP responses with status >= 400, by status code.",
                      "# TYPE bayesinf_request_errors_total counter"]
            errors = defaultdict(int)
            for (_, _, code), n in self.requests.items():
                if code >= 400:
                    errors[code] += n
            for code, n in sorted(errors.items()):
                lines.append(f'bayesinf_request_errors_total{{code="{code}"}} {n}')
            lines += ["# HELP bayesinf_request_duration_seconds Request latency in seconds, by route.",
                      "# TYPE bayesinf_request_duration_seconds histogram"]
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines("bayesinf_request_duration_seconds", f'route="{route}"')
            lines += ["# HELP bayesinf_rows_predicted_total Rows predicted, by model and version.",
                      "# TYPE bayesinf_rows_predicted_total counter"]
            for (model, version), n in sorted(self.rows.items()):
                lines.append(f'bayesinf_rows_predicted_total{{model="{_escape(model)}",version="{version}"}} {n}')
            lines += ["# HELP bayesinf_batch_rows Rows per compiled predictive call of micro-batched requests.",
                      "# TYPE bayesinf_batch_rows histogram"]
            lines += self.batches.lines("bayesinf_batch_rows")
            lines += ["# HELP bayesinf_monitor_failures_total Calls of the prediction recorder that raised.",
                      "# TYPE bayesinf_monitor_failures_total counter",
                      f"bayesinf_monitor_failures_total {self.monitor_failures}"]
        return "\n".join(lines + monitor) + "\n"

    def _monitor_lines(self) -> list[str]:
        """Lines of the recorder's counters (none until ``watch_monitor``, or if ``stats`` raises)."""
        stats = self._monitor_stats
        if stats is None:
            return []
        try:
            values = stats()
        except Exception:  # a broken recorder must not break /metrics
            return []
        lines = []
        for key, name, kind, text in _MONITOR_SERIES:
            value = values.get(key)
            if value is None:
                continue
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {int(value)}"]
        return lines


#: (``Recorder.stats`` key, metric, type, help) of the exported recorder counters.
_MONITOR_SERIES = (
    ("recorded", "bayesinf_monitor_recorded_total", "counter",
     "Predictions and failed requests written to the monitoring database."),
    ("recorded_rows", "bayesinf_monitor_recorded_rows_total", "counter",
     "Data rows of predictions written to the monitoring database."),
    ("dropped", "bayesinf_monitor_dropped_total", "counter",
     "Monitoring records lost to a full queue or a failed database write."),
    ("db_errors", "bayesinf_monitor_db_errors_total", "counter", "Failed writes to the monitoring database."),
    ("queue", "bayesinf_monitor_queue_records", "gauge", "Monitoring records waiting to be written."),
    ("queue_capacity", "bayesinf_monitor_queue_capacity", "gauge",
     "Most monitoring records held while waiting; more are dropped."),
    ("writer_alive", "bayesinf_monitor_writer_up", "gauge", "1 while the monitoring writer thread runs."),
    ("failing", "bayesinf_monitor_db_failing", "gauge",
     "1 while writes to the monitoring database fail (since the last failed write, until one succeeds)."),
)
