"""Input handling at the boundary: model arguments are bound, checked and described once at fit
(an ``InputSchema``), and new data for prediction is checked against that schema.

Roles of model arguments:

- ``rows``: arrays whose leading axis is the data rows (e.g. ``X`` of shape ``(rows, features)``).
  New values are given at predict time; their row count may differ from the fit's.
- ``observed``: row arrays that a sample site observes (``obs=y``). Set to ``None`` at predict time
  so the model samples them.
- ``array``: other arrays (group-level data, say), reused from the fit unless given again.
- ``static``: Python scalars, strings, tuples and ``None``; they may shape the model (plate sizes)
  and are compiled in, so changing one compiles anew.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .errors import InputError

__all__ = ["ArgSpec", "InputSchema", "check_seed", "bind_arguments", "as_array", "split_arguments", "describe", "prepare_predict_inputs"]

ROLES = ("rows", "observed", "array", "static")


@dataclass(frozen=True)
class ArgSpec:
    """What one model argument looked like at fit time.

    ``shape`` is the trailing shape after the row axis for ``rows``/``observed`` arguments and the
    full shape otherwise; ``columns`` are DataFrame column names; ``int_range`` the (min, max) of an
    integer row argument, outside of which prediction refuses values (unseen categories/indices).
    """

    name: str
    role: str
    dtype: str | None = None
    shape: tuple[int, ...] = ()
    columns: tuple[str, ...] | None = None
    int_range: tuple[int, int] | None = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "columns": None if self.columns is None else list(self.columns),
            "int_range": None if self.int_range is None else list(self.int_range),
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "ArgSpec":
        if d.get("role") not in ROLES:
            raise ValueError(f"unknown argument role {d.get('role')!r}")
        return cls(
            name=str(d["name"]),
            role=d["role"],
            dtype=d.get("dtype"),
            shape=tuple(int(s) for s in d.get("shape", ())),
            columns=None if d.get("columns") is None else tuple(str(c) for c in d["columns"]),
            int_range=None if d.get("int_range") is None else tuple(int(v) for v in d["int_range"]),
        )


@dataclass(frozen=True)
class InputSchema:
    """The model's arguments as seen at fit: one ``ArgSpec`` each, in signature order."""

    specs: tuple[ArgSpec, ...]
    num_rows: int
    static: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ArgSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def names(self, *roles: str) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs if not roles or s.role in roles)

    def to_json(self) -> dict:
        return {"num_rows": self.num_rows, "specs": [s.to_json() for s in self.specs], "static": dict(self.static)}

    @classmethod
    def from_json(cls, d: Mapping) -> "InputSchema":
        return cls(
            specs=tuple(ArgSpec.from_json(s) for s in d["specs"]),
            num_rows=int(d["num_rows"]),
            static={k: _tuplify(v) for k, v in d.get("static", {}).items()},
        )


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


MAX_SEED = 2**32 - 1


def check_seed(seed: Any, owner: str) -> int:
    """A seed must be an int in [0, 2**32 - 1]: JAX keys keep 32 bits of it, so larger seeds collide."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError("seed", f"of {owner} must be an int in [0, {MAX_SEED}]; got {seed!r}")
    return int(seed)


def bind_arguments(model: Callable, args: tuple, kwargs: Mapping, *, partial: bool = False) -> dict[str, Any]:
    """Map ``args``/``kwargs`` to the parameter names of ``model`` (signature order)."""
    try:
        signature = inspect.signature(model)
    except (TypeError, ValueError):
        raise InputError("model", "has no inspectable signature", "a Python function") from None
    try:
        bound = signature.bind_partial(*args, **kwargs) if partial else signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise InputError("model arguments", f"do not match the model signature {signature}: {exc}") from None
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) and name in bound.arguments:
            raise InputError(name, "is a *args/**kwargs parameter", "models with named parameters only")
    return dict(bound.arguments)


def _is_static(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, numbers.Number)) and not isinstance(value, np.generic):
        return True
    if isinstance(value, tuple):
        return all(_is_static(v) for v in value)
    return False


def as_array(name: str, value: Any) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Convert a numpy, pandas, JAX or nested-list value to a numeric numpy array.

    Returns the array and, for a DataFrame, its column names. Raises ``InputError`` naming
    ``name`` (and the column) for non-numeric data, NaN or infinite values, and empty input.
    """
    columns = None
    if hasattr(value, "columns") and hasattr(value, "dtypes"):  # pandas DataFrame
        columns = tuple(str(c) for c in value.columns)
        plain = [_nullable_to_numpy(f"{name}['{col}']", series) for col, (_, series) in zip(columns, value.items())]
        for col, series in zip(columns, plain):
            if not _is_numeric_dtype(series.dtype):
                raise InputError(f"{name}['{col}']", f"has non-numeric dtype {series.dtype}", "numbers or booleans",
                                 "Encode categories as integer codes or use a formula model.")
        converted = any(isinstance(p, np.ndarray) for p in plain)  # nullable columns, now plain arrays
        value = np.column_stack(plain) if converted else value.to_numpy()
    elif hasattr(value, "to_numpy") and hasattr(value, "dtype"):  # pandas Series
        value = _nullable_to_numpy(name, value)
        value = value.to_numpy() if hasattr(value, "to_numpy") else value
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise InputError(name, f"cannot be converted to an array ({exc})") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(name, f"has non-numeric dtype {array.dtype}", "numbers or booleans")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(name, "has complex dtype", "real numbers")
    if array.size == 0:
        raise InputError(name, f"is empty (shape {array.shape})", "at least one row")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            where = np.argwhere(bad)[0]
            loc = f"row {where[0]}" if array.ndim >= 1 else "the value"
            if array.ndim >= 2:
                col = columns[where[1]] if columns else int(where[1])
                loc += f", column {col!r}"
            raise InputError(name, f"contains {n_nan} NaN and {n_inf} infinite values (first at {loc})",
                             "finite numbers", "Drop or impute the missing values first.")
    return array, columns


def _nullable_to_numpy(name: str, series):
    """A pandas Series of a nullable numeric or boolean dtype (``Int64``, ``Float64``, ``boolean``) as
    a numpy array of its plain dtype; others are returned as they are. ``pd.NA`` is an error."""
    numpy_dtype = getattr(series.dtype, "numpy_dtype", None)
    if numpy_dtype is None or not _is_numeric_dtype(numpy_dtype):
        return series
    missing = np.asarray(series.isna())
    if missing.any():
        raise InputError(name, f"has {int(missing.sum())} missing values (first at row {int(np.argmax(missing))})",
                         "numbers", "Drop or impute the missing values first.")
    return series.to_numpy(dtype=numpy_dtype)


def _is_numeric_dtype(dtype) -> bool:
    try:
        dtype = np.dtype(dtype)
    except TypeError:  # pandas extension dtypes: strings, categories, nullable integers
        return False
    return bool(np.issubdtype(dtype, np.number) or dtype == bool)


def cast_float(name: str, array: np.ndarray, dtype) -> np.ndarray:
    """Cast to the float ``dtype``; values too large for it (inf after the cast) are an error."""
    with np.errstate(over="ignore"):  # an overflow is reported below, as an error naming the value
        out = array.astype(dtype, copy=False)
    if out is not array and not np.all(np.isfinite(out)):
        where = np.argwhere(~np.isfinite(out))[0]
        raise InputError(name, f"has value {array[tuple(where)]!r} at {tuple(int(i) for i in where)}, too large for "
                         f"{np.dtype(dtype).name}", f"magnitudes below {np.finfo(dtype).max:.3g}",
                         "Rescale the data or fit with dtype='float64'.")
    return out


def split_arguments(bound: Mapping[str, Any]):
    """Split bound model arguments into numpy arrays (checked by ``as_array``) and static values.

    Returns ``(arrays, columns, static)``: name -> array, name -> DataFrame columns or None,
    name -> static value.
    """
    arrays: dict[str, np.ndarray] = {}
    columns: dict[str, tuple[str, ...] | None] = {}
    static: dict[str, Any] = {}
    for name, value in bound.items():
        if _is_static(value):
            static[name] = value
        else:
            arrays[name], columns[name] = as_array(name, value)
    return arrays, columns, static


def describe(order: tuple[str, ...], arrays: Mapping[str, np.ndarray], columns: Mapping[str, Any],
             static: Mapping[str, Any], observed: tuple[str, ...],
             row_args: tuple[str, ...] | None = None,
             int_ranges: Mapping[str, tuple[int, int]] | None = None) -> InputSchema:
    """Record the schema of the model's arguments at fit.

    Parameters
    ----------
    order : tuple of str
        Argument names in signature order.
    arrays, columns, static : mappings
        From ``split_arguments``.
    observed : tuple of str
        Array arguments that a sample site observes.
    row_args : tuple of str, optional
        Names of row-wise arguments; by default every array whose leading axis has the length of
        the first observed argument (or, without one, of the first array argument).
    int_ranges : mapping of str -> (int, int), optional
        Declared inclusive value ranges of integer row arguments (e.g. an index that may point at
        a "new group" slot unseen in the data); by default the range seen in the data.
    """
    if row_args is not None:
        missing = [n for n in row_args if n not in arrays]
        if missing:
            raise InputError("row_args", f"names {missing}, which are not array arguments of the model",
                             f"some of {sorted(arrays)}")
        candidates = list(row_args)
    else:
        candidates = [n for n in observed if n in arrays] or [n for n, a in arrays.items() if a.ndim >= 1]
    num_rows = 0
    if candidates:
        if arrays[candidates[0]].ndim == 0:
            raise InputError(candidates[0], "is a scalar", "an array with a row axis")
        num_rows = arrays[candidates[0]].shape[0]
    unknown = [n for n in (int_ranges or {}) if n not in arrays or not (
        np.issubdtype(arrays[n].dtype, np.integer) or arrays[n].dtype == bool)]
    if unknown:
        raise InputError("int_ranges", f"names {unknown}, which are not integer array arguments of the model")
    must_match = tuple(observed) + tuple(row_args or ())
    for name in must_match:
        a = arrays[name]
        if a.ndim == 0 or a.shape[0] != num_rows:
            raise InputError(name, f"has shape {a.shape} but '{candidates[0]}' has {num_rows} rows",
                             "the same number of rows in every row argument")
    if row_args is not None:
        is_row = set(row_args) | set(observed)
    else:
        is_row = {n for n, a in arrays.items() if a.ndim >= 1 and a.shape[0] == num_rows and num_rows > 0}
    specs = []
    for name in order:
        if name in static:
            specs.append(ArgSpec(name, "static"))
            continue
        a = arrays[name]
        role = "observed" if name in observed else ("rows" if name in is_row else "array")
        int_range = None
        if role == "rows" and (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            int_range = (int(a.min()), int(a.max()))
            if int_ranges and name in int_ranges:
                low, high = (int(v) for v in int_ranges[name])
                if low > int_range[0] or high < int_range[1]:
                    raise InputError("int_ranges", f"gives [{low}, {high}] for '{name}', which does not cover the "
                                     f"values in the data [{int_range[0]}, {int_range[1]}]")
                int_range = (low, high)
        specs.append(ArgSpec(
            name, role, a.dtype.str,
            tuple(a.shape[1:]) if role in ("rows", "observed") else tuple(a.shape),
            columns[name], int_range,
        ))
    return InputSchema(tuple(specs), num_rows, dict(static))


def _conform(spec: ArgSpec, value: Any) -> np.ndarray:
    """Check one new row argument against its fit-time spec; return it in the fit's dtype/column order."""
    if spec.columns is not None and hasattr(value, "columns"):
        given = [str(c) for c in value.columns]
        missing = [c for c in spec.columns if c not in given]
        extra = [c for c in given if c not in spec.columns]
        if missing:
            raise InputError(spec.name, f"is missing column(s) {missing}", f"columns {list(spec.columns)}")
        if extra:
            raise InputError(spec.name, f"has unexpected column(s) {extra}", f"columns {list(spec.columns)}")
        value = value[list(spec.columns)]
    array, _ = as_array(spec.name, value)
    if array.ndim == len(spec.shape) and array.shape == spec.shape:
        array = array[None, ...]  # a single row given without its row axis
    if array.ndim != len(spec.shape) + 1 or array.shape[1:] != spec.shape:
        raise InputError(spec.name, f"has shape {array.shape}",
                         f"shape (rows, {', '.join(map(str, spec.shape))})".replace(", )", ")") if spec.shape
                         else "shape (rows,)")
    fit_dtype = np.dtype(spec.dtype)
    if np.issubdtype(fit_dtype, np.integer) or fit_dtype == bool:
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            if not np.all(array == np.round(array)):
                raise InputError(spec.name, f"has non-integer values (dtype {array.dtype})",
                                 f"integers, as at fit (dtype {fit_dtype})")
        array = array.astype(fit_dtype)
        if spec.int_range is not None:
            low, high = spec.int_range
            bad = (array < low) | (array > high)
            if bad.any():
                pos = np.argwhere(bad)[0]
                raise InputError(spec.name, f"has value {array[tuple(pos)]} at row {pos[0]}, outside the range "
                                 f"[{low}, {high}] seen at fit (an unseen category or index)", f"values in [{low}, {high}]")
    else:
        array = cast_float(spec.name, array, fit_dtype)
    return array


def _equal_static(a: Any, b: Any) -> bool:
    """Whether two static values are equal (an array is never equal to a static value)."""
    if not (_is_static(a) and _is_static(b)):
        return False
    return bool(a == b)


def prepare_predict_inputs(model: Callable, schema: InputSchema, fit_arrays: Mapping[str, np.ndarray],
                           args: tuple, kwargs: Mapping) -> tuple[int, dict[str, np.ndarray], dict[str, Any]]:
    """Check new data for prediction against ``schema``.

    Returns the number of rows, the dynamic arrays (new row arrays plus the fit's other arrays)
    and the static values (observed arguments set to ``None``).
    """
    names = schema.names()
    parameters = inspect.signature(model).parameters
    for name in kwargs:
        if name not in parameters:
            raise InputError(name, "is not an argument of the model", f"some of {list(parameters)}")
    given = bind_arguments(model, args, kwargs, partial=True)
    for name in given:
        if name not in names:  # not passed at fit: the model ran with its default value
            default = parameters[name].default
            if default is inspect.Parameter.empty or not _equal_static(given[name], default):
                raise InputError(name, f"was not given at fit, so the model was fit with its default {default!r}",
                                 hint="Predict with the values the model was fit with, or refit.")
    arrays: dict[str, np.ndarray] = {}
    static: dict[str, Any] = dict(schema.static)
    num_rows = None
    first = None
    for spec in schema.specs:
        if spec.role == "observed":
            if given.get(spec.name) is not None:
                raise InputError(spec.name, "is observed by the model; predict samples it",
                                 hint="Leave it out (use post.calibration to score predictions against outcomes).")
            static[spec.name] = None
        elif spec.role == "rows":
            if spec.name not in given:
                raise InputError(spec.name, "is missing", f"new rows for the model's row argument '{spec.name}'")
            arrays[spec.name] = _conform(spec, given[spec.name])
            n = arrays[spec.name].shape[0]
            if num_rows is None:
                num_rows, first = n, spec.name
            elif n != num_rows:
                raise InputError(spec.name, f"has {n} rows but '{first}' has {num_rows}",
                                 "the same number of rows in every row argument")
        elif spec.role == "array":
            if spec.name in given:
                array, _ = as_array(spec.name, given[spec.name])
                if array.shape != spec.shape:
                    raise InputError(spec.name, f"has shape {array.shape}", f"shape {spec.shape}, as at fit")
                arrays[spec.name] = array.astype(np.dtype(spec.dtype), copy=False)
            else:
                arrays[spec.name] = fit_arrays[spec.name]
        elif spec.name in given:
            if given[spec.name] != schema.static.get(spec.name):
                static[spec.name] = given[spec.name]
    if num_rows is None:
        raise InputError("predict", "got no row arguments", f"new values for {list(schema.names('rows'))}")
    return num_rows, arrays, static
