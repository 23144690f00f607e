"""Fit benchmark: the radon varying-intercept model (919 rows, 85 counties), 4 chains x 1000 draws
after 1000 warmup, each measurement in a fresh process so compilation is included.

Contenders, run alternately in the same session:

- ``bayesinf``: ``bi.fit`` (cached compiled driver, chains over 4 host devices), persistent
  compilation cache off, so the first fit compiles from scratch;
- ``bayesinf-disk-cache``: the same with JAX's persistent cache warm (a new process of a user who
  has fit this model before);
- ``numpyro-default``: ``numpyro.infer.MCMC(NUTS(model), num_warmup=1000, num_samples=1000,
  num_chains=4)`` with its defaults (one CPU device, so chains run sequentially; progress bar off
  so the log stays readable);
- ``numpyro-parallel``: the same with ``numpyro.set_host_device_count(4)`` (parallel chains).

Each worker fits twice in one process: the first fit (compilation included) and a second fit with
new data values of the same shapes. Reports medians over ``--repeats`` processes, min bulk ESS, and
the ratios bayesinf/numpyro-default of the first fit and bayesinf second/first.

Usage: ``python benchmarks/fit.py [--repeats 3] [--json out.json]``
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
CONTENDERS = ("bayesinf", "bayesinf-disk-cache", "numpyro-default", "numpyro-parallel")


def _radon():
    import numpy as np

    import bayesinf as bi

    frame = bi.datasets.load_radon().frame
    return (frame["county"].to_numpy(np.int32), frame["floor"].to_numpy(np.float32),
            frame["log_radon"].to_numpy(np.float32))


def model(county, floor, num_counties, log_radon=None):
    import numpyro
    import numpyro.distributions as dist

    mu_alpha = numpyro.sample("mu_alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfNormal(2.5))
    sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(2.5))
    with numpyro.plate("counties", num_counties):
        alpha = numpyro.sample("alpha", dist.Normal(mu_alpha, sigma_alpha))
    with numpyro.plate("rows", county.shape[0]):
        numpyro.sample("log_radon", dist.Normal(alpha[county] + beta * floor, sigma_y), obs=log_radon)


def min_ess_bulk(draws) -> float:
    """Smallest bulk ESS over every scalar component of ``draws`` (arrays ``(chains, draws, ...)``)."""
    import numpy as np
    from arviz_stats.base import array_stats

    return min(float(np.min(array_stats.ess(np.asarray(v).reshape(v.shape[0], v.shape[1], -1),
                                            chain_axis=0, draw_axis=1))) for v in draws.values())


def worker(name: str) -> dict:
    t_start = time.perf_counter()
    if name.startswith("numpyro"):
        import numpyro

        if name == "numpyro-parallel":
            numpyro.set_host_device_count(4)
        import jax
        from numpyro.infer import MCMC, NUTS

        import bayesinf  # noqa: F401  (datasets only; imported after JAX chose its devices)

        def fit(y, seed):
            mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4, progress_bar=False)
            mcmc.run(jax.random.PRNGKey(seed), county, floor, 85, log_radon=y)
            draws = mcmc.get_samples(group_by_chain=True)
            jax.block_until_ready(draws)
            return {k: __import__("numpy").asarray(v) for k, v in draws.items()}
    else:
        import numpyro.infer  # noqa: F401  (imported before timing, as the NumPyro workers do)

        import bayesinf as bi

        def fit(y, seed):
            post = bi.fit(model, county, floor, 85, log_radon=y, chains=4, draws=1000, warmup=1000, seed=seed,
                          progress=False, warn=False)
            return post.draws
    county, floor, y = _radon()
    import_seconds = time.perf_counter() - t_start
    t0 = time.perf_counter()
    draws = fit(y, 0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit(y + 0.01, 1)  # new values, same shapes
    second = time.perf_counter() - t0
    ess = min_ess_bulk(draws)
    return {"first": first, "second": second, "import": import_seconds, "min_ess_bulk": ess}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    runs = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as cache:
        for r in range(args.repeats):
            for name in CONTENDERS:
                env = dict(os.environ)
                env["BAYESINF_CACHE_DIR"] = cache if name == "bayesinf-disk-cache" else "off"
                env.pop("XLA_FLAGS", None)
                if name.startswith("numpyro"):
                    env["BAYESINF_HOST_DEVICES"] = "0"  # leave XLA's device count to the baseline
                out = subprocess.run([sys.executable, __file__, "--worker", name], env=env, check=True,
                                     capture_output=True, text=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                runs[name].append(result)
                print(f"repeat {r} {name}: first {result['first']:.2f} s, second {result['second']:.2f} s, "
                      f"min ESS {result['min_ess_bulk']:.0f}", file=sys.stderr)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    summary = {
        "medians": med,
        "first_fit_ratio_vs_numpyro_default": med["bayesinf"]["first"] / med["numpyro-default"]["first"],
        "first_fit_ratio_vs_numpyro_parallel": med["bayesinf"]["first"] / med["numpyro-parallel"]["first"],
        "second_over_first_bayesinf": med["bayesinf"]["second"] / med["bayesinf"]["first"],
        "disk_cache_first_fit_ratio_vs_numpyro_default":
            med["bayesinf-disk-cache"]["first"] / med["numpyro-default"]["first"],
        "repeats": args.repeats,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, **summary}, f, indent=1)


if __name__ == "__main__":
    main()
