"""``fit_many``: fit one model per group of rows of a DataFrame, locally or on Dask."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping

from ..config import NUTSConfig, SVIConfig
from ..data import check_seed
from ..errors import ConvergenceWarning, InputError, warn
from ..fitting import METHODS, model_import_path
from ..posterior import Posterior
from ..runtime import precision
from .collection import FitCollection, GroupFailure
from .execute import STRATEGIES, plan_tasks, run_tasks
from .problems import ModelSpec, group_seed, prepare_group, split_groups

__all__ = ["fit_many"]

_NUTS_OPTIONS = ("target_accept", "dense_mass", "max_tree_depth", "init", "init_mass_matrix")
_SVI_OPTIONS = ("guide", "optimizer", "learning_rate", "num_steps", "num_particles", "check_every", "rtol")
ERRORS = ("collect", "raise")


def fit_many(model_or_formula, df, by: str, *, method: str = "nuts", chains: int = 4, draws: int = 1000,
             warmup: int = 1000, seed: int = 0, client=None, n_jobs: int | None = None, strategy: str = "auto",
             batch_size: int | None = None, errors: str = "collect", columns: Mapping[str, Any] | None = None,
             model_kwargs: Mapping[str, Any] | None = None, family: str = "gaussian", link: str | None = None,
             priors: Mapping[str, Any] | None = None, min_rows: int | None = None, dtype: str = "float32",
             warn: bool = True, **fit_kwargs) -> FitCollection:
    """Fit one model per group of rows of ``df``.

    Parameters
    ----------
    model_or_formula : str or callable
        A formula (``"y ~ x + C(day)"``, built per group with ``Model.from_formula`` and the
        ``family``, ``link`` and ``priors`` given here); a NumPyro model with ``columns``; or
        ``make_args(rows) -> (model, args, kwargs)``, called with each group's rows (at predict
        time without the response: arguments the model observes are dropped from what it returns).
    df : pandas.DataFrame
        All rows; ``df[by]`` names each row's group (int or str keys, no missing values).
    by : str
        The group column.
    method : {"nuts", "svi"}
    chains, draws, warmup : int
        As ``bayesinf.fit``, per group.
    seed : int
        Group ``key`` is fitted with the seed ``group_seed(seed, key)`` (sha256 of seed and key), so
        a group's fit does not depend on which other groups are in ``df``.
    client : distributed.Client, optional
        Run on Dask: one task per batch of groups (at least one per worker); the draws are the
        same as when fitted locally.
    n_jobs : int, optional
        Run the batches in a pool of this many processes (each compiles its own sampler; the
        model must be importable). Default: in this process.
    strategy : {"auto", "vectorized", "sequential"}
        How a batch of groups with the same model structure and data shapes is sampled:
        ``"vectorized"`` runs all their chains in one compiled program (``vmap`` over groups and
        chains, ``pmap`` over devices), in lock-step, so each iteration costs the deepest tree of
        any group in the batch; ``"sequential"`` runs one group after another, each with its chains
        in parallel over devices, reusing one compiled sampler. ``"auto"``: sequential on CPU
        (measured faster, see ``docs/fit_many.md``), vectorized on GPU/TPU. SVI is always
        sequential. Groups of different sizes fall into different batches, each compiled once;
        no data is padded.
    batch_size : int, optional
        Most groups per vectorized program (default: all groups of equal shapes in one).
    errors : {"collect", "raise"}
        ``"collect"``: a group whose fit raises is reported in ``FitCollection.failed`` and the
        others still return; ``"raise"``: the first such error is raised.
    columns : mapping of str -> str or list of str, optional
        With a NumPyro model: model argument -> column (a ``(rows,)`` array) or list of columns
        (a ``(rows, k)`` array).
    model_kwargs : mapping, optional
        With a NumPyro model: further arguments, the same for every group (plate sizes, flags).
    family, link, priors
        With a formula: as ``Model.from_formula``.
    min_rows : int, optional
        Fewest rows a group must have. Default: for a formula, its number of fixed-effect
        coefficients plus the family's auxiliary parameters; otherwise 1.
    dtype : {"float32", "float64"}
    warn : bool
        Emit one ``ConvergenceWarning`` naming the groups whose diagnosis found problems.
    **fit_kwargs
        Further options of ``bayesinf.fit``: for NUTS ``target_accept``, ``dense_mass``,
        ``max_tree_depth``, ``init``, ``init_mass_matrix``; for SVI ``guide``, ``optimizer``, ``learning_rate``,
        ``num_steps``, ``num_particles``, ``check_every``, ``rtol``.

    Returns
    -------
    FitCollection

    Raises
    ------
    InputError
        ``by`` is not a column, a group key is missing or neither int nor str, a group has fewer
        than ``min_rows`` rows, or an option is invalid. If every group fails to build its
        model, the first group's error is raised (it is then not a per-group problem).
    """
    start = time.perf_counter()
    if method not in METHODS:
        raise InputError("method", f"of fit_many must be one of {METHODS}; got {method!r}")
    seed = check_seed(seed, "fit_many")
    if errors not in ERRORS:
        raise InputError("errors", f"of fit_many must be one of {ERRORS}; got {errors!r}")
    if strategy not in STRATEGIES:
        raise InputError("strategy", f"of fit_many must be one of {STRATEGIES}; got {strategy!r}")
    for name, value in (("batch_size", batch_size), ("n_jobs", n_jobs), ("min_rows", min_rows)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(name, f"of fit_many must be a positive int or None; got {value!r}")
    if client is not None and n_jobs is not None:
        raise InputError("n_jobs", "is given with a Dask client", "one of client= or n_jobs=")
    config = _config(method, chains, draws, warmup, fit_kwargs)
    precision(dtype)  # validates dtype
    spec = ModelSpec.create(model_or_formula, columns, model_kwargs, family, link, priors)
    groups = split_groups(df, by)

    problems, failed = [], {}
    for key, rows in groups:
        try:
            problems.append(prepare_group(spec, key, rows, group_seed(seed, key), dtype, min_rows))
        except Exception as exc:
            exc.add_note(f"(while building the model of group {by}={key!r})")
            if errors == "raise":
                raise
            failed[key] = exc
    if not problems:
        raise next(iter(failed.values()))
    small = [(p.key, p.num_rows, p.min_rows) for p in problems if p.num_rows < p.min_rows]
    if small:
        shown = ", ".join(f"{k!r} ({n} rows)" for k, n, _ in small[:10]) + (" ..." if len(small) > 10 else "")
        raise InputError(by, f"has {len(small)} group(s) with fewer rows than the model needs "
                         f"({small[0][2]}): {shown}", hint="Drop those groups or lower min_rows.")
    prepared = time.perf_counter()

    workers = n_jobs or 1
    if client is not None:
        workers = max(1, len(client.nthreads()))
    tasks = plan_tasks(problems, method, config, dtype, strategy, batch_size, min_tasks=workers)
    results = run_tasks(tasks, client=client, n_jobs=n_jobs)

    settings = {"method": method, **{k: (v if not callable(v) else model_import_path(v) or repr(v))
                                     for k, v in dataclasses.asdict(config).items()}}
    fits = {}
    for task, task_results in zip(tasks, results):
        for i, result in zip(task.index, task_results):
            problem = problems[i]
            if result.error is not None:
                result.error.add_note(f"(while fitting group {by}={problem.key!r})")
                if errors == "raise":
                    raise result.error
                failed[problem.key] = result.error
                continue
            fits[problem.key] = Posterior(
                model=problem.model, method=method, draws=result.draws, sample_stats=result.stats,
                schema=problem.schema, data=problem.arrays, sites=problem.sites, settings=settings,
                info={**result.info, "group_seed": problem.seed}, dtype=dtype, seed=problem.seed,
                losses=result.losses, model_path=model_import_path(problem.model))
    order = {key: n for n, (key, _) in enumerate(groups)}
    fits = dict(sorted(fits.items(), key=lambda kv: order[kv[0]]))
    failures = {k: GroupFailure(type(e).__name__, str(e), e)
                for k, e in sorted(failed.items(), key=lambda kv: order[kv[0]])}
    end = time.perf_counter()
    info = {"groups": len(groups), "fitted": len(fits), "failed": len(failures), "tasks": len(tasks),
            "vectorized_tasks": sum(t.vectorized for t in tasks), "prepare_seconds": prepared - start,
            "total_seconds": end - start, "executor": "dask" if client is not None else
            ("processes" if n_jobs and n_jobs > 1 else "local")}
    collection = FitCollection(fits, by, spec, failures, info)
    if warn:
        _warn(collection)
    return collection


def _config(method: str, chains, draws, warmup, options: Mapping[str, Any]):
    allowed = _NUTS_OPTIONS if method == "nuts" else _SVI_OPTIONS
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise InputError(unknown[0], f"is not an option of fit_many with method={method!r}",
                         f"one of {list(allowed)}")
    if method == "nuts":
        return NUTSConfig(chains=chains, draws=draws, warmup=warmup, **options)
    return SVIConfig(draws=draws, **options)


def _warn(collection: FitCollection) -> None:
    if not len(collection):
        return
    table = collection.diagnose()
    bad = table.loc[~table["ok"], collection.by].tolist()
    if bad:
        shown = ", ".join(map(repr, bad[:10])) + (" ..." if len(bad) > 10 else "")
        warn(ConvergenceWarning(f"{len(bad)} of {len(table)} groups show problems ({shown}); "
                                "see FitCollection.diagnose()."))
