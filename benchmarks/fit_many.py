"""fit_many benchmark: 50 groups (30 rows each) of a 3-parameter regression, 4 chains x 1000 draws
after 1000 warmup per group, each contender in a fresh process with the persistent compilation
cache off, so the first call includes compilation.

Contenders, run alternately in the same session:

- ``numpyro-naive`` (the baseline): a fresh ``numpyro.infer.MCMC(NUTS(model), num_chains=4)`` per
  group, chains in parallel over 4 host devices (what a loop over groups written by hand does; each
  ``MCMC`` compiles again);
- ``sequential``: ``fit_many(..., strategy="sequential")``: one group after another, chains over
  the host devices, one compiled sampler reused;
- ``vectorized``: ``fit_many(..., strategy="vectorized")``: all 50 groups x 4 chains in one
  compiled program;
- ``processes``: ``fit_many(..., strategy="sequential", n_jobs=2)``: two batches in a pool of
  two processes, each compiling its own sampler;
- ``dask``: ``fit_many(..., client=Client(LocalCluster(n_workers=2, threads_per_worker=1)))``,
  vectorized, one batch per worker process.

Each worker process times a first call (``first``, compilation included) and then ``--warm``
calls with new data of the same shapes (``warm``: median; for ``processes`` each call starts a new
pool, for ``dask`` the workers stay up). The baseline is timed once per process: every new
``MCMC`` compiles again, so its later calls cost what its first does. Reports medians over
``--repeats`` processes and the ratios contender / baseline (first call) of both.

Usage: ``python benchmarks/fit_many.py [--repeats 3] [--warm 2] [--groups 50] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONTENDERS = ("numpyro-naive", "sequential", "vectorized", "processes", "dask")
BASELINE = "numpyro-naive"


def line(x, y=None):
    import numpyro
    import numpyro.distributions as dist

    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("rows", x.shape[0]):
        numpyro.sample("y", dist.Normal(a + b * x, sigma), obs=y)


def simulate(groups: int, rows: int, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    key = np.repeat([f"store_{g}" for g in range(groups)], rows)
    a, b, s = rng.normal(size=groups), rng.normal(size=groups), np.abs(rng.normal(size=groups))
    x = rng.normal(size=groups * rows)
    g = np.repeat(np.arange(groups), rows)
    return pd.DataFrame({"store": key, "x": x, "y": a[g] + b[g] * x + s[g] * rng.normal(size=x.size)})


def worker(name: str, groups: int, rows: int, warm: int) -> dict:
    import numpy as np

    import bayesinf  # noqa: F401  (sets 4 host devices for every contender)
    import numpyro.infer  # noqa: F401  (imported before timing by every contender)
    from bayesinf.many import fit_many

    settings = dict(chains=4, draws=1000, warmup=1000, warn=False)
    client, model = None, line
    if name == "numpyro-naive":
        import jax
        from numpyro.infer import MCMC, NUTS

        def run(df, seed):
            out = {}
            for g, (key, rows_) in enumerate(df.groupby("store", sort=True)):
                mcmc = MCMC(NUTS(line), num_warmup=1000, num_samples=1000, num_chains=4, progress_bar=False)
                mcmc.run(jax.random.PRNGKey(seed + g), rows_["x"].to_numpy(np.float32),
                         y=rows_["y"].to_numpy(np.float32))
                out[key] = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
            return out
    else:
        options = {"sequential": dict(strategy="sequential"), "vectorized": dict(strategy="vectorized"),
                   "processes": dict(strategy="sequential", n_jobs=2), "dask": dict(strategy="vectorized")}[name]
        if name == "dask":
            from distributed import Client, LocalCluster

            # Workers import the model from this file (by reference), as they would a user's module;
            # a model defined in __main__ is shipped by value, a new function on every call, so
            # workers could not reuse their compiled sampler.
            os.environ["PYTHONPATH"] = os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])
            sys.path.insert(0, HERE)
            from fit_many import line as model  # noqa: F811

            client = Client(LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0"))
            options["client"] = client

        def run(df, seed):
            fits = fit_many(model, df, by="store", columns={"x": "x", "y": "y"}, seed=seed, **options, **settings)
            assert len(fits) == groups, fits.failed
            return {k: fits[k].draws for k in fits}

    df = simulate(groups, rows, 0)
    t0 = time.perf_counter()
    draws = run(df, 0)
    first = time.perf_counter() - t0
    times = []
    for r in range(0 if name == BASELINE else warm):
        t0 = time.perf_counter()
        run(simulate(groups, rows, r + 1), r + 1)
        times.append(time.perf_counter() - t0)
    if client is not None:
        client.close()
    b_mean = float(np.mean([d["b"].mean() for d in draws.values()]))
    return {"first": first, "warm": statistics.median(times) if times else float("nan"), "mean_b": b_mean}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warm", type=int, default=2)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--only", nargs="*", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.groups, args.rows, args.warm)))
        return
    names = [n for n in CONTENDERS if n in args.only]
    runs = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names:
            env = dict(os.environ, BAYESINF_CACHE_DIR="off")
            env.pop("XLA_FLAGS", None)
            cmd = [sys.executable, __file__, "--worker", name, "--groups", str(args.groups), "--rows",
                   str(args.rows), "--warm", str(args.warm)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs[name].append(result)
            print(f"repeat {r} {name}: first {result['first']:.2f} s, warm {result['warm']:.2f} s",
                  file=sys.stderr)
    med = {name: {k: statistics.median(x[k] for x in rs) for k in ("first", "warm")} for name, rs in runs.items()}
    summary = {"groups": args.groups, "rows": args.rows, "repeats": args.repeats, "medians_seconds": med}
    if BASELINE in med:
        summary["ratio_vs_baseline"] = {name: {k: m[k] / med[BASELINE]["first"] for k in ("first", "warm")}
                                        for name, m in med.items()}
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, **summary}, f, indent=1)


if __name__ == "__main__":
    main()
