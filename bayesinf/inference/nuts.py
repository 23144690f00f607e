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

A ``Start`` sets where the chains begin (unconstrained positions, one per chain) and, for a warm
start from a previous posterior, the step size and inverse mass matrix the warmup starts from.
They are arguments of the compiled block, so every warm start of a model on data of the same
shapes reuses one compilation; only which of them are given (``Start.kind``) is compiled in.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..config import SVI_INIT_STRATEGIES, NUTSConfig
from ..runtime import key_data
from .binding import BoundModel, shape_key
from .cache import ProgramCache

__all__ = ["run_nuts", "NUTSResult", "Start", "chain_layout", "scan_iterations", "unconstrain_draws", "flatten_sites",
           "unflatten_sites", "BLOCK"]

#: Iterations per compiled block (a progress-bar tick).
BLOCK = 100
_CACHE_SIZE = 16
_SAMPLERS = ProgramCache(_CACHE_SIZE)  # compiled samplers
_UNCONSTRAIN = ProgramCache(_CACHE_SIZE)  # jitted constrained -> unconstrained maps


@dataclass(frozen=True)
class Start:
    """Where NUTS chains start.

    Attributes
    ----------
    positions : dict of str -> np.ndarray
        Unconstrained initial value per latent site, ``(chains, *unconstrained_site_shape)``.
    step_size : np.ndarray, optional
        Initial step size per chain, ``(chains,)``; with ``inverse_mass_matrix``, the warmup's
        dual averaging starts from it instead of NumPyro's default of 1.
    inverse_mass_matrix : np.ndarray, optional
        Initial inverse mass matrix over the flattened unconstrained latent vector (sites in sorted
        name order, as NumPyro ravels them): ``(dim,)`` diagonal or ``(dim, dim)`` dense.
    """

    positions: Mapping[str, np.ndarray]
    step_size: np.ndarray | None = None
    inverse_mass_matrix: np.ndarray | None = None

    @property
    def kind(self) -> str:
        """``"positions"`` or ``"tuned"`` (positions, step size and mass matrix): compiled in."""
        return "positions" if self.step_size is None else "tuned"

    def tree(self, num_chains: int, dtype: str) -> dict:
        """The per-chain arrays passed to the compiled block, leading axis ``chains``."""
        out = {"z": {k: np.asarray(v, dtype) for k, v in self.positions.items()}}
        if self.step_size is not None:
            if self.inverse_mass_matrix is None:
                raise ValueError("a Start with a step size needs an inverse mass matrix")
            out["step_size"] = np.broadcast_to(np.asarray(self.step_size, dtype), (num_chains,))
            imm = np.asarray(self.inverse_mass_matrix, dtype)
            out["inverse_mass_matrix"] = np.broadcast_to(imm, (num_chains, *imm.shape))
        for name, v in out["z"].items():
            if v.shape[:1] != (num_chains,):
                raise ValueError(f"initial positions of '{name}' have shape {v.shape}; expected ({num_chains}, ...)")
        return out


@dataclass
class NUTSResult:
    """Draws and sampler statistics of a NUTS run, as numpy arrays.

    ``draws[name]`` has shape ``(chains, draws, *site_shape)``; ``stats[name]`` ``(chains, draws)``.
    ``info`` holds wall times in seconds (``init``, ``first_block``, ``sampling``, ``total``),
    the leapfrog steps each chain took during warmup (``warmup_leapfrog_steps``, a list of
    ``chains`` ints) and whether the sampler came from the cache.
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
    if init in SVI_INIT_STRATEGIES:  # positions come from an SVI fit; NumPyro's own init is unused
        return infer.init_to_uniform
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


def scan_iterations(kernel, state, arrays, num_valid):
    """``BLOCK`` iterations of one chain of NUTS ``kernel`` under ``lax.scan``; iterations from
    ``num_valid`` on leave the state as it is. Returns the final state and, per iteration, the
    constrained draw ``z`` and the sampler statistics, each with a leading ``BLOCK`` axis."""
    import jax.numpy as jnp
    from jax import lax

    postprocess = kernel.postprocess_fn((), arrays)

    def step(state, i):
        state = lax.cond(i < num_valid, lambda s: _strong(kernel.sample(s, (), arrays)), lambda s: s, state)
        return state, {
            "z": postprocess(state.z),
            "diverging": state.diverging,
            "n_steps": state.num_steps,
            "acceptance_rate": state.accept_prob,
            "energy": state.energy,
            "lp": -state.potential_energy,
            "step_size": state.adapt_state.step_size,
        }

    return lax.scan(step, state, jnp.arange(BLOCK))


@dataclass
class _Sampler:
    block: Callable  # (seed_key, chain_ids, state, arrays, num_valid, is_first, start) -> (state, collected)
    init_shape: Callable  # (key, arrays, start) -> per-chain state structure (no compilation)
    devices: int
    per_device: int
    state_shape: Any = None  # ``init_shape``'s result, kept: tracing it costs as much as a short run


def _with_tuning(state, step_size, inverse_mass_matrix, dense: bool, step_size_only: int | None = None):
    """``state`` with the warmup adapter restarted from ``step_size`` and ``inverse_mass_matrix``.

    Mirrors NumPyro's ``warmup_adapter`` initialization (``hmc_util``): the dual averaging is
    centred on ``log(10 * step_size)`` and the mass matrix square roots are derived as there, by
    its (private) ``_initialize_mass_matrix``. ``NUTS(step_size=..., inverse_mass_matrix=...)``
    would compile them in as constants; set here, they are arguments of the compiled block.

    ``step_size_only=num_warmup``: the mass matrix is final, so the warmup is one window of step
    size adaptation. The adapter starts in the last window of NumPyro's schedule for
    ``num_warmup`` (Stan's terminal buffer), where the dual averaging runs without the restarts
    that end each mass matrix window; a restart begins again from ten times the step size, which
    a short warmup cannot recover from.
    """
    import jax.numpy as jnp
    from numpyro.infer.hmc_util import _initialize_mass_matrix, build_adaptation_schedule, dual_averaging

    adapt = state.adapt_state
    (names,) = tuple(adapt.inverse_mass_matrix)  # one block over every latent site
    inverse, sqrt, sqrt_inv = _initialize_mass_matrix(state.z, {names: inverse_mass_matrix},
                                                      [names] if dense else [])
    ss_init, _ = dual_averaging()
    adapt = adapt._replace(step_size=step_size, inverse_mass_matrix=inverse, mass_matrix_sqrt=sqrt,
                           mass_matrix_sqrt_inv=sqrt_inv, ss_state=ss_init(jnp.log(10 * step_size)))
    if step_size_only:
        last = len(build_adaptation_schedule(step_size_only)) - 1
        adapt = adapt._replace(window_idx=jnp.full_like(adapt.window_idx, last))
    return state._replace(adapt_state=adapt)


def _gradient_inverse_mass_matrix(z_grad, dense: bool, dtype):
    """Initial inverse mass matrix from the potential's gradient at the initial point.

    For a Gaussian coordinate of scale ``s`` at distance ``d`` from its mean the gradient is
    ``d / s**2``, so ``log(1 / |grad|) = 2 log s - log |d|``: the log variance plus noise from the
    unknown distance. For ``d`` uniform on ``(0, a)`` (NumPyro's uniform initialization, in
    unconstrained space) ``-log |d|`` has variance exactly 1 whatever ``a``, so the log variances are
    estimated by shrinking ``log(1 / |grad|)`` towards its mean over coordinates by the factor
    ``max(0, 1 - 1 / var)`` (James-Stein; ``var`` is their variance over coordinates): widely
    different scales are kept, differences the noise explains are not. Raw ``1 / |grad|`` (as
    nutpie starts) doubled the first warmup steps of well-scaled posteriors in our benchmarks.
    Entries are clipped to ``[1e-4, 1e4]`` before (the identity is 1; a vanishing component would
    otherwise freeze its coordinate) and non-finite ones set to 1. Returns ``(dim,)``, or that
    diagonal as ``(dim, dim)`` when ``dense``.
    """
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    flat, _ = ravel_pytree(z_grad)  # sites in sorted name order, as NumPyro ravels them
    inverse = jnp.clip(1.0 / jnp.abs(flat), 1e-4, 1e4)
    log_inverse = jnp.log(jnp.where(jnp.isfinite(inverse), inverse, 1.0))
    center = jnp.mean(log_inverse)
    spread = jnp.var(log_inverse)
    shrink = jnp.where(spread > 1.0, 1.0 - 1.0 / jnp.maximum(spread, 1.0), 0.0)
    inverse = jnp.exp(center + shrink * (log_inverse - center)).astype(dtype)
    return jnp.diag(inverse) if dense else inverse


def _gradient_tuning(kernel, state, arrays, rng_key, dense: bool):
    """``state`` with the warmup restarted from ``1 / |grad|`` (see ``_gradient_inverse_mass_matrix``)
    and a step size found for it by NumPyro's ``find_reasonable_step_size``, as its warmup adapter
    does for the identity; the windowed adaptation then continues from there."""
    import jax.numpy as jnp
    from numpyro.infer.hmc import momentum_generator
    from numpyro.infer.hmc_util import (IntegratorState, _initialize_mass_matrix, euclidean_kinetic_energy,
                                        find_reasonable_step_size)

    inverse_mass_matrix = _gradient_inverse_mass_matrix(state.z_grad, dense, state.adapt_state.step_size.dtype)
    (names,) = tuple(state.adapt_state.inverse_mass_matrix)
    blocks, _, _ = _initialize_mass_matrix(state.z, {names: inverse_mass_matrix}, [names] if dense else [])
    potential_fn = kernel._potential_fn_gen(**arrays)  # the potential NUTS.init built, data as arguments
    z_info = IntegratorState(state.z, None, state.potential_energy, state.z_grad)
    # NumPyro's warmup adapter passes the inverse mass matrix blocks as the momentum scale here too.
    step_size = find_reasonable_step_size(potential_fn, euclidean_kinetic_energy, momentum_generator,
                                          jnp.ones_like(state.adapt_state.step_size), blocks, z_info, rng_key)
    return _with_tuning(state, step_size, inverse_mass_matrix, dense)


def _build_sampler(model: BoundModel, config: NUTSConfig, devices: int, per_device: int) -> _Sampler:
    import jax
    from jax import lax
    from numpyro.infer import NUTS

    kernel = NUTS(
        model,
        target_accept_prob=config.target_accept,
        dense_mass=config.dense_mass,
        max_tree_depth=config.max_tree_depth,
        init_strategy=_init_strategy(config.init),
        adapt_mass_matrix=config.adapt_mass_matrix,
    )

    def init_chain(rng_key, arrays, start):
        state = kernel.init(rng_key, config.warmup, start.get("z"), (), arrays)
        if "step_size" in start:
            state = _with_tuning(state, start["step_size"], start["inverse_mass_matrix"], config.dense_mass,
                                 step_size_only=None if config.adapt_mass_matrix else config.warmup)
        elif config.init_mass_matrix == "gradient" and config.warmup > 0:
            state = _gradient_tuning(kernel, state, arrays, jax.random.fold_in(rng_key, 1), config.dense_mass)
        return state

    num_chains = devices * per_device

    def chain_block(seed_key, chain_id, state, arrays, num_valid, is_first, start):
        # Initialization lives in the same compiled program as the iterations (one compilation
        # instead of two); on later blocks the branch is skipped at run time. Chain c starts
        # from ``split(PRNGKey(seed), chains)[c]``, computed here rather than on the host.
        def initialize(_):
            rng_key = jax.random.split(seed_key, num_chains)[chain_id]
            return _strong(init_chain(rng_key, arrays, start))

        state = _strong(lax.cond(is_first, initialize, lambda _: state, None))
        return scan_iterations(kernel, state, arrays, num_valid)

    if per_device == 1:  # no vmap: a batched NUTS tree-building loop compiles slower
        def device_block(seed_key, chain_ids, state, arrays, num_valid, is_first, start):
            squeeze = lambda tree: jax.tree.map(lambda x: x[0], tree)
            out = chain_block(seed_key, chain_ids[0], squeeze(state), arrays, num_valid, is_first, squeeze(start))
            return jax.tree.map(lambda x: x[None], out)
    else:
        device_block = jax.vmap(chain_block, in_axes=(None, 0, 0, None, None, None, 0))
    if devices > 1:
        block_fn = jax.pmap(device_block, in_axes=(None, 0, 0, None, None, None, 0))
    else:
        def single_device(seed_key, chain_ids, state, arrays, num_valid, is_first, start):
            first = lambda tree: jax.tree.map(lambda x: x[0], tree)
            out = device_block(seed_key, chain_ids[0], first(state), arrays, num_valid, is_first, first(start))
            return jax.tree.map(lambda x: x[None], out)

        block_fn = jax.jit(single_device)

    def init_shape(key, arrays, start):
        return jax.eval_shape(lambda k, a, s: _strong(init_chain(k, a, s)), key, arrays, start)

    return _Sampler(block_fn, init_shape, devices, per_device)


def _get_sampler(model: BoundModel, arrays, config: NUTSConfig, dtype: str,
                 start_kind: str = "cold") -> tuple[_Sampler, bool]:
    import jax

    devices, per_device = chain_layout(config.chains, 1 if config.chain_method == "vectorized" else
                                       jax.local_device_count())
    # ``draws`` is not compiled in (blocks run until it is reached), so it is not part of the key;
    # given initial positions make the init strategy irrelevant, so it is left out too.
    compiled = config.replace(draws=1, init="uniform") if start_kind != "cold" else config.replace(draws=1)
    if start_kind == "tuned":  # the given mass matrix replaces the initial one
        compiled = compiled.replace(init_mass_matrix="identity")
    key = (model, shape_key(arrays), compiled, devices, dtype, jax.default_backend(), start_kind)
    sampler = _SAMPLERS.get(key)
    if sampler is not None:
        return sampler, True
    return _SAMPLERS.put(key, _build_sampler(model, compiled, devices, per_device)), False


def run_nuts(model: BoundModel, arrays: Mapping[str, np.ndarray], config: NUTSConfig, seed: int,
             *, dtype: str = "float32", progress: bool = False, start: Start | None = None) -> NUTSResult:
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
    start : Start, optional
        Initial positions (and tuning) of the chains; by default ``config.init`` decides.
    """
    import jax
    import jax.numpy as jnp

    t_start = time.perf_counter()
    sampler, cached = _get_sampler(model, arrays, config, dtype, "cold" if start is None else start.kind)
    device_arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
    seed_key = key_data(seed)
    chain_ids = np.arange(config.chains, dtype=np.int32).reshape(sampler.devices, sampler.per_device)
    starts = {} if start is None else start.tree(config.chains, dtype)
    starts = jax.tree.map(lambda v: v.reshape(sampler.devices, sampler.per_device, *v.shape[1:]), starts)
    # A placeholder state of the right structure; the first block replaces it by NumPyro's init.
    if sampler.state_shape is None:  # the same for every call: the cache key fixes all shapes
        one_chain = lambda v: jax.ShapeDtypeStruct(v.shape[2:], v.dtype)
        sampler.state_shape = sampler.init_shape(jax.ShapeDtypeStruct(seed_key.shape, seed_key.dtype), device_arrays,
                                                 jax.tree.map(one_chain, starts))
    shape = sampler.state_shape
    state = jax.tree.map(lambda s: np.zeros((sampler.devices, sampler.per_device, *s.shape), s.dtype), shape)
    if sampler.devices > 1:  # laid out as the compiled block returns it, else pmap compiles again
        state = _pmap_identity()(state)
        starts = _pmap_identity()(starts) if starts else starts
    init_done = time.perf_counter()

    total = config.warmup + config.draws
    num_blocks = -(-total // BLOCK)
    bar = _progress_bar(total, config.chains) if progress else None
    kept = []
    first_block = None
    divergent = 0
    warmup_parts = []
    try:
        for b in range(num_blocks):
            t0 = time.perf_counter()
            num_valid = min(BLOCK, total - b * BLOCK)
            state, collected = sampler.block(seed_key, chain_ids, state, device_arrays,
                                             np.int32(num_valid), np.bool_(b == 0), starts)
            if b == 0:
                jax.block_until_ready(state)
                first_block = time.perf_counter() - t0
            lo = max(config.warmup - b * BLOCK, 0)  # first kept iteration within this block
            if lo > 0:  # read after the loop: a host copy here would wait for each block
                warmup_parts.append((collected["n_steps"], min(lo, num_valid)))
            if lo < num_valid:
                kept.append((collected, lo, num_valid))
            if bar is not None:
                divergent += int(np.asarray(collected["diverging"])[:, :, lo:num_valid].sum()) if lo < num_valid else 0
                bar.update(num_valid)
                phase = "warmup" if (b + 1) * BLOCK <= config.warmup else "sampling"
                bar.set_postfix_str(f"{phase}, {divergent} divergent")
        draws, stats = _assemble(kept, config.chains)
        warmup_steps = sum((np.asarray(n).reshape(config.chains, BLOCK)[:, :hi].sum(axis=1, dtype=np.int64)
                            for n, hi in warmup_parts), np.zeros(config.chains, np.int64))
    finally:
        if bar is not None:
            bar.close()
    end = time.perf_counter()
    info = {
        "init_seconds": init_done - t_start,
        "first_block_seconds": first_block,
        "sampling_seconds": end - init_done,
        "total_seconds": end - t_start,
        "cached_sampler": cached,
        "devices": sampler.devices,
        "chains_per_device": sampler.per_device,
        "backend": jax.default_backend(),
        "warmup_leapfrog_steps": warmup_steps.tolist(),
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


# ----------------------------------------------------------------------------- unconstrained space
def unconstrain_draws(model: BoundModel, arrays: Mapping[str, np.ndarray], draws: Mapping[str, np.ndarray],
                      dtype: str = "float32") -> dict[str, np.ndarray]:
    """Map constrained draws ``(n, *site_shape)`` of the latent sites to NumPyro's unconstrained
    space, where NUTS moves: ``(n, *unconstrained_site_shape)`` per site.

    Jitted once per model, data shapes and draw shapes; the data are arguments, not constants.
    """
    import jax
    from numpyro.infer.util import unconstrain_fn

    key = (model, shape_key(arrays), shape_key(draws), dtype, jax.default_backend())
    fn = _UNCONSTRAIN.get(key)
    if fn is None:
        fn = _UNCONSTRAIN.put(key, jax.jit(jax.vmap(lambda d, a: unconstrain_fn(model, (), a, d), in_axes=(0, None))))
    out = fn({k: np.asarray(v, dtype) for k, v in draws.items()}, dict(arrays))
    return {k: np.asarray(v) for k, v in out.items()}


def flatten_sites(values: Mapping[str, np.ndarray], num_batch: int = 1) -> np.ndarray:
    """Concatenate per-site arrays ``(*batch, *site_shape)`` into ``(*batch, dim)``, sites in sorted
    name order: the layout of NumPyro's flattened latent vector (and of its mass matrix)."""
    batch = next(iter(values.values())).shape[:num_batch]
    return np.concatenate([np.reshape(values[k], (*batch, -1)) for k in sorted(values)], axis=-1)


def unflatten_sites(flat: np.ndarray, shapes: Mapping[str, tuple[int, ...]], num_batch: int = 1) -> dict:
    """Inverse of ``flatten_sites`` given the per-site shapes (without batch axes)."""
    out, offset = {}, 0
    batch = flat.shape[:num_batch]
    for k in sorted(shapes):
        size = int(np.prod(shapes[k], dtype=np.int64))
        out[k] = flat[..., offset:offset + size].reshape(*batch, *shapes[k])
        offset += size
    return out
