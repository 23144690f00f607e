"""Save -> serve -> call: fit the built-in radon model, keep it in a ModelStore, serve it with
``bayesinf serve`` on 127.0.0.1, and ask for predictive intervals from Python (httpx) and curl.

    python examples/serve_and_call.py [--store models/] [--port 8000]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

import bayesinf as bi
from bayesinf.demo import radon_varying_intercept
from bayesinf.store import ModelStore


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="ModelStore root (default: a temporary directory)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = parser.parse_args(argv)

    # 1. Fit and save. The model is importable (bayesinf.demo), so the server finds it by name.
    frame = bi.datasets.load_radon().frame
    num_counties = int(frame["county"].max()) + 1
    post = bi.fit(radon_varying_intercept, frame["county"].to_numpy(), frame["floor"].to_numpy(np.float32),
                  num_counties, log_radon=frame["log_radon"].to_numpy(np.float32), chains=4, draws=1000,
                  warmup=1000, seed=0, progress=False, int_ranges={"county": (0, num_counties)})
    root = args.store or tempfile.mkdtemp(prefix="bayesinf-store-")
    store = ModelStore(root)
    version = store.save(post, name="radon")
    store.set_alias("radon", "production", version)
    print(f"saved radon version {version} to {root}: {store.list()}")

    # 2. Serve (the same as running `bayesinf serve <root> --port <port>` in a terminal). Every
    #    prediction is recorded to <root>/monitor.sqlite3 unless `--monitor-db off` is given.
    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "bayesinf.cli", "serve", root, "--host", "127.0.0.1",
                               "--port", str(port), "--log-level", "warning"])
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise SystemExit("the server exited")
            time.sleep(0.2)

        # 3a. Call from Python: a basement in county 3 and a first floor in a new county.
        body = {"instances": [{"county": 3, "floor": 0.0}, {"county": num_counties, "floor": 1.0}],
                "levels": [0.5, 0.9], "seed": 0}
        r = httpx.post(f"{base}/v1/models/radon/versions/production/predict", json=body)
        r.raise_for_status()
        answer = r.json()
        print(f"model {answer['model']} version {answer['version']} (request id {answer['request_id']}, "
              f"also in the X-Request-ID header: {r.headers['x-request-id'] == answer['request_id']}):")
        for row, p in zip(body["instances"], answer["predictions"]):
            i90 = p["log_radon"]["intervals"]["0.9"]
            print(f"  {row}: mean {p['log_radon']['mean']:.3f}, 90% [{i90['lower']:.3f}, {i90['upper']:.3f}]")
        local = post.predict(np.array([3, num_counties]), np.array([0.0, 1.0], np.float32), seed=0)
        print("same as in-process predict:", np.allclose(local.mean, [p["log_radon"]["mean"]
                                                                     for p in answer["predictions"]]))
        bad = httpx.post(f"{base}/v1/models/radon/predict", json={"instances": [{"county": 999, "floor": 0}]})
        print(f"unseen county -> {bad.status_code} {bad.json()['detail']['field']}")

        # 3b. The same call with curl.
        curl = ["curl", "-s", "-X", "POST", f"{base}/v1/models/radon/predict", "-H", "Content-Type: application/json",
                "-d", json.dumps({"instances": [{"county": 3, "floor": 0.0}]})]
        print("$", shlex.join(curl))
        if shutil.which("curl"):
            print(subprocess.run(curl, capture_output=True, text=True, timeout=30).stdout)
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
