"""SVI driver: NumPyro's ``SVI`` with an autoguide or a user guide, compiled once per model and
shapes, run in chunks of ``check_every`` steps with a stated stopping rule.

The fitted guide parameters are the average of the iterates over the last chunk when the rule
below stopped the fit (Polyak-Ruppert averaging), else the last iterate.

Stopping rule (checked at the end of each chunk ``k >= 2``): with ``m_k`` the mean loss
(negative ELBO) over chunk ``k`` and ``se_k`` the standard error of ``m_{k-1} - m_k`` (chunk
standard deviations over ``sqrt(check_every)``), stop when the improvement
``m_{k-1} - m_k`` is below ``max(rtol * |m_k|, 2 * se_k)``: the loss no longer decreases by
more than its own Monte Carlo noise or by more than the relative tolerance. ``rtol=0`` still
stops on noise; set ``check_every=num_steps`` to always run every step.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..config import SVIConfig
from .binding import BoundModel, shape_key
from .cache import ProgramCache

__all__ = ["run_svi", "SVIResult", "has_converged", "initial_draws", "INIT_SVI"]

_CACHE_SIZE = 16
_PROGRAMS = ProgramCache(_CACHE_SIZE)  # compiled programs


@dataclass
class SVIResult:
    """Draws from the fitted guide, ``(1, draws, *site_shape)`` per latent site, and the loss trace.

    ``losses`` has one negative-ELBO value per step run; ``params`` are the guide's fitted
    parameters (numpy); ``info`` holds ``num_steps`` run, ``converged`` and wall times.
    """

    draws: dict[str, np.ndarray]
    losses: np.ndarray
    params: dict[str, np.ndarray]
    info: dict[str, Any]


def has_converged(previous: np.ndarray, current: np.ndarray, rtol: float) -> bool:
    """The module's stopping rule applied to two consecutive chunks of losses."""
    m_prev, m_cur = float(np.mean(previous)), float(np.mean(current))
    se = float(np.sqrt(np.var(previous) / previous.size + np.var(current) / current.size))
    return (m_prev - m_cur) < max(rtol * abs(m_cur), 2.0 * se)


def _make_guide(config: SVIConfig, model: BoundModel, static: Mapping[str, Any]):
    from numpyro.infer import autoguide

    if callable(config.guide):
        return BoundModel(config.guide, static)
    if config.guide == "normal":
        return autoguide.AutoNormal(model)
    if config.guide == "mvn":
        return autoguide.AutoMultivariateNormal(model)
    if config.guide == "lowrank":
        return autoguide.AutoLowRankMultivariateNormal(model, rank=config.rank)
    return autoguide.AutoLaplaceApproximation(model)


def _make_optimizer(config: SVIConfig):
    from numpyro import optim

    return {
        "adam": optim.Adam,
        "clipped_adam": optim.ClippedAdam,
        "adagrad": optim.Adagrad,
        "sgd": optim.SGD,
        "rmsprop": optim.RMSProp,
    }[config.optimizer](config.learning_rate)


@dataclass
class _Program:
    svi: Any
    guide: Any
    init: Callable
    chunk: Callable


def _get_program(model: BoundModel, arrays, config: SVIConfig, dtype: str) -> tuple[_Program, bool]:
    import jax
    import jax.numpy as jnp
    from jax import lax
    from numpyro.infer import SVI, Trace_ELBO

    compile_config = dataclasses.replace(config, num_steps=1, draws=1, rtol=0.0)
    key = (model, shape_key(arrays), compile_config, dtype, jax.default_backend())
    program = _PROGRAMS.get(key)
    if program is not None:
        return program, True
    guide = _make_guide(config, model, model.static)
    svi = SVI(model, guide, _make_optimizer(config), Trace_ELBO(num_particles=config.num_particles))

    def chunk(state, arrays):
        """``check_every`` steps; returns the state, the losses and the mean unconstrained
        parameters over the chunk (the Polyak-Ruppert average of the iterates)."""
        def step(carry, _):
            state, total = carry
            state, loss = svi.update(state, **arrays)
            total = jax.tree.map(jnp.add, total, svi.optim.get_params(state.optim_state))
            return (state, total), loss

        zero = jax.tree.map(jnp.zeros_like, svi.optim.get_params(state.optim_state))
        (state, total), losses = lax.scan(step, (state, zero), None, length=config.check_every)
        return state, losses, jax.tree.map(lambda t: t / config.check_every, total)

    # ``svi.init`` stays un-jitted: an autoguide records its prototype trace on first call, and a
    # trace recorded under jit would hold tracers that ``sample_posterior`` later reads.
    program = _Program(svi, guide, lambda key, arrays, params=None: svi.init(key, init_params=params, **arrays),
                       jax.jit(chunk))
    _PROGRAMS.put(key, program)
    return program, False


def run_svi(model: BoundModel, arrays: Mapping[str, np.ndarray], config: SVIConfig, seed: int, *,
            latent_sites: tuple[str, ...], dtype: str = "float32", progress: bool = False,
            init_params: Mapping[str, np.ndarray] | None = None) -> SVIResult:
    """Fit ``config.guide`` to the posterior of ``model`` and draw ``config.draws`` from it.

    Parameters
    ----------
    model : BoundModel
    arrays : mapping of str -> array
        The model's array arguments, passed to the compiled step as arguments.
    config : SVIConfig
    seed : int
    latent_sites : tuple of str
        Names of the model's latent sample sites, the ones drawn from the guide.
    init_params : mapping of str -> array, optional
        Initial (constrained) values of the guide's parameters, e.g. ``SVIResult.params`` of an
        earlier fit (a warm start); by default the guide initializes itself.
    """
    import jax
    import jax.numpy as jnp
    from numpyro.infer import Predictive

    start = time.perf_counter()
    program, cached = _get_program(model, arrays, config, dtype)
    device_arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
    init_key, draw_key = jax.random.split(jax.random.PRNGKey(seed))
    if init_params is not None:
        init_params = {k: jnp.asarray(v) for k, v in init_params.items()}
    state = program.init(init_key, device_arrays, init_params)
    losses = []
    converged = False
    num_chunks = -(-config.num_steps // config.check_every)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_chunks * config.check_every, desc="SVI", unit="step")
    try:
        for k in range(num_chunks):
            state, chunk_losses, chunk_mean = program.chunk(state, device_arrays)
            chunk_losses = np.asarray(chunk_losses)
            losses.append(chunk_losses)
            if bar is not None:
                bar.update(chunk_losses.size)
                bar.set_postfix_str(f"loss {chunk_losses.mean():.4g}")
            if not np.all(np.isfinite(chunk_losses)):
                break
            if k >= 1 and has_converged(losses[-2], losses[-1], config.rtol):
                converged = True
                break
    finally:
        if bar is not None:
            bar.close()
    # Once the loss is flat, the iterates fluctuate around the optimum with the optimizer's step
    # noise; their average over the last chunk is a better estimate than the last iterate.
    params = program.svi.constrain_fn(chunk_mean) if converged else program.svi.get_params(state)
    if hasattr(program.guide, "sample_posterior"):
        draws = program.guide.sample_posterior(draw_key, params, sample_shape=(config.draws,), **device_arrays)
    else:
        draws = Predictive(program.guide, params=params, num_samples=config.draws)(draw_key, **device_arrays)
    draws = {k: np.asarray(v)[None] for k, v in draws.items() if k in latent_sites}
    losses = np.concatenate(losses)
    end = time.perf_counter()
    info = {
        "num_steps": int(losses.size),
        "converged": converged,
        "is_finite": bool(np.all(np.isfinite(losses))),
        "total_seconds": end - start,
        "cached_program": cached,
        "warm_start": init_params is not None,
        "backend": jax.default_backend(),
    }
    return SVIResult(draws, losses, {k: np.asarray(v) for k, v in params.items()}, info)


#: Settings of the quick SVI fits behind NUTS's ``init="map"`` and ``init="svi"``: Adam with
#: step 0.01 for at most 2000 steps, stopping early by the module's rule checked every 250 steps.
#: A starting point only needs to be in the bulk of the posterior, not at the optimum.
INIT_SVI = dict(optimizer="adam", learning_rate=0.01, num_steps=2000, check_every=250, rtol=1e-3)


def initial_draws(model: BoundModel, arrays: Mapping[str, np.ndarray], kind: str, num_draws: int, seed: int, *,
                  latent_sites: tuple[str, ...], dtype: str = "float32") -> tuple[dict[str, np.ndarray], dict]:
    """Starting points for NUTS chains from a quick SVI fit, ``(num_draws, *site_shape)`` per site.

    ``kind="map"``: the posterior mode (``AutoLaplaceApproximation``'s point estimate) and draws
    from the Laplace approximation around it, i.e. the mode jittered on the scale of the inverse
    Hessian. A singular or indefinite Hessian means a degenerate mode (typically a hierarchical
    scale collapsing to zero, where the joint density is unbounded), a bad place to start chains:
    then the draws come from the ``"svi"`` fit instead, and ``info["init_fallback"]`` says so.
    ``kind="svi"``: draws from a mean-field normal guide (``AutoNormal``).

    Returns the constrained draws and facts of the SVI fit (``init_*``: steps run, convergence,
    seconds, the guide used).
    """
    import warnings

    info: dict[str, Any] = {"init_fallback": None}
    if kind == "map":
        with warnings.catch_warnings(record=True) as caught:
            # NumPyro warns and returns the mode itself when the Hessian is singular.
            warnings.filterwarnings("always", message=".*Hessian of log posterior.*singular")
            draws, result = _guide_draws(model, arrays, "laplace", num_draws, seed, latent_sites, dtype)
        singular = False
        for w in caught:
            if "Hessian of log posterior" in str(w.message) and "singular" in str(w.message):
                singular = True
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        usable = not singular and all(np.all(np.isfinite(v)) for v in draws.values())
        info.update({f"init_map_{k}": v for k, v in result.info.items() if k in ("num_steps", "total_seconds")})
        if usable:
            info.update({f"init_{k}": v for k, v in result.info.items()
                         if k in ("num_steps", "converged", "total_seconds")}, init_guide="laplace")
            return draws, info
        info["init_fallback"] = "svi"
    draws, result = _guide_draws(model, arrays, "normal", num_draws, seed, latent_sites, dtype)
    info.update({f"init_{k}": v for k, v in result.info.items() if k in ("num_steps", "converged", "total_seconds")},
                init_guide="normal")
    return draws, info


def _guide_draws(model, arrays, guide: str, num_draws: int, seed: int, latent_sites, dtype):
    config = SVIConfig(guide=guide, draws=num_draws, **INIT_SVI)
    result = run_svi(model, arrays, config, seed, latent_sites=latent_sites, dtype=dtype)
    return {k: v[0] for k, v in result.draws.items()}, result
