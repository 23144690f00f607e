"""Radon quickstart: fit a varying-intercept model, check it, predict intervals, save and reload.

Minnesota radon data (Gelman & Hill 2006): log radon of 919 houses in 85 counties, measured in
the basement (floor 0) or on the first floor (floor 1). The model gives each county its own
intercept, partially pooled towards a state-wide mean, and a common floor effect::

    python examples/radon_quickstart.py --out runs/radon

Runs in well under a minute on a laptop CPU (the first run also compiles the sampler).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import numpyro
import numpyro.distributions as dist

import bayesinf as bi


def model(county, floor, num_counties, log_radon=None):
    """Varying intercepts per county (non-centered), one floor slope, normal noise."""
    mu_a = numpyro.sample("mu_a", dist.Normal(1.5, 2.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(1.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("counties", num_counties):
        z_a = numpyro.sample("z_a", dist.Normal(0.0, 1.0))
    a = mu_a + sigma_a * z_a
    with numpyro.plate("houses", county.shape[0]):
        numpyro.sample("log_radon", dist.Normal(a[county] + beta * floor, sigma), obs=log_radon)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="directory to save the fitted model in; a model saved there earlier is replaced "
                             "(default: a temporary directory)")
    args = parser.parse_args(argv)

    data = bi.datasets.load_radon()
    df = data.frame
    num_counties = int(df["county"].nunique())
    print(f"Radon data: {len(df)} houses in {num_counties} counties")

    # 1. Fit: data go in as the model's arguments; the int num_counties is static (a plate size).
    start = time.perf_counter()
    post = bi.fit(model, df["county"].to_numpy(), df["floor"].to_numpy(), num_counties,
                  log_radon=df["log_radon"].to_numpy(), chains=4, draws=500, warmup=500, seed=0,
                  progress=False)
    print(f"Fitted in {time.perf_counter() - start:.1f} s: {post!r}")

    # 2. Check convergence, then summarize the population-level parameters.
    print()
    print(post.diagnose())
    print()
    print(post.summary(var_names=["mu_a", "sigma_a", "beta", "sigma"]).round(3).to_string())

    # 3. Predict a new house in the basement and on the first floor, in a few counties.
    counties = np.repeat([0, 25, 69], 2)  # a county with 4 measured houses, and the two with most (105, 116)
    floors = np.tile([0, 1], 3)
    pred = post.predict(counties, floors, levels=(0.5, 0.9), seed=0)
    table = pred.to_pandas()
    table.insert(0, "floor", floors)
    table.insert(0, "county", counties)
    print()
    print("Predicted log radon of a new house (ETI intervals):")
    print(table.round(3).to_string(index=False))

    # 4. Save, reload and check that the reloaded posterior predicts the same numbers.
    with tempfile.TemporaryDirectory() as tmp:
        target = args.out if args.out is not None else Path(tmp) / "radon"
        post.save(target)
        loaded = bi.load(target, model=model)
        again = loaded.predict(counties, floors, levels=(0.5, 0.9), seed=0)  # same seed, same numbers
        same = table.drop(columns=["county", "floor"]).equals(again.to_pandas())
        print()
        print(f"Saved to {target if args.out is not None else '<temporary directory>'}; "
              f"reloaded predictions identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
