"""Micro-batching of concurrent single-row predict requests into one compiled predictive call.

Requests with the same key (model, version, levels, kind, seed) share a queue and one worker task.
The worker takes every queued request at once (up to ``max_batch``) and, while more requests are
still being received (``incoming() > 0``), waits at most ``max_wait`` seconds for them; a request
that arrives alone is predicted at once, so a quiet server adds no wait. The batch is concatenated,
predicted in a worker thread (the event loop keeps serving) and each request gets its row back.

Known limitation: predictive random draws depend on a row's position within the call, so a
micro-batched row's interval can differ from a solo request's at the Monte Carlo level (both are
draws of the same predictive distribution). Requests that must be reproducible exactly are made
solo or with several rows.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any, Callable, Hashable, Mapping

import numpy as np

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Collects single-row requests per key and runs them as one call.

    Parameters
    ----------
    run_batch : callable
        ``run_batch(key, arrays, num_rows) -> result``, run in ``executor``; ``arrays`` are the
        requests' row arrays concatenated along the row axis.
    max_batch : int
        Most rows per call.
    max_wait : float
        Seconds a batch waits for requests still being received.
    executor : concurrent.futures.Executor
        Where ``run_batch`` runs.
    incoming : callable
        Number of requests being received but not yet submitted.
    on_batch : callable, optional
        Called with the size of every batch (metrics).
    """

    def __init__(self, run_batch: Callable, *, max_batch: int, max_wait: float, executor: Executor,
                 incoming: Callable[[], int] = lambda: 0, on_batch: Callable[[int], Any] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        self.run_batch = run_batch
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait)
        self.executor = executor
        self.incoming = incoming
        self.on_batch = on_batch
        self._queues: dict[Hashable, asyncio.Queue] = {}
        self._workers: dict[Hashable, asyncio.Task] = {}

    async def submit(self, key: Hashable, arrays: Mapping[str, np.ndarray]):
        """Predict one row; returns ``(result, index of this row in result)``."""
        if key not in self._queues:
            self._queues[key] = asyncio.Queue()
            self._workers[key] = asyncio.get_running_loop().create_task(self._work(key, self._queues[key]))
        future = asyncio.get_running_loop().create_future()
        self._queues[key].put_nowait((arrays, future))
        return await future

    async def _work(self, key: Hashable, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if self.incoming() <= 0 or remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            batch = [(a, f) for a, f in batch if not f.cancelled()]  # clients that went away
            if not batch:
                continue
            arrays = {k: np.concatenate([a[k] for a, _ in batch]) for k in batch[0][0]}
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                result = await loop.run_in_executor(self.executor, self.run_batch, key, arrays, len(batch))
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for i, (_, future) in enumerate(batch):
                    if not future.done():
                        future.set_result((result, i))

    async def close(self) -> None:
        """Stop the worker tasks."""
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._workers.clear()
        self._queues.clear()
