"""Worker of ``benchmarks/peers.py`` for the JAX tools: bayesinf and raw NumPyro.

Runs in the project's environment, in a fresh process per measurement. Reads the model's data from
the ``.npz`` file that ``peers.py`` wrote (the same file the PyMC/nutpie worker reads), fits twice
in one process and writes ``draws.npz`` (latent parameters of the first fit, ``(chains, draws,
...)``) and ``result.json`` (timings and sampler statistics) into ``--out``.

Tools:

- ``bayesinf``: ``bi.fit(..., method="nuts")`` with the settings of ``BAYESINF_SETTINGS``;
- ``bayesinf-disk-cache``: the same, with JAX's persistent compilation cache filled by an earlier
  process (the directory comes from ``BAYESINF_CACHE_DIR``, set by ``peers.py``);
- ``numpyro``: ``numpyro.infer.MCMC(NUTS(model), ...)`` with NumPyro's defaults (one CPU device, so
  the 4 chains run one after another);
- ``numpyro-parallel``: the same after ``numpyro.set_host_device_count(4)``, ``chain_method="parallel"``.

The progress bars are off everywhere (NumPyro's is a host callback per iteration).

Usage: ``python benchmarks/peers_jax.py --tool bayesinf --model radon --data radon.npz --out DIR``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TOOLS = ("bayesinf", "bayesinf-disk-cache", "numpyro", "numpyro-parallel")

#: bayesinf settings per model (``bi.fit`` options, plus ``host_devices``: the
#: ``BAYESINF_HOST_DEVICES`` the worker process starts with). float32 everywhere (bi.fit's
#: default: twice the SIMD width of float64 on CPU, ESS unaffected for these well-scaled
#: posteriors); 4 chains; target_accept 0.8 as the peers. Eight schools and radon: diagonal mass
#: matrix (the non-centred posteriors are close to axis-aligned; dense on radon, 89 parameters,
#: made the compiled fit 5x slower for the same ESS) and one chain per host device (bayesinf's
#: default: tree depths vary between iterations, so chains in lock-step would wait for the
#: deepest). Logistic: dense mass matrix (1.4x the min ESS at the same leapfrog steps per draw)
#: and the 4 chains vectorized on one device (the gradient is a (10000 x 20) @ (20 x 4) product
#: that reads X once for all chains and uses both cores; tree depth is the same at every
#: iteration, so lock-step costs nothing): 4x faster sampling than one chain per device. Radon
#: also starts its warmup from the gradient-scaled diagonal (``init_mass_matrix="gradient"``): its
#: varying-intercept scales differ by orders of magnitude, and it took 25% fewer warmup steps.
#: Measurements in docs/benchmarks.md. ``--bayesinf-settings`` overrides these.
BAYESINF_SETTINGS = {
    "eight_schools": {"dense_mass": False, "target_accept": 0.8},
    "radon": {"dense_mass": False, "target_accept": 0.8, "init_mass_matrix": "gradient"},
    "logistic": {"dense_mass": True, "target_accept": 0.8, "host_devices": 1},
}

#: Latent parameters whose draws are returned (the same names in the PyMC worker).
PARAMETERS = {
    "eight_schools": ("mu", "tau", "theta_tilde"),
    "radon": ("mu_alpha", "beta", "sigma_alpha", "sigma_y", "alpha_raw"),
    "logistic": ("alpha", "beta"),
}


# ----------------------------------------------------------------------------- models
def eight_schools(sigma, y=None):
    """Eight schools, non-centred: ``y_j ~ N(mu + tau * theta_tilde_j, sigma_j)``."""
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", sigma.shape[0]):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)


def radon(county, floor, num_counties, log_radon=None):
    """Radon varying intercepts, non-centred: ``log_radon_i ~ N(alpha[county_i] + beta * floor_i, sigma_y)``
    with ``alpha = mu_alpha + sigma_alpha * alpha_raw``."""
    import numpyro
    import numpyro.distributions as dist

    mu_alpha = numpyro.sample("mu_alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfNormal(2.5))
    sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(2.5))
    with numpyro.plate("counties", num_counties):
        alpha_raw = numpyro.sample("alpha_raw", dist.Normal(0.0, 1.0))
    alpha = mu_alpha + sigma_alpha * alpha_raw
    with numpyro.plate("rows", county.shape[0]):
        numpyro.sample("log_radon", dist.Normal(alpha[county] + beta * floor, sigma_y), obs=log_radon)


def logistic(X, y=None):
    """Logistic regression: ``y_i ~ Bernoulli(logit^-1(alpha + X_i @ beta))``, ``X`` is ``(rows, D)``."""
    import numpyro
    import numpyro.distributions as dist

    alpha = numpyro.sample("alpha", dist.Normal(0.0, 2.5))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("rows", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=alpha + X @ beta), obs=y)


MODELS = {"eight_schools": eight_schools, "radon": radon, "logistic": logistic}


def model_arguments(model: str, data) -> dict:
    """The model's keyword arguments from the ``.npz`` data (float32 and int32, as bi.fit casts)."""
    import numpy as np

    if model == "eight_schools":
        return {"sigma": data["sigma"].astype(np.float32), "y": data["y"].astype(np.float32)}
    if model == "radon":
        return {"county": data["county"].astype(np.int32), "floor": data["floor"].astype(np.float32),
                "num_counties": int(data["num_counties"]), "log_radon": data["log_radon"].astype(np.float32)}
    if model == "logistic":
        return {"X": data["X"].astype(np.float32), "y": data["y"].astype(np.int32)}
    raise ValueError(f"unknown model {model!r}")


# ----------------------------------------------------------------------------- fits
def _numpyro_fit_fn(tool: str, model: str, kwargs: dict, chains: int, draws: int, warmup: int, chain_method):
    """A function ``fit(seed) -> (draws, stats)``; the MCMC object is built by the first call (timed)
    and reused by the second, as a NumPyro user would call ``mcmc.run`` again."""
    import jax
    import numpy as np
    from numpyro.infer import MCMC, NUTS

    holder = {}

    def fit(seed):
        if "mcmc" not in holder:
            method = chain_method or ("parallel" if tool == "numpyro-parallel" else None)
            options = {} if method is None else {"chain_method": method}
            holder["mcmc"] = MCMC(NUTS(MODELS[model]), num_warmup=warmup, num_samples=draws, num_chains=chains,
                                  progress_bar=False, **options)
        mcmc = holder["mcmc"]
        mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging", "num_steps", "adapt_state.step_size"),
                 **kwargs)
        samples = jax.device_get(mcmc.get_samples(group_by_chain=True))
        extra = jax.device_get(mcmc.get_extra_fields(group_by_chain=True))
        stats = {"diverging": np.asarray(extra["diverging"]), "n_steps": np.asarray(extra["num_steps"]),
                 "step_size": np.asarray(extra["adapt_state.step_size"])}
        return {k: np.asarray(samples[k]) for k in PARAMETERS[model]}, stats, {}

    return fit


def _bayesinf_fit_fn(model: str, kwargs: dict, chains: int, draws: int, warmup: int, settings: dict):
    import numpy as np

    import bayesinf as bi

    def fit(seed):
        post = bi.fit(MODELS[model], chains=chains, draws=draws, warmup=warmup, seed=seed, progress=False,
                      warn=False, model_kwargs=kwargs, **settings)
        stats = {"diverging": np.asarray(post.sample_stats["diverging"]),
                 "n_steps": np.asarray(post.sample_stats["n_steps"]),
                 "step_size": np.asarray(post.sample_stats["step_size"])}
        info = {k: v for k, v in post.info.items() if isinstance(v, (int, float, str, bool))}
        return {k: np.asarray(post.draws[k]) for k in PARAMETERS[model]}, stats, info

    return fit


def summarize_stats(stats: dict) -> dict:
    """Divergences, mean leapfrog steps per draw, mean tree depth and median step size of kept draws."""
    import numpy as np

    n_steps = stats["n_steps"].astype(np.float64)
    return {
        "divergences": int(stats["diverging"].sum()),
        "leapfrog_per_draw": float(n_steps.mean()),
        "leapfrog_total": float(n_steps.sum()),
        "tree_depth": float(np.floor(np.log2(n_steps + 1)).mean()),
        "step_size": float(np.median(stats["step_size"])),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=TOOLS, required=True)
    parser.add_argument("--model", choices=tuple(MODELS), required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--chain-method", choices=("vectorized",), default=None)
    parser.add_argument("--bayesinf-settings", default=None, help="JSON dict of bi.fit options")
    parser.add_argument("--fits", type=int, default=2, help="1: first fit only (cache warming)")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    settings = {**BAYESINF_SETTINGS[args.model], **json.loads(args.bayesinf_settings or "{}")}
    host_devices = settings.pop("host_devices", None)
    if args.chain_method == "vectorized":
        settings["chain_method"] = "vectorized"  # every chain on one device, as NumPyro's vectorized
    if args.tool.startswith("bayesinf") and host_devices is not None and args.chain_method is None:
        os.environ["BAYESINF_HOST_DEVICES"] = str(host_devices)  # read when bayesinf is imported
    if args.tool == "numpyro-parallel" and args.chain_method is None:
        import numpyro

        numpyro.set_host_device_count(args.chains)
    import numpy as np
    import numpyro.infer  # noqa: F401  (imported before timing by every JAX tool)

    with np.load(args.data) as f:
        kwargs = model_arguments(args.model, f)
    if args.tool.startswith("bayesinf"):
        fit = _bayesinf_fit_fn(args.model, kwargs, args.chains, args.draws, args.warmup, settings)
    else:
        settings = {"chain_method": args.chain_method or ("parallel" if args.tool == "numpyro-parallel" else
                                                          "default")}
        fit = _numpyro_fit_fn(args.tool, args.model, kwargs, args.chains, args.draws, args.warmup,
                              args.chain_method)
    import jax

    t_import = time.perf_counter() - t_start

    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    draws, stats, info = fit(0)
    t_first = time.perf_counter() - t0
    result = {"tool": args.tool, "model": args.model, "import_seconds": t_import, "first_seconds": t_first,
              "first": summarize_stats(stats), "first_info": info,
              "settings": {**settings, "host_devices": os.environ.get("BAYESINF_HOST_DEVICES")}
              if args.tool.startswith("bayesinf") else settings,
              "devices": jax.local_device_count(), "backend": jax.default_backend(),
              "versions": {"jax": jax.__version__, "numpyro": __import__("numpyro").__version__}}
    if args.fits > 1:
        t0 = time.perf_counter()
        draws2, stats2, info2 = fit(1)  # same data, same shapes, new seed
        result["second_seconds"] = time.perf_counter() - t0
        np.savez(os.path.join(args.out, "draws_second.npz"), **draws2)
        result["second"] = summarize_stats(stats2)
        result["second_info"] = info2
    np.savez(os.path.join(args.out, "draws.npz"), **draws)
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
