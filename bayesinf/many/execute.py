"""Run the sampling of many groups: a plan of tasks, and the function that runs one task.

A task is a batch of groups that share a compiled program (same sampler model, same data shapes)
and a way to run them: ``vectorized`` (all groups in one program, ``bayesinf.many.sampler``) or
one group after another through ``bayesinf.inference.run_nuts``/``run_svi`` (chains in parallel
over devices, the compiled sampler reused from group to group). ``run_task`` is a plain
module-level function of plain values, so a local loop, a process pool and Dask workers run the
very same code on the very same batches and give the same numbers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import NUTSConfig, SVIConfig
from ..inference.binding import BoundModel, shape_key

__all__ = ["Task", "GroupResult", "run_task", "run_tasks", "plan_tasks", "STRATEGIES", "AUTO"]

STRATEGIES = ("auto", "vectorized", "sequential")
#: What ``strategy="auto"`` does per backend. Measured with ``benchmarks/fit_many.py`` on 2 CPU
#: cores (docs/fit_many.md): for 50 groups sequential took 21-24 s on the first call against
#: 30-50 s vectorized (the batched tree-building loop compiles slowly), and later calls were
#: within noise (vectorized 20% faster at 200 groups): vectorized NUTS advances all chains on a
#: device in lock-step, so every iteration costs the deepest tree among them (1.9x the mean tree
#: size for the benchmark's 50 chains per device). On GPU and TPU one program
#: over all groups uses the device's width, and one group at a time leaves it idle (not measured
#: here: no accelerator was available).
AUTO = {"cpu": "sequential", "gpu": "vectorized", "cuda": "vectorized", "rocm": "vectorized", "tpu": "vectorized"}
#: Tasks run one at a time in a process. Each already spreads its chains over all host devices,
#: and two XLA CPU programs running at once in one process (Dask worker threads) were measured to
#: change draws in the last float bits, which would break "Dask gives the same draws as local".
_RUN_LOCK = threading.Lock()


@dataclass
class Task:
    """A batch of groups run together; all fields are plain values (picklable for workers)."""

    method: str
    config: NUTSConfig | SVIConfig
    model: BoundModel
    arrays: list[dict[str, np.ndarray]]
    seeds: list[int]
    latent: tuple[str, ...]
    deterministic: tuple[str, ...]
    dtype: str
    vectorized: bool
    index: list[int]  # positions of the groups in the caller's list
    num_slots: int  # groups the vectorized program is laid out for (equal in all batches of a class)


@dataclass
class GroupResult:
    """Draws of one group, or the exception its fit raised (``error``)."""

    draws: dict[str, np.ndarray] | None = None
    stats: dict[str, np.ndarray] | None = None
    losses: np.ndarray | None = None
    info: dict[str, Any] | None = None
    error: BaseException | None = None


def _run_one(task: Task, i: int) -> GroupResult:
    from ..inference import run_nuts, run_svi

    try:
        if task.method == "nuts":
            result = run_nuts(task.model, task.arrays[i], task.config, task.seeds[i], dtype=task.dtype)
            return GroupResult(result.draws, result.stats, None, {**result.info, "strategy": "sequential"})
        from ..fitting import with_deterministic

        result = run_svi(task.model, task.arrays[i], task.config, task.seeds[i], latent_sites=task.latent,
                         dtype=task.dtype)
        draws = with_deterministic(task.model, result.draws, task.arrays[i], task.deterministic, task.seeds[i])
        return GroupResult(draws, {}, result.losses, {**result.info, "strategy": "sequential"})
    except Exception as exc:  # reported per group; the other groups still return
        return GroupResult(error=exc)


def run_task(task: Task) -> list[GroupResult]:
    """Sample every group of ``task``; a group whose fit raises gets its exception in ``error``.

    A vectorized batch that raises is run again one group at a time, so a failing group does not
    take the others down with it.
    """
    from ..runtime import enable_compilation_cache, precision

    enable_compilation_cache()
    with _RUN_LOCK, precision(task.dtype):
        if task.vectorized:
            from .sampler import run_nuts_groups

            try:
                out = run_nuts_groups(task.model, task.arrays, task.config, task.seeds, dtype=task.dtype,
                                      num_slots=task.num_slots)
                return [GroupResult(d, s, None, {**info, "strategy": "vectorized"}) for d, s, info in out]
            except Exception as exc:
                fallback = f"{type(exc).__name__}: {exc}"[:500]
                results = [_run_one(task, i) for i in range(len(task.arrays))]
                for r in results:
                    if r.info is not None:
                        r.info["vectorized_error"] = fallback
                return results
        return [_run_one(task, i) for i in range(len(task.arrays))]


def _backend() -> str:
    import jax

    return jax.default_backend()


def plan_tasks(problems, method: str, config, dtype: str, strategy: str, batch_size: int | None,
               min_tasks: int = 1) -> list[Task]:
    """Batch ``problems`` (a list of ``GroupProblem``) into tasks.

    Groups with the same sampler model and data shapes form a class; a class is split into
    ``ceil(size / batch_size)`` batches of near-equal size, and into at least ``min_tasks``
    batches (one per worker) when it has that many groups; all batches of a class share one
    compiled program. Batching does not change a group's seed. Sequential draws do not depend on
    the other groups at all; vectorized draws use the same random numbers whatever the batch, but
    may differ in the last bits of float rounding when a group sits at another position of
    another batch (XLA vectorizes across the batch).
    """
    classes: dict[Any, list[int]] = {}
    for i, p in enumerate(problems):
        classes.setdefault((p.sampler_model, shape_key(p.sampler_arrays)), []).append(i)
    backend = _backend()
    tasks = []
    for members in classes.values():
        first = problems[members[0]]
        count = 1 if not batch_size else -(-len(members) // batch_size)
        count = max(count, min(min_tasks, len(members)))
        num_slots = -(-len(members) // count)
        chosen = AUTO.get(backend, "sequential") if strategy == "auto" else strategy
        vectorized = method == "nuts" and num_slots > 1 and chosen == "vectorized"
        for part in np.array_split(np.asarray(members), count):
            part = [int(i) for i in part]
            tasks.append(Task(method, config, first.sampler_model, [problems[i].sampler_arrays for i in part],
                              [problems[i].seed for i in part], first.sites.latent, first.sites.deterministic,
                              dtype, vectorized, part, num_slots))
    return tasks


def run_tasks(tasks: list[Task], client=None, n_jobs: int | None = None) -> list[list[GroupResult]]:
    """Run ``tasks`` here (one after another), in a pool of ``n_jobs`` processes, or on Dask."""
    if client is not None:
        futures = client.map(run_task, tasks, pure=False)
        return client.gather(futures)
    if n_jobs is not None and n_jobs > 1 and len(tasks) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(run_task, tasks))
    out = []
    for task in tasks:
        t0 = time.perf_counter()
        out.append(run_task(task))
        for r in out[-1]:
            if r.info is not None:
                r.info.setdefault("task_seconds", time.perf_counter() - t0)
    return out
