"""Volume, latency and error rates of a model's requests over a window, and the parsing of windows."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

__all__ = ["Traffic", "traffic", "parse_window", "LATENCY_PERCENTILES", "NUM_BUCKETS"]

#: Latency percentiles reported.
LATENCY_PERCENTILES = (50, 90, 99)
#: Time buckets of the timeline.
NUM_BUCKETS = 48
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SHORT = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_ISO = re.compile(r"^P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
                  r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_window(window) -> float | None:
    """Length of a report window in seconds.

    Parameters
    ----------
    window : str, float, datetime.timedelta or None
        ``"90s"``, ``"15m"``, ``"1h"``, ``"24h"``, ``"7d"``, ``"2w"``; an ISO 8601 duration
        without years or months (``"PT1H"``, ``"P7D"``, ``"P1DT12H"``); seconds; a timedelta;
        or None for all records.

    Raises
    ------
    InputError
        Anything else, or a window that is not positive.
    """
    if window is None:
        return None
    expected = ("a duration such as '1h', '24h', '7d' or an ISO 8601 duration such as 'PT30M' or 'P1DT12H' "
                "(no years or months)")
    if isinstance(window, _dt.timedelta):
        seconds = window.total_seconds()
    elif isinstance(window, (int, float)) and not isinstance(window, bool):
        seconds = float(window)
    elif isinstance(window, str):
        text = window.strip()
        short, iso = _SHORT.match(text.lower()), _ISO.match(text.upper())
        if short:
            seconds = float(short.group(1)) * _UNITS[short.group(2)]
        elif iso and text.upper() not in ("P", "PT") and not text.upper().endswith("T"):
            w, d, h, m, s = (float(g) if g else 0.0 for g in iso.groups())
            seconds = w * 604800 + d * 86400 + h * 3600 + m * 60 + s
        else:
            raise InputError("window", f"{window!r}"[:80] + " is not a duration", expected)
    else:
        raise InputError("window", f"must be a string, seconds or a timedelta; got {type(window).__name__}", expected)
    if not np.isfinite(seconds) or seconds <= 0:
        raise InputError("window", f"must be a positive duration; got {window!r}", expected)
    return seconds


@dataclass(frozen=True)
class Traffic:
    """Requests of one model over a window.

    Attributes
    ----------
    start, end : float
        Window, Unix seconds (``start`` is the first record's time without a window).
    num_requests, num_rows, num_errors : int
        Answered requests, rows predicted, failed requests.
    error_rate : float
        ``errors / (requests + errors)``; ``server_error_rate`` counts 5xx only.
    errors_by_status : dict of int -> int
    latency_ms : dict of str -> float
        Of answered requests: ``p50``, ``p90``, ``p99``, ``mean``, ``max`` (NaN without requests).
    requests_per_minute : float
        Answered requests per minute over the window.
    timeline : dict of str -> list
        ``NUM_BUCKETS`` equal time buckets: ``start`` (Unix seconds), ``requests``, ``rows``,
        ``errors`` and ``latency_p50_ms`` per bucket.
    """

    start: float
    end: float
    num_requests: int
    num_rows: int
    num_errors: int
    error_rate: float
    server_error_rate: float
    errors_by_status: dict
    latency_ms: dict
    requests_per_minute: float
    timeline: dict = field(repr=False)


def traffic(received_at: np.ndarray, latency_ms: np.ndarray, num_rows: np.ndarray, error_at: np.ndarray,
            error_status: np.ndarray, start: float | None, end: float) -> Traffic:
    """Summarize requests ``(requests,)`` and errors ``(errors,)`` received in ``[start, end]``."""
    n, num_errors = received_at.size, error_at.size
    if start is None:
        first = [a.min() for a in (received_at, error_at) if a.size]
        start = float(min(first)) if first else end
    total = n + num_errors
    with np.errstate(all="ignore"):
        latency = ({f"p{q}": float(np.percentile(latency_ms, q)) for q in LATENCY_PERCENTILES}
                   | {"mean": float(latency_ms.mean()), "max": float(latency_ms.max())}) if n else \
            {**{f"p{q}": float("nan") for q in LATENCY_PERCENTILES}, "mean": float("nan"), "max": float("nan")}
    span = max(end - start, 1.0)
    edges = np.linspace(start, end, NUM_BUCKETS + 1)
    bucket = np.clip(np.searchsorted(edges, received_at, side="right") - 1, 0, NUM_BUCKETS - 1)
    error_bucket = np.clip(np.searchsorted(edges, error_at, side="right") - 1, 0, NUM_BUCKETS - 1)
    p50 = [float(np.median(latency_ms[bucket == b])) if (bucket == b).any() else None for b in range(NUM_BUCKETS)]
    statuses, counts = np.unique(error_status, return_counts=True)
    return Traffic(
        start=float(start), end=float(end), num_requests=int(n), num_rows=int(num_rows.sum()),
        num_errors=int(num_errors), error_rate=num_errors / total if total else 0.0,
        server_error_rate=int((error_status >= 500).sum()) / total if total else 0.0,
        errors_by_status={int(s): int(c) for s, c in zip(statuses, counts)}, latency_ms=latency,
        requests_per_minute=n / (span / 60.0),
        timeline={"start": edges[:-1].tolist(),
                  "requests": np.bincount(bucket, minlength=NUM_BUCKETS).tolist(),
                  "rows": np.bincount(bucket, weights=num_rows, minlength=NUM_BUCKETS).astype(int).tolist(),
                  "errors": np.bincount(error_bucket, minlength=NUM_BUCKETS).tolist(),
                  "latency_p50_ms": p50},
    )
