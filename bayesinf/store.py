"""``ModelStore``: fitted posteriors kept by name and integer version, with aliases, for serving.

Layout under the store's root (every file JSON or ``.npz``; nothing is pickled)::

    <root>/<name>/<version>/model/       the core's saved posterior (manifest.json, arrays.npz)
    <root>/<name>/<version>/version.json store metadata: sha256 of every file, created-at, package
                                         versions, input schema, training-input statistics
    <root>/<name>/aliases.json           {"production": 3, ...}

A version is written in a hidden temporary directory beside it, fsynced, then renamed to its
number: a reader sees a whole version or none, a crash (even ``kill -9``) mid-save leaves only a
hidden ``.tmp-*`` directory that ``list`` ignores, and two processes saving the same name at once
get distinct versions because ``rename`` onto an existing (non-empty) version directory fails.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import errno
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .errors import InputError, ModelFileError
from .persistence import fsync_path, sha256_file, package_versions, import_model
from .persistence import load as load_posterior
from .persistence import save as save_posterior

__all__ = ["ModelStore", "STORE_FORMAT", "STORE_FORMAT_VERSION", "check_name", "describe_inputs", "column_statistics",
           "merge_column_statistics"]

STORE_FORMAT = "bayesinf.store.version"
STORE_FORMAT_VERSION = 1
VERSION_FILE = "version.json"
ALIASES_FILE = "aliases.json"
MODEL_DIR = "model"
MAX_NAME_LENGTH = 64
#: Integer row arguments with at most this many distinct values at fit have them listed as
#: categories in the metadata.
MAX_CATEGORIES = 1000
#: Float columns with at most this many distinct values at fit, each seen 5 times on average
#: (indicators, coded levels), have their value counts saved too, so drift checks treat them as
#: categorical.
MAX_DISCRETE_VALUES = 20
#: Probabilities of the ``quantiles`` of ``column_statistics`` (keys written ``%g``).
QUANTILE_PROBS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: Probabilities of its ``percentiles``: 0, 0.01, ..., 1.
PERCENTILE_PROBS = np.linspace(0.0, 1.0, 101)
RESERVED_ALIASES = ("latest",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(value: Any, field: str = "name") -> str:
    """A model or alias name: letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit,
    at most 64 characters; never a path (no ``/``, ``\\``, ``..``)."""
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH or not _NAME.match(value) \
            or ".." in value:
        raise InputError(field, f"must be 1-{MAX_NAME_LENGTH} characters of letters, digits, '.', '_' or '-' "
                         f"starting with a letter or digit, and no '..'; got {value!r}")
    return value


def _check_version(value: Any, field: str = "version") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise InputError(field, f"must be a positive integer; got {value!r}")
    return int(value)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(path.parent)


# ----------------------------------------------------------------------------- training statistics
def _column_names(spec) -> list[str]:
    if spec.columns is not None:
        return list(spec.columns)
    if spec.shape == ():
        return [spec.name]
    return [f"{spec.name}[{i}]" for i in range(int(np.prod(spec.shape)))]


def column_statistics(values, categorical: bool = False) -> dict:
    """Summary statistics of one training-input column ``(rows,)`` (the format drift checks read).

    Numbers: count, mean, sd, min, max, the 1/5/25/50/75/95/99% quantiles and the percentiles
    0, 1, ..., 100 (``percentiles``, 101 values); integer and boolean columns, ``categorical``
    ones, and float columns of at most ``MAX_DISCRETE_VALUES`` distinct values seen 5 times each on
    average also get their value counts (keys are the values written ``%d`` or ``%.17g``). Text
    columns (categorical levels) get their count and value counts only (keys are the levels), the
    value counts left out beyond ``MAX_CATEGORIES`` levels.
    """
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        uniq, counts = np.unique(values.astype(str), return_counts=True)
        stats = {"count": int(values.size), "mean": None}
        if uniq.size <= MAX_CATEGORIES:
            stats["value_counts"] = {str(u): int(c) for u, c in zip(uniq, counts)}
        return stats
    x = values.astype(np.float64)
    stats = {
        "count": int(x.size), "mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()), "max": float(x.max()),
        "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILE_PROBS, np.quantile(x, QUANTILE_PROBS))},
    }
    stats["percentiles"] = [float(v) for v in np.quantile(x, PERCENTILE_PROBS)]
    is_int = values.dtype.kind in "biu"
    uniq, counts = np.unique(values if is_int else x, return_counts=True)
    if _keeps_value_counts(uniq.size, x.size, is_int, categorical):
        stats["value_counts"] = dict(zip(_value_keys(uniq, is_int), (int(c) for c in counts)))
    return stats


def _keeps_value_counts(num_values: int, num_rows: int, is_int: bool, categorical: bool) -> bool:
    if is_int:
        return num_values <= MAX_CATEGORIES
    is_discrete = num_values <= MAX_DISCRETE_VALUES and 5 * num_values <= num_rows
    return is_discrete or categorical and num_values <= MAX_CATEGORIES


def _value_keys(values: np.ndarray, is_int: bool) -> list[str]:
    return [str(int(u)) for u in values] if is_int else [f"{u:.17g}" for u in values]


def merge_column_statistics(old: dict, new_values, categorical: bool = False) -> dict:
    """Statistics of a column's old rows, known only through their ``column_statistics`` ``old``,
    together with its new values ``(rows,)``, in the format of ``column_statistics``.

    Exact: count, mean and sd (pooled over the two parts), min, max, and the value counts (summed,
    then kept or left out by the rules of ``column_statistics`` for all rows with the new values'
    dtype; left out when ``old`` has none, as when the old rows had too many levels). Text columns
    (``old["mean"]`` is None) get their count and value counts.

    Approximate: the quantiles and percentiles invert the mixture CDF
    ``H = (n_old F_old + n_new F_new) / n``, where ``F_old`` interpolates linearly through the
    old percentiles (through min, quantiles and max when ``old`` has no percentiles) and
    ``F_new`` is the new values' empirical CDF. The old percentiles resolve the old rows'
    distribution to 1% of its mass: ``F_old`` is within ``0.01 + 1 / n_old`` of their empirical
    CDF, so ``H`` is within ``0.01 n_old / n + 1 / n`` of all rows' empirical CDF, and a merged
    quantile at probability ``q`` lies between the exact ones (``np.quantile`` of all rows) at
    ``q -/+ (0.01 n_old / n + 2 / n)``. Repeated merges add up these errors, each weighted by the
    share of the rows it concerns.

    Parameters
    ----------
    old : dict
        ``column_statistics`` of the old rows (or an earlier merge), as saved (JSON) or not.
    new_values : array-like, shape (rows,)
        The new rows' values of the column.
    categorical : bool
        As for ``column_statistics``: the column is a factor, so a float column keeps its value
        counts up to ``MAX_CATEGORIES`` levels.

    Returns
    -------
    dict
        The statistics of all ``old["count"] + rows`` rows; a copy of ``old`` when there are no
        new rows.

    Raises
    ------
    InputError
        ``old`` is not a column's statistics; ``new_values`` is not one column, has non-finite
        numbers, or is text for a numeric column.
    """
    if not isinstance(old, Mapping) or isinstance(old.get("count"), bool) \
            or not isinstance(old.get("count"), (int, np.integer)) or old["count"] < 1 or "mean" not in old:
        raise InputError("old", "is not a column's statistics", "a dict of column_statistics with a positive 'count'")
    values = np.asarray(new_values)
    if values.ndim != 1:
        raise InputError("new_values", f"has shape {values.shape}", "one column of values, shape (rows,)")
    if values.size == 0:
        return copy.deepcopy(dict(old))
    num_old = int(old["count"])
    if old["mean"] is None:  # text levels
        stats = {"count": num_old + int(values.size), "mean": None}
        counts = _merged_counts(old.get("value_counts"), *np.unique(values.astype(str), return_counts=True))
        if counts is not None and len(counts) <= MAX_CATEGORIES:
            stats["value_counts"] = dict(sorted(counts.items()))
        return stats
    is_int = values.dtype.kind in "biu"
    if values.dtype.kind not in "biuf":
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError("new_values", "is text, but the column's statistics are numeric", "numbers") from None
    x = values.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError("new_values", f"has {int(np.sum(~np.isfinite(x)))} non-finite values", "finite numbers")
    missing = [key for key in ("sd", "min", "max") if old.get(key) is None]
    if missing:
        raise InputError("old", f"lacks {missing}", "the statistics of a numeric column from column_statistics")
    grid_values, grid_probs = _old_grid(old)
    num_new = int(x.size)
    num = num_old + num_new
    mean_old, mean_new = float(old["mean"]), float(x.mean())
    delta = mean_new - mean_old
    squares = (num_old - 1) * float(old["sd"]) ** 2 + float(np.sum((x - mean_new) ** 2)) \
        + delta**2 * num_old * num_new / num
    low, high = min(float(old["min"]), float(x.min())), max(float(old["max"]), float(x.max()))
    probs = np.concatenate([QUANTILE_PROBS, PERCENTILE_PROBS])
    merged = _mixture_quantiles(grid_values, grid_probs, num_old, np.sort(x), probs)
    merged = np.clip(merged, low, high)
    percentiles = merged[len(QUANTILE_PROBS):]
    percentiles[0], percentiles[-1] = low, high
    stats = {
        "count": num, "mean": mean_old + delta * num_new / num, "sd": float(np.sqrt(squares / (num - 1))),
        "min": low, "max": high,
        "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILE_PROBS, merged[:len(QUANTILE_PROBS)])},
        "percentiles": [float(v) for v in np.maximum.accumulate(percentiles)],
    }
    uniq, counts = np.unique(values, return_counts=True)
    counts = _merged_counts(old.get("value_counts"), _value_keys(uniq, is_int), counts)
    if counts is not None and _keeps_value_counts(len(counts), num, is_int, categorical):
        stats["value_counts"] = dict(sorted(counts.items(), key=lambda item: float(item[0])))
    return stats


def _merged_counts(old_counts, keys, counts) -> dict[str, int] | None:
    if old_counts is None:
        return None
    merged = {str(k): int(c) for k, c in old_counts.items()}
    for key, count in zip(keys, counts):
        merged[str(key)] = merged.get(str(key), 0) + int(count)
    return merged


def _old_grid(old: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Values and probabilities of the knots of the old rows' interpolated CDF."""
    try:
        if old.get("percentiles") is not None:
            values = np.asarray(old["percentiles"], dtype=np.float64)
            if values.shape != PERCENTILE_PROBS.shape:
                raise ValueError
            return values, PERCENTILE_PROBS
        q = old["quantiles"]
        values = np.array([old["min"], *(q[f"{p:g}"] for p in QUANTILE_PROBS), old["max"]], dtype=np.float64)
        return values, np.array([0.0, *QUANTILE_PROBS, 1.0])
    except (KeyError, TypeError, ValueError):
        raise InputError("old", "has no valid 'percentiles' (101 values) nor 'quantiles' with 'min' and 'max'",
                         "the statistics of a numeric column from column_statistics") from None


def _interpolated_cdf(grid_values: np.ndarray, grid_probs: np.ndarray, x: np.ndarray, side: str) -> np.ndarray:
    """The CDF through the knots ``(grid_values, grid_probs)`` at ``x``: its value (``side="right"``)
    or its left limit (``"left"``), jumping where knots are tied."""
    j = np.searchsorted(grid_values, x, side=side)  # knots <= x (right) or < x (left)
    k = np.clip(j - 1, 0, grid_values.size - 2)
    gap = grid_values[k + 1] - grid_values[k]
    inside = grid_probs[k] + (grid_probs[k + 1] - grid_probs[k]) * (x - grid_values[k]) / np.where(gap > 0, gap, 1.0)
    return np.where(j == 0, 0.0, np.where(j == grid_values.size, 1.0, inside))


def _mixture_quantiles(grid_values, grid_probs, num_old: int, new_sorted: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Generalized inverse ``min{x : H(x) >= p}`` of the mixture CDF of ``merge_column_statistics``
    at ``probs``. Between neighbouring knots of either part ``H`` is linear, so it is inverted
    exactly: linearly inside a piece, at the knot where it jumps over ``p``."""
    num = num_old + new_sorted.size
    knots = np.unique(np.concatenate([grid_values, new_sorted]))

    def mixture(side):
        return (num_old * _interpolated_cdf(grid_values, grid_probs, knots, side)
                + np.searchsorted(new_sorted, knots, side=side)) / num

    at, before = mixture("right"), mixture("left")  # H(knot) and H(knot-)
    i = np.clip(np.searchsorted(at, probs, side="left"), 0, knots.size - 1)  # first knot with H >= p
    previous = np.maximum(i - 1, 0)
    rise = before[i] - at[previous]  # H over the open piece between the two knots rises linearly
    linear = (i > 0) & (probs <= before[i]) & (rise > 0)
    step = (probs - at[previous]) / np.where(rise > 0, rise, 1.0)
    return np.where(linear, knots[previous] + step * (knots[i] - knots[previous]), knots[i])


def describe_inputs(posterior) -> dict:
    """Input schema and summary statistics of the training inputs (for validation and drift checks).

    Returns ``{"schema": ..., "arguments": {name: {...}}}`` where each row argument lists its
    dtype, per-row shape, column names, the value range seen at fit, the allowed categories of an
    integer argument, and per column the ``column_statistics``.

    Formula models (``bayesinf.formula``) take data columns, not their design arrays:
    ``"columns"`` lists the model's input columns (``InputColumn.to_json``), and when the
    posterior keeps their statistics (``settings["input_statistics"]``, set by ``Model.fit``)
    ``"arguments"`` has one entry per data column, keyed by its name (else, for a formula model
    fit by ``bayesinf.fit`` directly, the design arrays are described as for any model).
    """
    input_columns = getattr(posterior.model, "input_columns", None)
    formula_columns = input_columns() if callable(input_columns) else None
    if formula_columns is not None:
        column_stats = posterior.settings.get("input_statistics") or {}
        described = {"schema": posterior.schema.to_json(), "columns": [c.to_json() for c in formula_columns]}
        if all(c.name in column_stats for c in formula_columns):
            described["arguments"] = {
                c.name: {"dtype": c.dtype, "shape": [], "columns": None, "kind": c.kind,
                         "levels": None if c.levels is None else list(c.levels),
                         "statistics": {c.name: column_stats[c.name]}} for c in formula_columns}
            return described
    arguments = {}
    for spec in posterior.schema.specs:
        if spec.role != "rows":
            continue
        values = np.asarray(posterior.data[spec.name])
        flat = values.reshape(values.shape[0], -1)
        is_int = np.issubdtype(values.dtype, np.integer) or values.dtype == bool
        columns = {col: column_statistics(flat[:, j]) for j, col in enumerate(_column_names(spec))}
        entry = {
            "dtype": spec.dtype, "shape": list(spec.shape),
            "columns": None if spec.columns is None else list(spec.columns),
            "range_seen": [float(flat.min()), float(flat.max())],
            "int_range": None if spec.int_range is None else list(spec.int_range),
            "statistics": columns,
        }
        if is_int:
            uniq = np.unique(flat)
            entry["categories"] = [int(u) for u in uniq] if uniq.size <= MAX_CATEGORIES else None
        arguments[spec.name] = entry
    if formula_columns is not None:  # fit without ``Model.fit``: only the design arrays are known
        return {**described, "arguments": arguments}
    return {"schema": posterior.schema.to_json(), "arguments": arguments}


# ----------------------------------------------------------------------------- the store
class ModelStore:
    """Versioned store of fitted posteriors under a root directory.

    Parameters
    ----------
    root : str or Path
        Directory of the store (created on first save).

    Examples
    --------
    >>> store = ModelStore("models/")                        # doctest: +SKIP
    >>> store.save(post, name="radon")                       # doctest: +SKIP
    1
    >>> store.set_alias("radon", "production", 1)            # doctest: +SKIP
    >>> post = store.load("radon", version="production")     # doctest: +SKIP
    """

    def __init__(self, root):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise InputError("root", f"{str(self.root)!r} is a file, not a directory", "a ModelStore directory")

    def __repr__(self):
        return f"ModelStore({str(self.root)!r})"

    # ------------------------------------------------------------------ paths
    def _name_dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def path(self, name: str, version: int | str | None = None) -> Path:
        """Directory of a stored version (``version`` as in ``load``)."""
        return self._name_dir(name) / str(self.resolve(name, version))

    def versions(self, name: str) -> list[int]:
        """Whole versions of ``name``, ascending (hidden temporary directories are not versions)."""
        directory = self._name_dir(name)
        if not directory.is_dir():
            return []
        return sorted(int(p.name) for p in directory.iterdir()
                      if p.name.isdigit() and not p.name.startswith("0") and (p / VERSION_FILE).is_file())

    def names(self) -> list[str]:
        """Names with at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name)
                      and ".." not in p.name and self.versions(p.name))

    def aliases(self, name: str) -> dict[str, int]:
        """Aliases of ``name`` and the versions they point at."""
        path = self._name_dir(name) / ALIASES_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(path, f"corrupt alias file ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
            raise ModelFileError(path, "corrupt alias file (not a JSON object of version numbers)")
        return {str(k): v for k, v in data.items()}

    def resolve(self, name: str, version: int | str | None = None) -> int:
        """The version number that ``version`` (None or "latest", a number, or an alias) names.

        Raises ``InputError`` (field ``name`` or ``version``) if there is no such model or version.
        """
        available = self.versions(name)
        if not available:
            raise InputError("name", f"'{name}' is not in the store {str(self.root)!r}"
                             + ("" if self.root.is_dir() else " (the directory does not exist)"),
                             f"one of {self.names()}")
        if version is None or version == "latest":
            return available[-1]
        if isinstance(version, str) and version.isdigit():
            version = int(version)
        if isinstance(version, str):
            aliases = self.aliases(name)
            if version not in aliases:
                raise InputError("version", f"'{version}' is neither a version nor an alias of '{name}'",
                                 f"one of {available} or an alias in {sorted(aliases)}")
            version = aliases[version]
        version = _check_version(version)
        if version not in available:
            raise InputError("version", f"{version} of '{name}' is not in the store", f"one of {available}")
        return version

    # ------------------------------------------------------------------ writing
    def save(self, posterior, name: str, version: int | None = None) -> int:
        """Save ``posterior`` as a new version of ``name``; return its version number.

        Parameters
        ----------
        posterior : Posterior
        name : str
            Model name (see ``check_name``).
        version : int, optional
            Version number; by default one more than the newest. A version, once saved, is never
            replaced: an existing number raises ``InputError``.

        Raises
        ------
        InputError
            Bad name or version, or a model that cannot be imported again by its path (a lambda,
            a nested function, or one defined in ``__main__``: put it in an importable module).
        """
        directory = self._name_dir(name)
        if version is not None:
            version = _check_version(version)
        model_path = posterior.model_path
        try:
            # Models built by bayesinf (formula models) reload from their saved spec instead.
            if not hasattr(posterior.model, "__bayesinf_spec__") and import_model(model_path) is not posterior.model:
                raise ValueError(f"{model_path} imports as a different object than the fitted model")
        except Exception as exc:
            raise InputError("posterior", f"has a model that cannot be imported again by its path {model_path!r} "
                             f"({exc})", hint="Define the model at the top level of an importable module, so "
                             "a server can load it by name.") from None
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            save_posterior(posterior, tmp / MODEL_DIR)
            files = {f"{MODEL_DIR}/{p.name}": sha256_file(p) for p in sorted((tmp / MODEL_DIR).iterdir())}
            metadata = {
                "format": STORE_FORMAT,
                "format_version": STORE_FORMAT_VERSION,
                "name": name,
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                "versions": package_versions(),
                "model": model_path,
                "method": posterior.method,
                "dtype": posterior.dtype,
                "num_draws": posterior.num_chains * posterior.num_draws,
                "observed_sites": list(posterior.sites.observed),
                "num_classes": dict(posterior.sites.num_classes),
                "inputs": describe_inputs(posterior),
                # Where an updated posterior came from (``Posterior.update``): parent version, mode, rows added.
                "lineage": posterior.info.get("lineage") or posterior.settings.get("lineage"),
                "files": files,
            }
            number = 0
            for _ in range(1000):
                # Past numbers taken meanwhile, and past a leftover non-version directory.
                number = version if version is not None else max(max(self.versions(name), default=0), number) + 1
                metadata["version"] = number
                with open(tmp / VERSION_FILE, "w") as f:
                    json.dump(metadata, f, indent=1)
                    f.flush()
                    os.fsync(f.fileno())
                fsync_path(tmp)
                try:
                    # rename(2) onto an existing non-empty directory fails: the version is claimed
                    # by whoever renames first, so concurrent saves get distinct numbers.
                    os.rename(tmp, directory / str(number))
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    if version is not None:
                        raise InputError("version", f"{version} of '{name}' already exists",
                                         "a new version number, or none for the next one") from None
                    continue
                fsync_path(directory)
                posterior.info["store"] = {"name": name, "version": number}  # the parent of a later update
                return number
            raise RuntimeError(f"could not claim a version of '{name}' after 1000 attempts")  # pragma: no cover
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """An exclusive lock on ``name`` for read-modify-write of its aliases."""
        directory = self._name_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "a") as f:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - not POSIX
                yield
                return
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        """Point ``alias`` (e.g. "production") of ``name`` at ``version``."""
        check_name(alias, "alias")
        if alias.isdigit() or alias in RESERVED_ALIASES:
            raise InputError("alias", f"must not be a number or one of {RESERVED_ALIASES}; got {alias!r}")
        number = self.resolve(name, version)
        with self._locked(name):
            aliases = self.aliases(name)
            aliases[alias] = number
            _write_json_atomic(self._name_dir(name) / ALIASES_FILE, aliases)

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` of ``name`` (no error if it does not exist)."""
        with self._locked(name):
            aliases = self.aliases(name)
            if aliases.pop(alias, None) is not None:
                _write_json_atomic(self._name_dir(name) / ALIASES_FILE, aliases)

    def delete(self, name: str, version: int | str | None = None) -> None:
        """Delete one version (aliases pointing at it go too), or with ``version=None`` every
        version of ``name``. The directory is renamed away first, so readers never see half of it."""
        directory = self._name_dir(name)
        if version is None:
            if not directory.is_dir():
                raise InputError("name", f"'{name}' is not in the store {str(self.root)!r}", f"one of {self.names()}")
            trash = self.root / f".deleted-{name}-{uuid.uuid4().hex}"
            os.rename(directory, trash)
            shutil.rmtree(trash, ignore_errors=True)
            return
        number = self.resolve(name, version)
        with self._locked(name):
            trash = directory / f".deleted-{number}-{uuid.uuid4().hex}"
            os.rename(directory / str(number), trash)
            aliases = {k: v for k, v in self.aliases(name).items() if v != number}
            _write_json_atomic(directory / ALIASES_FILE, aliases)
        shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------------ reading
    def metadata(self, name: str, version: int | str | None = None) -> dict:
        """The store metadata (``version.json``) of a version, with every listed file's sha256 checked.

        Raises
        ------
        ModelFileError
            The metadata is corrupt, a file is missing, or a checksum does not match.
        """
        path = self.path(name, version)
        meta_path = path / VERSION_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(meta_path, f"corrupt store metadata ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise ModelFileError(meta_path, "not bayesinf store metadata")
        if meta.get("format_version") != STORE_FORMAT_VERSION:
            raise ModelFileError(meta_path, f"store format version {meta.get('format_version')!r} is not supported")
        files = meta.get("files")
        if not isinstance(files, dict) or not files:
            raise ModelFileError(meta_path, "lists no checksummed files")
        root = path.resolve()
        for relative, digest in files.items():
            file = (path / relative).resolve()
            if root not in file.parents:
                raise ModelFileError(meta_path, f"lists a file outside the version directory: {relative!r}")
            if not file.is_file():
                raise ModelFileError(path / relative, "missing")
            if sha256_file(file) != digest:
                raise ModelFileError(path / relative, "checksum mismatch: the file was modified or corrupted "
                                     "after saving")
        return meta

    def load(self, name: str, version: int | str | None = None, model: Callable | None = None):
        """Load a stored ``Posterior``: the newest version by default, or ``version`` (a number, an
        alias, or "latest"). Checksums of every file are verified first.

        Raises
        ------
        InputError
            No such name, version or alias.
        ModelFileError
            A file is missing, corrupt or tampered with, or the model function cannot be imported.
        """
        self.metadata(name, version)
        posterior = load_posterior(self.path(name, version) / MODEL_DIR, model=model)
        posterior.info["store"] = {"name": name, "version": self.resolve(name, version)}
        return posterior

    def list(self) -> list[dict]:
        """One entry per name: ``{"name", "versions", "latest", "aliases"}``; a name whose alias file
        cannot be read has ``"aliases": {}`` and the reason under ``"error"``."""
        entries = []
        for n in self.names():
            entry = {"name": n, "versions": (v := self.versions(n)), "latest": v[-1], "aliases": {}}
            try:
                entry["aliases"] = self.aliases(n)
            except ModelFileError as exc:
                entry["error"] = str(exc)
            entries.append(entry)
        return entries
