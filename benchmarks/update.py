"""Update benchmark: a warm ``Posterior.update`` against a cold refit on the same rows.

The radon varying-intercept model (``bayesinf.demo.radon_varying_intercept``, 919 homes, 85
counties). A random 90% of the rows is the parent fit (4 chains x 1000 draws after 1000
warmup); the other 10% are the new rows. Contenders, on the same 919 rows:

- ``cold``: ``bi.fit`` on all rows, 1000 warmup (the default);
- ``warm``: ``parent.update(new rows)``: chains start at parent draws, with its step size and a
  mass matrix from its draws, ``WARM_WARMUP`` warmup iterations (one window of step size
  adaptation).

In-process: both compiled samplers are built by an untimed first call (bayesinf caches them,
so a refit in a running process never compiles again), then ``--repeats`` alternating timed calls
with new seeds. Fresh process: each call in a new Python process loading the saved parent, with
JAX's persistent compilation cache off (compilation included) and warm (a process that has run
this before); the time is that of the fit/update call alone.

Quality: the largest |mean difference| over all parameters in units of the combined MCSE
(``max |mean_warm - mean_cold| / sqrt(mcse_warm^2 + mcse_cold^2)``; about 3.5 is expected as
the largest of 89 standard normals), the smallest bulk ESS per draw of each, and the speed at equal
quality: smallest bulk ESS per second, warm over cold. ``--warmups``
also runs warm updates with other warmup lengths and reports the same, the measurement behind
the default ``WARM_WARMUP``.

``--init-study`` instead measures NUTS initialization (``init="uniform"``, ``"map"``, ``"svi"``)
on the radon model and a logistic regression (N=100,000 rows, D=20 features, simulated with a
fixed seed): for each warmup length, the smallest bulk ESS per draw, the largest R-hat, the
divergences and the seconds of the SVI initialization and of the whole fit (samplers compiled by
an untimed first fit), 500 draws per chain.

Usage: ``python benchmarks/update.py [--repeats 5] [--fresh 3] [--warmups 25,50,100,200] [--json out.json]``
or ``python benchmarks/update.py --init-study [--init-warmups 100,300,1000] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIT = dict(chains=4, draws=1000, warmup=1000, progress=False, warn=False)
DRAWS = FIT["chains"] * FIT["draws"]


def radon_split(seed: int = 0):
    """``(parent_args, new_args, all_args)``: county, floor, log_radon for 90% / 10% / all rows."""
    import numpy as np

    import bayesinf as bi

    frame = bi.datasets.load_radon().frame
    county = frame["county"].to_numpy(np.int64)
    floor = frame["floor"].to_numpy(np.float32)
    y = frame["log_radon"].to_numpy(np.float32)
    order = np.random.default_rng(seed).permutation(len(frame))
    cut = int(round(0.9 * len(frame)))
    old, new = order[:cut], order[cut:]
    take = lambda idx: (county[idx], floor[idx], y[idx])
    everything = np.concatenate([old, new])  # the update appends the new rows after the old ones
    return take(old), take(new), take(everything)


def fit(args, seed):
    import bayesinf as bi
    from bayesinf.demo import radon_varying_intercept

    county, floor, y = args
    return bi.fit(radon_varying_intercept, county, floor, 85, log_radon=y, int_ranges={"county": (0, 85)},
                  seed=seed, **FIT)


def quality(post) -> dict:
    s = post.summary()
    n = post.num_chains * post.num_draws
    return {"min_ess_bulk_per_draw": float(s["ess_bulk"].min() / n), "max_rhat": float(s["r_hat"].max()),
            "divergences": int(post.sample_stats["diverging"].sum()),
            "step_size": float(post.sample_stats["step_size"][:, -1].mean())}


def update(parent, new, **kwargs):
    county, floor, y = new
    return parent.update(county, floor, log_radon=y, **kwargs)


def agreement(a, b) -> float:
    import numpy as np

    sa, sb = a.summary(), b.summary()
    return float(np.max(np.abs(sa["mean"] - sb["mean"]) / np.sqrt(sa["mcse_mean"] ** 2 + sb["mcse_mean"] ** 2)))


def logistic(X, y=None):
    """Logistic regression: intercept ~ N(0, 2), coefficients ~ N(0, 1)."""
    import numpyro
    import numpyro.distributions as dist

    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("rows", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=a + X @ b), obs=y)


def init_study(warmups) -> dict:
    import numpy as np

    import bayesinf as bi
    from bayesinf.demo import radon_varying_intercept

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100_000, 20)).astype(np.float32)
    beta = rng.normal(scale=0.5, size=20)
    y = (rng.uniform(size=100_000) < 1 / (1 + np.exp(-(0.3 + X @ beta)))).astype(np.int32)
    _, _, (county, floor, log_radon) = radon_split()
    problems = {
        "radon": lambda **kw: bi.fit(radon_varying_intercept, county, floor, 85, log_radon=log_radon, **kw),
        "logistic_100k_x20": lambda **kw: bi.fit(logistic, X, y, **kw),
    }
    out = {}
    for name, run in problems.items():
        for init in ("uniform", "map", "svi"):
            for w in warmups:
                common = dict(chains=4, draws=500, warmup=w, init=init, progress=False, warn=False)
                run(seed=100, **common)  # compiles (sampler and SVI program)
                t0 = time.perf_counter()
                post = run(seed=1, **common)
                seconds = time.perf_counter() - t0
                init_seconds = post.info.get("init_total_seconds", 0.0)
                if post.info.get("init_fallback"):  # the MAP fit ran before the fallback
                    init_seconds += post.info.get("init_map_total_seconds", 0.0)
                row = {"seconds": seconds, "init_seconds": init_seconds, "init_fallback": post.info.get("init_fallback"),
                       **quality(post)}
                out[f"{name}/{init}/warmup={w}"] = row
                print(f"{name} init={init} warmup={w}: {row}", file=sys.stderr)
    return out


def worker(kind: str, parent_dir: str, seed: int) -> dict:
    import bayesinf as bi

    _, new, everything = radon_split()
    parent = bi.load(parent_dir)
    t0 = time.perf_counter()
    if kind == "cold":
        post = fit(everything, seed)
    else:
        post = update(parent, new, seed=seed, progress=False, warn=False)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, **quality(post)}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fresh", type=int, default=3, help="fresh-process repeats per contender and cache state")
    parser.add_argument("--warmups", default="25,50,100,200")
    parser.add_argument("--json", default=None)
    parser.add_argument("--init-study", action="store_true")
    parser.add_argument("--init-warmups", default="100,300,1000")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.init_study:
        from _common import emit

        emit(init_study([int(x) for x in args.init_warmups.split(",") if x]), args.json)
        return
    if args.worker:
        kind, parent_dir, seed = args.worker
        print(json.dumps(worker(kind, parent_dir, int(seed))))
        return
    from bayesinf.update import WARM_WARMUP

    old, new, everything = radon_split()
    parent = fit(old, seed=0)
    results = {"rows": {"parent": int(old[0].size), "new": int(new[0].size)}, "warm_warmup": WARM_WARMUP}

    # ---- in-process: compiled samplers cached by the untimed first calls
    fit(everything, seed=100)
    update(parent, new, seed=100, progress=False, warn=False)
    times = {"cold": [], "warm": []}
    agree, q = [], {"cold": [], "warm": []}
    for r in range(args.repeats):
        t0 = time.perf_counter()
        cold = fit(everything, seed=r + 1)
        times["cold"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        warm = update(parent, new, seed=r + 1, progress=False, warn=False)
        times["warm"].append(time.perf_counter() - t0)
        agree.append(agreement(warm, cold))
        q["cold"].append(quality(cold))
        q["warm"].append(quality(warm))
        print(f"repeat {r}: cold {times['cold'][-1]:.2f} s, warm {times['warm'][-1]:.2f} s, "
              f"max |diff|/MCSE {agree[-1]:.2f}", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    # Equal quality: effective draws per second (the smallest bulk ESS over the 89 parameters).
    ess_rate = {k: statistics.median(x["min_ess_bulk_per_draw"] * DRAWS / t for x, t in zip(q[k], times[k]))
                for k in times}
    results["in_process"] = {
        "median_seconds": med, "ratio_cold_over_warm": med["cold"] / med["warm"],
        "min_ess_bulk_per_second": ess_rate, "ratio_ess_per_second_warm_over_cold": ess_rate["warm"] / ess_rate["cold"],
        "max_abs_mean_diff_over_mcse": {"median": statistics.median(agree), "max": max(agree)},
        "quality_median": {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in q.items()},
    }

    # ---- warmup length of the warm update: quality against the last cold refit
    sweep = {}
    for w in [int(x) for x in args.warmups.split(",") if x]:
        post = update(parent, new, warmup=w, seed=7, progress=False, warn=False)
        t0 = time.perf_counter()
        post = update(parent, new, warmup=w, seed=8, progress=False, warn=False)
        sweep[w] = {"seconds": time.perf_counter() - t0, "max_abs_mean_diff_over_mcse": agreement(post, cold),
                    **quality(post)}
        print(f"warmup {w}: {sweep[w]}", file=sys.stderr)
    results["warmup_sweep"] = sweep

    # ---- fresh processes
    fresh = {}
    if args.fresh > 0:
        with tempfile.TemporaryDirectory() as tmp:
            parent_dir = os.path.join(tmp, "parent")
            parent.save(parent_dir)
            for cache in ("off", "warm"):
                cache_dir = os.path.join(tmp, "xla")
                runs = {"cold": [], "warm": []}
                for r in range(args.fresh + (1 if cache == "warm" else 0)):
                    for kind in ("cold", "warm"):
                        env = dict(os.environ, BAYESINF_CACHE_DIR="off" if cache == "off" else cache_dir)
                        env.pop("XLA_FLAGS", None)
                        out = subprocess.run([sys.executable, __file__, "--worker", kind, parent_dir, str(r + 1)],
                                             env=env, check=True, capture_output=True, text=True)
                        result = json.loads(out.stdout.strip().splitlines()[-1])
                        if cache == "warm" and r == 0:
                            continue  # this run filled the cache
                        runs[kind].append(result)
                        print(f"fresh ({cache} cache) {kind}: {result['seconds']:.2f} s", file=sys.stderr)
                m = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
                fresh[f"cache_{cache}"] = {"median_seconds": m, "ratio_cold_over_warm": m["cold"] / m["warm"]}
    results["fresh_process"] = fresh
    results["repeats"] = {"in_process": args.repeats, "fresh": args.fresh}
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"times": times, **results}, f, indent=1)


if __name__ == "__main__":
    main()
