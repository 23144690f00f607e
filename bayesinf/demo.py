"""The main job: fit a hierarchical radon model to the bundled Minnesota data with NUTS, report
the summary and diagnostics, predict intervals for observed counties and a new county, and write
ArviZ plots (rank and posterior predictive) as PNG files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

__all__ = ["radon_varying_intercept", "run"]


def radon_varying_intercept(county, floor, num_counties, log_radon=None):
    """Varying intercepts by county (Gelman & Hill 2006, ch. 12).

    ``log_radon ~ Normal(alpha[county] + beta * floor, sigma_y)``, ``alpha_j ~ Normal(mu_alpha,
    sigma_alpha)``; priors ``Normal(0, 10)`` on ``mu_alpha`` and ``beta``, ``HalfNormal(2.5)`` on
    the scales. Index ``num_counties`` is a county not in the data: its intercept ``alpha_new`` is
    drawn from the population distribution.

    Parameters
    ----------
    county : int array (rows,)
        County index in ``[0, num_counties]``; ``num_counties`` means "a new county".
    floor : float array (rows,)
        0 for a basement measurement, 1 for the first floor.
    num_counties : int
    log_radon : float array (rows,), optional
        Observed log radon (pCi/L); None to predict.
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    mu_alpha = numpyro.sample("mu_alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfNormal(2.5))
    sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(2.5))
    with numpyro.plate("counties", num_counties):
        alpha = numpyro.sample("alpha", dist.Normal(mu_alpha, sigma_alpha))
    alpha_new = numpyro.sample("alpha_new", dist.Normal(mu_alpha, sigma_alpha))
    intercepts = jnp.concatenate([alpha, alpha_new[None]])
    with numpyro.plate("rows", county.shape[0]):
        numpyro.sample("log_radon", dist.Normal(intercepts[county] + beta * floor, sigma_y), obs=log_radon)


def run(out: str | Path = "bayesinf-demo", *, draws: int = 1000, warmup: int = 1000, chains: int = 4,
        seed: int = 0, progress: bool | None = None) -> dict:
    """Run the demo; print a report and write plots into ``out``. Returns what it computed."""
    import bayesinf as bi

    from . import arviz_io

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = bi.datasets.load_radon()
    frame = data.frame
    num_counties = int(frame["county"].max()) + 1
    print(f"Data: {data.name}, {len(frame)} homes in {num_counties} counties. {data.citation.splitlines()[0]}")
    start = time.perf_counter()
    post = bi.fit(
        radon_varying_intercept, frame["county"].to_numpy(), frame["floor"].to_numpy(np.float32), num_counties,
        log_radon=frame["log_radon"].to_numpy(np.float32), chains=chains, draws=draws, warmup=warmup, seed=seed,
        progress=progress, int_ranges={"county": (0, num_counties)},
    )
    fit_seconds = time.perf_counter() - start
    print(f"\nNUTS: {chains} chains x {draws} draws after {warmup} warmup in {fit_seconds:.1f} s\n")
    summary = post.summary(var_names=["mu_alpha", "beta", "sigma_alpha", "sigma_y", "alpha_new"])
    print(summary.round(3).to_string())
    diagnosis = post.diagnose()
    print("\n" + str(diagnosis))

    counties = np.array([0, 0, 34, 34, 60, 60, num_counties, num_counties])
    floors = np.array([0, 1, 0, 1, 0, 1, 0, 1], dtype=np.float32)
    pred = post.predict(counties, floors, levels=(0.5, 0.9), seed=seed)
    table = pred.to_pandas()
    table.insert(0, "floor", np.where(floors == 0, "basement", "first"))
    table.insert(0, "county", [str(c) if c < num_counties else "new" for c in counties])
    print("\nPredicted log radon (posterior predictive, 50% and 90% equal-tailed intervals):")
    print(table.round(3).to_string(index=False))

    tree = post.to_arviz(posterior_predictive=True, seed=seed)
    plots = {}
    top = ["mu_alpha", "beta", "sigma_alpha", "sigma_y"]
    for name, make in (("trace.png", lambda: arviz_io.plot_trace(tree, top)),
                       ("rank.png", lambda: arviz_io.plot_rank(tree, top)),
                       ("ppc.png", lambda: arviz_io.plot_ppc(tree))):
        arviz_io.save_figure(make(), out / name)
        plots[name] = out / name
    print(f"\nPlots written to {out.resolve()}: {', '.join(plots)}")
    return {"posterior": post, "prediction": pred, "diagnosis": diagnosis, "plots": plots, "fit_seconds": fit_seconds}
