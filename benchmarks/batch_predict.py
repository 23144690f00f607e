"""Batch scoring benchmark: a 2,000,000-row Parquet file scored in bounded memory.

Fits a linear regression (D=8, 1000 posterior draws), writes an input Parquet file of ``--rows``
rows to a temporary directory, then scores it, each way in a fresh child process:

- ``stream``: ``bayesinf.batch.predict`` Parquet -> Parquet, in chunks of ``--chunk-rows`` rows;
- ``memory`` (baseline): the whole file read into pandas and one ``Posterior.predict`` call
  (summaries only), then written with ``to_parquet``;
- ``dask``: ``bayesinf.batch.predict_dask`` on ``dask.dataframe.read_parquet`` with a
  ``LocalCluster`` of two single-threaded worker processes, streamed to one Parquet file.

Reports wall seconds (median of ``--repeats`` runs), rows per second and the peak RSS of each
scoring process (its ``ru_maxrss``; for Dask also the largest worker process), and the ratios
against the in-memory baseline measured in the same run. Checks that the streamed output equals
in-process ``Posterior.predict`` exactly on sampled row ranges, and that the Dask output equals
the streamed one.

Usage: ``python benchmarks/batch_predict.py [--rows 2000000] [--repeats 1] [--skip-memory] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import emit  # noqa: E402

D = 8
NUM_DRAWS = 1000


def linreg(X, y=None):
    import numpyro
    import numpyro.distributions as dist

    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("rows", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


FEATURES = [f"x{i}" for i in range(D)]


def _child(mode: str, workdir: Path, chunk_rows: int) -> dict:
    """One measurement, run in this (fresh) process."""
    import bayesinf as bi
    from bayesinf import batch

    post = bi.load(workdir / "model", model=linreg)
    source, sink = workdir / "input.parquet", workdir / f"out-{mode}.parquet"
    t0 = time.perf_counter()
    if mode == "stream":
        batch.predict(post, source, sink, chunk_rows=chunk_rows, seed=1, columns={"X": FEATURES}, keep=["id"],
                      overwrite=True, progress=False)
    elif mode == "memory":
        import pandas as pd

        frame = pd.read_parquet(source)
        pred = post.predict(frame[FEATURES].to_numpy(), seed=1, return_draws=False)
        out = pd.concat([frame[["id"]], pred.to_pandas()], axis=1)
        out.to_parquet(sink, index=False)
    elif mode == "dask":
        import dask.dataframe as dd

        ddf = dd.read_parquet(source)
        batch.predict_dask(post, ddf, sink, seed=1, columns={"X": FEATURES}, keep=["id"], overwrite=True,
                           cluster_options={"n_workers": 2, "threads_per_worker": 1, "processes": True})
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _run_child(mode: str, workdir: Path, chunk_rows: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", mode, "--workdir", str(workdir),
                           "--chunk-rows", str(chunk_rows)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(workdir: Path, num_rows: int, dask: bool) -> dict:
    """Exact equality of sampled output rows with in-process predict (and of the Dask output)."""
    import pandas as pd
    import pyarrow.parquet as pq

    import bayesinf as bi

    post = bi.load(workdir / "model", model=linreg)
    source = pq.ParquetFile(workdir / "input.parquet")
    out = pd.read_parquet(workdir / "out-stream.parquet")
    rng = np.random.default_rng(0)
    starts = sorted({0, num_rows - 100, *rng.integers(0, num_rows - 100, size=4).tolist()})
    features = source.read(columns=FEATURES).to_pandas().to_numpy()
    checked = 0
    for start in starts:
        pred = post.predict(features[start:start + 100], seed=1, return_draws=False, row_offset=start).to_pandas()
        for c in pred.columns:
            np.testing.assert_array_equal(out[c].to_numpy()[start:start + 100], pred[c].to_numpy(), err_msg=c)
        checked += 100
    result = {"sampled_rows_equal_in_process": checked}
    if dask:
        other = pd.read_parquet(workdir / "out-dask.parquet")
        for c in out.columns:
            np.testing.assert_array_equal(other[c].to_numpy(), out[c].to_numpy(), err_msg=c)
        result["dask_equals_stream"] = True
    return result


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--chunk-rows", type=int, default=1 << 18)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-memory", action="store_true", help="skip the in-memory baseline")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, Path(args.workdir), args.chunk_rows)))
        return

    import pyarrow as pa
    import pyarrow.parquet as pq

    import bayesinf as bi

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, D)).astype(np.float32)
    y = (X @ rng.normal(size=D) + rng.normal(size=2000)).astype(np.float32)
    post = bi.fit(linreg, X, y=y, chains=4, draws=NUM_DRAWS // 4, warmup=500, seed=0, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        post.save(workdir / "model")
        with pq.ParquetWriter(workdir / "input.parquet", pa.schema(
                [("id", pa.int64())] + [(c, pa.float32()) for c in FEATURES])) as writer:
            for start in range(0, args.rows, 1 << 18):
                n = min(1 << 18, args.rows - start)
                block = rng.normal(size=(n, D)).astype(np.float32)
                writer.write_table(pa.table({"id": np.arange(start, start + n),
                                             **{c: block[:, i] for i, c in enumerate(FEATURES)}}))
        modes = ["stream"] + ([] if args.skip_memory else ["memory"]) + ([] if args.skip_dask else ["dask"])
        runs = {m: [] for m in modes}
        for _ in range(args.repeats):
            for m in modes:  # interleaved, so load changes hit every mode alike
                runs[m].append(_run_child(m, workdir, args.chunk_rows))
                print(f"{m}: {runs[m][-1]}", file=sys.stderr)
        results = {"rows": args.rows, "draws": NUM_DRAWS, "D": D, "chunk_rows": args.chunk_rows,
                   "input_mb": (workdir / "input.parquet").stat().st_size / 2**20, "modes": {}}
        for m, rs in runs.items():
            seconds = statistics.median(r["seconds"] for r in rs)
            results["modes"][m] = {"seconds": seconds, "rows_per_s": args.rows / seconds,
                                   "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "runs": len(rs)}
            if m == "dask":
                results["modes"][m]["worker_peak_rss_mb"] = max(r["children_peak_rss_mb"] for r in rs)
        if "memory" in runs:
            base = results["modes"]["memory"]
            for m in modes:
                results["modes"][m]["time_vs_memory"] = results["modes"][m]["seconds"] / base["seconds"]
                results["modes"][m]["rss_vs_memory"] = results["modes"][m]["peak_rss_mb"] / base["peak_rss_mb"]
        results["check"] = _check(workdir, args.rows, "dask" in runs)
        results["peak_rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    emit(results, args.json)


if __name__ == "__main__":
    main()
