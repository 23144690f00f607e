"""Row sources for minibatch fits: numpy arrays (in memory or memory-mapped ``.npy`` files) and
Parquet files, read block by block and never materialised whole.

A source exposes ``num_rows``, its ``fields`` (one per model argument) and ``read(block)``, which
returns the rows of one block, checked (no NaN, infinity or null; the error names the argument,
the column and the row) and cast to the fit's precision. ``batches`` turns a source into an endless
stream of fixed-size shuffled batches, and ``Prefetcher`` stacks them into chunks of steps on a
background thread and moves each chunk to the device.

Randomisation (``batches``), once per epoch (a pass over the rows):

1. the rows are cut into blocks of contiguous rows, at a random offset for array sources (so
   block boundaries move from epoch to epoch) and at row-group boundaries for Parquet;
2. the blocks are read in a random order into a shuffle buffer of at least ``buffer_rows`` rows;
3. when the buffer is full its rows are permuted and emitted as batches of ``batch_size`` rows;
   the remainder (fewer than ``batch_size`` rows) stays in the buffer, so every batch is full
   and rows carried over at the end of an epoch open the next one.

Every row is therefore emitted exactly once per epoch (up to the fewer than ``batch_size`` rows
carried over the epoch boundary), so the average of the minibatch gradients over an epoch is the
full-data gradient: SGD sees an unbiased gradient on average. Within an epoch, rows that share a
buffer are sampled together, which adds variance (not bias) when the file is sorted by a
covariate; a larger ``buffer_rows`` mixes more.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from .data import cast_float
from .errors import InputError

__all__ = ["Field", "Block", "ArraySource", "ParquetSource", "open_source", "batches", "Prefetcher", "to_precision",
           "ROW_INDEX"]

#: Name under which a batch carries the source row numbers of its rows, ``(batch_size,)`` int32.
ROW_INDEX = "_rows"


@dataclass(frozen=True)
class Field:
    """One model argument read from a source.

    Attributes
    ----------
    name : str
        The model argument.
    shape : tuple of int
        Shape of one row (after the row axis).
    dtype : np.dtype
        Dtype as stored.
    columns : tuple of str or None
        Parquet columns stacked into this argument, in order (None for arrays).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    columns: tuple[str, ...] | None = None


class Block(NamedTuple):
    """Rows ``start`` to ``stop - 1`` (source row numbers); ``file`` and ``group`` locate a Parquet
    row group (-1 for arrays)."""

    start: int
    stop: int
    file: int = -1
    group: int = -1


def _check_numeric(field: str, dtype) -> None:
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == bool):
        raise InputError(field, f"has dtype {dtype}", "integers, floats or booleans",
                         "Encode categories as integer codes first.")


def to_precision(name: str, array: np.ndarray, dtype: str) -> np.ndarray:
    """The fit's precision: floats to ``dtype``, integers to int32 (int64 under float64)."""
    if array.dtype.kind == "f":
        return cast_float(name, array, dtype)
    if array.dtype.kind in "iu":
        return array.astype(np.int64 if dtype == "float64" else np.int32, copy=False)
    return array


def _check_finite(name: str, array: np.ndarray, block: Block, where: str, columns=None) -> None:
    """Raise ``InputError`` naming the row (and column) of the first NaN or infinity in ``array``,
    the rows of ``block``; ``columns`` names the columns of a 2-D array (default: their index)."""
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array)
    if bad.any():
        pos = np.argwhere(bad)[0]
        row = block.start + int(pos[0])
        column = ""
        if isinstance(columns, str):
            column = f", column {columns!r}"
        elif array.ndim >= 2:
            column = f", column {columns[pos[1]]!r}" if columns else f", column {int(pos[1])}"
        raise InputError(name, f"has value {array[tuple(pos)]} at row {row}{column} (read in rows "
                         f"{block.start}-{block.stop - 1}{where})", "finite numbers",
                         "Drop or impute missing values in the source first.")


class ArraySource:
    """Rows from numpy arrays: in memory, ``np.memmap`` or ``.npy`` files opened memory-mapped.

    Parameters
    ----------
    arrays : mapping of str -> array or path
        Model argument -> array with the rows on the first axis, or the path of a ``.npy`` file
        (opened with ``np.load(path, mmap_mode="r")``, so only the blocks read are paged in).
    """

    kind = "arrays"

    def __init__(self, arrays: Mapping[str, Any]):
        if not isinstance(arrays, Mapping) or not arrays:
            raise InputError("source", "must be a non-empty mapping of model argument -> array")
        self.arrays: dict[str, np.ndarray] = {}
        self.paths: dict[str, str] = {}
        for name, value in arrays.items():
            if isinstance(value, (str, Path)):
                path = Path(value)
                if path.suffix != ".npy" or not path.is_file():
                    raise InputError(f"source['{name}']", f"is the path {str(path)!r}, which is not a .npy file")
                try:
                    value = np.load(path, mmap_mode="r", allow_pickle=False)
                except ValueError as exc:
                    raise InputError(f"source['{name}']",
                                     f"cannot be memory-mapped from {str(path)!r} ({exc})") from None
                self.paths[name] = str(path)
            elif hasattr(value, "to_numpy") and not isinstance(value, np.ndarray):  # pandas
                value = value.to_numpy()
            elif not isinstance(value, np.ndarray):
                value = np.asarray(value)
            _check_numeric(f"source['{name}']", value.dtype)
            if value.ndim == 0:
                raise InputError(f"source['{name}']", "is a scalar", "an array with rows on its first axis")
            self.arrays[name] = value
        lengths = {n: a.shape[0] for n, a in self.arrays.items()}
        first = next(iter(lengths))
        for name, n in lengths.items():
            if n != lengths[first]:
                raise InputError(f"source['{name}']", f"has {n} rows but '{first}' has {lengths[first]}",
                                 "the same number of rows in every array")
        self.num_rows = lengths[first]
        self.fields = {n: Field(n, tuple(a.shape[1:]), a.dtype) for n, a in self.arrays.items()}

    def describe(self) -> dict:
        """JSON description (recorded in the fit's settings)."""
        return {"kind": self.kind, "num_rows": self.num_rows,
                "fields": {n: self.paths.get(n, "in memory") for n in self.fields}}

    def blocks(self, rng: np.random.Generator, block_rows: int, num_rows: int) -> list[Block]:
        """Contiguous blocks of ``block_rows`` rows covering rows ``0 .. num_rows - 1``, their
        boundaries shifted by a random offset."""
        offset = int(rng.integers(block_rows)) if num_rows > block_rows else 0
        edges = [0] + list(range(offset or block_rows, num_rows, block_rows)) + [num_rows]
        return [Block(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]

    def read(self, block: Block, dtype: str) -> dict[str, np.ndarray]:
        """Rows ``block.start .. block.stop - 1`` of every field, checked and cast to ``dtype``."""
        out = {}
        for name, array in self.arrays.items():
            part = np.asarray(array[block.start:block.stop])
            _check_finite(name, part, block, "")
            out[name] = to_precision(name, part, dtype)
        return out


class ParquetSource:
    """Rows from a Parquet file or a directory of Parquet files, read one row group at a time.

    Parameters
    ----------
    path : str or Path
        A ``.parquet`` file, or a directory whose ``*.parquet`` files (searched recursively,
        in sorted order) hold the rows one after another.
    columns : mapping of str -> str or sequence of str, optional
        Model argument -> the column it reads (rows of shape ``()``) or the columns stacked into
        it (rows of shape ``(len(columns),)``, e.g. a design matrix ``X``). Default: every column
        is the argument of the same name.
    """

    kind = "parquet"

    def __init__(self, path, columns: Mapping[str, Any] | None = None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
            if not files:
                raise InputError("source", f"is the directory {str(path)!r}, which holds no .parquet file")
        elif path.is_file():
            files = [path]
        else:
            raise InputError("source", f"is {str(path)!r}, which does not exist")
        self.path = path
        self.files = files
        self._handles: dict[int, Any] = {}
        schemas, self.groups = [], []  # groups: (file index, row group, first row, rows)
        start = 0
        for i, file in enumerate(files):
            try:
                meta = pq.ParquetFile(file).metadata
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError("source", f"file {str(file)!r} is not a readable Parquet file ({exc})") from None
            schemas.append(meta.schema.to_arrow_schema())
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if n:
                    self.groups.append((i, g, start, n))
                    start += n
        self.num_rows = start
        if columns is None:
            columns = {name: name for name in schemas[0].names}
        if not isinstance(columns, Mapping) or not columns:
            raise InputError("columns", "must be a non-empty mapping of model argument -> column name(s)")
        self.fields = {}
        for name, cols in columns.items():
            stacked = not isinstance(cols, str)
            cols = tuple(cols) if stacked else (cols,)
            if not cols or not all(isinstance(c, str) for c in cols):
                raise InputError(f"columns['{name}']", f"is {cols!r}", "a column name or a list of column names")
            dtypes = []
            for c in cols:
                for file, schema in zip(files, schemas):
                    if c not in schema.names:
                        raise InputError(f"columns['{name}']", f"names column {c!r}, which is not in {str(file)!r}",
                                         f"some of {schema.names}")
                    arrow = schema.field(c).type
                    if not (pa.types.is_integer(arrow) or pa.types.is_floating(arrow) or pa.types.is_boolean(arrow)):
                        raise InputError(f"column {c!r}", f"has Parquet type {arrow} in {str(file)!r}",
                                         "integers, floats or booleans", "Encode categories as integer codes first.")
                dtypes.append(schemas[0].field(c).type.to_pandas_dtype())
            self.fields[name] = Field(name, (len(cols),) if stacked else (), np.result_type(*dtypes), cols)

    def describe(self) -> dict:
        """JSON description (recorded in the fit's settings)."""
        return {"kind": self.kind, "path": str(self.path), "num_files": len(self.files), "num_rows": self.num_rows,
                "num_row_groups": len(self.groups), "columns": {n: list(f.columns) for n, f in self.fields.items()}}

    @property
    def max_block_rows(self) -> int:
        return max(n for *_, n in self.groups)

    def blocks(self, rng: np.random.Generator, block_rows: int, num_rows: int) -> list[Block]:
        """One block per row group (cut at ``num_rows``); ``block_rows`` does not apply."""
        return [Block(s, min(s + n, num_rows), i, g) for i, g, s, n in self.groups if s < num_rows]

    def _file(self, i: int):
        import pyarrow.parquet as pq

        if i not in self._handles:
            self._handles[i] = pq.ParquetFile(self.files[i])
        return self._handles[i]

    def read(self, block: Block, dtype: str) -> dict[str, np.ndarray]:
        """The rows of one row group, checked and cast to ``dtype``."""
        import pyarrow.compute as pc

        needed = list(dict.fromkeys(c for f in self.fields.values() for c in f.columns))
        table = self._file(block.file).read_row_group(block.group, columns=needed)
        table = table.slice(0, block.stop - block.start)
        where = f" of {str(self.files[block.file])!r}, row group {block.group}"
        out = {}
        for name, field in self.fields.items():
            parts = []
            for c in field.columns:
                column = table.column(c)
                if column.null_count:
                    row = block.start + int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
                    raise InputError(field.name, f"has a missing (null) value at row {row}, column {c!r} (read in rows "
                                     f"{block.start}-{block.stop - 1}{where})", "no missing values",
                                     "Drop or impute missing values in the source first.")
                values = column.to_numpy()
                _check_finite(name, values, block, where, c)
                parts.append(to_precision(name, values, dtype))
            out[name] = np.stack(parts, axis=1) if field.shape else parts[0]
        return out


def open_source(source, columns: Mapping[str, Any] | None = None):
    """A source from what the user passed: an ``ArraySource``/``ParquetSource`` as is, a mapping
    of arrays or ``.npy`` paths, or the path of a Parquet file or directory."""
    if isinstance(source, (ArraySource, ParquetSource)):
        if columns is not None:
            raise InputError("columns", "is given with a ready-made source", hint="Give the columns to ParquetSource.")
        return source
    if isinstance(source, Mapping):
        if columns is not None:
            raise InputError("columns", "applies to Parquet sources only")
        return ArraySource(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix == ".npy":
            raise InputError("source", f"is the .npy file {str(path)!r} alone",
                             "a mapping of model argument -> array or .npy path, e.g. {'X': 'X.npy', 'y': 'y.npy'}")
        return ParquetSource(path, columns)
    raise InputError("source", f"is a {type(source).__name__}",
                     "a mapping of model argument -> array or .npy path, or a Parquet file or directory")


def batches(source, batch_size: int, *, seed: int, num_rows: int | None = None, buffer_rows: int | None = None,
            block_rows: int | None = None, dtype: str = "float32") -> Iterator[dict[str, np.ndarray]]:
    """Endless stream of shuffled batches of ``batch_size`` rows (see the module docstring).

    Yields
    ------
    dict of str -> np.ndarray
        ``(batch_size, *field.shape)`` per field, plus ``ROW_INDEX``: the source row numbers
        ``(batch_size,)`` int32. The arrays are views into the shuffled buffer: copy what you
        keep beyond the next batch.
    """
    num_rows = source.num_rows if num_rows is None else num_rows
    block_rows = block_rows or batch_size
    if buffer_rows is None:
        largest = getattr(source, "max_block_rows", block_rows)
        buffer_rows = max(16 * batch_size, 65_536, 2 * largest)
    buffer_rows = max(min(buffer_rows, num_rows), batch_size)
    rng = np.random.default_rng(seed)
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = 0
    while True:  # one epoch per pass
        blocks = source.blocks(rng, block_rows, num_rows)
        for i in rng.permutation(len(blocks)):
            block = blocks[i]
            part = source.read(block, dtype)
            part[ROW_INDEX] = np.arange(block.start, block.stop, dtype=np.int32)
            pending.append(part)
            pending_rows += block.stop - block.start
            if pending_rows < buffer_rows:
                continue
            buffer = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            order = rng.permutation(pending_rows)
            full = pending_rows // batch_size * batch_size
            shuffled = {k: v[order[:full]] for k, v in buffer.items()}  # one gather per buffer
            for b in range(0, full, batch_size):
                yield {k: v[b:b + batch_size] for k, v in shuffled.items()}
            rest = order[full:]
            pending = [{k: v[rest] for k, v in buffer.items()}] if rest.size else []
            pending_rows = rest.size


class Prefetcher:
    """Reads ahead on a background thread: stacks ``steps`` batches into one chunk
    ``(steps, batch_size, ...)`` per field and moves it to the device with ``jax.device_put``,
    keeping up to ``depth`` chunks ready so the compiled steps do not wait on I/O.

    ``get()`` returns the next chunk (re-raising any error of the reader, e.g. an ``InputError``
    for a NaN found in a block); ``wait_seconds`` is the time ``get`` spent waiting; ``close()``
    stops the thread.
    """

    def __init__(self, stream: Iterator[dict[str, np.ndarray]], steps: int, depth: int = 2, device=None):
        self._stream = stream
        self._steps = steps
        self._device = device
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.wait_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="bayesinf-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        import jax

        try:
            while not self._stop.is_set():
                first = next(self._stream)
                chunk = {k: np.empty((self._steps, *v.shape), v.dtype) for k, v in first.items()}
                for k, v in first.items():
                    chunk[k][0] = v
                for s in range(1, self._steps):
                    for k, v in next(self._stream).items():
                        chunk[k][s] = v
                if not self._put(("chunk", jax.device_put(chunk, self._device))):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(("error", exc))

    def get(self) -> dict:
        start = time.perf_counter()
        kind, item = self._queue.get()
        self.wait_seconds += time.perf_counter() - start
        if kind == "error":
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
