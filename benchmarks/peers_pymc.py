"""Worker of ``benchmarks/peers.py`` for PyMC and nutpie; runs in the peers environment
(``benchmarks/.peers-venv``, made by ``python benchmarks/peers.py --setup``), never imports bayesinf.

Reads the model's data from the ``.npz`` file that ``peers.py`` wrote (the same file the JAX worker
reads), fits twice in one process and writes ``draws.npz`` (latent parameters of the first fit,
``(chains, draws, ...)``, constrained space) and ``result.json`` (timings, sampler statistics) into
``--out``.

Tools:

- ``pymc``: ``pm.sample(draws, tune=warmup, chains=4, cores=2, random_seed=seed, progressbar=False)``,
  PyMC's default NUTS with its defaults otherwise (float64, diagonal mass matrix adapted by
  ``jitter+adapt_diag``, convergence checks after sampling). The second fit calls ``pm.sample``
  again on the same model (PyMC compiles its log-density function on every call; PyTensor's C
  modules come from its on-disk cache).
- ``nutpie``: ``nutpie.compile_pymc_model(model)`` with its default numba backend, then
  ``nutpie.sample(compiled, draws=..., tune=..., chains=4, seed=seed, progress_bar=False)`` (default
  ``adaptation="diag"``, gradient-based mass-matrix adaptation, one thread per core). The second fit
  samples the already compiled model again (sampling only).

The models are written exactly as the NumPyro models in ``peers_jax.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

TOOLS = ("pymc", "nutpie")
PARAMETERS = {
    "eight_schools": ("mu", "tau", "theta_tilde"),
    "radon": ("mu_alpha", "beta", "sigma_alpha", "sigma_y", "alpha_raw"),
    "logistic": ("alpha", "beta"),
}


def build_model(name: str, data):
    """The PyMC model ``name`` on the arrays of ``data`` (a loaded ``.npz``)."""
    import numpy as np
    import pymc as pm

    with pm.Model() as model:
        if name == "eight_schools":
            sigma, y = np.asarray(data["sigma"], float), np.asarray(data["y"], float)
            mu = pm.Normal("mu", 0.0, 5.0)
            tau = pm.HalfCauchy("tau", 5.0)
            theta_tilde = pm.Normal("theta_tilde", 0.0, 1.0, shape=sigma.shape[0])
            pm.Normal("y", mu + tau * theta_tilde, sigma, observed=y)
        elif name == "radon":
            county = np.asarray(data["county"], np.int64)
            floor = np.asarray(data["floor"], float)
            mu_alpha = pm.Normal("mu_alpha", 0.0, 10.0)
            beta = pm.Normal("beta", 0.0, 10.0)
            sigma_alpha = pm.HalfNormal("sigma_alpha", 2.5)
            sigma_y = pm.HalfNormal("sigma_y", 2.5)
            alpha_raw = pm.Normal("alpha_raw", 0.0, 1.0, shape=int(data["num_counties"]))
            alpha = mu_alpha + sigma_alpha * alpha_raw
            pm.Normal("log_radon", alpha[county] + beta * floor, sigma_y, observed=np.asarray(data["log_radon"], float))
        elif name == "logistic":
            X, y = np.asarray(data["X"], float), np.asarray(data["y"], np.int64)
            alpha = pm.Normal("alpha", 0.0, 2.5)
            beta = pm.Normal("beta", 0.0, 1.0, shape=X.shape[1])
            pm.Bernoulli("y", logit_p=alpha + pm.math.dot(X, beta), observed=y)
        else:
            raise ValueError(f"unknown model {name!r}")
    return model


def _extract(tree, model: str, warmup_group: bool):
    """Draws and statistics as numpy arrays from the DataTree/InferenceData both samplers return."""
    import numpy as np

    posterior = tree["posterior"]
    stats_group = tree["sample_stats"]
    draws = {k: np.asarray(posterior[k].values) for k in PARAMETERS[model]}
    depth = "tree_depth" if "tree_depth" in stats_group else "depth"
    stats = {"diverging": np.asarray(stats_group["diverging"].values),
             "n_steps": np.asarray(stats_group["n_steps"].values),
             "step_size": np.asarray(stats_group["step_size"].values),
             "tree_depth": np.asarray(stats_group[depth].values)}
    extra = {}
    if warmup_group and "warmup_sample_stats" in tree.children:
        extra["warmup_leapfrog_total"] = float(np.asarray(tree["warmup_sample_stats"]["n_steps"].values).sum())
    return draws, stats, extra


def summarize_stats(stats: dict) -> dict:
    import numpy as np

    n_steps = stats["n_steps"].astype(np.float64)
    return {
        "divergences": int(stats["diverging"].sum()),
        "leapfrog_per_draw": float(n_steps.mean()),
        "leapfrog_total": float(n_steps.sum()),
        "tree_depth": float(stats["tree_depth"].astype(np.float64).mean()),
        "step_size": float(np.median(stats["step_size"])),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=TOOLS, required=True)
    parser.add_argument("--model", choices=tuple(PARAMETERS), required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--fits", type=int, default=2, help="1: first fit only (cache warming)")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    import numpy as np
    import pymc as pm

    if args.tool == "nutpie":
        import nutpie
    with np.load(args.data) as f:
        data = {k: f[k] for k in f.files}
    t_import = time.perf_counter() - t_start

    state = {}

    def fit(seed: int):
        if args.tool == "pymc":
            if "model" not in state:
                state["model"] = build_model(args.model, data)
            with state["model"]:
                tree = pm.sample(args.draws, tune=args.warmup, chains=args.chains, cores=args.cores,
                                 random_seed=seed, progressbar=False)
            return _extract(tree, args.model, False)
        if "compiled" not in state:
            state["compiled"] = nutpie.compile_pymc_model(build_model(args.model, data))  # numba backend
        tree = nutpie.sample(state["compiled"], draws=args.draws, tune=args.warmup, chains=args.chains,
                             cores=args.cores, seed=seed, progress_bar=False)
        return _extract(tree, args.model, True)

    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    draws, stats, extra = fit(0)
    t_first = time.perf_counter() - t0
    versions = {"pymc": pm.__version__, "pytensor": __import__("pytensor").__version__}
    if args.tool == "nutpie":
        versions["nutpie"] = nutpie.__version__
        versions["numba"] = __import__("numba").__version__
    result = {"tool": args.tool, "model": args.model, "import_seconds": t_import, "first_seconds": t_first,
              "first": summarize_stats(stats), "first_info": extra, "versions": versions,
              "settings": {"cores": args.cores, "backend": "numba" if args.tool == "nutpie" else "pymc-default"}}
    if args.fits > 1:
        t0 = time.perf_counter()
        draws2, stats2, extra2 = fit(1)
        result["second_seconds"] = time.perf_counter() - t0
        np.savez(os.path.join(args.out, "draws_second.npz"), **draws2)
        result["second"] = summarize_stats(stats2)
        result["second_info"] = extra2
    np.savez(os.path.join(args.out, "draws.npz"), **draws)
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
