"""Minibatch SVI benchmark: a logistic regression (D=10 features plus an intercept) on 10,000,000
rows streamed from a memory-mapped ``.npy`` file (or Parquet), against a full-data SVI fit at
1,000,000 rows held in memory, measured in the same run.

The data are generated chunk by chunk into a temporary directory (the generator never holds more
than one chunk), so generation stays within the memory limit too. Generation, every fit and the
reference computation each run in a fresh child process, in that order, so the parent stays
small. For each fit the script reports wall time, rows/s and peak resident memory: the child's
own peak (``VmHWM`` of ``/proc/self/status``; a child's ``ru_maxrss`` would include its
parent's peak, which Linux carries over ``fork`` and ``exec``) and
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` in the parent after the fit (the running
maximum over the children so far: the generator and the fits before it).

Contenders:

- ``full-svi-baseline``: ``bi.fit(method="svi", guide="normal")`` on the first ``--baseline-rows``
  rows (1e6 by default), loaded into memory;
- ``minibatch-baseline``: ``fit_minibatch`` on the same rows, streamed from the file;
- ``minibatch-all``: ``fit_minibatch`` on all ``--rows`` rows (1e7 by default) from the file.

Accuracy: the exact full-data reference is the Laplace approximation (posterior mode and Hessian
by Newton's method, float64, accumulated over chunks of the file); at these sizes the posterior is
Gaussian to O(1/N). Errors are reported in units of the posterior sd and in absolute terms,
against the reference and against the true coefficients.

Usage: ``python benchmarks/minibatch_svi.py [--rows 10000000] [--baseline-rows 1000000]
[--format npy|parquet] [--batch-size 1024] [--steps 20000] [--repeats 1] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
D = 10
PRIOR_SD = 2.0
CHUNK = 1_000_000


def true_coefficients():
    import numpy as np

    return 0.3, np.linspace(-1.0, 1.0, D)


def model(X, y=None, num_rows=None):
    import numpyro
    import numpyro.distributions as dist

    a = numpyro.sample("a", dist.Normal(0.0, PRIOR_SD))
    b = numpyro.sample("b", dist.Normal(0.0, PRIOR_SD).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("rows", num_rows or X.shape[0], subsample_size=X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=a + X @ b), obs=y)


def generate(root: str, rows: int, fmt: str, seed: int = 0) -> None:
    """Write ``rows`` rows chunk by chunk: ``X.npy`` (float32) and ``y.npy`` (int8), or one Parquet
    file with columns x0..x9 and y in row groups of 131,072 rows."""
    import numpy as np

    a, b = true_coefficients()
    rng = np.random.default_rng(seed)
    if fmt == "npy":
        X = np.lib.format.open_memmap(os.path.join(root, "X.npy"), mode="w+", dtype=np.float32, shape=(rows, D))
        y = np.lib.format.open_memmap(os.path.join(root, "y.npy"), mode="w+", dtype=np.int8, shape=(rows,))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(f"x{j}", pa.float32()) for j in range(D)] + [("y", pa.int8())])
        writer = pq.ParquetWriter(os.path.join(root, "data.parquet"), schema)
    for start in range(0, rows, CHUNK):
        stop = min(start + CHUNK, rows)
        x = rng.normal(size=(stop - start, D)).astype(np.float32)
        label = (rng.uniform(size=stop - start) < 1.0 / (1.0 + np.exp(-(a + x @ b)))).astype(np.int8)
        if fmt == "npy":
            X[start:stop], y[start:stop] = x, label
        else:
            writer.write_table(pa.table({**{f"x{j}": x[:, j] for j in range(D)}, "y": label}, schema=schema),
                               row_group_size=131_072)
    if fmt == "npy":
        X.flush(), y.flush()
        del X, y
    else:
        writer.close()


def read_chunks(root: str, rows: int, fmt: str):
    """Yield ``(X, y)`` chunks of the first ``rows`` rows (float64, float64)."""
    import numpy as np

    if fmt == "npy":
        X = np.load(os.path.join(root, "X.npy"), mmap_mode="r")
        y = np.load(os.path.join(root, "y.npy"), mmap_mode="r")
        for start in range(0, rows, CHUNK):
            stop = min(start + CHUNK, rows)
            yield np.asarray(X[start:stop], np.float64), np.asarray(y[start:stop], np.float64)
    else:
        import pyarrow.parquet as pq

        seen = 0
        for batch in pq.ParquetFile(os.path.join(root, "data.parquet")).iter_batches(batch_size=CHUNK):
            take = min(batch.num_rows, rows - seen)
            if take <= 0:
                return
            X = np.column_stack([batch.column(f"x{j}").to_numpy()[:take] for j in range(D)]).astype(np.float64)
            yield X, batch.column("y").to_numpy()[:take].astype(np.float64)
            seen += take


def laplace(root: str, rows: int, fmt: str):
    """Posterior mode, sd ``sqrt(diag(H^-1))`` and mean-field sd ``1 / sqrt(diag(H))`` (what a
    mean-field guide can reach) by Newton's method over chunks of the data."""
    import numpy as np

    w = np.zeros(D + 1)
    for _ in range(12):
        grad, H = -w / PRIOR_SD**2, np.eye(D + 1) / PRIOR_SD**2
        for X, y in read_chunks(root, rows, fmt):
            Z = np.column_stack([np.ones(len(X)), X])
            p = 1.0 / (1.0 + np.exp(-Z @ w))
            grad += Z.T @ (y - p)
            H += (Z * (p * (1 - p))[:, None]).T @ Z
        step = np.linalg.solve(H, grad)
        w = w + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w, np.sqrt(np.diag(np.linalg.inv(H))), 1.0 / np.sqrt(np.diag(H))


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB): ``VmHWM`` on Linux, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args) -> None:
    import numpy as np

    if args.worker == "generate":
        return generate(args.root, args.worker_rows, args.format)
    if args.worker == "laplace":
        mode, sd, mean_field_sd = laplace(args.root, args.worker_rows, args.format)
        return print(json.dumps({"mode": mode.tolist(), "sd": sd.tolist(), "mean_field_sd": mean_field_sd.tolist(),
                                 "maxrss_mb": peak_rss_mb()}))

    import bayesinf as bi
    from bayesinf.minibatch import fit_minibatch

    root, fmt, rows = args.root, args.format, args.worker_rows
    t0 = time.perf_counter()
    if args.worker == "full":
        X, y = map(np.concatenate, zip(*read_chunks(root, rows, fmt)))
        X, y = X.astype(np.float32), y.astype(np.int32)
        loaded = time.perf_counter()
        post = bi.fit(model, X, y, method="svi", guide="normal", draws=1000, seed=0, progress=False, warn=False)
        steps = post.info["num_steps"]
        rows_per_second = steps * rows / max(post.info["total_seconds"], 1e-9)
    else:
        if fmt == "npy":
            source = {"X": os.path.join(root, "X.npy"), "y": os.path.join(root, "y.npy")}
            columns = None
        else:
            source, columns = os.path.join(root, "data.parquet"), {"X": [f"x{j}" for j in range(D)], "y": "y"}
        loaded = time.perf_counter()
        post = fit_minibatch(model, source, columns=columns, num_rows=rows, batch_size=args.batch_size,
                                num_steps=args.steps, draws=1000, seed=0, progress=False, warn=False)
        steps = post.info["num_steps"]
        rows_per_second = post.info["rows_per_second"]
    end = time.perf_counter()
    draws = post.flat_draws()
    print(json.dumps({
        "wall_seconds": end - t0,
        "load_seconds": loaded - t0,
        "fit_seconds": end - loaded,
        "steps": steps,
        "rows_per_second": rows_per_second,
        "io_wait_seconds": post.info.get("io_wait_seconds"),
        "converged": post.info.get("converged"),
        "maxrss_mb": peak_rss_mb(),
        "mean": [float(draws["a"].mean()), *map(float, draws["b"].mean(0))],
        "sd": [float(draws["a"].std()), *map(float, draws["b"].std(0))],
    }))


def run_child(kind: str, rows: int, args, parse: bool = True) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--worker-rows", str(rows),
           "--root", args.root, "--format", args.format, "--batch-size", str(args.batch_size),
           "--steps", str(args.steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{kind} worker failed:\n{out.stderr[-4000:]}")
    if not parse:
        return None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["children_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


def compare(result: dict, reference, truth) -> dict:
    import numpy as np

    mode, sd, mean_field_sd = reference
    mean, spread = np.asarray(result["mean"]), np.asarray(result["sd"])
    return {
        "max_abs_error_vs_full_data": float(np.max(np.abs(mean - mode))),
        "max_error_vs_full_data_in_sd": float(np.max(np.abs(mean - mode) / sd)),
        "max_abs_error_vs_truth": float(np.max(np.abs(mean - truth))),
        "sd_ratio_range": [float(np.min(spread / sd)), float(np.max(spread / sd))],
        # a mean-field guide's sd is at best 1 / sqrt(diag H), below sd when parameters correlate
        "sd_ratio_to_mean_field_range": [float(np.min(spread / mean_field_sd)), float(np.max(spread / mean_field_sd))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--baseline-rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("npy", "parquet"), default="npy")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=("generate", "laplace", "full", "minibatch"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import numpy as np

    from _common import emit

    a, b = true_coefficients()
    truth = np.r_[a, b]
    with tempfile.TemporaryDirectory(prefix="bayesinf-minibatch-") as root:
        args.root = root
        t0 = time.perf_counter()
        run_child("generate", args.rows, args, parse=False)
        generated = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(root, f)) for f in os.listdir(root))
        contenders = {"full-svi-baseline": ("full", args.baseline_rows),
                      "minibatch-baseline": ("minibatch", args.baseline_rows),
                      "minibatch-all": ("minibatch", args.rows)}
        runs: dict[str, list] = {k: [] for k in contenders}
        for _ in range(args.repeats):  # alternate the contenders, so machine noise hits all alike
            for name, (kind, rows) in contenders.items():
                runs[name].append(run_child(kind, rows, args))
        t0 = time.perf_counter()
        reference = {}
        for n in (args.baseline_rows, args.rows):
            out = run_child("laplace", n, args)
            reference[n] = (np.asarray(out["mode"]), np.asarray(out["sd"]), np.asarray(out["mean_field_sd"]))
        reference_seconds = time.perf_counter() - t0
    results = {
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("worker", "worker_rows", "root", "json")},
                     "features": D, "data_bytes": size, "generate_seconds": generated,
                     "laplace_reference_seconds": reference_seconds},
        "reference_sd": {str(n): [float(s) for s in ref[1]] for n, ref in reference.items()},
    }
    for name, (kind, rows) in contenders.items():
        median = {k: statistics.median(r[k] for r in runs[name])
                  for k in ("wall_seconds", "fit_seconds", "rows_per_second", "maxrss_mb")}
        results[name] = {"rows": rows, "median": median, "runs": runs[name],
                         "accuracy": compare(runs[name][-1], reference[rows], truth)}
    base = results["full-svi-baseline"]["median"]
    for name in ("minibatch-baseline", "minibatch-all"):  # ratios to the full-data fit of this run
        results[name]["ratio_to_full_svi_baseline"] = {k: results[name]["median"][k] / base[k]
                                                 for k in ("wall_seconds", "rows_per_second", "maxrss_mb")}
    emit(results, args.json)


if __name__ == "__main__":
    main()
