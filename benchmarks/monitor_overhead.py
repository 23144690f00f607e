"""Monitoring overhead benchmark: what recording predictions costs a prediction service.

Measured in one run, on a linear regression with D=10 and 1000 posterior draws (SVI):

- ``serve_path``: the service's per-request host work for one row, ``Posterior.predict`` at levels
  (0.5, 0.9) plus the JSON row payload (``bayesinf.serve.app.row_payload``): the baseline;
- ``record_call``: one ``Recorder.record_prediction`` call on the request path (the writer thread
  draining to SQLite meanwhile), per call;
- ``serve_path_recorded``: the baseline followed by ``record_prediction``, with the writer thread
  running (so its share of the interpreter shows up too); ``overhead`` is its median over the
  baseline's, minus 1 (the target is under 10%);
- ``http``: single-row ``POST /v1/models/m/predict`` through the service app (``create_app``, in
  process over httpx's ASGI transport, micro-batching off), without and with a SQLite ``Recorder``,
  in alternating blocks; ``overhead`` is the monitored median over the plain one, minus 1;
- ``writer``: rows written per second by the writer, to SQLite and to PostgreSQL (``--postgres URL``,
  or a temporary server when the PostgreSQL binaries are installed), for 1-row and 50-row requests,
  draining a full queue; ``cpu_us_per_request`` is the process's CPU time over the drain per request
  (the writer's work, plus about 3 us of ``record_prediction`` calls that filled the queue);
- ``loop_lag``: how late an asyncio event loop's 0.5 ms timer fires (p50, p99, max, ms) while the
  writer drains a burst of 5,000 single-row records to SQLite, against the same loop with an idle
  writer, in alternating blocks: the writer's interpreter time seen from the event loop (it yields
  the interpreter every ``YIELD_EVERY_S`` of its own work; without that a burst delays the loop by
  up to the 5 ms switch interval).

Usage: ``python benchmarks/monitor_overhead.py [--repeats 15] [--postgres URL] [--json out.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, median_time  # noqa: E402

import bayesinf as bi  # noqa: E402
from bayesinf.monitor import Recorder  # noqa: E402
from bayesinf.serve.app import row_payload  # noqa: E402

D = 10
LEVELS = (0.5, 0.9)


def linreg(X, y=None):
    import numpyro
    import numpyro.distributions as dist

    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("rows", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def serve_path(post, x):
    pred = post.predict(x, levels=LEVELS)
    return [row_payload(pred, 0, 0)]


def per_call(fn, calls: int, repeats: int) -> dict:
    """Median over ``repeats`` of the mean seconds per call over ``calls`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(calls):
            fn(i)
        times.append((time.perf_counter() - t0) / calls)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": repeats, "calls": calls}


def writer_throughput(url: str, rows_per_request: int, num_rows: int, payload: dict) -> dict:
    """Rows per second written by a Recorder from a full queue to ``url``."""
    num_requests = num_rows // rows_per_request
    rec = Recorder(url, max_queue=num_requests + 1)
    rec.ensure_schema()
    X = np.random.default_rng(0).normal(size=(rows_per_request, D))
    rows = [payload] * rows_per_request
    # Warm up the connection and the statements on a few records first.
    for i in range(10):
        rec.record_prediction(request_id=f"w{i}", model="m", version=1, received_at=time.time(), latency_ms=1.0,
                              inputs={"X": X}, rows=rows, levels=LEVELS, kind="eti")
    rec.flush(60)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(num_requests):
        rec.record_prediction(request_id=f"r{i}", model="m", version=1, received_at=time.time(), latency_ms=1.0,
                              inputs={"X": X}, rows=rows, levels=LEVELS, kind="eti")
    done = rec.flush(600)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stats = rec.stats()
    rec.close()
    return {"rows_per_request": rows_per_request, "rows": num_requests * rows_per_request, "seconds": seconds,
            "rows_per_s": num_requests * rows_per_request / seconds,
            "requests_per_s": num_requests / seconds, "cpu_us_per_request": cpu / num_requests * 1e6,
            "complete": done, "dropped": stats["dropped"]}


async def _timer_lags(rec, payload, burst: int, ticks: int) -> list[float]:
    """Lateness (seconds) of 0.5 ms timers while ``rec`` drains ``burst`` queued records (at
    least ``ticks`` timers, and until the burst is written)."""
    x = np.ones((1, D))
    stats = rec.stats()
    target = stats["recorded"] + stats["dropped"] + burst
    for i in range(burst):
        rec.record_prediction(request_id=f"lag{time.perf_counter_ns()}-{i}", model="m", version=1,
                              received_at=time.time(), latency_ms=1.0, inputs={"X": x}, rows=[payload],
                              levels=LEVELS, kind="eti")
    lags = []
    while len(lags) < ticks or rec.stats()["recorded"] + rec.stats()["dropped"] < target:
        t0 = time.perf_counter()
        await asyncio.sleep(0.0005)
        lags.append(time.perf_counter() - t0 - 0.0005)
    return lags


def loop_lag(tmp: str, payload: dict, repeats: int, burst: int = 5000) -> dict:
    """Event-loop timer lateness with the writer idle and while it drains a burst, in alternating blocks."""
    rec = Recorder(os.path.join(tmp, "lag.db"), max_queue=burst + 1)
    rec.ensure_schema()
    lags = {"idle": [], "draining": []}
    try:
        for _ in range(repeats):
            for name, size in (("idle", 0), ("draining", burst)):
                lags[name] += asyncio.run(_timer_lags(rec, payload, size, 50))
                rec.flush(60)
    finally:
        rec.close()
    out = {}
    for name, values in lags.items():
        a = np.asarray(values) * 1e3
        out[name] = {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                     "max_ms": float(a.max()), "n": int(a.size)}
    return out


async def _http_blocks(apps: dict, body: dict, blocks: int, per_block: int) -> dict:
    import httpx

    times = {name: [] for name in apps}
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, app in apps.items():
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench"))
        for client in clients.values():
            for _ in range(20):
                assert (await client.post("/v1/models/m/predict", json=body)).status_code == 200
        for _ in range(blocks):
            for name, client in clients.items():
                for _ in range(per_block):
                    t0 = time.perf_counter()
                    await client.post("/v1/models/m/predict", json=body)
                    times[name].append(time.perf_counter() - t0)
    return times


def http_overhead(post, x1, tmp: str, blocks: int) -> dict:
    """Median single-row request latency through the service app without and with monitoring."""
    from bayesinf.serve import create_app
    from bayesinf.store import ModelStore

    store = ModelStore(os.path.join(tmp, "models"))
    store.save(post, name="m")
    rec = Recorder(os.path.join(tmp, "http.db"))
    apps = {"plain": create_app(store.root, max_batch=1, load_in_background=False),
            "monitored": create_app(store.root, max_batch=1, load_in_background=False, monitor=rec)}
    body = {"instances": [{"X": x1[0].tolist()}]}
    times = asyncio.run(_http_blocks(apps, body, blocks, 50))
    stats = rec.stats()
    plain, monitored = statistics.median(times["plain"]), statistics.median(times["monitored"])
    return {"plain_median": plain, "monitored_median": monitored, "overhead": monitored / plain - 1,
            "added_ms": (monitored - plain) * 1e3, "requests_each": len(times["plain"]),
            "recorded": stats["recorded"], "dropped": stats["dropped"]}


def temporary_postgres():
    """A throw-away PostgreSQL server (the test suite's), or None when it cannot be started."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    try:
        from test_monitor_postgres import PostgresServer, _binaries

        bindir = _binaries()
        return PostgresServer(bindir) if bindir else None
    except BaseException as exc:  # noqa: BLE001 - a skip or a failed start: benchmark SQLite only
        print(f"no temporary PostgreSQL server: {exc}", file=sys.stderr)
        return None


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rows", type=int, default=20_000, help="rows written per writer-throughput case")
    parser.add_argument("--postgres", default=None, help="PostgreSQL URL (default: a temporary server)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from monitor_overhead import linreg as model  # importable by name, so the store can save it

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, D))
    y = X @ rng.normal(size=D) + rng.normal(size=500)
    post = bi.fit(model, X, y=y, method="svi", num_steps=500, draws=1000, seed=0, progress=False, warn=False)
    x1 = rng.normal(size=(1, D))
    payload = serve_path(post, x1)[0]
    results = {"D": D, "draws": 1000, "levels": LEVELS, "load_average_before": os.getloadavg()}

    with tempfile.TemporaryDirectory() as tmp:
        baseline = median_time(lambda: serve_path(post, x1), args.repeats * 20, warmup=20)
        rec = Recorder(os.path.join(tmp, "overhead.db"), max_queue=1_000_000)
        rec.ensure_schema()
        record = per_call(lambda i: rec.record_prediction(
            request_id=f"c{i}-{time.perf_counter_ns()}", model="m", version=1, received_at=time.time(),
            latency_ms=2.0, inputs={"X": x1}, rows=[payload], levels=LEVELS, kind="eti"), 1000, args.repeats)
        rec.flush(120)

        def recorded():
            rows = serve_path(post, x1)
            rec.record_prediction(request_id=f"s{time.perf_counter_ns()}", model="m", version=1,
                                  received_at=time.time(), latency_ms=2.0, inputs={"X": x1}, rows=rows,
                                  levels=LEVELS, kind="eti")

        # Interleave the two, block by block, so machine noise hits both alike.
        plain, monitored = [], []
        for _ in range(args.repeats):
            plain.append(median_time(lambda: serve_path(post, x1), 20, warmup=2)["median"])
            monitored.append(median_time(recorded, 20, warmup=2)["median"])
        rec.close()
        results["serve_path"] = baseline
        results["record_call"] = record
        results["serve_path_recorded"] = {"median": statistics.median(monitored),
                                          "baseline_median": statistics.median(plain)}
        results["overhead"] = statistics.median(monitored) / statistics.median(plain) - 1
        results["record_call_over_serve_path"] = record["median"] / baseline["median"]
        print(f"serve path {baseline['median'] * 1e3:.3f} ms; record_prediction {record['median'] * 1e6:.1f} us "
              f"({results['record_call_over_serve_path']:.2%}); with the writer running "
              f"{results['overhead']:+.2%}", file=sys.stderr)

        results["http"] = http_overhead(post, x1, tmp, args.repeats)
        print(f"HTTP single-row request: {results['http']['plain_median'] * 1e3:.3f} ms plain, "
              f"{results['http']['monitored_median'] * 1e3:.3f} ms monitored ({results['http']['overhead']:+.2%})",
              file=sys.stderr)

        results["loop_lag"] = loop_lag(tmp, payload, args.repeats)
        print("event-loop timer lateness p50/p99/max: idle writer {idle[p50_ms]:.2f}/{idle[p99_ms]:.2f}/"
              "{idle[max_ms]:.2f} ms, draining a burst {draining[p50_ms]:.2f}/{draining[p99_ms]:.2f}/"
              "{draining[max_ms]:.2f} ms".format(**results["loop_lag"]), file=sys.stderr)

        results["writer"] = {}
        backends = {"sqlite": lambda: f"sqlite:///{os.path.join(tmp, 'throughput-%d.db')}"}
        server = None
        if args.postgres:
            backends["postgresql"] = lambda: args.postgres
        else:
            server = temporary_postgres()
            if server is not None:
                backends["postgresql"] = server.new_database
        try:
            for name, make_url in backends.items():
                for rows_per_request in (1, 50):
                    url = make_url()
                    if "%d" in url:
                        url = url % rows_per_request
                    out = writer_throughput(url, rows_per_request, args.rows, payload)
                    results["writer"][f"{name}_{rows_per_request}_rows"] = out
                    print(f"writer {name}, {rows_per_request}-row requests: {out['rows_per_s']:.0f} rows/s "
                          f"({out['requests_per_s']:.0f} requests/s, {out['cpu_us_per_request']:.1f} us CPU "
                          f"per request)", file=sys.stderr)
        finally:
            if server is not None:
                server.close()
    results["load_average_after"] = os.getloadavg()
    emit(results, args.json)


if __name__ == "__main__":
    main()
