"""The predictive engine: posterior predictive draws for new rows, compiled once per posterior and
row bucket.

``Predictor`` traces the model once per draw under ``vmap`` with the latent sites substituted by
posterior draws, and returns the observed sites' draws laid out ``(draws, rows, ...)`` as the
model makes them (a transpose inside XLA costs more than the draws on CPU; the host transposes
row blocks while it summarizes them, see ``bayesinf.prediction``). Row counts are padded up to a power of two (a
*bucket*) so a new request size reuses a compiled function; rows beyond the memory budget are
processed in chunks of the largest bucket. Posterior draws and data are arguments of the compiled
function, never constants.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import numpy as np

from .inference.binding import BoundModel

__all__ = ["Predictor", "bucket_size", "DEFAULT_MEMORY_BUDGET"]

#: Bytes of predictive draws held at once per chunk (all observed sites together).
DEFAULT_MEMORY_BUDGET = 256 * 2**20
#: Requests of more rows than this are split into at least ``PIPELINE_CHUNKS`` chunks, so the
#: device draws one chunk while the host summarizes the previous one.
PIPELINE_MIN_ROWS = 512
PIPELINE_CHUNKS = 4


def bucket_size(num_rows: int, max_rows: int) -> int:
    """Smallest power of two >= ``num_rows``, capped at ``max_rows``."""
    return min(1 << max(num_rows - 1, 0).bit_length(), max_rows)


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
        Bytes of predictive draws per chunk.
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
        self.max_rows = 1 << max(0, int(math.floor(math.log2(max(1, memory_budget // per_row)))))
        self._fn = jax.jit(self._draws_fn)

    def _draws_fn(self, params, rng_key, arrays):
        import jax
        import jax.numpy as jnp
        from numpyro import handlers

        def one_draw(param, key):
            seeded = handlers.seed(handlers.substitute(self.model, data=param), key)
            trace = handlers.trace(seeded).get_trace(**arrays)
            return {s: trace[s]["value"] for s in self.observed_sites}

        keys = jax.random.split(rng_key, self.num_draws)
        if params:
            return jax.vmap(one_draw)(params, keys)
        return jax.vmap(lambda key: one_draw({}, key))(keys)

    @property
    def compiled(self):
        """The jitted function ``(params, rng_key, arrays) -> {site: (draws, rows, ...)}``."""
        return self._fn

    def compile_count(self) -> int:
        """Number of compiled variants (one per row bucket used so far)."""
        return self._fn._cache_size()

    def warm_up(self, arrays: Mapping[str, np.ndarray], buckets=(1,)) -> None:
        """Compile for the given bucket sizes using the first row of ``arrays``."""
        import jax

        for b in buckets:
            padded = {k: (np.repeat(v[:1], b, axis=0) if k in self.row_args else v) for k, v in arrays.items()}
            jax.block_until_ready(self._fn(self.params, jax.random.PRNGKey(0), padded))

    def chunk_rows(self, num_rows: int) -> int:
        """Rows per chunk for a request of ``num_rows`` rows (a power of two, at most ``max_rows``)."""
        if num_rows <= PIPELINE_MIN_ROWS:
            return bucket_size(num_rows, self.max_rows)
        return bucket_size(-(-num_rows // PIPELINE_CHUNKS), self.max_rows)

    def chunks(self, arrays: Mapping[str, np.ndarray], num_rows: int, seed: int
               ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """Predictive draws chunk by chunk: yields ``(start, stop, {site: (draws, stop-start, ...)})``.

        Chunk ``i`` uses the key ``fold_in(PRNGKey(seed), i)``, so results depend only on the
        seed, the rows and the memory budget. The next chunk is dispatched before the current one
        is handed over, so the device computes it while the caller summarizes.
        """
        import jax

        base = jax.random.PRNGKey(seed)
        pending = None
        step = self.chunk_rows(num_rows)
        for i, start in enumerate(range(0, num_rows, step)):
            stop = min(start + step, num_rows)
            n = stop - start
            size = bucket_size(n, step)
            chunk = {}
            for k, v in arrays.items():
                if k in self.row_args:
                    part = v[start:stop]
                    if size > n:
                        part = np.concatenate([part, np.repeat(part[-1:], size - n, axis=0)])
                    chunk[k] = part
                else:
                    chunk[k] = v
            out = self._fn(self.params, jax.random.fold_in(base, i), chunk)  # dispatched, not awaited
            if pending is not None:
                yield _to_host(*pending)
            pending = (start, stop, out)
        if pending is not None:
            yield _to_host(*pending)


def _to_host(start: int, stop: int, out) -> tuple[int, int, dict[str, np.ndarray]]:
    n = stop - start
    return start, stop, {s: np.asarray(v)[:, :n] for s, v in out.items()}
