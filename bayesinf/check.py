"""Model checking: simulation-based calibration of the inference, posterior predictive checks on the
observed data, LOO-PIT and PSIS-LOO model comparison (through ArviZ 1.x).

>>> result = sbc(model, X, n_simulations=100, method="nuts")          # doctest: +SKIP
>>> result.to_pandas(); result.plot()                                  # doctest: +SKIP
>>> compare({"homoscedastic": post_a, "heteroscedastic": post_b})      # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from . import arviz_io
from .calibration.report import UniformityTest, uniformity_test
from .data import bind_arguments, check_seed
from .errors import InputError, warn

__all__ = ["sbc", "SBCResult", "compare", "ppc", "loo_pit", "ParetoKWarning"]

#: Fit settings of each SBC refit unless ``fit_kwargs`` says otherwise: short NUTS runs (they
#: reuse one compiled sampler) and SVI with the default guide.
SBC_FIT_DEFAULTS = {
    "nuts": dict(chains=4, draws=250, warmup=250),
    "svi": dict(num_steps=5000, check_every=500, draws=1000),
}


class ParetoKWarning(UserWarning):
    """PSIS-LOO found observations with a high Pareto k: that model's elpd estimate is unreliable."""


# ----------------------------------------------------------------------------- SBC
@dataclass(frozen=True)
class SBCResult:
    """Ranks of the prior draws among posterior draws, per parameter, over SBC simulations.

    Attributes
    ----------
    ranks : dict of str -> np.ndarray
        Rank of the true value among ``num_ranks - 1`` thinned posterior draws,
        ``(simulations, *param_shape)``, integers in ``0..num_ranks - 1``.
    num_ranks : int
        Number of possible ranks (thinned draws + 1).
    alpha : float
        Level of each parameter's uniformity test.
    method : str
        Inference method checked.
    tests : dict of str -> UniformityTest
        Chi-square test of uniform ranks per scalar parameter (``"b[0]"``, ...).
    ecdf_band : float
        Half-width of the simultaneous ``1 - alpha`` band of the ECDF difference (Monte Carlo,
        uniform ranks); a parameter whose ECDF difference leaves it is flagged too.
    info : dict
        Per-simulation facts: ``divergences`` ``(simulations,)`` for NUTS.
    """

    ranks: Mapping[str, np.ndarray]
    num_ranks: int
    alpha: float
    method: str
    tests: Mapping[str, UniformityTest]
    ecdf_band: float
    info: dict = field(default_factory=dict)

    @property
    def num_simulations(self) -> int:
        return int(next(iter(self.ranks.values())).shape[0])

    def scalar_ranks(self) -> dict[str, np.ndarray]:
        """Ranks per scalar parameter (``"b[0]"``...), ``(simulations,)`` each."""
        out = {}
        for name, r in self.ranks.items():
            flat = r.reshape(r.shape[0], -1)
            if r.ndim == 1:
                out[name] = flat[:, 0]
                continue
            for j, idx in enumerate(np.ndindex(*r.shape[1:])):
                out[f"{name}[{','.join(map(str, idx))}]"] = flat[:, j]
        return out

    def ecdf_difference(self) -> dict[str, np.ndarray]:
        """``ECDF(rank <= k) - (k + 1) / num_ranks`` for ``k = 0..num_ranks - 1``, per scalar parameter."""
        expected = np.arange(1, self.num_ranks + 1) / self.num_ranks
        return {k: np.cumsum(np.bincount(v, minlength=self.num_ranks)) / v.size - expected
                for k, v in self.scalar_ranks().items()}

    @property
    def flagged(self) -> list[str]:
        """Parameters whose ranks fail the chi-square test at ``alpha / parameters`` (Bonferroni) or
        whose ECDF difference leaves the simultaneous band."""
        level = self.alpha / max(1, len(self.tests))
        diffs = self.ecdf_difference()
        return [k for k, t in self.tests.items()
                if t.p_value < level or np.abs(diffs[k]).max() > self.ecdf_band]

    @property
    def ok(self) -> bool:
        """No parameter flagged."""
        return not self.flagged

    def to_pandas(self):
        """One row per scalar parameter: chi-square statistic, df, p-value, max |ECDF difference|, flagged."""
        import pandas as pd

        diffs = self.ecdf_difference()
        flagged = set(self.flagged)
        return pd.DataFrame({
            "chi2": [t.statistic for t in self.tests.values()],
            "df": [t.df for t in self.tests.values()],
            "p_value": [t.p_value for t in self.tests.values()],
            "max_ecdf_diff": [float(np.abs(diffs[k]).max()) for k in self.tests],
            "flagged": [k in flagged for k in self.tests],
        }, index=list(self.tests))

    def plot(self):
        """ECDF-difference plot of the ranks with the simultaneous band; returns the figure."""
        from .plots import plot_sbc

        return plot_sbc(self)

    def __repr__(self):
        verdict = "ranks uniform" if self.ok else f"NON-UNIFORM ranks: {', '.join(self.flagged)}"
        return (f"SBCResult(method={self.method!r}, simulations={self.num_simulations}, ranks=0..{self.num_ranks - 1}, "
                f"alpha={self.alpha:g}): {verdict}")


def _ecdf_band(num_simulations: int, num_ranks: int, alpha: float, seed: int = 0, reps: int = 2000) -> float:
    """``1 - alpha`` quantile of ``max_k |ECDF difference|`` for uniform ranks (Monte Carlo)."""
    rng = np.random.default_rng(seed)
    ranks = rng.integers(0, num_ranks, size=(reps, num_simulations))
    counts = np.zeros((reps, num_ranks))
    np.add.at(counts, (np.repeat(np.arange(reps), num_simulations), ranks.ravel()), 1)
    expected = np.arange(1, num_ranks + 1) / num_ranks
    stat = np.abs(np.cumsum(counts, axis=1) / num_simulations - expected).max(axis=1)
    return float(np.quantile(stat, 1 - alpha))


def _observed_args(model: Callable, bound: Mapping, trace, observed: Mapping[str, str] | None) -> dict[str, str]:
    """Observed site -> model argument: given, or the unset parameters named like a sample site."""
    parameters = inspect.signature(model).parameters
    if observed is not None:
        for s, a in observed.items():
            if s not in trace or a not in parameters:
                raise InputError("observed", f"maps site '{s}' to argument '{a}', which the model lacks",
                                 "site -> argument pairs of the model")
        return dict(observed)
    found = {name: name for name, p in parameters.items()
             if name not in bound and p.default is None and name in trace and trace[name]["type"] == "sample"}
    if not found:
        raise InputError("observed", "could not be inferred: no model argument defaulting to None is named like "
                         "a sample site", hint="Pass observed={'site': 'argument'}.")
    return found


def sbc(model: Callable, *args, n_simulations: int = 100, method: str = "nuts", num_ranks: int = 100,
        alpha: float = 0.01, seed: int = 0, observed: Mapping[str, str] | None = None, params=None,
        fit_kwargs: Mapping | None = None, progress: bool = False, **kwargs) -> SBCResult:
    """Simulation-based calibration (Talts et al. 2018) of ``bayesinf.fit`` on ``model``.

    For each simulation: draw parameters from the prior and data from the model given them, fit
    the model to that data, and record the rank of the true value among ``num_ranks - 1`` posterior
    draws thinned evenly (over chains, which also cuts autocorrelation). If inference is exact the
    ranks are uniform on ``0..num_ranks - 1``; a too-narrow posterior gives U-shaped ranks, a
    biased one sloped ranks.

    Parameters
    ----------
    model : callable
        NumPyro model.
    *args, **kwargs
        The model's inputs (design matrix, ...), observed arguments left out.
    n_simulations : int
        Number of simulated data sets (each one fit).
    method : {"nuts", "svi"}
        Inference method checked.
    num_ranks : int
        Possible rank values; ``num_ranks - 1`` posterior draws are kept per fit.
    alpha : float
        Level of each parameter's chi-square test of uniform ranks.
    seed : int
        Seed of the prior simulations and of each fit (fit ``i`` uses ``seed + 1 + i``).
    observed : dict of str -> str, optional
        Observed site -> model argument; default: arguments defaulting to None named like a site.
    params : sequence of str, optional
        Latent sites to rank (default: all).
    fit_kwargs : mapping, optional
        Options of ``bayesinf.fit`` (``chains``, ``draws``, ``guide``, ...); see ``SBC_FIT_DEFAULTS``.
    progress : bool
        Print one dot per fit.

    Returns
    -------
    SBCResult

    References
    ----------
    Talts, S., Betancourt, M., Simpson, D., Vehtari, A. & Gelman, A. (2018). Validating Bayesian
    inference algorithms with simulation-based calibration. arXiv:1804.06788.
    """
    import jax
    from numpyro import handlers
    from numpyro.infer import Predictive

    from .fitting import METHODS, fit

    if method not in METHODS:
        raise InputError("method", f"of sbc must be one of {METHODS}; got {method!r}")
    if not isinstance(n_simulations, (int, np.integer)) or n_simulations < 2:
        raise InputError("n_simulations", f"of sbc must be an int >= 2; got {n_simulations!r}")
    if not isinstance(num_ranks, (int, np.integer)) or num_ranks < 2:
        raise InputError("num_ranks", f"of sbc must be an int >= 2; got {num_ranks!r}")
    seed = check_seed(seed, "sbc")
    bound = bind_arguments(model, args, kwargs, partial=True)
    trace = handlers.trace(handlers.seed(model, seed)).get_trace(**bound)
    obs = _observed_args(model, bound, trace, observed)
    latent = [k for k, s in trace.items() if s["type"] == "sample" and k not in obs and not s.get("is_observed")]
    if params is not None:
        missing = [p for p in params if p not in latent]
        if missing:
            raise InputError("params", f"names {missing}, which are not latent sites of the model", f"some of {latent}")
        latent = list(params)
    prior = Predictive(model, num_samples=int(n_simulations))(jax.random.PRNGKey(seed), **bound)
    prior = {k: np.asarray(v) for k, v in prior.items()}
    reserved = sorted(set(fit_kwargs or {}) & {"seed", "method", "warn", "progress", "model_kwargs"})
    if reserved:
        raise InputError("fit_kwargs", f"sets {reserved}, which sbc controls",
                         hint="Pass sbc(seed=..., method=...) instead; each simulation's fit gets its own seed.")
    options = {**SBC_FIT_DEFAULTS[method], **dict(fit_kwargs or {})}
    ranks = {p: [] for p in latent}
    divergences = []
    for i in range(int(n_simulations)):
        data = {a: prior[s][i] for s, a in obs.items()}
        post = fit(model, *args, method=method, seed=seed + 1 + i, warn=False, progress=False,
                   model_kwargs={**kwargs, **data}, **options)
        flat = post.flat_draws(latent)
        total = next(iter(flat.values())).shape[0]
        if total < num_ranks - 1:
            raise InputError("num_ranks", f"of sbc needs {num_ranks - 1} posterior draws per fit; the fit made {total}",
                             hint="Raise draws (and chains) in fit_kwargs, or lower num_ranks.")
        keep = np.linspace(0, total - 1, num_ranks - 1).round().astype(np.int64)
        for p in latent:
            ranks[p].append((flat[p][keep] < prior[p][i]).sum(axis=0))
        if "diverging" in post.sample_stats:
            divergences.append(int(post.sample_stats["diverging"].sum()))
        if progress:
            print(".", end="", flush=True)
    ranks = {p: np.stack(v).astype(np.int64) for p, v in ranks.items()}
    partial = SBCResult(ranks, int(num_ranks), float(alpha), method, {}, 0.0)
    tests = {k: uniformity_test(v, alpha=alpha, num_values=int(num_ranks)) for k, v in partial.scalar_ranks().items()}
    band = _ecdf_band(int(n_simulations), int(num_ranks), alpha / max(1, len(tests)))
    info = {"divergences": np.asarray(divergences)} if divergences else {}
    return SBCResult(ranks, int(num_ranks), float(alpha), method, tests, band, info)


# ----------------------------------------------------------------------------- PPC and LOO
def ppc(post, seed: int = 0):
    """The posterior's ArviZ ``DataTree`` with a posterior_predictive group on the observed data
    (drawn with ``seed``), ready for ``bayesinf.plots.plot_ppc`` or any ArviZ check."""
    return post.to_arviz(log_likelihood=True, posterior_predictive=True, seed=check_seed(seed, "ppc"))


def loo_pit(post, seed: int = 0, site: str | None = None) -> np.ndarray:
    """LOO-PIT of the observed data: the PIT of each observation under the leave-one-out
    predictive, approximated by PSIS (uniform when the model is calibrated).

    Returns
    -------
    np.ndarray
        ``(rows,)`` values in [0, 1].
    """
    return arviz_io.loo_pit(ppc(post, seed), var_name=site)


def _observed_values(post, site: str | None):
    """The observed values ``site`` (or the only observed site) was fit to, or None if unknown."""
    site = site or post.sites.observed[0]
    argument = post.sites.observed_args.get(site)
    return None if argument is None or argument not in post.data else np.asarray(post.data[argument])


def compare(posteriors: Mapping[str, object], method: str = "stacking", site: str | None = None):
    """Compare models by PSIS-LOO expected log predictive density (ArviZ 1.x has no WAIC).

    Parameters
    ----------
    posteriors : mapping of str -> Posterior
        Two or more models fit to the same observations.
    method : {"stacking", "BB-pseudo-BMA", "pseudo-BMA"}
        How the model weights are computed.
    site : str, optional
        Observed site, for models with several.

    Returns
    -------
    pandas.DataFrame
        ArviZ's table, best model first: ``rank, elpd, p, elpd_diff, weight, se, dse, warning``,
        plus ``pareto_k_max`` and ``num_high_k`` (observations with k above ArviZ's threshold
        ``min(1 - 1/log10(draws), 0.7)``).

    Warns
    -----
    ParetoKWarning
        A model has observations with high Pareto k (its elpd is unreliable; refit with those
        observations left out, or use K-fold CV).
    """
    if not isinstance(posteriors, Mapping) or len(posteriors) < 2:
        raise InputError("posteriors", "of compare must be a dict of at least two named posteriors",
                         "{'a': post_a, 'b': post_b}")
    elpd = {}
    for name, post in posteriors.items():
        if not hasattr(post, "to_arviz"):
            raise InputError(f"posteriors['{name}']", f"is a {type(post).__name__}", "a bayesinf Posterior")
    sites = {name: tuple(post.sites.observed) for name, post in posteriors.items()}
    if site is None and any(len(s) > 1 for s in sites.values()):
        several = next(s for s in sites.values() if len(s) > 1)
        raise InputError("site", f"of compare is needed: the models observe {list(several)}", "one of them")
    for name, post in posteriors.items():
        elpd[name] = arviz_io.loo(post.to_arviz(log_likelihood=True), var_name=site)
    rows = {name: int(np.size(e.pareto_k)) for name, e in elpd.items()}
    observed = {name: _observed_values(post, site) for name, post in posteriors.items()}
    first = next(iter(observed.values()))
    if len(set(rows.values())) > 1 or any(v is not None and first is not None and not np.array_equal(v, first)
                                          for v in observed.values()):
        raise InputError("posteriors", f"were fit to different observations (rows per model: {rows})",
                         "models fit to the same observations", "The elpd of different data cannot be compared.")
    table = arviz_io.compare(elpd, method=method, var_name=site)
    k_max, num_high = {}, {}
    for name, e in elpd.items():
        k = np.asarray(e.pareto_k)
        k_max[name] = float(np.nanmax(k))
        num_high[name] = int((k > e.good_k).sum())
    table["pareto_k_max"] = [k_max[n] for n in table.index]
    table["num_high_k"] = [num_high[n] for n in table.index]
    bad = {n: c for n, c in num_high.items() if c}
    if bad:
        detail = ", ".join(f"'{n}': {c}" for n, c in bad.items())
        warn(ParetoKWarning(f"PSIS-LOO is unreliable for some observations (high Pareto k: {detail}); "
                            "treat those models' elpd with caution"))
    return table
