"""``fit_minibatch``: SVI on data too large for memory, streamed in shuffled minibatches from numpy
arrays, memory-mapped ``.npy`` files or Parquet, returning an ordinary SVI ``Posterior``.

The model sees one batch per step and the total row count in its ``num_rows`` argument::

    def model(X, y=None, num_rows=None):
        beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
        with numpyro.plate("rows", num_rows or X.shape[0], subsample_size=X.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)

At fit, ``num_rows`` is the number of rows of the source and ``X``, ``y`` one batch, so NumPyro
scales the batch's log likelihood by ``num_rows / batch_size``; at predict time ``num_rows`` is
None and the plate covers the new rows.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import numpy as np

from .config import SVIConfig
from .data import bind_arguments, check_seed, describe, split_arguments
from .errors import InputError
from .fitting import default_progress, model_import_path
from .inference.binding import BoundModel
from .inference.minibatch import Subsampled, check_scaling, run_minibatch_svi
from .posterior import Posterior
from .runtime import enable_compilation_cache, precision
from .sites import inspect_model, with_rows
from .sources import ROW_INDEX, Prefetcher, batches, open_source, to_precision

__all__ = ["fit_minibatch", "ROWS_ARGUMENT"]

#: The model argument that receives the total number of rows.
ROWS_ARGUMENT = "num_rows"


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(name, f"of fit_minibatch must be an int >= {minimum}; got {value!r}")
    return int(value)


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise InputError(name, f"of fit_minibatch must be a float in (0, 1]; got {value!r}")
    return float(value)


def _add_deterministic(model: BoundModel, draws: Mapping[str, np.ndarray], arrays, names, seed: int):
    """Add the deterministic sites, computed from the latent draws ``(1, draws, ...)`` on ``arrays``."""
    if not names:
        return dict(draws)
    import jax
    from numpyro.infer import Predictive

    flat = {k: v[0] for k, v in draws.items()}
    out = Predictive(model, posterior_samples=flat, return_sites=list(names))(jax.random.PRNGKey(seed), **arrays)
    return {**draws, **{k: np.asarray(v)[None] for k, v in out.items()}}


def fit_minibatch(model: Callable, source, *, batch_size: int = 1024, num_rows: int | None = None,
                  columns: Mapping[str, Any] | None = None, guide="normal", optimizer: str = "adam",
                  learning_rate: float = 0.03, lr_decay: float = 0.03, init_scale: float | None = None,
                  num_steps: int = 10_000,
                  check_every: int = 500, average: float = 0.5, rtol: float = 1e-4, stop_early: bool = False,
                  num_particles: int = 1, draws: int = 1000, seed: int = 0, dtype: str = "float32",
                  buffer_rows: int | None = None, block_rows: int | None = None, prefetch: int = 2,
                  keep_rows: int = 1000, int_ranges: Mapping[str, tuple[int, int]] | None = None,
                  progress: bool | None = None, warn: bool = True, model_kwargs: Mapping[str, Any] | None = None,
                  **kwargs) -> Posterior:
    """Fit a NumPyro model by minibatch SVI, streaming the rows from ``source``.

    Parameters
    ----------
    model : callable
        A NumPyro model with a ``num_rows`` argument whose observed sites sit in
        ``numpyro.plate(name, num_rows or X.shape[0], subsample_size=X.shape[0])`` (see the
        module docstring and ``docs/big_data.md``).
    source : mapping, str, Path, ArraySource or ParquetSource
        Model argument -> numpy array, ``np.memmap`` or ``.npy`` path (memory-mapped); or the
        path of a Parquet file or directory (``columns`` maps arguments to its columns).
    batch_size : int
        Rows per step; every batch is full, so the compiled step never sees a new shape.
    num_rows : int, optional
        Fit on the first ``num_rows`` rows of the source (default: all); the model receives it.
    columns : mapping of str -> str or list of str, optional
        Parquet only: model argument -> its column, or the columns stacked into it (a design
        matrix). Default: each column is the argument of the same name.
    guide, optimizer, num_particles, draws
        As for ``bayesinf.fit(method="svi")``; the guide defaults to ``"normal"`` (mean field).
    learning_rate : float
        Initial step size; it decays geometrically to ``learning_rate * lr_decay`` at ``num_steps``.
    lr_decay : float
        Final step size as a fraction of the initial one, in (0, 1].
    init_scale : float, optional
        Initial scale of the "normal", "mvn" and "lowrank" guides (default ``min(0.1, 1 /
        sqrt(num_rows))``, below the posterior sd, which minibatch noise makes slow to reach
        from above; see ``bayesinf.inference.minibatch``).
    num_steps : int
        Steps to run (rounded up to a whole number of chunks of ``check_every``).
    check_every : int
        Steps per compiled chunk: the batches of a chunk are read ahead and stacked, and the
        stopping rule is checked between chunks.
    average : float
        The fitted parameters average the iterates over this last fraction of the steps run.
    rtol : float
        Relative tolerance of the stopping rule (``bayesinf.inference.svi.has_converged``).
    stop_early : bool
        Stop when the rule holds; by default run every step and report the rule's verdict.
    seed : int
        Seeds the batch order, the ELBO estimates and the draws: same seed, same numbers.
    dtype : {"float32", "float64"}
        Precision; float data is cast batch by batch.
    buffer_rows : int, optional
        Rows of the shuffle buffer (default ``max(16 * batch_size, 65536, 2 * largest row
        group)``, at most the rows of the source).
    block_rows : int, optional
        Rows read at once from an array source (default ``batch_size``).
    prefetch : int
        Chunks read ahead on the background thread.
    keep_rows : int
        Rows of the first batch kept as the posterior's data (for ``to_arviz``, ``ppc``); the
        full data is never held.
    int_ranges : mapping of str -> (int, int), optional
        Allowed ranges of integer row arguments at predict time (default: those of the kept rows).
    progress : bool, optional
        Progress bar; default on in a terminal or notebook.
    warn : bool
        Emit a ``ConvergenceWarning`` when the loss was still decreasing at the end.
    model_kwargs, **kwargs
        The model's other arguments: static values, or arrays that are not row-wise (passed
        whole to every step).

    Returns
    -------
    Posterior
        An SVI posterior (``method="svi"``); ``info`` adds ``num_rows``, ``epochs``,
        ``rows_per_second`` and ``io_wait_seconds``.

    Raises
    ------
    InputError
        Bad arguments, a model without the subsampling plate, missing columns, non-numeric data,
        or a NaN, infinity or null found while reading (naming the argument, column and row).
    """
    if not callable(model):
        raise InputError("model", f"must be a NumPyro model function; got {type(model).__name__}")
    seed = check_seed(seed, "fit_minibatch")
    precision(dtype)
    try:
        parameters = inspect.signature(model).parameters
    except (TypeError, ValueError):
        raise InputError("model", "has no inspectable signature", "a Python function") from None
    if ROWS_ARGUMENT not in parameters:
        raise InputError("model", f"has no '{ROWS_ARGUMENT}' argument",
                         f"a model taking {ROWS_ARGUMENT}=None, the total row count, for its subsampling plate",
                         "See docs/big_data.md for the model convention.")
    batch_size = _check_int("batch_size", batch_size, 1)
    lr_decay = _check_fraction("lr_decay", lr_decay)
    if init_scale is not None and (isinstance(init_scale, bool) or not isinstance(init_scale, (int, float))
                                   or not init_scale > 0):
        raise InputError("init_scale", f"of fit_minibatch must be a positive float; got {init_scale!r}")
    average = _check_fraction("average", average)
    prefetch = _check_int("prefetch", prefetch, 1)
    keep_rows = _check_int("keep_rows", keep_rows, 1)
    for name, value in (("buffer_rows", buffer_rows), ("block_rows", block_rows)):
        if value is not None:
            _check_int(name, value, 1)
    config = SVIConfig(guide=guide, optimizer=optimizer, learning_rate=learning_rate, num_steps=num_steps,
                       draws=draws, num_particles=num_particles, check_every=check_every, rtol=rtol)
    progress = default_progress() if progress is None else bool(progress)

    source = open_source(source, columns)
    if source.num_rows == 0:
        raise InputError("source", "has no rows", "at least one row")
    total = source.num_rows if num_rows is None else _check_int("num_rows", num_rows, 1)
    if total > source.num_rows:
        raise InputError("num_rows", f"of fit_minibatch is {total} but the source has {source.num_rows} rows")
    if batch_size > total:
        raise InputError("batch_size", f"of fit_minibatch is {batch_size} but the source has only {total} rows",
                         f"at most {total}", "Use bayesinf.fit for data this small.")
    init_scale = float(min(0.1, 1.0 / np.sqrt(total)) if init_scale is None else init_scale)
    fields = source.fields
    others = {**kwargs, **(model_kwargs or {})}
    for name in fields:
        if name not in parameters:
            raise InputError(f"source['{name}']", "is not an argument of the model", f"some of {list(parameters)}")
        if name in others:
            raise InputError(name, "is given both by the source and as a keyword argument")
    if ROWS_ARGUMENT in others or ROWS_ARGUMENT in fields:
        raise InputError(ROWS_ARGUMENT, "is set by fit_minibatch (the rows of the source)",
                         hint="Use num_rows= of fit_minibatch to fit on the first rows only.")
    placeholders = {name: None for name in fields}
    bound = bind_arguments(model, (), {**placeholders, **others, ROWS_ARGUMENT: total})
    extra, extra_columns, static = split_arguments({k: v for k, v in bound.items() if k in others})
    extra = {k: to_precision(k, v, dtype) for k, v in extra.items()}
    order = tuple(bound)

    enable_compilation_cache()
    stream = batches(source, batch_size, seed=seed, num_rows=total, buffer_rows=buffer_rows,
                     block_rows=block_rows, dtype=dtype)
    prefetcher = Prefetcher(stream, config.check_every, depth=prefetch)
    try:
        with precision(dtype):
            first = prefetcher.get()
            kept = {k: np.asarray(v[0, :keep_rows]) for k, v in first.items() if k != ROW_INDEX}
            predict_static = {**static, ROWS_ARGUMENT: None}
            plain = BoundModel(model, predict_static)
            try:
                sites, trace = inspect_model(plain, {**kept, **extra})
            except InputError as exc:
                if not exc.problem.startswith("raised"):
                    raise
                raise InputError("model", f"{exc.problem} with {ROWS_ARGUMENT}=None",
                                 f"a model that also runs without {ROWS_ARGUMENT} (at predict time), e.g. "
                                 f"numpyro.plate('rows', {ROWS_ARGUMENT} or X.shape[0], "
                                 "subsample_size=X.shape[0])") from exc
            observed = tuple(sites.observed_args.values())
            columns_of = {**{n: (f.columns if f.columns and f.shape else None) for n, f in fields.items()},
                          **extra_columns}
            schema = describe(order, {**kept, **extra}, columns_of, predict_static, observed,
                              tuple(fields), int_ranges)
            sites = with_rows(sites, trace, schema.num_rows)
            subsampled = Subsampled(BoundModel(model, {**static, ROWS_ARGUMENT: total}), total, batch_size)
            batch = {k: v[0] for k, v in first.items()}
            check_scaling(subsampled, {**batch, **extra}, sites.observed)
            result = run_minibatch_svi(subsampled, first, prefetcher, extra, config, seed, latent_sites=sites.latent,
                                       lr_decay=lr_decay, init_scale=init_scale, average=average,
                                       stop_early=stop_early, dtype=dtype, progress=progress)
            del first, batch
            draws_ = _add_deterministic(plain, result.draws, {**kept, **extra}, sites.deterministic, seed)
    finally:
        prefetcher.close()
    rows_seen = result.info["num_steps"] * batch_size
    info = {**result.info, "num_rows": total, "batch_size": batch_size, "rows_seen": rows_seen,
            "epochs": rows_seen / total,
            # steady state: the steps after the first chunk, whose time includes compilation
            "rows_per_second": (result.info["steady_steps"] * batch_size / max(result.info["steady_seconds"], 1e-9)
                                if result.info["steady_steps"] else rows_seen / max(result.info["run_seconds"], 1e-9)),
            "kept_rows": schema.num_rows}
    settings = {"method": "svi", "minibatch": True, "batch_size": batch_size, "num_rows": total,
                "lr_decay": lr_decay, "init_scale": init_scale, "average": average, "stop_early": stop_early,
                "buffer_rows": buffer_rows, "block_rows": block_rows, "source": source.describe(),
                **{k: (v if not callable(v) else model_import_path(v) or repr(v))
                   for k, v in dataclasses.asdict(config).items()}}
    posterior = Posterior(model=model, method="svi", draws=draws_, sample_stats={}, schema=schema,
                          data={**kept, **extra}, sites=sites, settings=settings, info=info, dtype=dtype, seed=seed,
                          losses=result.losses, model_path=model_import_path(model))
    if warn:
        posterior.warn_if_unconverged()
    return posterior
