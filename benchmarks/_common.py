"""Helpers shared by the benchmark scripts: timing with medians, and the radon data/model."""

from __future__ import annotations

import json
import statistics
import time


def median_time(fn, repeats: int, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; return median/min/max seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": repeats}


def emit(results: dict, path: str | None) -> None:
    text = json.dumps(results, indent=1, default=float)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text)
