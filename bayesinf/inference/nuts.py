"""NUTS driver: NumPyro's ``NUTS`` kernel, run by a driver that compiles once per model and shapes.

NumPyro's ``MCMC`` closes the data over as constants and re-traces its parallel map on every
``run``, so each fit pays for compilation again. This driver instead compiles one pure function
once per (model, static arguments, data shapes, settings, devices) and keeps it:
``block(rng_keys, state, arrays, num_valid, is_first) -> (state, collected)`` runs NumPyro's
``NUTS.init`` when ``is_first`` (so initialization and sampling share one compilation), then
``BLOCK`` iterations of ``NUTS.sample`` under ``lax.scan``; iterations past ``num_valid`` are
skipped, so the same compiled block serves any number of warmup and kept draws.

Chains are laid out as ``(devices, chains_per_device)``: ``pmap`` across devices (parallel) and
``vmap`` within one (vectorized). Warmup adaptation happens inside the kernel state, so warmup
and sampling share the block; the progress bar advances between blocks and does not change
what is compiled.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..config import NUTSConfig
from .binding import BoundModel, shape_key

__all__ = ["run_nuts", "NUTSResult", "chain_layout", "BLOCK"]

#: Iterations per compiled block (a progress-bar tick).
BLOCK = 100
_CACHE_SIZE = 16
_SAMPLERS: "OrderedDict[Any, _Sampler]" = OrderedDict()  # compiled samplers, least recently used first


@dataclass
class NUTSResult:
    """Draws and sampler statistics of a NUTS run, as numpy arrays.

    ``draws[name]`` has shape ``(chains, draws, *site_shape)``; ``stats[name]`` ``(chains, draws)``.
    ``info`` holds wall times in seconds (``init``, ``first_block``, ``sampling``, ``total``),
    ``step_size`` per chain and whether the sampler came from the cache.
    """

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    info: dict[str, Any]


def chain_layout(num_chains: int, num_devices: int) -> tuple[int, int]:
    """Split chains over devices: the most devices that divide ``num_chains`` evenly.

    Returns ``(devices, chains_per_device)``.
    """
    devices = max(1, min(num_devices, num_chains))
    while num_chains % devices:
        devices -= 1
    return devices, num_chains // devices


def _init_strategy(init):
    from numpyro import infer

    if callable(init):
        return init
    return {
        "uniform": infer.init_to_uniform,
        "median": infer.init_to_median,
        "mean": infer.init_to_mean,
        "sample": infer.init_to_sample,
        "feasible": infer.init_to_feasible,
    }[init]


@functools.lru_cache(maxsize=1)
def _pmap_identity():
    """``pmap`` of the identity: places a ``(devices, ...)`` tree as ``pmap`` outputs are placed."""
    import jax

    return jax.pmap(lambda tree: tree)


def _strong(tree):
    """Drop JAX weak types from a state so its types are the same on every block (no recompiling)."""
    from jax import lax
    import jax

    return jax.tree.map(lambda x: lax.convert_element_type(x, x.dtype), tree)


@dataclass
class _Sampler:
    block: Callable  # (keys, state, arrays, num_valid, is_first) -> (state, collected)
    init_shape: Callable  # (key, arrays) -> per-chain state structure (no compilation)
    devices: int
    per_device: int


def _build_sampler(model: BoundModel, config: NUTSConfig, devices: int, per_device: int) -> _Sampler:
    import jax
    import jax.numpy as jnp
    from jax import lax
    from numpyro.infer import NUTS

    kernel = NUTS(
        model,
        target_accept_prob=config.target_accept,
        dense_mass=config.dense_mass,
        max_tree_depth=config.max_tree_depth,
        init_strategy=_init_strategy(config.init),
    )

    def init_chain(rng_key, arrays):
        return kernel.init(rng_key, config.warmup, None, (), arrays)

    def chain_block(rng_key, state, arrays, num_valid, is_first):
        # Initialization lives in the same compiled program as the iterations (one compilation
        # instead of two); on later blocks the branch is skipped at run time.
        state = _strong(lax.cond(is_first, lambda _: _strong(init_chain(rng_key, arrays)), lambda _: state, None))
        postprocess = kernel.postprocess_fn((), arrays)

        def step(state, i):
            state = lax.cond(i < num_valid, lambda s: _strong(kernel.sample(s, (), arrays)), lambda s: s, state)
            collected = {
                "z": postprocess(state.z),
                "diverging": state.diverging,
                "n_steps": state.num_steps,
                "acceptance_rate": state.accept_prob,
                "energy": state.energy,
                "lp": -state.potential_energy,
                "step_size": state.adapt_state.step_size,
            }
            return state, collected

        return lax.scan(step, state, jnp.arange(BLOCK))

    if per_device == 1:  # no vmap: a batched NUTS tree-building loop compiles slower
        def device_block(keys, state, arrays, num_valid, is_first):
            squeeze = lambda tree: jax.tree.map(lambda x: x[0], tree)
            out = chain_block(keys[0], squeeze(state), arrays, num_valid, is_first)
            return jax.tree.map(lambda x: x[None], out)
    else:
        device_block = jax.vmap(chain_block, in_axes=(0, 0, None, None, None))
    if devices > 1:
        block_fn = jax.pmap(device_block, in_axes=(0, 0, None, None, None))
    else:
        def single_device(keys, state, arrays, num_valid, is_first):
            first = lambda tree: jax.tree.map(lambda x: x[0], tree)
            out = device_block(keys[0], first(state), arrays, num_valid, is_first)
            return jax.tree.map(lambda x: x[None], out)

        block_fn = jax.jit(single_device)
    return _Sampler(block_fn, lambda key, arrays: jax.eval_shape(lambda k, a: _strong(init_chain(k, a)), key, arrays),
                    devices, per_device)


def _get_sampler(model: BoundModel, arrays, config: NUTSConfig, dtype: str) -> tuple[_Sampler, bool]:
    import jax

    devices, per_device = chain_layout(config.chains, jax.local_device_count())
    # ``draws`` is not compiled in (blocks run until it is reached), so it is not part of the key.
    key = (model, shape_key(arrays), config.replace(draws=1), devices, dtype, jax.default_backend())
    sampler = _SAMPLERS.get(key)
    if sampler is not None:
        _SAMPLERS.move_to_end(key)
        return sampler, True
    sampler = _build_sampler(model, config, devices, per_device)
    _SAMPLERS[key] = sampler
    while len(_SAMPLERS) > _CACHE_SIZE:
        _SAMPLERS.popitem(last=False)
    return sampler, False


def run_nuts(model: BoundModel, arrays: Mapping[str, np.ndarray], config: NUTSConfig, seed: int,
             *, dtype: str = "float32", progress: bool = False) -> NUTSResult:
    """Run ``config.chains`` NUTS chains of ``model`` on ``arrays``.

    Parameters
    ----------
    model : BoundModel
        The NumPyro model with its static arguments bound.
    arrays : mapping of str -> array
        The model's array arguments (data), passed to the compiled sampler as arguments.
    config : NUTSConfig
    seed : int
        Seed of the chains' random keys; the same seed gives the same draws.
    dtype : {"float32", "float64"}
        Only part of the cache key here; the caller sets the JAX precision.
    progress : bool
        Show a progress bar (one tick per ``BLOCK`` iterations).
    """
    import jax
    import jax.numpy as jnp

    start = time.perf_counter()
    sampler, cached = _get_sampler(model, arrays, config, dtype)
    device_arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
    keys = jax.random.split(jax.random.PRNGKey(seed), config.chains)
    keys = keys.reshape(sampler.devices, sampler.per_device, *keys.shape[1:])
    # A placeholder state of the right structure; the first block replaces it by NumPyro's init.
    shape = sampler.init_shape(keys[0, 0], device_arrays)
    state = jax.tree.map(lambda s: np.zeros((sampler.devices, sampler.per_device, *s.shape), s.dtype), shape)
    if sampler.devices > 1:  # laid out as the compiled block returns it, else pmap compiles again
        state = _pmap_identity()(state)
    init_done = time.perf_counter()

    total = config.warmup + config.draws
    num_blocks = -(-total // BLOCK)
    bar = _progress_bar(total, config.chains) if progress else None
    kept = []
    first_block = None
    divergent = 0
    try:
        for b in range(num_blocks):
            t0 = time.perf_counter()
            num_valid = min(BLOCK, total - b * BLOCK)
            state, collected = sampler.block(keys, state, device_arrays, jnp.asarray(num_valid, jnp.int32),
                                             jnp.asarray(b == 0))
            if b == 0:
                jax.block_until_ready(state)
                first_block = time.perf_counter() - t0
            lo = max(config.warmup - b * BLOCK, 0)  # first kept iteration within this block
            if lo < num_valid:
                kept.append((collected, lo, num_valid))
            if bar is not None:
                divergent += int(np.asarray(collected["diverging"])[:, :, lo:num_valid].sum()) if lo < num_valid else 0
                bar.update(num_valid)
                phase = "warmup" if (b + 1) * BLOCK <= config.warmup else "sampling"
                bar.set_postfix_str(f"{phase}, {divergent} divergent")
        draws, stats = _assemble(kept, config.chains)
    finally:
        if bar is not None:
            bar.close()
    end = time.perf_counter()
    info = {
        "init_seconds": init_done - start,
        "first_block_seconds": first_block,
        "sampling_seconds": end - init_done,
        "total_seconds": end - start,
        "cached_sampler": cached,
        "devices": sampler.devices,
        "chains_per_device": sampler.per_device,
        "backend": jax.default_backend(),
    }
    return NUTSResult(draws, stats, info)


def _assemble(kept, num_chains: int):
    """Host copies of the kept iterations, shaped ``(chains, draws, ...)``."""
    parts = []
    for collected, lo, hi in kept:
        host = jax_to_numpy(collected)
        parts.append({k: v.reshape(num_chains, *v.shape[2:])[:, lo:hi] for k, v in _flatten(host).items()})
    names = parts[0].keys()
    merged = {k: np.concatenate([p[k] for p in parts], axis=1) for k in names}
    draws = {k[2:]: v for k, v in merged.items() if k.startswith("z.")}
    stats = {k: v for k, v in merged.items() if not k.startswith("z.")}
    stats["tree_depth"] = np.floor(np.log2(stats["n_steps"].astype(np.float64) + 1)).astype(np.int64)
    return draws, stats


def _flatten(collected: dict) -> dict:
    flat = {f"z.{k}": v for k, v in collected["z"].items()}
    flat.update({k: v for k, v in collected.items() if k != "z"})
    return flat


def jax_to_numpy(tree):
    import jax

    return jax.tree.map(np.asarray, jax.device_get(tree))


def _progress_bar(total: int, chains: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"NUTS, {chains} chains", unit="it", leave=True)
