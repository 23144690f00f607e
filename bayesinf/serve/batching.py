"""Micro-batching of concurrent single-row predict requests into one compiled predictive call.

Requests with the same key (model, version, levels, kind, seed, draws returned) share a queue and
one worker task. The worker takes every queued request at once (up to ``max_batch``) and, while
more requests are still being received (``incoming() > 0``), yields to the event loop so they can
join, for at most ``max_wait`` seconds; a request that arrives alone is predicted at once, so a
quiet server adds no wait. The batch is predicted by ``run_batch``, on the event loop itself
(``executor=None``: a call of a few rows takes about a millisecond, less than a hop to a thread
and back) or in ``executor``, and each request gets its own result back.

Each request's rows keep their own row numbers in the call (``Predictor.chunks(row_ids=...)``),
so a micro-batched request gets exactly the numbers it gets alone.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any, Callable, Hashable, Sequence

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Collects single-row requests per key and runs them as one call.

    Parameters
    ----------
    run_batch : callable
        ``run_batch(key, items) -> results``: one result per item, in order.
    max_batch : int
        Most requests per call.
    max_wait : float
        Seconds a batch waits for requests still being received.
    executor : concurrent.futures.Executor, optional
        Where ``run_batch`` runs; None runs it on the event loop.
    incoming : callable
        Number of requests being received but not yet submitted.
    on_batch : callable, optional
        Called with the size of every batch (metrics).
    """

    def __init__(self, run_batch: Callable[[Hashable, Sequence[Any]], Sequence[Any]], *, max_batch: int,
                 max_wait: float, executor: Executor | None = None, incoming: Callable[[], int] = lambda: 0,
                 on_batch: Callable[[int], Any] | None = None):
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

    async def submit(self, key: Hashable, item: Any) -> Any:
        """Queue ``item`` under ``key``; returns its result once its batch has run."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers[key] = loop.create_task(self._work(key, queue))
        future = loop.create_future()
        queue.put_nowait((item, future))
        return await future

    async def _collect(self, queue: asyncio.Queue) -> list:
        loop = asyncio.get_running_loop()
        batch = [await queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            while not queue.empty() and len(batch) < self.max_batch:
                batch.append(queue.get_nowait())
            if len(batch) >= self.max_batch or self.incoming() <= 0 or loop.time() >= deadline:
                break
            await asyncio.sleep(0)  # let requests being received reach the queue
        return [(item, future) for item, future in batch if not future.cancelled()]  # clients that went away

    async def _work(self, key: Hashable, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(queue)
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            items = [item for item, _ in batch]
            try:
                if self.executor is None:
                    results = self.run_batch(key, items)
                else:
                    results = await loop.run_in_executor(self.executor, self.run_batch, key, items)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)

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
