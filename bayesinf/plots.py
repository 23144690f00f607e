"""Plots for checking a fit, each returning a ``matplotlib.figure.Figure``.

ArviZ plots (trace, rank, forest, posterior predictive, LOO-PIT) go through ``bayesinf.arviz_io``;
the calibration plots (reliability diagram, PIT histogram, SBC ECDF difference) are drawn here.
Nothing is shown: display the figure in a notebook, or ``fig.savefig(path)``.
"""

from __future__ import annotations

import numpy as np

from . import arviz_io

__all__ = ["plot_trace", "plot_rank", "plot_forest", "plot_ppc", "plot_loo_pit", "plot_reliability", "plot_pit",
           "plot_calibration", "plot_sbc"]


def _tree(post_or_tree, **kwargs):
    return post_or_tree.to_arviz(**kwargs) if hasattr(post_or_tree, "to_arviz") else post_or_tree


def plot_trace(post, var_names=None):
    """Trace and marginal density per parameter (ArviZ ``plot_trace_dist``)."""
    return arviz_io.figure_of(arviz_io.plot_trace(_tree(post, log_likelihood=False), var_names=var_names))


def plot_rank(post, var_names=None):
    """Rank ECDF plot per parameter over chains (ArviZ ``plot_rank``)."""
    return arviz_io.figure_of(arviz_io.plot_rank(_tree(post, log_likelihood=False), var_names=var_names))


def plot_forest(post, var_names=None):
    """Forest plot of the posterior (ArviZ ``plot_forest``, chains combined)."""
    return arviz_io.figure_of(arviz_io.plot_forest(_tree(post, log_likelihood=False), var_names=var_names))


def plot_ppc(post, seed: int = 0, num_samples: int = 50):
    """Posterior predictive densities over the observed data's (ArviZ ``plot_ppc_dist``).

    ``post`` is a Posterior (predictive draws made with ``seed``) or a DataTree from
    ``bayesinf.check.ppc``.
    """
    tree = _tree(post, log_likelihood=False, posterior_predictive=True, seed=seed)
    return arviz_io.figure_of(arviz_io.plot_ppc(tree, num_samples=num_samples))


def plot_loo_pit(post, seed: int = 0, var_names=None):
    """LOO-PIT ECDF difference with its simultaneous band (ArviZ ``plot_loo_pit``)."""
    tree = _tree(post, log_likelihood=True, posterior_predictive=True, seed=seed)
    return arviz_io.figure_of(arviz_io.plot_loo_pit(tree, var_names=var_names))


def _axes(ax, size=(5, 4)):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=size)
    return fig, ax


def plot_reliability(report, k: float = 3.0, ax=None):
    """Reliability diagram of a ``CalibrationReport``: observed coverage against nominal, with a
    ``k``-binomial-SE band around the diagonal (where calibrated intervals fall)."""
    fig, ax = _axes(ax)
    levels = np.asarray(report.levels)
    grid = np.linspace(0.0, 1.0, 201)
    se = np.sqrt(grid * (1 - grid) / report.num_rows)
    ax.fill_between(grid, grid - k * se, grid + k * se, color="0.85", label=f"calibrated ± {k:g} SE")
    ax.plot([0, 1], [0, 1], color="0.5", lw=1)
    ax.errorbar(levels, report.coverage, yerr=k * report.coverage_se, fmt="o-", color="C0", capsize=3,
                label="observed")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal coverage", ylabel="observed coverage",
           title=f"Reliability ({report.num_rows} rows)")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def plot_pit(report, num_bins: int = 20, k: float = 3.0, ax=None):
    """Histogram of the PIT values of a ``CalibrationReport`` with a ``k``-SE band of a uniform
    histogram: a U shape means an overconfident predictive, a hump an underconfident one, a slope
    a biased one."""
    fig, ax = _axes(ax)
    n = report.pit.size
    expected = 1.0 / num_bins  # share of rows per bin
    se = np.sqrt(expected * (1 - expected) / n)
    ax.axhspan((expected - k * se) * num_bins, (expected + k * se) * num_bins, color="0.85",
               label=f"uniform ± {k:g} SE")
    ax.hist(report.pit, bins=num_bins, range=(0, 1), density=True, color="C0", alpha=0.8, label="PIT")
    ax.axhline(1.0, color="0.5", lw=1)
    ax.set(xlim=(0, 1), xlabel="PIT", ylabel="density", title=f"PIT (p={report.pit_test.p_value:.2g})")
    ax.legend(loc="upper center", fontsize="small")
    return fig


def plot_calibration(report, num_bins: int = 20):
    """Reliability diagram and PIT histogram side by side (two axes)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    plot_reliability(report, ax=left)
    plot_pit(report, num_bins=num_bins, ax=right)
    fig.suptitle(f"Calibration of '{report.site}'")
    return fig


def plot_sbc(result):
    """ECDF difference of the SBC ranks of every scalar parameter (one axis each) with the
    simultaneous band in which uniform ranks stay with probability ``1 - alpha``."""
    import matplotlib.pyplot as plt

    diffs = result.ecdf_difference()
    cols = min(4, len(diffs))
    rows = -(-len(diffs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, layout="constrained")
    x = np.arange(1, result.num_ranks + 1) / result.num_ranks
    flagged = set(result.flagged)
    for ax, (name, d) in zip(axes.ravel(), diffs.items()):
        ax.fill_between(x, -result.ecdf_band, result.ecdf_band, color="0.85", step="post")
        ax.step(x, d, where="post", color="C3" if name in flagged else "C0")
        ax.axhline(0, color="0.5", lw=1)
        ax.set_title(f"{name} (p={result.tests[name].p_value:.2g})", fontsize="small")
        ax.set_xlim(0, 1)
    for ax in axes.ravel()[len(diffs):]:
        ax.remove()
    fig.supxlabel("fractional rank")
    fig.supylabel("ECDF difference")
    return fig
