"""Load benchmark of ``bayesinf serve``: single-row predictions of a linear model with 4000 draws.

Fits the model (NUTS, 4 chains x 1000 draws), saves it to a temporary ``ModelStore``, starts
``bayesinf serve`` in a subprocess on 127.0.0.1 (only), waits for ``/readyz``, then runs two
bounded phases with an asyncio ``httpx`` client:

1. latency: one client, requests one after another (``--latency-seconds``): p50/p99 of a request;
2. load: ``--concurrency`` clients in a closed loop for ``--seconds``: throughput, errors, and the
   latency under load (which by Little's law is about concurrency / throughput).

Prints JSON. Client and server share the machine's cores, so the figures are a lower bound.

    python benchmarks/serve_load.py --seconds 60 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
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


def _summary(latencies: list[float]) -> dict:
    a = np.asarray(latencies) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())} if a.size else {}


async def _client(client, url, body, stop_at, latencies, errors):
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        try:
            r = await client.post(url, json=body)
            ok = r.status_code == 200
        except Exception:
            ok = False
        if ok:
            latencies.append(time.perf_counter() - t0)
        else:
            errors.append(1)


async def _phase(base_url, url, rows, seconds, concurrency):
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies, errors = [], []
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        for i in range(min(50, len(rows))):  # connections and first requests
            await client.post(url, json={"instances": [{"X": rows[i]}]})
        t0 = time.perf_counter()
        stop_at = t0 + seconds
        await asyncio.gather(*[_client(client, url, {"instances": [{"X": rows[i % len(rows)]}]}, stop_at,
                                       latencies, errors) for i in range(concurrency)])
        elapsed = time.perf_counter() - t0
    return {"clients": concurrency, "seconds": elapsed, "requests": len(latencies) + len(errors),
            "errors": len(errors), "requests_per_s": len(latencies) / elapsed, **_summary(latencies)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load phase")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of the one-client phase")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--draws", type=int, default=1000, help="draws per chain (4 chains)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import httpx

    import bayesinf as bi
    from bayesinf.store import ModelStore

    import serve_load  # the model must be importable by the server: record it as serve_load:linreg

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    y = X @ np.array([1.0, -0.5, 0.25]) + rng.normal(size=500)
    post = bi.fit(serve_load.linreg, X, y, chains=4, draws=args.draws, warmup=500, seed=0, progress=False)
    with tempfile.TemporaryDirectory() as root:
        ModelStore(root).save(post, name="linreg")
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent),
                                                            os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "bayesinf.cli", "serve", root, "--host", "127.0.0.1",
                                   "--port", str(port), "--log-level", "warning", "--max-batch", str(args.max_batch),
                                   "--max-wait-ms", str(args.max_wait_ms)], env=env)
        base_url = f"http://127.0.0.1:{port}"
        try:
            while True:
                if server.poll() is not None:
                    raise SystemExit("the server exited")
                try:
                    if httpx.get(base_url + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            ready_s = time.perf_counter() - t0
            rows = rng.normal(size=(256, 3)).tolist()
            url = "/v1/models/linreg/predict"
            latency = asyncio.run(_phase(base_url, url, rows, args.latency_seconds, 1))
            load = asyncio.run(_phase(base_url, url, rows, args.seconds, args.concurrency))
            metrics = httpx.get(base_url + "/metrics").text
        finally:
            server.terminate()
            server.wait(30)
    batches = [line for line in metrics.splitlines() if line.startswith("bayesinf_batch_rows_")]
    count = float(next(l for l in batches if l.startswith("bayesinf_batch_rows_count")).split()[-1])
    total = float(next(l for l in batches if l.startswith("bayesinf_batch_rows_sum")).split()[-1])
    emit({"model": "linear regression, 3 features", "draws": post.num_chains * post.num_draws,
          "cpu_count": os.cpu_count(), "server_ready_s": ready_s, "one_client": latency, "load": load,
          "mean_batch_rows": total / max(count, 1)}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
