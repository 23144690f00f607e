"""The predictive engine: posterior predictive draws for new rows, compiled once per posterior and
row bucket, with random numbers that depend only on the seed, the draw and each row's index.

``Predictor`` traces the model under ``vmap`` over posterior draws (latent sites substituted by
the draws) and over rows, and returns the observed sites' draws laid out ``(draws, rows, ...)`` as
the model makes them (a transpose inside XLA costs more than the draws on CPU; the host transposes
row blocks while it summarizes them, see ``bayesinf.prediction``).

Random numbers. Row ``r`` (its index in the whole request, or in the whole file when a file is
scored in pieces, see ``row_offset``) of posterior draw ``d`` runs the model on that one row with
the key ``fold_in(fold_in(PRNGKey(seed), r), d)``. A row's predictive draws are thus a function of
``(seed, draw, row index)`` and its own inputs only: they do not change with the request size, the
chunking, the memory budget, or how a file is split into chunks or Dask partitions. Two things make
this hold bitwise, for every distribution:

- one row per model call (batched by ``vmap``, which gives every key the numbers it gives alone):
  some samplers make an element's value depend on the other elements of the same call (JAX's
  Poisson rejection sampler keeps drawing until every element is accepted, and later acceptances
  overwrite earlier ones);
- one compiled loop body for every bucket: rows are computed ``ROW_BLOCK`` at a time by a loop
  whose trip count XLA does not see, so it is never unrolled or fused differently per bucket (the
  rounding of a matrix product can depend on its shape).

It requires what chunked prediction always assumed: given the parameters, the model treats rows
independently.

Compilation. Row counts are padded up to a power of two of at least ``ROW_BLOCK`` rows (a
*bucket*) so a new request size reuses a compiled function; rows beyond the memory budget are
processed in chunks of the largest bucket. Posterior draws, the key, the rows' indices and the data
are arguments of the compiled function, never constants.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import numpy as np

from .inference.binding import BoundModel
from .runtime import key_data

__all__ = ["Predictor", "bucket_size", "DEFAULT_MEMORY_BUDGET", "ROW_BLOCK"]

#: Bytes of predictive draws held at once per chunk (all observed sites together).
DEFAULT_MEMORY_BUDGET = 256 * 2**20
#: Requests of more rows than this are split into at least ``PIPELINE_CHUNKS`` chunks, so the
#: device draws one chunk while the host summarizes the previous one.
PIPELINE_MIN_ROWS = 512
PIPELINE_CHUNKS = 4
#: Rows computed together by one pass of the compiled loop body (a power of two). Every bucket runs
#: the same body on blocks of this many rows, so XLA computes a row bitwise alike in every bucket
#: (a matrix product's rounding can depend on its shape); a 1-row request costs a block.
ROW_BLOCK = 16
#: Row indices select keys through ``fold_in``'s 32-bit data: rows 0 .. 2**32 - 1 of a request or file.
ROW_IDS = 2**32


def bucket_size(num_rows: int, max_rows: int) -> int:
    """Rows computed for a chunk of ``num_rows`` rows: the smallest power of two >= ``num_rows``,
    at least ``ROW_BLOCK`` and at most ``max(max_rows, ROW_BLOCK)``."""
    return max(ROW_BLOCK, min(1 << max(num_rows - 1, 0).bit_length(), max_rows))


class Predictor:
    """Compiled posterior predictive of a fitted model.

    Parameters
    ----------
    model : callable
        The NumPyro model.
    static : mapping
        Static arguments for prediction (observed arguments set to None).
    draws : mapping of str -> array
        Latent posterior draws, ``(num_draws, *site_shape)`` each, substituted into the model.
    observed_sites : tuple of str
        Sites to predict.
    row_args : tuple of str
        Arguments whose leading axis is rows (padded to the bucket size).
    row_event_size : int
        Number of values per row over all observed sites (for the memory budget).
    memory_budget : int
        Bytes of predictive draws per chunk (at least one block of ``ROW_BLOCK`` rows is computed).
    """

    def __init__(self, model, static: Mapping[str, Any], draws: Mapping[str, np.ndarray],
                 observed_sites: tuple[str, ...], row_args: tuple[str, ...], *, row_event_size: int = 1,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, itemsize: int = 4):
        import jax
        import jax.numpy as jnp

        self.model = BoundModel(model, static)
        self.observed_sites = tuple(observed_sites)
        self.row_args = tuple(row_args)
        self.num_draws = int(next(iter(draws.values())).shape[0]) if draws else 1
        self.params = {k: jnp.asarray(v) for k, v in draws.items()}
        per_row = max(1, self.num_draws * row_event_size * itemsize)
        budget_rows = 1 << max(0, int(math.floor(math.log2(max(1, memory_budget // per_row)))))
        self.max_rows = max(ROW_BLOCK, budget_rows)
        self._fn = jax.jit(self._draws_fn)

    def _draws_fn(self, params, rng_key, row_ids, arrays):
        import jax
        import jax.numpy as jnp
        from jax import lax
        from numpyro import handlers

        num_rows = row_ids.shape[0]

        def one(param, key, row):
            seeded = handlers.seed(handlers.substitute(self.model, data=param), key)
            trace = handlers.trace(seeded).get_trace(**row)
            return {s: trace[s]["value"] for s in self.observed_sites}

        def block(i):  # rows i * ROW_BLOCK ... of every draw: {site: (draws, ROW_BLOCK, ...)}
            take = lambda v: lax.dynamic_slice_in_dim(v, i * ROW_BLOCK, ROW_BLOCK, axis=0)
            rows = {k: (take(v)[:, None] if k in self.row_args else v) for k, v in arrays.items()}  # (B, 1, ...)
            row_axes = {k: (0 if k in self.row_args else None) for k in arrays}
            row_keys = jax.vmap(jax.random.fold_in, (None, 0))(rng_key, take(row_ids))

            def one_draw(param, draw):
                keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, draw)
                return jax.vmap(one, (None, 0, row_axes))(param, keys, rows)

            out = jax.vmap(one_draw)(params, jnp.arange(self.num_draws))  # (draws, B, 1, ...)
            return {s: v.reshape(v.shape[0], ROW_BLOCK, *v.shape[3:]) for s, v in out.items()}

        shapes = jax.eval_shape(block, 0)
        init = {s: jnp.zeros((v.shape[0], num_rows, *v.shape[2:]), v.dtype) for s, v in shapes.items()}

        def body(i, out):
            values = block(i)
            return {s: lax.dynamic_update_slice_in_dim(out[s], values[s], i * ROW_BLOCK, axis=1) for s in out}

        # The trip count is hidden from XLA, so every bucket runs the same loop body, never unrolled
        # or fused with its surroundings: a row's numbers are bitwise the same in every bucket.
        num_blocks = lax.optimization_barrier(jnp.int32(num_rows // ROW_BLOCK))
        return lax.fori_loop(0, num_blocks, body, init)

    @property
    def compiled(self):
        """The jitted function ``(params, rng_key, row_ids, arrays) -> {site: (draws, rows, ...)}``;
        ``row_ids`` (uint32, ``(rows,)``) are the rows' global indices, which select their keys."""
        return self._fn

    def compile_count(self) -> int:
        """Number of compiled variants (one per row bucket used so far)."""
        return self._fn._cache_size()

    def warm_up(self, arrays: Mapping[str, np.ndarray], buckets=(1,)) -> None:
        """Compile for the given bucket sizes using the first row of ``arrays``."""
        import jax

        for b in sorted({bucket_size(b, self.max_rows) for b in buckets}):
            padded = {k: (np.repeat(v[:1], b, axis=0) if k in self.row_args else v) for k, v in arrays.items()}
            jax.block_until_ready(self._fn(self.params, key_data(0), np.arange(b, dtype=np.uint32),
                                           padded))

    def chunk_rows(self, num_rows: int) -> int:
        """Rows per chunk for a request of ``num_rows`` rows (a power of two, at most ``max_rows``)."""
        if num_rows <= PIPELINE_MIN_ROWS:
            return bucket_size(num_rows, self.max_rows)
        return bucket_size(-(-num_rows // PIPELINE_CHUNKS), self.max_rows)

    def chunks(self, arrays: Mapping[str, np.ndarray], num_rows: int, seed: int, row_offset: int = 0,
               row_ids: np.ndarray | None = None) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """Predictive draws chunk by chunk: yields ``(start, stop, {site: (draws, stop-start, ...)})``.

        Parameters
        ----------
        arrays : mapping of str -> np.ndarray
            Model arguments; row arguments have ``num_rows`` rows.
        num_rows : int
        seed : int
        row_offset : int
            Global index of the first row (its position in the whole file when a file is scored in
            pieces): row ``i`` of ``arrays`` gets the draws of global row ``row_offset + i``.
        row_ids : array of int, optional
            Global index of every row, ``(num_rows,)``, in [0, 2**32), instead of ``row_offset``:
            e.g. each request's own ``0..n-1`` when several requests share one call, so that each
            gets the numbers it gets alone.

        The next chunk is dispatched before the current one is handed over, so the device computes
        it while the caller summarizes.
        """
        import jax

        from .errors import InputError

        if row_ids is None:
            if row_offset + num_rows > ROW_IDS:
                raise InputError("row_offset", f"is {row_offset}, so rows reach index {row_offset + num_rows - 1}",
                                 f"row indices below {ROW_IDS} (32-bit keys)")
            ids = np.arange(row_offset, row_offset + num_rows, dtype=np.uint32)
        else:
            ids = np.asarray(row_ids)
            if ids.shape != (num_rows,) or ids.dtype.kind not in "iu" or (ids.size and (ids.min() < 0 or
                                                                                      ids.max() >= ROW_IDS)):
                raise InputError("row_ids", f"has shape {ids.shape} and dtype {ids.dtype}",
                                 f"{num_rows} integers in [0, {ROW_IDS})")
            ids = ids.astype(np.uint32)
        base = key_data(seed)
        pending = None
        step = self.chunk_rows(num_rows)
        for start in range(0, num_rows, step):
            stop = min(start + step, num_rows)
            n = stop - start
            size = bucket_size(n, step)
            chunk_ids = ids[start:stop]
            if size > n:
                chunk_ids = np.concatenate([chunk_ids, np.repeat(chunk_ids[-1:], size - n)])
            chunk = {}
            for k, v in arrays.items():
                if k in self.row_args:
                    part = v[start:stop]
                    if size > n:
                        part = np.concatenate([part, np.repeat(part[-1:], size - n, axis=0)])
                    chunk[k] = part
                else:
                    chunk[k] = v
            out = self._fn(self.params, base, chunk_ids, chunk)  # dispatched, not awaited
            if pending is not None:
                yield _to_host(*pending)
            pending = (start, stop, out)
        if pending is not None:
            yield _to_host(*pending)


def _to_host(start: int, stop: int, out) -> tuple[int, int, dict[str, np.ndarray]]:
    n = stop - start
    return start, stop, {s: np.asarray(v)[:, :n] for s, v in out.items()}
