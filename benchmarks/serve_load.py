"""Load benchmark of ``bayesinf serve``: single-row predictions of a linear model with 4000 draws.

Fits the model (NUTS, 4 chains x 1000 draws), saves it to a temporary ``ModelStore``, starts
``bayesinf serve`` in a subprocess on 127.0.0.1 (only), waits for ``/readyz``, then runs three
bounded phases, each from a separate client process:

1. ``one_client``: one connection, requests one after another (``--latency-seconds``): the
   latency floor of a request.
2. ``open_loop``: the load target. Requests arrive at a fixed mean rate (``--rate``, default 300
   per second; exponential gaps from a seeded generator, so arrivals are Poisson and bursty)
   spread over ``--concurrency`` (50) client connections, for ``--seconds``. A request is sent at
   its arrival time whether or not earlier ones have been answered (up to 50 in flight; beyond
   that it waits for a free connection), and its latency is measured from its *scheduled* arrival
   time, so a slow server cannot hide its queueing delay by slowing the client down (no
   "coordinated omission"). The targets -- p50 <= 5 ms, p99 <= 25 ms, 0 errors over 60 s at
   300 requests/s from 50 connections -- are read here.
3. ``saturation``: ``--concurrency`` clients in a closed loop (each sends its next request as soon
   as the previous one is answered) for ``--saturation-seconds``: the most requests per second
   the server gives. In a closed loop latency is concurrency / throughput (Little's law), so
   p50 <= 5 ms with 50 closed-loop clients would need 10,000 requests/s; its latencies describe
   an overloaded server, not the target.

Why this client: client and server share the machine's 2 cores, so every CPU second the load
generator spends is taken from the server. The client is ``aiohttp`` on ``uvloop`` with the request
bodies encoded once (about 0.1 of a core at 300 requests/s, measured on a loaded machine), in its
own process so it never shares an event loop or the GIL with the server; it keeps 50 connections
busy and schedules an open-loop arrival process, which ``wrk`` (closed loop only) cannot. Each phase reports the client's own CPU
time (``client_cpu_share``: CPU seconds per wall second, 1.0 = one core), the server process's
CPU share, and the client's send lag (how late requests left their scheduled time): a lag near
zero and a client share well under one core show the generator was not the bottleneck.
``--client-procs N`` splits the load over N client processes.

``--monitor-db URL`` also measures what monitoring costs, as a paired comparison: two servers
are started from the same model store, one without monitoring and one recording to ``URL``
(e.g. ``sqlite:////tmp/monitor.sqlite3``), on two ports, and every phase runs on both back to
back, in alternating blocks (off, on; then on, off for the next repeat, so a slow drift of the
machine's load weighs on both alike), the open loop of a pair with the same arrival times. While
one server is measured the other is idle: it takes 0.1-0.4% of a core (its monitoring writer
wakes ten times a second), recorded per run as ``idle_servers_cpu_share``. On a shared 2-core
machine runs of one server measured minutes apart spread by a quarter, which hides a cost of a
few percent; the runs of a pair are seconds apart, so ``monitor_ratio`` reports, per phase, the
median over the ``--repeats`` pairs of the ratio on / off of p50, p99, throughput and server CPU
share, and ``monitor_ratio_pairs`` every pair's ratio and their range. ``monitor_off`` and
``monitor_on`` keep each server's runs and medians. The default ``off`` runs one server without
monitoring.

``--repeats N`` runs the three phases N times (per server) and reports every run and the
medians. Prints JSON. Figures are for client and server on the same 2 cores; the machine's load
average is recorded with every run (other processes on the cores lengthen every latency).

    python benchmarks/serve_load.py --seconds 60 --rate 300 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402


def linreg(X, y=None):
    """Linear regression with unknown noise (imported by the server as ``serve_load:linreg``)."""
    import numpyro
    import numpyro.distributions as dist

    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(X @ b, sigma), obs=y)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentiles(latencies) -> dict:
    a = np.asarray(latencies) * 1e3
    if not a.size:
        return {}
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def _server_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ----------------------------------------------------------------------------- client process
async def _drive(base_url, url, bodies, mode, seconds, rate, connections, seed):
    """One client process's share of a phase; returns raw latencies, errors, lags and CPU time."""
    import aiohttp

    headers = {"content-type": "application/json"}
    latencies, lags, errors = [], [], []
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:
        async def send(body, scheduled):
            sent = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - scheduled)
                lags.append(sent - scheduled)
            else:
                errors.append(1)

        # open every connection and warm the path
        await asyncio.gather(*[send(bodies[i % len(bodies)], time.perf_counter()) for i in range(connections)])
        latencies.clear(), lags.clear(), errors.clear()
        cpu0, t0 = time.process_time(), time.perf_counter()
        stop_at = t0 + seconds
        if mode == "closed":
            async def loop_client(i):
                k = i
                while time.perf_counter() < stop_at:
                    await send(bodies[k % len(bodies)], time.perf_counter())
                    k += connections
            await asyncio.gather(*[loop_client(i) for i in range(connections)])
        else:
            rng = np.random.default_rng(seed)
            tasks, k, scheduled = [], 0, t0
            while scheduled < stop_at:
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(send(bodies[k % len(bodies)], scheduled)))
                k += 1
                scheduled += rng.exponential(1.0 / rate)
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    return {"latencies": latencies, "lags": lags, "errors": len(errors), "seconds": elapsed, "cpu_seconds": cpu}


def _client_process(conn, *args):
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the standard event loop works too, at a higher CPU cost per request
        pass
    conn.send(asyncio.run(_drive(*args)))
    conn.close()


def run_phase(base_url, url, bodies, mode, seconds, *, rate=0.0, connections=1, procs=1, seed=0,
              server_pid=None) -> dict:
    """Run one phase from ``procs`` client processes; aggregate their results."""
    context = multiprocessing.get_context("spawn")
    procs = max(1, min(procs, connections))
    workers, pipes = [], []
    for p in range(procs):
        parent, child = context.Pipe(duplex=False)
        share = connections // procs + (p < connections % procs)
        proc = context.Process(target=_client_process, args=(child, base_url, url, bodies, mode, seconds,
                                                             rate / procs, share, seed + p))
        proc.start()
        workers.append(proc)
        pipes.append(parent)
    # started before the warm-up requests, so the server's share includes them (a few per connection)
    server_cpu0 = _server_cpu_seconds(server_pid) if server_pid else None
    results = [pipe.recv() for pipe in pipes]
    server_cpu1 = _server_cpu_seconds(server_pid) if server_pid else None
    for proc in workers:
        proc.join()
    latencies = [x for r in results for x in r["latencies"]]
    lags = np.asarray([x for r in results for x in r["lags"]]) * 1e3
    elapsed = max(r["seconds"] for r in results)
    out = {"mode": mode, "connections": connections, "client_procs": procs, "seconds": elapsed,
           "requests": len(latencies) + sum(r["errors"] for r in results), "errors": sum(r["errors"] for r in results),
           "requests_per_s": len(latencies) / elapsed, **_percentiles(latencies),
           "client_cpu_share": sum(r["cpu_seconds"] for r in results) / elapsed}
    if mode == "open":
        out["offered_per_s"] = rate
        out["send_lag_p99_ms"] = float(np.percentile(lags, 99)) if lags.size else None
    if server_cpu0 is not None and server_cpu1 is not None:
        out["server_cpu_share"] = (server_cpu1 - server_cpu0) / elapsed  # includes the warm-up requests
    return out


# ----------------------------------------------------------------------------- server
def _batch_totals(metrics: str) -> tuple[float, float]:
    """(micro-batches, rows in them) from the server's Prometheus text."""
    lines = [line for line in metrics.splitlines() if line.startswith("bayesinf_batch_rows_")]
    count = float(next(line for line in lines if line.startswith("bayesinf_batch_rows_count")).split()[-1])
    total = float(next(line for line in lines if line.startswith("bayesinf_batch_rows_sum")).split()[-1])
    return count, total


PHASES = ("one_client", "open_loop", "saturation")
URL = "/v1/models/linreg/predict"
#: Figures compared between the two servers, per phase.
COMPARED = ("p50_ms", "p99_ms", "requests_per_s", "server_cpu_share")


def _median_runs(runs: list[dict]) -> dict:
    """Per phase and figure, the median over runs."""
    out = {}
    for phase in PHASES:
        keys = [k for k, v in runs[0][phase].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        out[phase] = {k: float(np.median([run[phase][k] for run in runs if run[phase].get(k) is not None]))
                      for k in keys}
    out["open_loop_mean_batch_rows"] = float(np.median([run["open_loop_mean_batch_rows"] for run in runs]))
    return out


def _paired_ratios(off_runs: list[dict], on_runs: list[dict]) -> dict:
    """Per phase and figure, the ratio monitoring on / off of each pair of runs, and their median."""
    out = {}
    for phase in PHASES:
        for key in COMPARED:
            pairs = [on[phase][key] / off[phase][key] for off, on in zip(off_runs, on_runs)
                     if off[phase].get(key) and on[phase].get(key) is not None]
            if pairs:
                out[f"{phase}_{key}"] = {"median": float(np.median(pairs)), "min": min(pairs), "max": max(pairs),
                                         "pairs": pairs}
    return out


def start_server(root: str, args, monitor_db: str) -> dict:
    """Start ``bayesinf serve`` on ``root`` at a free port (not waiting for it)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "bayesinf.cli", "serve", root, "--host", "127.0.0.1",
                                "--port", str(port), "--log-level", "warning", "--max-batch", str(args.max_batch),
                                "--max-wait-ms", str(args.max_wait_ms), "--monitor-db", monitor_db], env=env)
    return {"monitor_db": monitor_db, "process": process, "base_url": f"http://127.0.0.1:{port}",
            "started": time.perf_counter()}


def wait_ready(server: dict) -> float:
    """Seconds from the start of ``server`` until its ``/readyz`` answered 200."""
    import httpx

    while True:
        if server["process"].poll() is not None:
            raise SystemExit(f"the server (monitoring {server['monitor_db']}) exited")
        try:
            if httpx.get(server["base_url"] + "/readyz").status_code == 200:
                return time.perf_counter() - server["started"]
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def run_named_phase(phase: str, server: dict, args, bodies, repeat: int) -> dict:
    """One run of ``phase`` against ``server``; the open loop also reports its mean micro-batch."""
    import httpx

    base_url, pid = server["base_url"], server["process"].pid
    if phase == "one_client":
        return run_phase(base_url, URL, bodies, "closed", args.latency_seconds, connections=1, server_pid=pid)
    common = {"server_pid": pid, "procs": args.client_procs, "connections": args.concurrency}
    if phase == "saturation":
        return run_phase(base_url, URL, bodies, "closed", args.saturation_seconds, **common)
    batches0, rows0 = _batch_totals(httpx.get(base_url + "/metrics").text)
    out = run_phase(base_url, URL, bodies, "open", args.seconds, rate=args.rate, seed=args.seed + repeat, **common)
    batches1, rows1 = _batch_totals(httpx.get(base_url + "/metrics").text)
    out["mean_batch_rows"] = (rows1 - rows0) / max(batches1 - batches0, 1.0)
    return out


def measure(root: str, args, bodies, monitor_dbs: list[str]) -> list[dict]:
    """Start one server per entry of ``monitor_dbs`` (``"off"``: no monitoring), all at once, then
    run every phase ``--repeats`` times against each, in alternating blocks: a phase runs on every
    server back to back before the next phase starts (server order reversed on every other
    repeat), so the runs of a pair see the same machine. Stops the servers; returns per server
    ``{"monitor_db", "server_ready_s", "median", "runs"}``."""
    servers = [start_server(root, args, monitor_db) for monitor_db in monitor_dbs]
    runs = [[] for _ in servers]
    try:
        ready = [wait_ready(server) for server in servers]
        for repeat in range(args.repeats):
            order = list(range(len(servers)))
            if repeat % 2:
                order.reverse()
            run = [{} for _ in servers]
            for phase in PHASES:
                for k in order:  # the other servers are idle meanwhile: their CPU share is recorded
                    idle = [s["process"].pid for j, s in enumerate(servers) if j != k]
                    cpu0, t0 = [_server_cpu_seconds(pid) for pid in idle], time.perf_counter()
                    run[k][phase] = out = run_named_phase(phase, servers[k], args, bodies, repeat)
                    if idle and None not in cpu0:
                        cpu1, elapsed = [_server_cpu_seconds(pid) for pid in idle], time.perf_counter() - t0
                        out["idle_servers_cpu_share"] = sum(b - a for a, b in zip(cpu0, cpu1)) / elapsed
            for k, r in enumerate(run):
                r["open_loop_mean_batch_rows"] = r["open_loop"].pop("mean_batch_rows")
                r["load_average"] = os.getloadavg()
                runs[k].append(r)
    finally:
        for server in servers:
            server["process"].terminate()
        for server in servers:
            server["process"].wait(30)
    return [{"monitor_db": server["monitor_db"], "server_ready_s": ready_s, "median": _median_runs(server_runs),
             "runs": server_runs} for server, ready_s, server_runs in zip(servers, ready, runs)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the open-loop phase")
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop arrivals per second (all clients)")
    parser.add_argument("--concurrency", type=int, default=50, help="client connections (open loop and saturation)")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of the one-client phase")
    parser.add_argument("--saturation-seconds", type=float, default=20.0, help="length of the closed-loop phase")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes sharing each phase")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of the three phases per server (medians; pairs with --monitor-db)")
    parser.add_argument("--monitor-db", default="off",
                        help="also run every phase, paired, against a server recording to this database URL "
                             "(default: off)")
    parser.add_argument("--draws", type=int, default=1000, help="draws per chain (4 chains)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the open-loop arrival times")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import json

    import bayesinf as bi
    from bayesinf.store import ModelStore

    import serve_load  # the model must be importable by the server: record it as serve_load:linreg

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    y = X @ np.array([1.0, -0.5, 0.25]) + rng.normal(size=500)
    post = bi.fit(serve_load.linreg, X, y, chains=4, draws=args.draws, warmup=500, seed=0, progress=False)
    rows = rng.normal(size=(256, 3)).tolist()
    bodies = [json.dumps({"instances": [{"X": row}]}).encode() for row in rows]
    results = {"model": "linear regression, 3 features", "draws": post.num_chains * post.num_draws,
               "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as root:
        ModelStore(root).save(post, name="linreg")  # read-only for the servers: both serve it
        if args.monitor_db == "off":
            [results["monitor_off"]] = measure(root, args, bodies, ["off"])
        else:
            results["monitor_off"], results["monitor_on"] = off, on = measure(root, args, bodies,
                                                                                ["off", args.monitor_db])
            pairs = _paired_ratios(off["runs"], on["runs"])
            results["monitor_ratio"] = {key: value["median"] for key, value in pairs.items()}
            results["monitor_ratio_pairs"] = pairs
    results["load_average_after"] = os.getloadavg()
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
