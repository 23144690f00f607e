"""The only module that talks to ArviZ (1.x: DataTree, arviz-stats, arviz-plots).

Keeping every ArviZ call here makes an ArviZ API change a one-file change.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["to_datatree", "summary", "bfmi", "plot_trace", "plot_rank", "plot_ppc", "save_figure", "loo",
           "compare", "loo_pit", "plot_forest", "plot_loo_pit", "plot_ecdf_pit", "figure_of"]


def to_datatree(posterior: Mapping[str, np.ndarray], *, sample_stats=None, observed_data=None,
                log_likelihood=None, posterior_predictive=None, constant_data=None,
                dims=None, coords=None, attrs=None):
    """Build an ``xarray.DataTree`` from dicts of arrays shaped ``(chain, draw, ...)``."""
    import arviz as az

    groups = {"posterior": dict(posterior)}
    for name, value in (("sample_stats", sample_stats), ("observed_data", observed_data),
                        ("log_likelihood", log_likelihood), ("posterior_predictive", posterior_predictive),
                        ("constant_data", constant_data)):
        if value:
            groups[name] = dict(value)
    tree = az.from_dict(groups, dims=dims or None, coords=coords or None)
    if attrs:
        tree.attrs.update(attrs)
    return tree


def summary(tree, *, level: float, kind: str):
    """ArviZ summary table (pandas) of the posterior group with a ``level`` interval of ``kind``."""
    import arviz as az

    return az.summary(tree, ci_prob=level, ci_kind=kind, round_to="none")


def bfmi(tree) -> np.ndarray:
    """Bayesian fraction of missing information per chain, from ``sample_stats.energy``."""
    import arviz as az

    return np.asarray(az.bfmi(tree)["energy"])


def plot_trace(tree, var_names=None):
    import arviz as az

    return az.plot_trace_dist(tree, var_names=var_names, backend="matplotlib")


def plot_rank(tree, var_names=None):
    import arviz as az

    return az.plot_rank(tree, var_names=var_names, backend="matplotlib")


def plot_ppc(tree, num_samples: int = 50):
    import arviz as az

    return az.plot_ppc_dist(tree, num_samples=num_samples, backend="matplotlib")


def save_figure(plot_collection, path) -> None:
    """Save an arviz-plots ``PlotCollection`` (matplotlib backend) as an image file."""
    plot_collection.savefig(str(path))


# ----------------------------------------------------------------------------- model checking
def loo(tree, var_name: str | None = None):
    """PSIS-LOO of the log_likelihood group (ArviZ ``ELPDData``: ``elpd``, ``se``, ``p``, ``pareto_k``,
    ``good_k``).

    ArviZ's own warning about high Pareto k is silenced: the caller reads ``pareto_k`` against
    ``good_k`` and reports which model and how many observations (``bayesinf.check.compare``).
    """
    import warnings

    import arviz as az

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto distribution")
        return az.loo(tree, pointwise=True, var_name=var_name)


def compare(trees: Mapping, method: str = "stacking", var_name: str | None = None):
    """ArviZ model comparison table (pandas) from a mapping name -> DataTree or ELPDData, by PSIS-LOO."""
    import arviz as az

    return az.compare(dict(trees), method=method, var_name=var_name, round_to="none")


def loo_pit(tree, var_name: str | None = None) -> np.ndarray:
    """LOO-PIT values of the observed data, one per observation (needs posterior_predictive and log_likelihood)."""
    import arviz as az

    out = az.loo_pit(tree, var_names=var_name)
    name = var_name or next(iter(out.data_vars))
    return np.clip(np.asarray(out[name].values), 0.0, 1.0)  # ArviZ can return 1 + 2e-16


def plot_forest(tree, var_names=None):
    import arviz as az

    return az.plot_forest(tree, var_names=var_names, combined=True, backend="matplotlib")


def plot_loo_pit(tree, var_names=None):
    import arviz as az

    return az.plot_loo_pit(tree, var_names=var_names, backend="matplotlib")


def plot_ecdf_pit(tree, var_names=None, group: str = "prior_sbc"):
    import arviz as az

    return az.plot_ecdf_pit(tree, var_names=var_names, group=group, backend="matplotlib")


def figure_of(plot_collection):
    """The matplotlib ``Figure`` of an arviz-plots ``PlotCollection``."""
    return plot_collection.viz["figure"].item()
