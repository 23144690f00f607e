"""``fit``: the single entry point that binds a NumPyro model to data, runs NUTS or SVI and
returns a ``Posterior``."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Mapping

import numpy as np

from .config import NUTSConfig, SVIConfig
from .data import bind_arguments, cast_float, check_seed, describe, split_arguments
from .errors import InputError
from .inference import BoundModel, run_nuts, run_svi
from .posterior import Posterior
from .runtime import enable_compilation_cache, precision
from .sites import inspect_model, with_rows

__all__ = ["fit", "METHODS"]

METHODS = ("nuts", "svi")


def _default_progress() -> bool:
    """Progress bars in an interactive terminal or a notebook kernel, not in logs."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def _cast(arrays: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        if v.dtype.kind == "f":
            out[k] = cast_float(k, v, dtype)
        elif v.dtype.kind in "iu":
            out[k] = v.astype(np.int64 if dtype == "float64" else np.int32, copy=False)
        else:
            out[k] = v
    return out


def _model_path(model: Callable) -> str | None:
    module, qualname = getattr(model, "__module__", None), getattr(model, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def fit(model: Callable, *args, method: str = "nuts", chains: int = 4, draws: int = 1000, warmup: int = 1000,
        target_accept: float = 0.8, dense_mass: bool = False, max_tree_depth: int = 10, init="uniform",
        guide="mvn", optimizer: str = "adam", learning_rate: float = 0.01, num_steps: int = 20_000,
        num_particles: int = 1, check_every: int = 1000, rtol: float = 1e-4,
        seed: int = 0, progress: bool | None = None, dtype: str = "float32",
        row_args: tuple[str, ...] | None = None, int_ranges: Mapping[str, tuple[int, int]] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        warn: bool = True, **kwargs) -> Posterior:
    """Fit a NumPyro model to data with NUTS or SVI.

    Parameters
    ----------
    model : callable
        A NumPyro model function. Data goes in as its arguments; observed sites use ``obs=``.
    *args, **kwargs
        The model's arguments. Arrays (numpy, pandas, JAX) become data; Python scalars, strings
        and ``None`` are static (they may set plate sizes). Arguments whose names clash with the
        options below go in ``model_kwargs``.
    method : {"nuts", "svi"}
        Inference method.
    chains : int
        NUTS chains, run in parallel over devices.
    draws : int
        Kept draws per NUTS chain; for SVI, the number of draws taken from the fitted guide
        (one chain).
    warmup : int
        NUTS warmup (adaptation) iterations per chain.
    target_accept : float
        NUTS target acceptance probability in (0, 1).
    dense_mass : bool
        Adapt a dense NUTS mass matrix.
    max_tree_depth : int
        Maximum NUTS tree depth.
    init : str or callable
        Initial positions: "uniform", "median", "mean", "sample", "feasible" or a NumPyro init
        strategy.
    guide : str or callable
        SVI guide: "normal", "mvn", "lowrank", "laplace" or a guide function taking the
        model's arguments.
    optimizer : str
        SVI optimizer: "adam", "clipped_adam", "adagrad", "sgd" or "rmsprop".
    learning_rate : float
        SVI step size.
    num_steps : int
        Most SVI steps.
    num_particles : int
        Monte Carlo samples per ELBO estimate.
    check_every : int
        SVI steps per compiled chunk; convergence is checked between chunks.
    rtol : float
        Relative tolerance of the SVI stopping rule (``bayesinf.inference.svi``).
    seed : int
        Seed of every random number of the fit.
    progress : bool, optional
        Progress bar; default on in a terminal or notebook.
    dtype : {"float32", "float64"}
        Floating-point precision of the fit (and of later predictions).
    row_args : tuple of str, optional
        Names of the row-wise arguments, when the default rule (arrays as long as the observed
        data) is not what you mean.
    int_ranges : mapping of str -> (int, int), optional
        Allowed inclusive ranges of integer row arguments at predict time (default: the range
        seen in the data, so an unseen category is refused instead of silently clipped by JAX's
        indexing). Declare a wider range when the model handles new levels itself.
    warn : bool
        Emit a ``ConvergenceWarning`` when ``Posterior.diagnose`` finds problems.

    Returns
    -------
    Posterior
    """
    if method not in METHODS:
        raise InputError("method", f"of fit must be one of {METHODS}; got {method!r}")
    seed = check_seed(seed, "fit")
    if not callable(model):
        raise InputError("model", f"must be a NumPyro model function; got {type(model).__name__}")
    if method == "nuts":
        config = NUTSConfig(chains=chains, draws=draws, warmup=warmup, target_accept=target_accept,
                            dense_mass=dense_mass, max_tree_depth=max_tree_depth, init=init)
    else:
        config = SVIConfig(guide=guide, optimizer=optimizer, learning_rate=learning_rate, num_steps=num_steps,
                           draws=draws, num_particles=num_particles, check_every=check_every, rtol=rtol)
    precision(dtype)  # validates dtype before any work
    progress = _default_progress() if progress is None else bool(progress)

    bound = bind_arguments(model, args, {**kwargs, **(model_kwargs or {})})
    arrays, columns, static = split_arguments(bound)
    arrays = _cast(arrays, dtype)
    bound_model = BoundModel(model, static)
    enable_compilation_cache()
    with precision(dtype):
        sites, trace = inspect_model(bound_model, arrays)
        observed_args = tuple(sites.observed_args.values())
        schema = describe(tuple(bound), arrays, columns, static, observed_args, row_args, int_ranges)
        sites = with_rows(sites, trace, schema.num_rows)
        if method == "nuts":
            result = run_nuts(bound_model, arrays, config, seed, dtype=dtype, progress=progress)
            draws_, stats, losses, info = result.draws, result.stats, None, result.info
        else:
            result = run_svi(bound_model, arrays, config, seed, latent_sites=sites.latent, dtype=dtype,
                             progress=progress)
            draws_ = _with_deterministic(bound_model, result.draws, arrays, sites.deterministic, seed)
            stats, losses, info = {}, result.losses, result.info
    settings = {"method": method, **{k: (v if not callable(v) else _model_path(v) or repr(v))
                                     for k, v in dataclasses.asdict(config).items()}}
    posterior = Posterior(model=model, method=method, draws=draws_, sample_stats=stats, schema=schema, data=arrays,
                          sites=sites, settings=settings, info=info, dtype=dtype, seed=seed, losses=losses,
                          model_path=_model_path(model))
    if warn:
        posterior.warn_if_unconverged()
    return posterior


def _with_deterministic(model: BoundModel, draws: Mapping[str, np.ndarray], arrays, names, seed: int):
    """Add deterministic sites, computed from the latent draws ``(1, draws, ...)``."""
    if not names:
        return dict(draws)
    import jax
    from numpyro.infer import Predictive

    flat = {k: v[0] for k, v in draws.items()}
    out = Predictive(model, posterior_samples=flat, return_sites=list(names))(jax.random.PRNGKey(seed), **arrays)
    return {**draws, **{k: np.asarray(v)[None] for k, v in out.items()}}
