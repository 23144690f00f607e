"""NUTS (and, for the record, SVI) posteriors against reference posteriors.

References (copied into ``tests/data/``; see ``reference_models.py`` for sources and licence):
posteriordb's ``eight_schools-eight_schools_noncentered``, ``kidiq-kidscore_interaction`` and
``kilpisjarvi_mod-kilpisjarvi`` (Stan NUTS, 10 x 1000 draws, bulk ESS ~9,000-10,500), and
``radon_mn-varying_intercept`` (float64 NUTS, 8 x 5000 draws, bulk ESS >= 13,000).

Comparison rule, per parameter (posteriordb README, "How to compare", the stricter version):

- mean: ``|mean - mean_ref| < 4 * sd_ref * sqrt(1/ess + 1/ess_ref)``, with ``ess`` our bulk ESS and
  ``ess_ref`` the reference's bulk ESS: 4 Monte Carlo standard errors of the difference.
- sd: ``|sd / sd_ref - 1| < 0.10`` when our bulk ESS >= 1000; below that the tolerance grows as
  ``0.10 * sqrt(1000 / ess)`` (the standard error of an sd estimate goes as ``1/sqrt(ess)``).
  Heavy-tailed parameters get the bound derived from the standard error of a sample sd,
  ``se(sd)/sd = sqrt((kurtosis - 1) / (4 n))`` (delta method on the sample variance, whose variance
  is ``(m4 - sigma^4) / n``): ``4 * sqrt((kurtosis - 1) / 4 * (1/ess + 1/ess_ref))``, or 0.10 if
  larger. For a normal (kurtosis 3) and ess ~3000 that is 0.06, inside the 0.10 rule; for eight
  schools' ``tau`` (see ``HEAVY_TAILED``) about 0.12.
- and per fit: no divergent transitions, R-hat < 1.01 for every latent site, and no
  ``ConvergenceWarning`` from ``bi.fit`` (pyproject turns warnings into errors).

Settings: 4 chains x 1000 draws after 1000 warmup, fixed seeds; per model (``ReferenceCase.nuts``):
eight schools ``target_accept=0.95`` (at the default 0.8 the non-centred model still gives 3-5
divergences per 4000 draws near tau = 0); kidiq ``dense_mass=True``; kilpisjarvi
``dense_mass=True, dtype="float64"``; radon the defaults. The reasons are in ``reference_models.py``.

The default (fast) set fits each model once (seed 0); ``-m slow`` repeats the NUTS checks with
four more seeds, so a pass is not one lucky seed, and measures SVI.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import bayesinf as bi
import reference_models as rm

CHAINS, DRAWS, WARMUP = 4, 1000, 1000
FAST_SEED = 0
SLOW_SEEDS = (1, 2, 3, 4)

MEAN_MCSE = 4.0  # mean within this many standard errors of the difference
SD_TOL = 0.10  # relative sd error allowed at ESS >= SD_ESS
SD_ESS = 1000
RHAT_MAX = 1.01

#: Parameters with heavy tails -> their (non-excess) kurtosis, for the sd bound above.
#: eight schools' tau: half-Cauchy prior; the sample kurtosis of 80,000 draws (4 x 20,000, seed 7,
#: target_accept 0.95) was 8.1. Sample kurtosis is biased low for heavy tails, so 9 is used.
#: (theta_j reach about 6: at ess ~4500 their 4-SE sd bound is 0.08, inside the 0.10 rule.)
HEAVY_TAILED = {("eight_schools_noncentered", "tau"): 9.0}

NUTS_CASES = list(rm.CASES)


# --------------------------------------------------------------------------- helpers
_FITS: dict = {}


def fit_nuts(case: rm.ReferenceCase, seed: int):
    """NUTS fit of ``case`` (cached per case and seed for this test session) and its wall time."""
    key = (case.name, seed)
    if key not in _FITS:
        start = time.perf_counter()
        post = bi.fit(case.model, *case.args, **case.kwargs, method="nuts", chains=CHAINS, draws=DRAWS,
                      warmup=WARMUP, seed=seed, progress=False, **case.nuts)
        _FITS[key] = post, time.perf_counter() - start
    return _FITS[key]


def sd_tolerance(case_name: str, param: str, ess: float, ess_ref: float) -> float:
    kurtosis = HEAVY_TAILED.get((case_name, param))
    if kurtosis is not None:
        return max(SD_TOL, 4.0 * math.sqrt((kurtosis - 1.0) / 4.0 * (1.0 / ess + 1.0 / ess_ref)))
    return SD_TOL * math.sqrt(max(1.0, SD_ESS / ess))


def compare(case: rm.ReferenceCase, summary) -> list[dict]:
    """One row per reference parameter: our estimates, the reference's and the two criteria."""
    missing = sorted(set(case.reference) - set(summary.index))
    assert not missing, f"{case.name}: summary has no rows {missing} (index: {list(summary.index)[:12]} ...)"
    rows = []
    for ours, ref in case.reference.items():
        r = summary.loc[ours]
        ess = float(r["ess_bulk"])
        se_diff = ref["sd"] * math.sqrt(1.0 / ess + 1.0 / ref["ess_bulk"])
        rows.append({
            "param": ours, "ref_name": case.reference_names[ours],
            "mean": float(r["mean"]), "ref_mean": ref["mean"], "sd": float(r["sd"]), "ref_sd": ref["sd"],
            "ess": ess, "r_hat": float(r["r_hat"]),
            "z": (float(r["mean"]) - ref["mean"]) / se_diff,  # mean error in MCSE units
            "sd_err": float(r["sd"]) / ref["sd"] - 1.0,
            "sd_tol": sd_tolerance(case.name, ours, ess, ref["ess_bulk"]),
        })
    return rows


def check_nuts(case: rm.ReferenceCase, seed: int, record_property=None) -> None:
    post, seconds = fit_nuts(case, seed)
    summary = post.summary()
    rows = compare(case, summary)
    problems = []

    divergences = int(np.sum(post.sample_stats["diverging"]))
    if divergences:
        problems.append(f"{divergences} divergent transitions")
    latent = summary.loc[[i for i in summary.index if i.split("[")[0] in post.sites.latent]]
    rhat = latent["r_hat"].astype(float)
    if not (rhat < RHAT_MAX).all():
        problems.append(f"R-hat >= {RHAT_MAX}: {rhat[rhat >= RHAT_MAX].round(4).to_dict()}")
    for r in rows:
        if not abs(r["z"]) < MEAN_MCSE:
            problems.append(f"{r['ref_name']}: mean {r['mean']:.5g} vs {r['ref_mean']:.5g} is {r['z']:+.2f} MCSE "
                            f"(ess {r['ess']:.0f})")
        if not abs(r["sd_err"]) < r["sd_tol"]:
            problems.append(f"{r['ref_name']}: sd {r['sd']:.5g} vs {r['ref_sd']:.5g} is {r['sd_err']:+.1%} "
                            f"(tolerance {r['sd_tol']:.1%}, ess {r['ess']:.0f})")

    worst_z = max(rows, key=lambda r: abs(r["z"]))
    worst_sd = max(rows, key=lambda r: abs(r["sd_err"]))
    figures = {
        "seconds": round(seconds, 2), "divergences": divergences, "r_hat_max": round(float(rhat.max()), 4),
        "ess_bulk_min": round(min(r["ess"] for r in rows)), "worst_mean_mcse": f"{worst_z['ref_name']} {worst_z['z']:+.2f}",
        "worst_sd_ratio": f"{worst_sd['ref_name']} {1 + worst_sd['sd_err']:.3f}",
        "tree_depth_mean": round(float(np.mean(post.sample_stats["tree_depth"])), 2),
    }
    print(f"\n{case.name} seed {seed}: {figures}")
    if record_property is not None:
        for k, v in figures.items():
            record_property(k, v)
    assert not problems, f"{case.name} (seed {seed}, settings {case.nuts}):\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------- reference files
def test_reference_files_are_bundled():
    """The copies in tests/data are complete: the tests never read ../shared."""
    licence = (rm.DATA_DIR / "LICENCE-posteriordb.md").read_text(encoding="utf-8")
    assert "Redistribution and use in source and binary forms" in licence
    for make in rm.CASES.values():
        case = make()
        doc = rm.load_json(case.source_file)
        assert len(case.reference) == len(doc["parameters"])
        for ours, theirs in case.reference_names.items():
            assert {"mean", "sd", "ess_bulk"} <= set(doc["reference"]["stats"][theirs])
            assert rm.to_zero_based(theirs) == ours


def test_to_zero_based():
    assert rm.to_zero_based("theta[1]") == "theta[0]"
    assert rm.to_zero_based("alpha[85]") == "alpha[84]"
    assert rm.to_zero_based("beta[3,2]") == "beta[2, 1]"
    assert rm.to_zero_based("sigma_y") == "sigma_y"


# --------------------------------------------------------------------------- NUTS
@pytest.mark.parametrize("name", NUTS_CASES)
def test_nuts_matches_reference(name, record_property):
    check_nuts(rm.CASES[name](), FAST_SEED, record_property)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("name", NUTS_CASES)
def test_nuts_matches_reference_other_seeds(name, seed, record_property):
    check_nuts(rm.CASES[name](), seed, record_property)


# --------------------------------------------------------------------------- SVI (measured)
#: What SVI at bayesinf's default settings (Adam, lr 0.01, <= 20,000 steps, the default stopping
#: rule) reaches, with 4000 draws from the guide, seed 0. Tolerances are (max |mean - ref| / sd_ref,
#: max |sd / sd_ref - 1|) over all reference parameters, about 1.5 x the worst value measured over
#: seeds 0-4 (given in the comments); None makes no claim (the figure is only recorded).
SVI_TOLERANCE = {
    # measured mean 0.09-0.22 (tau, theta[6]), sd 0.13-0.21 (tau, theta[5..6])
    ("eight_schools_noncentered", "mvn"): (0.35, 0.35),
    # mean field underestimates tau's sd: measured mean 0.20-0.38, sd 0.20-0.46
    ("eight_schools_noncentered", "normal"): (0.6, 0.7),
    # uncentred mom_iq: the loss flattens along the beta ridge long before the optimum is reached;
    # measured mean 1.9-2.0 sd (beta[2]), sd 61-67% too small. Only a gross-failure guard.
    ("kidiq_interaction", "mvn"): (3.0, 0.9),
    # measured mean 2.1-2.2 sd, sd ~95% too small (a ratio >= 0 can't fail a bound of 1): no sd claim.
    ("kidiq_interaction", "normal"): (3.0, None),
    # corr(alpha, beta) ~ -0.9999 at x ~ 4000: both guides miss; sigma's mean 19-27 sd too large.
    ("kilpisjarvi", "mvn"): (None, None),
    ("kilpisjarvi", "normal"): (None, None),
    # the stopping rule ends after ~5000 steps: measured mean 0.28-0.42 (alphas), sd of sigma_y
    # 1.9-2.1x too large (it shrinks to within 0.3 when all 20,000 steps run).
    ("radon_varying_intercept", "mvn"): (0.6, 1.6),
    # mean field: measured mean 0.36-0.41, sd of sigma_alpha 39-45% too small
    ("radon_varying_intercept", "normal"): (0.6, 0.7),
}


def svi_errors(case: rm.ReferenceCase, post) -> dict:
    """Max |mean - ref|/sd_ref and max |sd/ref_sd - 1| over the reference parameters, from the
    guide's iid draws (plain numpy: no ESS is involved)."""
    draws = post.flat_draws()
    mean_err, sd_err = {}, {}
    for ours, ref in case.reference.items():
        base, _, idx = ours.partition("[")
        x = draws[base] if not idx else draws[base][:, int(idx.rstrip("]"))]
        mean_err[ours] = abs(float(np.mean(x)) - ref["mean"]) / ref["sd"]
        sd_err[ours] = abs(float(np.std(x, ddof=1)) / ref["sd"] - 1.0)
    m = max(mean_err, key=mean_err.get)
    s = max(sd_err, key=sd_err.get)
    return {"mean_err": mean_err[m], "mean_err_param": m, "sd_err": sd_err[s], "sd_err_param": s}


@pytest.mark.slow
@pytest.mark.parametrize("guide", ["mvn", "normal"])
@pytest.mark.parametrize("name", NUTS_CASES)
def test_svi_against_reference(name, guide, record_property):
    case = rm.CASES[name]()
    start = time.perf_counter()
    # warn=False: the verdict is recorded below; a fit stopped at the step limit is part of the measure.
    post = bi.fit(case.model, *case.args, **case.kwargs, method="svi", guide=guide, draws=4000, seed=0,
                  progress=False, warn=False, dtype=case.nuts.get("dtype", "float32"))
    seconds = time.perf_counter() - start
    diagnosis = post.diagnose()
    errors = svi_errors(case, post)
    figures = {"seconds": round(seconds, 2), "num_steps": diagnosis.checks["num_steps"],
               "converged": diagnosis.checks["converged"],
               "max_mean_err_sd": f"{errors['mean_err_param']} {errors['mean_err']:.3f}",
               "max_sd_err": f"{errors['sd_err_param']} {errors['sd_err']:.3f}"}
    print(f"\nSVI {guide} {name}: {figures}")
    for k, v in figures.items():
        record_property(k, v)

    assert all(np.all(np.isfinite(v)) for v in post.draws.values())
    assert np.all(np.isfinite(post.losses))
    mean_tol, sd_tol = SVI_TOLERANCE[(name, guide)]
    if mean_tol is not None:
        assert errors["mean_err"] < mean_tol, figures
    if sd_tol is not None:
        assert errors["sd_err"] < sd_tol, figures


# --------------------------------------------------------------------------- bayesinf limitation
def test_improper_uniform_prior_fits():
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    def model(x, y=None):
        b = numpyro.sample("b", dist.ImproperUniform(constraints.real, (), event_shape=()))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("y", dist.Normal(b * x, 1.0), obs=y)

    # Flat prior, unit noise: the posterior of b is exactly Normal(sum(x*y)/sum(x^2), 1/sqrt(sum(x^2))).
    x = np.linspace(0.0, 1.0, 20)
    y = 2.0 * x + np.random.default_rng(0).normal(size=20)
    mean, sd = float(x @ y / (x @ x)), float(1.0 / np.sqrt(x @ x))
    post = bi.fit(model, x, y=y, chains=2, draws=1000, warmup=500, progress=False, seed=0)
    row = post.summary().loc["b"]
    assert abs(row["mean"] - mean) < 4 * sd / np.sqrt(row["ess_bulk"])  # k = 4 MCSE
    assert abs(row["sd"] / sd - 1) < 0.1
