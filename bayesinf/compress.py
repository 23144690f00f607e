"""Posterior compression: keep a few hundred of the posterior draws so prediction, whose cost is
linear in the number of draws, runs several times faster.

Every method *selects* draws (no weights, no new points), so a compressed posterior is an
ordinary ``Posterior``: all sites of a selected draw (latent, deterministic, discrete) stay
consistent with each other, and ``predict``, ``summary`` and ``save`` need no change.

Methods
-------
``"herding"`` (default)
    Greedy energy-distance minimization over the draws (kernel herding with the
    energy-distance kernel ``-|x - y|``, in standardized unconstrained space): adds, one at a
    time, the draw that lowers the energy distance to the posterior most. Deterministic.
``"thin"``
    Evenly spaced draws of every chain (chains kept when ``num_draws`` divides evenly).
``"random"``
    A uniformly random subset, without replacement.

Why herding, and why a subset: on the radon posterior (90 unconstrained dimensions, 4000
draws) herding's 500 draws reach an energy distance of 0.010 to the posterior, against 0.022
for thinning and 0.027 for a random subset; support points (Mak & Joseph 2018), free points
found by the convex-concave procedure, reach 0.0097 but are not draws, and replacing each by
its nearest draw gives back its random starting set in that many dimensions. Herding keeps
real, unweighted draws at nearly the support points' distance, so the predict path needs no
weights. Predictive-interval errors are measured in ``benchmarks/compress.py``.

References
----------
Chen, Y., Welling, M. and Smola, A. (2010). Super-samples from kernel herding. *UAI*.
Mak, S. and Joseph, V. R. (2018). Support points. *Annals of Statistics* 46(6A), 2562-2592.
Szekely, G. J. and Rizzo, M. L. (2013). Energy statistics. *J. Stat. Plan. Inference* 143(8).
"""

from __future__ import annotations

import numbers
from typing import Mapping

import numpy as np

from .errors import InputError

__all__ = ["METHODS", "compress", "select_draws", "unconstrained_draws", "energy_distance"]

METHODS = ("herding", "thin", "random")
#: Draws the energy distance is measured against: all of them up to this many, else a seeded
#: random subset of this size, which bounds the cost at ``O(draws * MAX_REFERENCE * dim)``.
MAX_REFERENCE = 4096


# ----------------------------------------------------------------------------- numerics (pure, jitted)
def _pairwise_distances(x, y):
    """Euclidean distances ``(len(x), len(y))`` via one matrix product (clamped at 0)."""
    import jax.numpy as jnp

    sq = jnp.sum(x * x, axis=1)[:, None] + jnp.sum(y * y, axis=1)[None, :] - 2.0 * x @ y.T
    return jnp.sqrt(jnp.maximum(sq, 0.0))


def _herding_fn(features, mean_distance, num_select):
    """Greedy energy-distance selection: ``(N,)`` indices into ``features`` ``(N, dim)``, of which
    the first ``num_select`` (a traced value: one compilation serves every size) are chosen.

    With ``a_c`` the mean distance of candidate ``c`` to all draws and ``S`` the ``t`` draws
    chosen so far, adding ``c`` changes the energy distance by a term proportional to
    ``(t + 1) a_c - sum_{s in S} |c - s|`` (up to terms that do not depend on ``c``), which is
    minimized; chosen draws are excluded.
    """
    import jax
    import jax.numpy as jnp

    num = features.shape[0]

    def step(t, state):
        chosen, to_chosen, taken = state
        score = (t + 1.0) * mean_distance - to_chosen
        score = jnp.where(taken, jnp.inf, score)
        best = jnp.argmin(score)
        distance = _pairwise_distances(features, features[best][None, :])[:, 0]
        return chosen.at[t].set(best), to_chosen + distance, taken.at[best].set(True)

    init = (jnp.zeros(num, dtype=jnp.int32), jnp.zeros(num, dtype=features.dtype), jnp.zeros(num, dtype=bool))
    return jax.lax.fori_loop(0, num_select, step, init)[0]


def _mean_distance_fn(x, y, block: int):
    """Mean distance of every row of ``x`` to all rows of ``y``, ``(len(x),)``, in row blocks of ``y``."""
    import jax
    import jax.numpy as jnp

    num_blocks = y.shape[0] // block
    total = jnp.zeros(x.shape[0], dtype=x.dtype)
    if num_blocks:  # static: shapes are known when tracing
        blocks = y[: num_blocks * block].reshape(num_blocks, block, y.shape[1])
        total = jax.lax.fori_loop(0, num_blocks, lambda i, acc: acc + _pairwise_distances(x, blocks[i]).sum(axis=1),
                                  total)
    rest = y[num_blocks * block:]
    total = total + _pairwise_distances(x, rest).sum(axis=1)
    return total / y.shape[0]


def _jitted():
    import jax

    global _JIT
    if _JIT is None:
        _JIT = {
            "herding": jax.jit(_herding_fn),
            "mean_distance": jax.jit(_mean_distance_fn, static_argnames="block"),
            "distances": jax.jit(_pairwise_distances),
        }
    return _JIT


_JIT = None
_BLOCK = 512


def energy_distance(selected: np.ndarray, features: np.ndarray, mean_distance: np.ndarray | None = None) -> float:
    """Energy distance between the points ``selected`` ``(n, dim)`` and the draws ``features`` ``(N, dim)``.

    ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` with X uniform on ``selected`` and Y on ``features``;
    ``mean_distance`` (the mean distance of each draw to all draws) saves the ``N^2`` term.
    """
    fns = _jitted()
    if mean_distance is None:
        mean_distance = np.asarray(fns["mean_distance"](features, features, block=_BLOCK))
    cross = float(np.mean(fns["mean_distance"](selected, features, block=_BLOCK)))
    within = float(np.mean(fns["distances"](selected, selected)))
    return 2.0 * cross - within - float(np.mean(mean_distance))


# ----------------------------------------------------------------------------- features
def unconstrained_draws(posterior) -> np.ndarray:
    """Latent draws mapped to unconstrained space and standardized, ``(chains * draws, dim)``.

    Sites drawn afresh for new rows at predict time (``sites.row_latent``) are left out; so are
    constant coordinates. Each site's support comes from one trace of the model on its fit data.
    """
    import jax.numpy as jnp
    from numpyro.distributions.transforms import biject_to

    from .inference.binding import BoundModel
    from .runtime import precision
    from .sites import trace_model

    keep = [s for s in posterior.sites.latent if s not in posterior.sites.row_latent]
    with precision(posterior.dtype):
        trace = trace_model(BoundModel(posterior.model, posterior.schema.static), posterior.data)
        flat = posterior.flat_draws(keep)
        columns = []
        for name in keep:
            support = trace[name]["fn"].support
            value = flat[name]
            if not support.is_discrete:
                value = np.asarray(biject_to(support).inv(jnp.asarray(value)))
            columns.append(np.asarray(value, dtype=np.float64).reshape(value.shape[0], -1))
    x = np.concatenate(columns, axis=1)
    sd = x.std(axis=0)
    x = (x[:, sd > 0] - x.mean(axis=0)[sd > 0]) / sd[sd > 0]
    if not np.all(np.isfinite(x)):
        raise InputError("draws", "map to non-finite unconstrained values (draws on the boundary of a support)")
    return x.astype(np.float32)


# ----------------------------------------------------------------------------- selection
def _thin_indices(num_chains: int, draws_per_chain: int, num_draws: int) -> np.ndarray:
    counts = np.full(num_chains, num_draws // num_chains)
    counts[: num_draws % num_chains] += 1
    out = []
    for chain, count in enumerate(counts):
        # Midpoints of `count` equal segments of the chain: evenly spaced, away from both ends.
        positions = np.floor((np.arange(count) + 0.5) * draws_per_chain / max(count, 1)).astype(np.int64)
        out.append(chain * draws_per_chain + positions)
    return np.concatenate(out)


def select_draws(posterior, num_draws: int, method: str, seed: int) -> tuple[np.ndarray, dict]:
    """Indices into the flattened draws ``(chains * draws,)`` chosen by ``method``, and facts
    about the choice (energy distance of the selection to all draws, in standardized units)."""
    total = posterior.num_chains * posterior.num_draws
    facts: dict = {}
    if method == "thin":
        index = _thin_indices(posterior.num_chains, posterior.num_draws, num_draws)
    elif method == "random":
        index = np.sort(np.random.default_rng(seed).choice(total, size=num_draws, replace=False))
    else:
        index = None
    features = unconstrained_draws(posterior)
    reference = features
    if total > MAX_REFERENCE:
        reference = features[np.sort(np.random.default_rng(seed).choice(total, MAX_REFERENCE, replace=False))]
    fns = _jitted()
    mean_distance = fns["mean_distance"](features, reference, block=_BLOCK)  # (draws,)
    if method == "herding":
        index = np.asarray(fns["herding"](features, mean_distance, num_draws))[:num_draws].astype(np.int64)
    facts["energy_distance"] = energy_distance(features[index], reference)
    return index, facts


def compress(posterior, num_draws: int = 500, method: str = "herding", seed: int = 0):
    """A ``Posterior`` holding ``num_draws`` of the posterior's draws, for faster prediction.

    Parameters
    ----------
    posterior : Posterior
    num_draws : int
        Draws to keep, in ``[1, chains * draws]``.
    method : {"herding", "thin", "random"}
        How to choose them (see the module docstring).
    seed : int
        Seed of ``"random"`` and of the reference subset of posteriors with more than
        ``MAX_REFERENCE`` draws; same seed, same draws.

    Returns
    -------
    Posterior
        Draws ``(chains, num_draws // chains, ...)`` for ``"thin"`` when ``num_draws`` is a
        multiple of the chain count (so R-hat still compares chains), else ``(1, num_draws, ...)``;
        sample statistics selected alike; ``info["compression"]`` records the method, sizes,
        seed and the energy distance of the kept draws to the full posterior (standardized
        unconstrained space).

    Raises
    ------
    InputError
        ``num_draws`` out of range, an unknown ``method`` or a bad ``seed``.
    """
    from .data import check_seed
    from .posterior import Posterior

    total = posterior.num_chains * posterior.num_draws
    if isinstance(num_draws, bool) or not isinstance(num_draws, numbers.Integral) or not 1 <= num_draws <= total:
        raise InputError("num_draws", f"of compress must be an int in [1, {total}] (the posterior's draws); "
                         f"got {num_draws!r}")
    if method not in METHODS:
        raise InputError("method", f"of compress must be one of {METHODS}; got {method!r}")
    seed = check_seed(seed, "compress")
    index, facts = select_draws(posterior, int(num_draws), method, seed)
    keeps_chains = method == "thin" and num_draws % posterior.num_chains == 0
    shape = (posterior.num_chains, num_draws // posterior.num_chains) if keeps_chains else (1, num_draws)

    def take(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.reshape(total, *v.shape[2:])[index].reshape(*shape, *v.shape[2:]) for k, v in arrays.items()}

    info = dict(posterior.info)
    info["compression"] = {
        "method": method, "num_draws": int(num_draws), "from_draws": int(total),
        "from_chains": int(posterior.num_chains), "seed": seed, **facts,
    }
    return Posterior(
        model=posterior.model, method=posterior.method, draws=take(posterior.draws),
        sample_stats=take(posterior.sample_stats), schema=posterior.schema, data=posterior.data,
        sites=posterior.sites, settings=posterior.settings, info=info, dtype=posterior.dtype, seed=posterior.seed,
        losses=posterior.losses, model_path=posterior.model_path,
    )
