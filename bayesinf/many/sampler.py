"""NUTS over many groups at once: one compiled program samples every chain of every group.

Groups that share a model and data shapes are stacked along a new leading axis. The program is
NumPyro's ``NUTS`` kernel, ``vmap``-ed over the chains of all groups on a device (data repeated per
chain) and ``pmap``-ed over devices: groups are laid out as ``(devices, groups_per_device)``, each
with its chains. One flat ``vmap`` over ``groups_per_device * chains`` compiled and sampled faster
than a ``vmap`` over groups of a ``vmap`` over chains (one measurement, 50 groups x 4 chains x
1000 iterations: 12 s against 16 s to compile, 1.2 s against 2.0 s to sample). As in
``bayesinf.inference.nuts``, initialization runs inside the first block (one compilation), the
block runs ``BLOCK`` iterations under ``lax.scan`` and iterations past ``num_valid`` are skipped,
so one compilation serves any number of warmup and kept draws.

Group ``g``'s chains get the keys ``split(PRNGKey(seeds[g]), chains)``, the keys
``bayesinf.fit(..., seed=seeds[g])`` gives its chains, so a group's random numbers do not depend
on the other groups in the batch. When the group count does not divide over the devices, the last
group is repeated to fill the layout and the copies are dropped: no group's posterior changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ..config import SVI_INIT_STRATEGIES, NUTSConfig
from ..inference.binding import BoundModel, shape_key
from ..inference.cache import ProgramCache
from ..errors import InputError
from ..inference.nuts import BLOCK, _init_strategy, _strong, scan_iterations
from ..runtime import key_data

__all__ = ["run_nuts_groups", "group_layout"]

_CACHE_SIZE = 8
_SAMPLERS = ProgramCache(_CACHE_SIZE)  # compiled group samplers


@dataclass
class _GroupSampler:
    block: Callable  # (seed_keys, state, arrays, num_valid, is_first) -> (state, collected)
    init_shape: Callable  # (key, arrays of one group) -> per-chain state structure (no compilation)
    devices: int
    per_device: int  # groups per device


def group_layout(num_groups: int, num_devices: int) -> tuple[int, int]:
    """``(devices, groups_per_device)`` for ``num_groups`` groups: all devices (at most one per
    group), with the group count rounded up to fill them."""
    devices = max(1, min(num_devices, num_groups))
    return devices, -(-num_groups // devices)


def _build(model: BoundModel, config: NUTSConfig, devices: int, per_device: int) -> _GroupSampler:
    import jax
    import jax.numpy as jnp
    from jax import lax
    from numpyro.infer import NUTS

    if config.init in SVI_INIT_STRATEGIES:
        raise InputError("init", f"is {config.init!r}, which the vectorized fit of groups does not run",
                         "a NumPyro init strategy (\"uniform\", \"median\", ...), or strategy=\"sequential\"")
    if config.init_mass_matrix != "identity":
        raise InputError("init_mass_matrix", f"is {config.init_mass_matrix!r}, which the vectorized fit of groups "
                         "does not run", "\"identity\", or strategy=\"sequential\"")
    kernel = NUTS(model, target_accept_prob=config.target_accept, dense_mass=config.dense_mass,
                  max_tree_depth=config.max_tree_depth, init_strategy=_init_strategy(config.init))

    def init_chain(rng_key, arrays):
        return kernel.init(rng_key, config.warmup, None, (), arrays)

    def chain_block(rng_key, state, arrays, num_valid, is_first):
        state = _strong(lax.cond(is_first, lambda _: _strong(init_chain(rng_key, arrays)), lambda _: state, None))
        return scan_iterations(kernel, state, arrays, num_valid)

    units = jax.vmap(chain_block, in_axes=(0, 0, 0, None, None))

    def groups(seed_keys, state, arrays, num_valid, is_first):  # (groups, chains, ...) <-> (units, ...)
        flat = lambda tree: jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), tree)
        chains = config.chains
        keys = jax.vmap(lambda key: jax.random.split(key, chains))(seed_keys)  # (groups, chains, 2)
        arrays = jax.tree.map(lambda x: jnp.repeat(x, chains, axis=0), arrays)
        out = units(flat(keys), flat(state), arrays, num_valid, is_first)
        return jax.tree.map(lambda x: x.reshape(-1, chains, *x.shape[1:]), out)

    if devices > 1:
        block = jax.pmap(groups, in_axes=(0, 0, 0, None, None))
    else:
        def one_device(keys, state, arrays, num_valid, is_first):
            first = lambda tree: jax.tree.map(lambda x: x[0], tree)
            out = groups(keys[0], first(state), first(arrays), num_valid, is_first)
            return jax.tree.map(lambda x: x[None], out)

        block = jax.jit(one_device)
    init_shape = lambda key, arrays: jax.eval_shape(lambda k, a: _strong(init_chain(k, a)), key, arrays)
    return _GroupSampler(block, init_shape, devices, per_device)


def _cache_key(model, stacked, config: NUTSConfig, dtype: str, devices: int, per_device: int):
    import jax

    return (model, shape_key(stacked), config.replace(draws=1), devices, per_device, dtype, jax.default_backend())


def _get_sampler(model: BoundModel, stacked, config: NUTSConfig, dtype: str, devices: int, per_device: int):
    key = _cache_key(model, stacked, config, dtype, devices, per_device)
    sampler = _SAMPLERS.get(key)
    if sampler is not None:
        return sampler, True
    return _SAMPLERS.put(key, _build(model, config, devices, per_device)), False


def run_nuts_groups(model: BoundModel, arrays: Sequence[Mapping[str, np.ndarray]], config: NUTSConfig,
                    seeds: Sequence[int], *, dtype: str = "float32",
                    num_slots: int | None = None) -> list[tuple[dict, dict, dict]]:
    """Run ``config.chains`` NUTS chains for each group, all groups in one compiled program.

    Parameters
    ----------
    model : BoundModel
        The model every group shares.
    arrays : sequence of mappings of str -> array
        One mapping per group, with the same names, shapes and dtypes in every group.
    config : NUTSConfig
    seeds : sequence of int
        One seed per group; group ``g``'s chains use the keys ``bayesinf.fit`` derives from ``seeds[g]``.
    dtype : {"float32", "float64"}
        Part of the cache key; the caller sets the JAX precision.
    num_slots : int, optional
        Lay the program out for this many groups (at least ``len(arrays)``), so that batches of
        slightly different sizes share one compilation.

    Returns
    -------
    list of (draws, stats, info)
        Per group: ``draws[site]`` ``(chains, draws, *site_shape)``, ``stats[name]``
        ``(chains, draws)`` (as ``bayesinf.inference.run_nuts`` returns) and timings in seconds
        (shared by the batch).
    """
    import jax
    import jax.numpy as jnp

    start = time.perf_counter()
    num_groups = len(arrays)
    devices, per_device = group_layout(max(num_groups, num_slots or 0), jax.local_device_count())
    slots = devices * per_device
    order = list(range(num_groups)) + [num_groups - 1] * (slots - num_groups)  # repeat the last group
    names = list(arrays[0])
    stacked = {k: np.stack([np.asarray(arrays[g][k]) for g in order]) for k in names}
    stacked = {k: v.reshape(devices, per_device, *v.shape[1:]) for k, v in stacked.items()}
    sampler, cached = _get_sampler(model, stacked, config, dtype, devices, per_device)
    # Each group's seed as key data; the chains' keys are split from it inside the compiled block.
    keys = np.stack([key_data(seeds[g]) for g in order]).reshape(devices, per_device, -1)
    device_arrays = {k: jnp.asarray(v) for k, v in stacked.items()}
    one_group = {k: v[0, 0] for k, v in device_arrays.items()}
    shape = sampler.init_shape(jax.ShapeDtypeStruct(keys.shape[2:], keys.dtype), one_group)
    state = jax.tree.map(lambda s: np.zeros((devices, per_device, config.chains, *s.shape), s.dtype), shape)
    if devices > 1:  # placed as the compiled block returns it, else pmap compiles again
        state = jax.pmap(lambda tree: tree)(state)
    total = config.warmup + config.draws
    kept, first_block = [], None
    for b in range(-(-total // BLOCK)):
        t0 = time.perf_counter()
        num_valid = min(BLOCK, total - b * BLOCK)
        state, collected = sampler.block(keys, state, device_arrays, jnp.asarray(num_valid, jnp.int32),
                                         jnp.asarray(b == 0))
        if b == 0:
            jax.block_until_ready(state)
            first_block = time.perf_counter() - t0
        lo = max(config.warmup - b * BLOCK, 0)
        if lo < num_valid:
            kept.append((collected, lo, num_valid))
    merged = _merge(kept, slots, config.chains)
    seconds = time.perf_counter() - start
    info = {"first_block_seconds": first_block, "total_seconds": seconds, "cached_sampler": cached,
            "devices": devices, "groups_per_device": per_device, "batch_groups": num_groups,
            "backend": jax.default_backend()}
    out = []
    for g in range(num_groups):
        draws = {k[2:]: v[g] for k, v in merged.items() if k.startswith("z.")}
        stats = {k: v[g] for k, v in merged.items() if not k.startswith("z.")}
        stats["tree_depth"] = np.floor(np.log2(stats["n_steps"].astype(np.float64) + 1)).astype(np.int64)
        out.append((draws, stats, dict(info)))
    return out


def _merge(kept, slots: int, chains: int) -> dict[str, np.ndarray]:
    """Host copies of the kept iterations, ``(groups, chains, draws, ...)`` per name."""
    import jax

    parts = []
    for collected, lo, hi in kept:
        host = jax.tree.map(np.asarray, jax.device_get(collected))
        flat = {f"z.{k}": v for k, v in host["z"].items()}
        flat.update({k: v for k, v in host.items() if k != "z"})
        parts.append({k: v.reshape(slots, chains, *v.shape[3:])[:, :, lo:hi] for k, v in flat.items()})
    return {k: np.concatenate([p[k] for p in parts], axis=2) for k in parts[0]}
