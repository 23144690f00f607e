"""NumPyro models and data of the reference posteriors in ``tests/data/``, for
``tests/test_reference_posteriors.py``.

Each model is written from the ``model_description`` of its reference JSON (likelihood, priors and
parameter names exactly as stated there; a parameter with no stated prior has an improper flat
prior on its support, as in Stan). The reference files are copies of

- ``shared/posteriordb/<name>.json``: summaries of posteriordb's reference draws (Stan NUTS, 10 x 1000
  draws), posteriordb commit ``28f8d3d6e975315f42aa274a8399f21e07a43b30``, BSD-3-Clause (licence text
  in ``tests/data/LICENCE-posteriordb.md``). Cite: Magnusson, Bürkner, Vehtari, *posteriordb: a set
  of posteriors for Bayesian inference and probabilistic programming*,
  https://github.com/stan-dev/posteriordb.
- ``shared/references/radon_mn-varying_intercept.json`` (a long float64 NUTS run, 8 x 5000 draws) with
  its data ``shared/datasets/radon_mn.json`` (posteriordb's ``radon_mn`` data file, same licence).

They are copied so that the tests do not depend on a ``shared/`` folder beside the checkout.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

DATA_DIR = Path(__file__).resolve().parent / "data"


# --------------------------------------------------------------------------- flat priors
def flat(support=constraints.real, event_shape=()) -> dist.ImproperUniform:
    """Improper flat prior on ``support`` with ``event_shape`` (one site, no batch dimensions), as Stan's."""
    return dist.ImproperUniform(support, batch_shape=(), event_shape=tuple(event_shape))


# --------------------------------------------------------------------------- models
def eight_schools_noncentered(sigma, y=None, J=8):
    """posteriordb ``eight_schools_noncentered``: y_j ~ Normal(theta_j, sigma_j),
    theta_j = mu + tau * eta_j, eta_j ~ Normal(0, 1), mu ~ Normal(0, 5), tau ~ half-Cauchy(0, 5)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", J):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def kidscore_interaction(mom_hs, mom_iq, kid_score=None):
    """posteriordb ``kidscore_interaction``: kid_score ~ Normal(beta_1 + beta_2 hs + beta_3 iq +
    beta_4 hs * iq, sigma); beta flat on R^4; sigma ~ half-Cauchy(0, 2.5)."""
    beta = numpyro.sample("beta", flat(constraints.real, (4,)))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    mu = beta[0] + beta[1] * mom_hs + beta[2] * mom_iq + beta[3] * mom_hs * mom_iq
    with numpyro.plate("child", mom_iq.shape[0]):
        numpyro.sample("kid_score", dist.Normal(mu, sigma), obs=kid_score)


def kilpisjarvi(x, y=None, pmualpha=0.0, psalpha=1.0, pmubeta=0.0, psbeta=1.0):
    """posteriordb ``kilpisjarvi``: y ~ Normal(alpha + beta * x, sigma) with x = year + 2000
    (3952..4013, *not* centred); alpha ~ Normal(pmualpha, psalpha); beta ~ Normal(pmubeta, psbeta);
    sigma flat on (0, inf). The prior constants come from the data (static floats)."""
    alpha = numpyro.sample("alpha", dist.Normal(pmualpha, psalpha))
    beta = numpyro.sample("beta", dist.Normal(pmubeta, psbeta))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    with numpyro.plate("year", x.shape[0]):
        numpyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def radon_varying_intercept(county, floor, log_radon=None, J=85):
    """``radon_mn-varying_intercept``: log_radon ~ Normal(alpha[county] + beta * floor, sigma_y);
    alpha_j ~ Normal(mu_alpha, sigma_alpha); mu_alpha, beta ~ Normal(0, 10); sigma_alpha, sigma_y ~
    HalfNormal(2.5). ``county`` is the 0-based county index.

    Written centred, as described. With 919 observations over 85 counties the data inform the
    alpha_j well enough that NUTS at its default settings had no divergences (seeds 0-7), and the
    non-centred form was not worth it (min bulk ESS 1500-1850 vs 1300-1700, R-hat alike, slower).
    """
    mu_alpha = numpyro.sample("mu_alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfNormal(2.5))
    sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(2.5))
    with numpyro.plate("county", J):
        alpha = numpyro.sample("alpha", dist.Normal(mu_alpha, sigma_alpha))
    with numpyro.plate("house", county.shape[0]):
        numpyro.sample("log_radon", dist.Normal(alpha[county] + beta * floor, sigma_y), obs=log_radon)


# --------------------------------------------------------------------------- reference cases
@dataclass(frozen=True)
class ReferenceCase:
    """One model, its data as ``bi.fit`` arguments, and its reference summary.

    ``reference`` maps *our* summary index (0-based, e.g. ``theta[0]``) to the reference stats
    (``mean``, ``sd``, ``ess_bulk``, ...); ``reference_names`` maps our index to the file's name.
    """

    name: str
    model: Callable
    args: tuple
    kwargs: dict
    reference: dict[str, dict[str, float]]
    reference_names: dict[str, str]
    source_file: str
    nuts: dict[str, Any] = field(default_factory=dict)


def to_zero_based(name: str) -> str:
    """``theta[1]`` -> ``theta[0]``; ``beta[3,2]`` -> ``beta[2, 1]``; scalars unchanged.

    Our summary (ArviZ) writes multi-index names with ``", "`` between indices.
    """
    match = re.fullmatch(r"(\w+)\[([\d,\s]+)\]", name)
    if not match:
        return name
    indices = [int(i) - 1 for i in match.group(2).split(",")]
    return f"{match.group(1)}[{', '.join(map(str, indices))}]"


@lru_cache(maxsize=None)
def load_json(filename: str) -> dict:
    with open(DATA_DIR / filename, encoding="utf-8") as fh:
        return json.load(fh)


def _reference(doc: dict) -> tuple[dict, dict]:
    stats = doc["reference"]["stats"]
    names = {to_zero_based(p): p for p in doc["parameters"]}
    return {ours: dict(stats[theirs]) for ours, theirs in names.items()}, names


def eight_schools_case() -> ReferenceCase:
    fname = "eight_schools-eight_schools_noncentered.json"
    doc = load_json(fname)
    d = doc["data"]
    ref, names = _reference(doc)
    return ReferenceCase(
        "eight_schools_noncentered", eight_schools_noncentered,
        (np.asarray(d["sigma"], dtype=float),), {"y": np.asarray(d["y"], dtype=float), "J": int(d["J"])},
        ref, names, fname,
        # adapt_delta 0.95 as posteriordb's reference run: at the default 0.8 the non-centred model
        # still gave 3-5 divergences per 4000 draws (seeds 1, 2); at 0.95, none.
        nuts={"target_accept": 0.95},
    )


def kidiq_case() -> ReferenceCase:
    fname = "kidiq-kidscore_interaction.json"
    doc = load_json(fname)
    d = doc["data"]
    ref, names = _reference(doc)
    return ReferenceCase(
        "kidiq_interaction", kidscore_interaction,
        (np.asarray(d["mom_hs"], dtype=float), np.asarray(d["mom_iq"], dtype=float)),
        {"kid_score": np.asarray(d["kid_score"], dtype=float)},
        ref, names, fname,
        # mom_iq is not centred (mean ~100): corr(beta_1, beta_3) and corr(beta_2, beta_4) are
        # about -0.99. A dense mass matrix removes that linear correlation: measured (seeds 0-2) mean
        # tree depth 2.6 and min bulk ESS 4100-5300, against depth 5.7, ESS 790-910 and R-hat up to
        # 1.0085 with the diagonal one. float32 is enough (float64 gave the same figures).
        nuts={"dense_mass": True},
    )


def kilpisjarvi_case() -> ReferenceCase:
    fname = "kilpisjarvi_mod-kilpisjarvi.json"
    doc = load_json(fname)
    d = doc["data"]
    ref, names = _reference(doc)
    return ReferenceCase(
        "kilpisjarvi", kilpisjarvi,
        (np.asarray(d["x"], dtype=float),),
        {"y": np.asarray(d["y"], dtype=float), "pmualpha": float(d["pmualpha"]),
         "psalpha": float(d["psalpha"]), "pmubeta": float(d["pmubeta"]), "psbeta": float(d["psbeta"])},
        ref, names, fname,
        # x ~ 4000 uncentred: corr(alpha, beta) = -0.99999; the narrowest posterior direction has
        # variance ~1e-9. A dense mass matrix helps only partly, because NumPyro (like Stan) shrinks
        # the adapted covariance towards 1e-3 * I with weight 5 / (n + 5), which swamps that
        # direction: measured mean tree depth 6.1 (vs 7.6 diagonal), bulk ESS 1000-1200 for 4000
        # draws (vs 950-1100), and ~2x less time per fit. (With NumPyro's
        # regularize_mass_matrix=False, which bayesinf does not expose, 4.4 leapfrog steps per draw.)
        # float64: the linear predictor cancels beta * x ~ 70 against alpha ~ -60, and the reference
        # is float64. float32 passed the same checks on the seeds tried; float64 costs no time here.
        nuts={"dense_mass": True, "dtype": "float64"},
    )


def radon_case() -> ReferenceCase:
    fname = "radon_mn-varying_intercept.json"
    doc = load_json(fname)
    d = load_json(doc["data_file"])["data"]
    ref, names = _reference(doc)
    county = np.asarray(d["county_idx"], dtype=np.int64) - 1  # 1-based in the file
    return ReferenceCase(
        "radon_varying_intercept", radon_varying_intercept,
        (county, np.asarray(d["floor_measure"], dtype=float)),
        {"log_radon": np.asarray(d["log_radon"], dtype=float), "J": int(d["J"])},
        ref, names, fname,
        nuts={},
    )


CASES: dict[str, Callable[[], ReferenceCase]] = {
    "eight_schools_noncentered": eight_schools_case,
    "kidiq_interaction": kidiq_case,
    "kilpisjarvi": kilpisjarvi_case,
    "radon_varying_intercept": radon_case,
}
