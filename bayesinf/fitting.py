"""``fit``: the single entry point that binds a NumPyro model to data, runs NUTS or SVI and
returns a ``Posterior``."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import sys
from typing import Any, Callable, Mapping

import numpy as np

from .config import SVI_INIT_STRATEGIES, NUTSConfig, SVIConfig
from .data import bind_arguments, cast_float, check_seed, describe, split_arguments
from .errors import InputError
from .inference import BoundModel, run_nuts, run_svi
from .inference.nuts import Start, unconstrain_draws
from .inference.svi import initial_draws
from .posterior import Posterior
from .runtime import enable_compilation_cache, precision
from .sites import inspect_model, trace_model, with_rows

__all__ = ["fit", "fit_arrays", "trace_fit", "settings_of", "guide_params_of", "default_progress", "cast_arrays",
           "model_import_path", "with_deterministic", "METHODS", "MAX_SAVED_GUIDE_VALUES"]

METHODS = ("nuts", "svi")
#: SVI guide parameters are kept in ``Posterior.settings["guide_params"]`` (saved with the model,
#: so a loaded posterior can be updated from them) when they hold at most this many numbers.
MAX_SAVED_GUIDE_VALUES = 200_000


def default_progress() -> bool:
    """Progress bars in an interactive terminal or a notebook kernel, not in logs."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def cast_arrays(arrays: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """Data arrays in the fit's precision: floats to ``dtype``, integers to int32 (int64 with float64)."""
    out = {}
    for k, v in arrays.items():
        if v.dtype.kind == "f":
            out[k] = cast_float(k, v, dtype)
        elif v.dtype.kind in "iu":
            out[k] = v.astype(np.int64 if dtype == "float64" else np.int32, copy=False)
        else:
            out[k] = v
    return out


def model_import_path(model: Callable) -> str | None:
    """``"module:qualname"`` of an importable model function, else None (lambdas, local functions)."""
    module, qualname = getattr(model, "__module__", None), getattr(model, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def fit(model: Callable, *args, method: str = "nuts", chains: int = 4, draws: int = 1000, warmup: int = 1000,
        target_accept: float = 0.8, dense_mass: bool = False, max_tree_depth: int = 10, init="uniform",
        init_mass_matrix: str = "identity", chain_method: str = "parallel",
        init_params: Mapping[str, Any] | None = None,
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
    chain_method : {"parallel", "vectorized"}
        NUTS chains spread over the devices (one per CPU core), or all on one device in lock-step
        (faster for data-heavy models whose gradient is a large matrix product; see ``NUTSConfig``).
    draws : int
        Kept draws per NUTS chain; for SVI, the number of draws taken from the fitted guide
        (one chain).
    warmup : int
        NUTS warmup (adaptation) iterations per chain.
    target_accept : float
        NUTS target acceptance probability in (0, 1).
    dense_mass : bool
        Adapt a dense NUTS mass matrix.
    init_mass_matrix : {"identity", "gradient"}
        Inverse mass matrix the NUTS warmup starts from: the identity, or a diagonal scaled by the
        gradient at each chain's initial point (fewer warmup steps on badly scaled posteriors,
        see ``NUTSConfig``).
    max_tree_depth : int
        Maximum NUTS tree depth.
    init : str or callable
        Initial positions: "uniform", "median", "mean", "sample", "feasible" (NumPyro's
        ``init_to_*``), "map" (a quick MAP fit by SVI, chains started at draws from its Laplace
        approximation), "svi" (chains started at draws from a quick mean-field SVI fit), or a
        NumPyro init strategy.
    init_params : mapping of str -> array, optional
        NUTS initial values by latent site, in the model's (constrained) space: ``site_shape``
        (every chain starts there) or ``(chains, *site_shape)``. Sites left out start by ``init``'s
        rule (uniform in unconstrained space for the SVI-based strategies).
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
                            dense_mass=dense_mass, max_tree_depth=max_tree_depth, init=init,
                            init_mass_matrix=init_mass_matrix, chain_method=chain_method)
    else:
        config = SVIConfig(guide=guide, optimizer=optimizer, learning_rate=learning_rate, num_steps=num_steps,
                           draws=draws, num_particles=num_particles, check_every=check_every, rtol=rtol)
        if init_params is not None:
            raise InputError("init_params", "of fit applies to method='nuts'",
                             hint="For SVI, write the initial values into the guide.")
    if init_params is not None and not isinstance(init_params, Mapping):
        raise InputError("init_params", f"of fit must be a mapping of site name -> value; got "
                         f"{type(init_params).__name__}")
    precision(dtype)  # validates dtype before any work
    progress = default_progress() if progress is None else bool(progress)

    bound = bind_arguments(model, args, {**kwargs, **(model_kwargs or {})})
    arrays, columns, static = split_arguments(bound)
    arrays = cast_arrays(arrays, dtype)
    return fit_arrays(model, tuple(bound), arrays, columns, static, config, seed=seed, dtype=dtype,
                      progress=progress, row_args=row_args, int_ranges=int_ranges, warn=warn,
                      init_params=init_params)


def fit_arrays(model: Callable, order: tuple[str, ...], arrays: Mapping[str, np.ndarray],
               columns: Mapping[str, Any], static: Mapping[str, Any], config: NUTSConfig | SVIConfig, *,
               seed: int, dtype: str, progress: bool, row_args=None, int_ranges=None, warn: bool = True,
               init_params: Mapping[str, Any] | None = None, start: Start | None = None,
               guide_params: Mapping[str, np.ndarray] | None = None, info: Mapping[str, Any] | None = None,
               settings: Mapping[str, Any] | None = None) -> Posterior:
    """Fit ``model`` on checked arrays (the part of ``fit`` after argument binding).

    ``Posterior.update`` calls it with a warm ``start`` for NUTS or ``guide_params`` for SVI;
    ``info`` and ``settings`` entries are added to the posterior's.
    """
    method = "nuts" if isinstance(config, NUTSConfig) else "svi"
    enable_compilation_cache()
    with precision(dtype):
        bound_model, sites, trace, schema = trace_fit(model, order, arrays, columns, static, row_args, int_ranges)
        if method == "nuts":
            extra = {}
            if start is None and init_params is not None:
                start = _start_from_values(bound_model, arrays, sites, trace, init_params, config.chains, seed, dtype)
            elif start is None and isinstance(config.init, str) and config.init in SVI_INIT_STRATEGIES:
                start, extra = _start_from_svi(bound_model, arrays, sites, config, seed, dtype)
            result = run_nuts(bound_model, arrays, config, seed, dtype=dtype, progress=progress, start=start)
            draws_, stats, losses, run_info = result.draws, result.stats, None, {**result.info, **extra}
            run_info["warm_start"] = start is not None and start.kind == "tuned"
        else:
            result = run_svi(bound_model, arrays, config, seed, latent_sites=sites.latent, dtype=dtype,
                             progress=progress, init_params=guide_params)
            draws_ = with_deterministic(bound_model, result.draws, arrays, sites.deterministic, seed)
            stats, losses, run_info = {}, result.losses, result.info
    run_info["fitted_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    all_settings = settings_of(config)
    if method == "svi" and sum(v.size for v in result.params.values()) <= MAX_SAVED_GUIDE_VALUES:
        all_settings["guide_params"] = {k: {"shape": list(v.shape), "dtype": v.dtype.str, "values": v.ravel().tolist()}
                                        for k, v in result.params.items()}
    all_settings.update(settings or {})
    posterior = Posterior(model=model, method=method, draws=draws_, sample_stats=stats, schema=schema, data=arrays,
                          sites=sites, settings=all_settings, info={**run_info, **(info or {})}, dtype=dtype,
                          seed=seed, losses=losses, model_path=model_import_path(model))
    if warn:
        posterior.warn_if_unconverged()
    return posterior


def trace_fit(model: Callable, order, arrays, columns, static, row_args=None, int_ranges=None):
    """Trace the model on its data: ``(bound_model, sites, trace, schema)``."""
    bound_model = BoundModel(model, static)
    sites, trace = inspect_model(bound_model, arrays)
    observed_args = tuple(sites.observed_args.values())
    schema = describe(order, arrays, columns, static, observed_args, row_args, int_ranges)
    return bound_model, with_rows(sites, trace, schema.num_rows), trace, schema


def settings_of(config: NUTSConfig | SVIConfig) -> dict[str, Any]:
    """A config as the plain values kept in ``Posterior.settings``."""
    method = "nuts" if isinstance(config, NUTSConfig) else "svi"
    return {"method": method, **{k: (v if not callable(v) else model_import_path(v) or repr(v))
                                 for k, v in dataclasses.asdict(config).items()}}


def guide_params_of(settings: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The fitted SVI guide parameters kept in a posterior's settings, as arrays (None if not kept)."""
    saved = settings.get("guide_params")
    if not saved:
        return None
    return {k: np.asarray(v["values"], dtype=v["dtype"]).reshape(v["shape"]) for k, v in saved.items()}


def _start_from_values(model: BoundModel, arrays, sites, trace, init_params, chains: int, seed: int,
                       dtype: str) -> Start:
    """Initial positions from user values in constrained space (``init_params`` of ``fit``)."""
    unknown = [k for k in init_params if k not in sites.latent]
    if unknown:
        raise InputError("init_params", f"names {unknown}, which are not latent sites of the model",
                         f"some of {list(sites.latent)}")
    values = {}
    for name in sites.latent:
        shape = tuple(np.shape(trace[name]["value"]))
        if name not in init_params:  # NumPyro's uniform rule, a different draw per chain
            values[name] = np.stack([np.asarray(trace_model(model, arrays, seed=seed + c)[name]["value"])
                                     for c in range(chains)])
            continue
        value = np.asarray(init_params[name], dtype=dtype)
        if value.shape == shape:
            value = np.broadcast_to(value, (chains, *shape))
        if value.shape != (chains, *shape):
            raise InputError(f"init_params['{name}']", f"has shape {value.shape}",
                             f"the site's shape {shape} or ({chains}, {', '.join(map(str, shape))})".replace(", )", ")"))
        values[name] = value
    positions = unconstrain_draws(model, arrays, values, dtype)
    for name, value in positions.items():
        if not np.all(np.isfinite(value)):
            raise InputError(f"init_params['{name}']", "has values outside the support of the site's distribution",
                             "values the prior gives positive density")
    return Start(positions)


def _start_from_svi(model: BoundModel, arrays, sites, config: NUTSConfig, seed: int, dtype: str):
    """Initial positions from a quick SVI fit (``init="map"`` or ``"svi"``), with its facts."""
    draws, info = initial_draws(model, arrays, config.init, config.chains, seed, latent_sites=sites.latent,
                                dtype=dtype)
    positions = unconstrain_draws(model, arrays, draws, dtype)
    bad = [k for k, v in positions.items() if not np.all(np.isfinite(v))]
    if bad:
        raise InputError("init", f"'{config.init}' found no finite starting point for site(s) {bad}",
                         hint="Use init='uniform', or pass init_params.")
    return Start(positions), info


def with_deterministic(model: BoundModel, draws: Mapping[str, np.ndarray], arrays, names, seed: int):
    """Add deterministic sites, computed from the latent draws ``(1, draws, ...)``."""
    if not names:
        return dict(draws)
    import jax
    from numpyro.infer import Predictive

    flat = {k: v[0] for k, v in draws.items()}
    out = Predictive(model, posterior_samples=flat, return_sites=list(names))(jax.random.PRNGKey(seed), **arrays)
    return {**draws, **{k: np.asarray(v)[None] for k, v in out.items()}}
