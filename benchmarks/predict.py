"""Predict benchmark: linear regression, D=10, 4000 posterior draws, mean + 90% interval.

Compares, in one run and on the same posterior draws:

- ``bayesinf``: ``Posterior.predict(X, levels=(0.9,))`` (input checks, compiled predictive, per-row
  mean/sd/median/interval);
- ``predictive``: ``numpyro.infer.Predictive`` called directly, then a numpy summary;
- ``handwritten``: a near-limit baseline: jitted draws laid out rows x draws, then ``np.partition``
  per row for the two interval ranks and the mean.

Reports median seconds per call (and per-row figures) for rows in {1, 1000, 100000}, the ratios
bayesinf/baseline, and the peak RSS of a 1,000,000-row prediction (summaries only).

Usage: ``python benchmarks/predict.py [--repeats 20] [--json out.json] [--million]``
"""

from __future__ import annotations

import argparse
import resource
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import emit, median_time  # noqa: E402

import bayesinf as bi  # noqa: E402

D = 10
NUM_DRAWS = 4000


def linreg(X, y=None):
    import numpyro
    import numpyro.distributions as dist

    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("rows", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default=None)
    parser.add_argument("--million", action="store_true", help="also predict 1,000,000 rows and report peak RSS")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from numpyro.infer import Predictive

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, D)).astype(np.float32)
    beta_true = rng.normal(size=D)
    y = (X @ beta_true + rng.normal(size=2000)).astype(np.float32)
    post = bi.fit(linreg, X, y=y, chains=4, draws=NUM_DRAWS // 4, warmup=500, seed=0, progress=False)
    draws = post.flat_draws(["beta", "sigma"])
    predictive = Predictive(linreg, posterior_samples={k: jnp.asarray(v) for k, v in draws.items()})

    @jax.jit
    def handwritten_draws(beta, sigma, X, key):
        mu = X @ beta.T  # (rows, draws)
        return mu + sigma[None, :] * jax.random.normal(key, mu.shape)

    beta_j, sigma_j = jnp.asarray(draws["beta"]), jnp.asarray(draws["sigma"])
    lo_rank, hi_rank = int(0.05 * (NUM_DRAWS - 1)), int(np.ceil(0.95 * (NUM_DRAWS - 1)))

    def handwritten(Xn):
        d = np.asarray(handwritten_draws(beta_j, sigma_j, Xn, jax.random.PRNGKey(1)))
        part = np.partition(d, (lo_rank, hi_rank), axis=1)
        return d.mean(axis=1), part[:, lo_rank], part[:, hi_rank]

    def predictive_call(Xn):
        d = np.asarray(predictive(jax.random.PRNGKey(1), Xn)["y"])  # (draws, rows)
        return d.mean(axis=0), np.quantile(d, [0.05, 0.95], axis=0)

    results = {"draws": NUM_DRAWS, "D": D, "backend": jax.default_backend(), "rows": {}}
    for n in (1, 1000, 100_000):
        Xn = rng.normal(size=(n, D)).astype(np.float32)
        repeats = args.repeats if n < 100_000 else max(3, args.repeats // 4)
        row = {
            "bayesinf": median_time(lambda: post.predict(Xn, levels=(0.9,), return_draws=False), repeats, warmup=2),
            "handwritten": median_time(lambda: handwritten(Xn), repeats, warmup=2),
        }
        if n <= 1000:
            row["predictive"] = median_time(lambda: predictive_call(Xn), max(3, repeats // 2), warmup=1)
        ours = row["bayesinf"]["median"]
        row["ratio_vs_handwritten"] = ours / row["handwritten"]["median"]
        if "predictive" in row:
            row["speedup_vs_predictive"] = row["predictive"]["median"] / ours
        results["rows"][n] = row
        print(f"rows={n}: bayesinf {ours * 1e3:.3f} ms, handwritten {row['handwritten']['median'] * 1e3:.3f} ms"
              + (f", Predictive {row['predictive']['median'] * 1e3:.3f} ms" if "predictive" in row else ""),
              file=sys.stderr)
    results["compile_count"] = post.predict_fn().compile_count()
    if args.million:
        Xn = rng.normal(size=(1_000_000, D)).astype(np.float32)
        t = median_time(lambda: post.predict(Xn, levels=(0.9,), return_draws=False), 1, warmup=0)
        results["million_rows"] = {"seconds": t["median"],
                                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    emit(results, args.json)


if __name__ == "__main__":
    main()
