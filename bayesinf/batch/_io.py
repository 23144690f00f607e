"""Tables in and out of batch prediction: streaming readers of CSV and Parquet files (or a pandas
DataFrame) in chunks of a fixed number of rows, and an atomic writer of the output file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Iterator, Mapping

from ..errors import InputError
from ..persistence import fsync_path

__all__ = ["open_source", "table_format", "atomic_table_writer", "write_part", "part_rows"]

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: Bytes of a file hashed at each end for its fingerprint (with its size and modification time).
FINGERPRINT_BYTES = 1 << 20


def table_format(path, field: str) -> str:
    """``"csv"`` or ``"parquet"`` from the suffix of ``path``; ``InputError`` naming ``field`` otherwise."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(field, f"'{path}' has suffix {Path(path).suffix!r}", f"one of {sorted(FORMATS)}")
    return fmt


def _rechunk(batches, rows: int) -> Iterator:
    """Record batches regrouped into tables of exactly ``rows`` rows (the last may be shorter)."""
    import pyarrow as pa

    buffer, held = [], 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - held, batch.num_rows)
            buffer.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows:
                yield pa.Table.from_batches(buffer)
                buffer, held = [], 0
    if held:
        yield pa.Table.from_batches(buffer)


class FileSource:
    """A CSV or Parquet file read in chunks of rows."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("source", f"'{self.path}' is not a file", "a .csv or .parquet file")
        self.format = table_format(self.path, "source")
        if self.format == "parquet":
            import pyarrow.parquet as pq

            try:
                meta = pq.ParquetFile(self.path)
            except Exception as exc:
                raise InputError("source", f"'{self.path}' is not a readable Parquet file ({exc})") from None
            self.columns = tuple(meta.schema_arrow.names)
            self.num_rows = meta.metadata.num_rows
        else:
            import pyarrow.csv as pcsv

            try:
                with pcsv.open_csv(self.path) as reader:
                    self.columns = tuple(reader.schema.names)
            except Exception as exc:
                raise InputError("source", f"'{self.path}' is not a readable CSV file ({exc})") from None
            self.num_rows = None

    def fingerprint(self) -> str:
        """Hash of the file's size, modification time and first and last MiB."""
        stat = self.path.stat()
        h = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        with open(self.path, "rb") as f:
            h.update(f.read(FINGERPRINT_BYTES))
            f.seek(max(0, stat.st_size - FINGERPRINT_BYTES))
            h.update(f.read(FINGERPRINT_BYTES))
        return h.hexdigest()

    def chunks(self, columns, chunk_rows: int, csv_types: Mapping[str, str]) -> Iterator:
        """``(start, pandas.DataFrame)`` per chunk of ``chunk_rows`` rows, reading only ``columns``."""
        import pyarrow as pa

        start = 0
        try:
            for table in _rechunk(self._batches(list(columns), chunk_rows, csv_types), chunk_rows):
                yield start, table.to_pandas()
                start += table.num_rows
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise self._read_error(exc, start, csv_types) from None

    def _read_error(self, exc, start: int, csv_types: Mapping[str, str]) -> InputError:
        """``InputError`` for a chunk that cannot be read, naming the column when Arrow's message gives
        its position in the file (``In CSV column #2: ...``)."""
        found = re.match(r"In CSV column #(\d+): (.*)", str(exc), re.S)
        if found and int(found.group(1)) < len(self.columns):
            column = self.columns[int(found.group(1))]
            return InputError(column, f"of '{self.path}' cannot be read at or after row {start} "
                              f"({found.group(2)})", f"values of type {csv_types.get(column, 'string')}")
        return InputError("source", f"'{self.path}' cannot be read after row {start} ({exc})",
                          "values of the types " + ", ".join(f"{c}: {t}" for c, t in csv_types.items()))

    def _batches(self, columns, chunk_rows: int, csv_types: Mapping[str, str]):
        import pyarrow as pa

        if self.format == "parquet":
            import pyarrow.parquet as pq

            yield from pq.ParquetFile(self.path).iter_batches(batch_size=min(chunk_rows, 1 << 16), columns=columns)
            return
        import pyarrow.csv as pcsv

        types = {c: pa.type_for_alias(t) for c, t in csv_types.items() if c in columns}
        yield from pcsv.open_csv(self.path, read_options=pcsv.ReadOptions(block_size=1 << 22),
                                 convert_options=pcsv.ConvertOptions(include_columns=columns, column_types=types))


class FrameSource:
    """A pandas DataFrame read in chunks of rows."""

    def __init__(self, frame):
        self.frame = frame
        self.columns = tuple(str(c) for c in frame.columns)
        self.num_rows = len(frame)
        self.path = None

    def fingerprint(self) -> str:
        """Hash of the frame's values (row by row), column names and dtypes."""
        import pandas as pd

        h = hashlib.sha256(repr([(str(c), str(t)) for c, t in self.frame.dtypes.items()]).encode())
        h.update(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        return h.hexdigest()

    def chunks(self, columns, chunk_rows: int, csv_types=None) -> Iterator:
        frame = self.frame[list(columns)]
        for start in range(0, len(frame), chunk_rows):
            yield start, frame.iloc[start:start + chunk_rows]


def open_source(source):
    """A ``FileSource`` for a path, a ``FrameSource`` for a pandas DataFrame."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return FrameSource(source)
    if isinstance(source, (str, os.PathLike)):
        return FileSource(source)
    raise InputError("source", f"is a {type(source).__name__}", "a .csv or .parquet path or a pandas DataFrame")


def write_part(frame, path: Path) -> None:
    """Write one chunk's output (a pandas DataFrame) as a Parquet part file, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    try:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def part_rows(path: Path) -> int | None:
    """Rows of a finished part file, or None if it is missing or unreadable."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:
        return None


@contextlib.contextmanager
def atomic_table_writer(path: Path, fmt: str):
    """Yields ``write(table)``, appending pandas DataFrames or Arrow tables to a temporary file
    beside ``path``; on success the file is fsynced and renamed to ``path`` (replacing it), on
    error removed, so ``path`` never holds a partial output."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    writer = None
    schema = None

    def write(table) -> None:
        nonlocal writer, schema
        if not isinstance(table, pa.Table):
            table = pa.Table.from_pandas(table, preserve_index=False)
        if writer is None:
            schema = table.schema.remove_metadata()
            writer = pq.ParquetWriter(tmp, schema) if fmt == "parquet" else pcsv.CSVWriter(tmp, schema)
        writer.write_table(table.cast(schema) if not table.schema.equals(schema) else table)

    try:
        yield write
        if writer is None:
            raise InputError("source", "has no rows", "at least one row to predict")
        writer.close()
        writer = None
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        tmp.unlink(missing_ok=True)
        raise
