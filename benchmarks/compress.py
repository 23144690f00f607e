"""Compression benchmark: predictive-interval error and predict speed-up of compressed posteriors,
the error of 16-bit draw storage, and the speed of an exported predictor.

Two posteriors of 4 chains x 1000 NUTS draws (after 1000 warmup): the radon varying-intercept
model (919 homes, 85 counties; held-out rows: every county and a new one, both floors, 172 rows)
and a linear regression (2000 rows, D=10, sigma unknown; 500 held-out rows).

Error metric. For every held-out row, the 5%, 50% and 95% predictive quantiles of a candidate and
of the full posterior, the absolute difference divided by the full posterior's predictive sd;
reported as the mean and the max over rows and quantiles, averaged over ``--seeds`` predict
seeds (the candidate's seed differs from the reference's). Two errors:

- ``served``: both sides exactly as ``Posterior.predict`` returns them (one predictive draw per
  posterior draw), i.e. what a user of the compressed posterior sees;
- ``selection``: both sides with every kept draw repeated to 32,000 predictive draws, so the
  predictive noise (about 0.01 sd) no longer hides how well the kept draws represent the posterior.

Reference floor: the same errors between the full posterior and a second full posterior fitted with
another MCMC seed (the Monte Carlo error of the full posterior itself). Also the energy distance
(standardized unconstrained space) of each kept set, continuous support points (Mak & Joseph 2018,
convex-concave procedure) for comparison, and the time of ``compress``.

Speed (contenders timed in turn within each repeat, medians): ``predict`` for 1000 and 100,000
rows, full vs compressed (ratio = speed-up);
exported predictor (``bayesinf.export.load_predictor``) vs ``Posterior.predict`` for 1, 1000 and
100,000 rows.

Usage: ``python benchmarks/compress.py [--seeds 3] [--repeats 7] [--parts accuracy,speed,export]
[--json out.json] [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import emit  # noqa: E402

import bayesinf as bi  # noqa: E402
from bayesinf.compress import METHODS, _jitted, _pairwise_distances, energy_distance  # noqa: E402
from bayesinf.compress import unconstrained_draws  # noqa: E402
from bayesinf.posterior import Posterior  # noqa: E402

SIZES = (100, 250, 500, 1000)
PROBS = (0.05, 0.5, 0.95)
SELECTION_DRAWS = 32_000


def linreg(X, y=None):
    import numpyro
    import numpyro.distributions as dist

    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("rows", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def problems(quick: bool):
    from bayesinf.demo import radon_varying_intercept

    fit = dict(chains=4, draws=1000 if not quick else 500, warmup=1000 if not quick else 500, progress=False,
               warn=False)
    frame = bi.datasets.load_radon().frame
    num_counties = int(frame["county"].max()) + 1
    radon_args = (frame["county"].to_numpy(), frame["floor"].to_numpy(np.float32), num_counties)
    radon_kw = dict(log_radon=frame["log_radon"].to_numpy(np.float32), int_ranges={"county": (0, num_counties)})
    counties = np.repeat(np.arange(num_counties + 1), 2)
    radon_new = (counties, np.tile(np.array([0.0, 1.0], np.float32), num_counties + 1))

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 10)).astype(np.float32)
    y = (X @ rng.normal(size=10) + rng.normal(size=2000)).astype(np.float32)
    X_new = rng.normal(size=(500, 10)).astype(np.float32)
    out = {}
    for name, model, args, kw, new in (("radon", radon_varying_intercept, radon_args, radon_kw, radon_new),
                                       ("linreg", linreg, (X,), dict(y=y), (X_new,))):
        full = bi.fit(model, *args, seed=0, **kw, **fit)
        other = bi.fit(model, *args, seed=1, **kw, **fit)
        out[name] = (full, other, new)
    return out


def tiled(post: Posterior, total: int) -> Posterior:
    """The posterior with every draw repeated to ``total`` draws (one chain)."""
    flat = post.num_chains * post.num_draws
    index = np.arange(total) % flat

    def take(arrays):
        return {k: v.reshape(flat, *v.shape[2:])[index][None] for k, v in arrays.items()}

    return Posterior(model=post.model, method=post.method, draws=take(post.draws), sample_stats={},
                     schema=post.schema, data=post.data, sites=post.sites, settings=post.settings, info=post.info,
                     dtype=post.dtype, seed=post.seed, losses=post.losses, model_path=post.model_path)


def quantiles(post: Posterior, new, seed: int):
    pred = post.predict(*new, levels=(0.9,), seed=seed, return_draws=True)
    return np.quantile(pred.draws, PROBS, axis=0), pred.sd


def errors(candidate: Posterior, reference: Posterior, new, seeds: int, selection: bool) -> dict:
    if selection:
        candidate, reference = tiled(candidate, SELECTION_DRAWS), tiled(reference, SELECTION_DRAWS)
    means, maxes = [], []
    for s in range(seeds):
        q_ref, sd_ref = quantiles(reference, new, 1000 + s)
        q, _ = quantiles(candidate, new, s)
        err = np.abs(q - q_ref) / sd_ref
        means.append(float(err.mean()))
        maxes.append(float(err.max()))
    return {"mean": statistics.mean(means), "max": statistics.mean(maxes)}


def support_points_distance(post: Posterior, num_points: int, steps: int = 300) -> float:
    """Energy distance of continuous support points (convex-concave procedure, Mak & Joseph 2018,
    Algorithm 1) started at a random subset: the best a selection of real draws can approach."""
    import jax
    import jax.numpy as jnp

    features = unconstrained_draws(post)
    n, num_target = num_points, features.shape[0]

    @jax.jit
    def run(x, target):
        def step(_, x):
            to_target = jnp.maximum(_pairwise_distances(x, target), 1e-12)
            between = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, jnp.maximum(_pairwise_distances(x, x), 1e-12))
            inv_t, inv_b = 1.0 / to_target, 1.0 / between
            repel = x * inv_b.sum(axis=1, keepdims=True) - inv_b @ x
            return (num_target / n * repel + inv_t @ target) / inv_t.sum(axis=1, keepdims=True)

        return jax.lax.fori_loop(0, steps, step, x)

    start = features[np.random.default_rng(0).choice(num_target, n, replace=False)]
    return energy_distance(np.asarray(run(start, features)), features)


def interleaved_times(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median seconds of each callable in ``fns``, timed in turn within every repeat, so a change
    in machine load affects all contenders alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": repeats} for k, v in times.items()}


def accuracy(full, other, new, sizes, seeds: int) -> dict:
    res = {"floor": {"served": errors(other, full, new, seeds, False),
                     "selection": errors(other, full, new, seeds, True)}, "methods": {}, "storage": {}}
    for method in METHODS:
        for n in sizes:
            t0 = time.perf_counter()
            small = full.compress(n, method=method, seed=0)
            seconds = time.perf_counter() - t0
            res["methods"].setdefault(method, {})[n] = {
                "compress_seconds": seconds, "energy_distance": small.info["compression"]["energy_distance"],
                "served": errors(small, full, new, seeds, False), "selection": errors(small, full, new, seeds, True)}
    res["support_points_energy_distance"] = {n: support_points_distance(full, n) for n in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float16", "bfloat16"):
            full.save(f"{tmp}/{dtype}", draws_dtype=dtype)
            low = bi.load(f"{tmp}/{dtype}", model=full.model)
            # Same predict seed on both sides: the difference is the storage rounding alone.
            q_ref, sd_ref = quantiles(full, new, 0)
            q, _ = quantiles(low, new, 0)
            err = np.abs(q - q_ref) / sd_ref
            res["storage"][dtype] = {"mean": float(err.mean()), "max": float(err.max())}
    return res


def speed(full, new, sizes, repeats: int) -> dict:
    """Predict time of the full and the herded posteriors (compiled, warm), interleaved."""
    rng = np.random.default_rng(1)
    out = {}
    smalls = {n: full.compress(n, method="herding") for n in sizes}
    for rows in (1000, 100_000):
        pick = rng.integers(0, len(new[0]), size=rows)
        batch = tuple(a[pick] for a in new)
        fns = {"full": lambda: full.predict(*batch, return_draws=False)}
        fns.update({n: (lambda p=p: p.predict(*batch, return_draws=False)) for n, p in smalls.items()})
        timing = interleaved_times(fns, repeats if rows <= 1000 else max(3, repeats // 2))
        timing["speedup"] = {n: timing["full"]["median"] / timing[n]["median"] for n in sizes}
        out[rows] = timing
    return out


def export_speed(full, repeats: int) -> dict:
    """Exported predictor (``load_predictor``) vs ``Posterior.predict`` on the radon posterior."""
    from bayesinf.export import load_predictor

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        full.export(f"{tmp}/radon.predictor")
        portable = load_predictor(f"{tmp}/radon.predictor")
        rng = np.random.default_rng(2)
        county_max = int(full.schema["county"].int_range[1])
        for rows in (1, 1000, 100_000):
            c = rng.integers(0, county_max + 1, size=rows)
            f = rng.integers(0, 2, size=rows).astype(np.float32)
            timing = interleaved_times({
                "posterior": lambda: full.predict(c, f, return_draws=False),
                "exported": lambda: portable.predict(county=c, floor=f, return_draws=False),
            }, repeats if rows <= 1000 else max(3, repeats // 2))
            timing["ratio_exported_vs_posterior"] = timing["exported"]["median"] / timing["posterior"]["median"]
            out[rows] = timing
    return out


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None)
    parser.add_argument("--parts", default="accuracy,speed,export",
                        help="comma-separated subset of accuracy, speed, export")
    parser.add_argument("--quick", action="store_true", help="shorter fits, one size (a smoke run)")
    args = parser.parse_args(argv)
    import jax

    parts = set(args.parts.split(","))
    sizes = SIZES if not args.quick else (250,)
    results = {"backend": jax.default_backend(), "sizes": list(sizes), "seeds": args.seeds, "problems": {}}
    fitted = problems(args.quick)
    for name, (full, other, new) in fitted.items():
        res = results["problems"][name] = {"draws": full.num_chains * full.num_draws, "rows": len(new[0])}
        if "accuracy" in parts:
            res.update(accuracy(full, other, new, sizes, args.seeds))
        if "speed" in parts:
            res["speed"] = speed(full, new, sizes, args.repeats)
        print(f"{name} done", file=sys.stderr)
    if "export" in parts:
        results["problems"]["radon"]["export_speed"] = export_speed(fitted["radon"][0], args.repeats)
    emit(results, args.json)


if __name__ == "__main__":
    main()
