"""Requests to formula models: ``instances`` keyed by the formula's data columns.

A formula model (``bayesinf.formula``) is fit on a DataFrame and predicts from one; its design
arrays (``X``, ``Z``, ``groups``) are an implementation detail. Its requests therefore name the
columns the formula reads (``FormulaModel.input_columns()``), as records
(``[{"floor": 0, "county": 3}]``) or columnar (``{"floor": [0], "county": [3]}``). Parsing here
is the JSON part only -- every column present, nothing extra, values of the column's type, finite
numbers; the formula layer then builds the model's arguments from the DataFrame with its own checks
(levels seen at fit, integer trials), whose errors are mapped back to the row at fault
(``instances[i].column``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..formula.design import NEW_GROUPS, InputColumn

__all__ = ["parse_column_instances", "to_array", "to_frame", "locate_error", "columns_request_schema",
           "describe_columns"]

#: Categorical columns with at most this many levels list them as an ``enum`` in the OpenAPI schema.
MAX_ENUM = 1000
_TYPE_NAMES = {"number": "a number", "integer": "an integer", "boolean": "true or false", "string": "a string"}


def _check_value(v: Any, field: str, column: InputColumn) -> Any:
    """One JSON value of ``column``, checked and converted to its Python type."""
    kind = column.value_type
    is_number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "string":
        if isinstance(v, str):
            return v
    elif kind == "boolean":
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
    elif is_number:
        if not math.isfinite(v):
            raise InputError(field, f"must be a finite number; got {v!r}")
        if kind == "integer" and column.kind == "categorical":
            if v != int(v):
                raise InputError(field, f"must be an integer (a level of '{column.name}'); got {v!r}")
            return int(v)
        return v
    if column.kind == "numeric":
        what = "a number" if kind != "boolean" else _TYPE_NAMES[kind]
    else:
        what = _TYPE_NAMES[kind] + f" (a level of '{column.name}')"
    raise InputError(field, f"must be {what}; got {type(v).__name__} {v!r}"[:200])


def to_array(column: InputColumn, values: list) -> np.ndarray:
    """Checked values of ``column`` as an array ``(rows,)`` of the column's dtype at fit."""
    if column.kind == "numeric" and column.value_type == "integer" and any(isinstance(v, float) for v in values):
        return np.asarray(values, dtype=np.float64)  # the formula layer says if it needs integers
    if column.value_type == "string":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    try:
        return np.asarray(values, dtype=np.dtype(column.dtype))
    except OverflowError:
        return np.asarray(values, dtype=np.float64)


def parse_column_instances(columns: Sequence[InputColumn], instances: Any, max_rows: int
                           ) -> tuple[int, dict[str, np.ndarray]]:
    """Turn ``instances`` (records or columnar) into one array per input column.

    Returns ``(num_rows, {column: array (rows,)})``; raises ``InputError`` naming the field at
    fault (``instances[i].column`` for records, ``instances.column[i]`` for columnar input).
    """
    by_name = {c.name: c for c in columns}
    names = list(by_name)
    if isinstance(instances, list):
        num_rows = len(instances)
        if num_rows == 0:
            raise InputError("instances", "is empty", "at least one record")
        if num_rows > max_rows:
            raise InputError("instances", f"has {num_rows} rows", f"at most {max_rows} per request")
        values: dict[str, list] = {n: [] for n in names}
        for i, record in enumerate(instances):
            where = f"instances[{i}]"
            if not isinstance(record, dict):
                raise InputError(where, f"must be an object keyed by the formula's columns; got "
                                 f"{type(record).__name__}", f"an object with keys {names}")
            for key in record:
                if key not in by_name:
                    raise InputError(f"{where}.{key}"[:200], "is not a column the model's formula reads",
                                     f"some of {names}")
            for name in names:
                if name not in record:
                    raise InputError(f"{where}.{name}", "is missing", f"every column of {names}")
                values[name].append(_check_value(record[name], f"{where}.{name}", by_name[name]))
        return num_rows, {n: to_array(by_name[n], values[n]) for n in names}
    if isinstance(instances, dict):
        for key in instances:
            if key not in by_name:
                raise InputError(f"instances.{key}"[:200], "is not a column the model's formula reads",
                                 f"some of {names}")
        num_rows = None
        out = {}
        for name in names:
            if name not in instances:
                raise InputError(f"instances.{name}", "is missing", f"every column of {names}")
            v = instances[name]
            if not isinstance(v, list):
                raise InputError(f"instances.{name}", f"must be a list with one value per row; got {type(v).__name__}")
            if num_rows is None:
                if not v:
                    raise InputError(f"instances.{name}", "is empty", "at least one row")
                if len(v) > max_rows:
                    raise InputError("instances", f"has {len(v)} rows", f"at most {max_rows} per request")
                num_rows = len(v)
            elif len(v) != num_rows:
                raise InputError(f"instances.{name}", f"has {len(v)} rows but other columns have {num_rows}",
                                 "the same number of rows in every column")
            out[name] = to_array(by_name[name], [_check_value(x, f"instances.{name}[{i}]", by_name[name])
                                                  for i, x in enumerate(v)])
        return num_rows, out
    raise InputError("instances", f"must be a list of records or an object of columns; got {type(instances).__name__}")


def to_frame(values: Mapping[str, np.ndarray]):
    """The request's columns as a DataFrame, in the fit's dtypes."""
    import pandas as pd

    return pd.DataFrame(dict(values), copy=False)


def locate_error(exc: InputError, columns: Sequence[InputColumn], values: Mapping[str, np.ndarray],
                 new_groups: str, columnar: bool) -> InputError:
    """An ``InputError`` of the formula layer (naming a column) re-aimed at the first row at fault:
    ``instances[i].column`` (records) or ``instances.column[i]`` (columnar)."""
    field = str(exc.field)
    column = next((c for c in columns if c.name == field), None)
    if column is None:
        return InputError(f"instances.{field}" if field not in ("data", "instances") else "instances", exc.problem,
                          exc.expected, exc.hint)
    x = values[field]
    row = None
    if column.levels is not None and (not column.new_levels or new_groups == "error"):
        seen = {str(level) for level in column.levels}
        bad = [i for i, v in enumerate(x.tolist()) if str(v) not in seen]
        row = bad[0] if bad else None
    elif x.dtype.kind in "fiu":  # e.g. trials: non-negative integers
        bad = np.flatnonzero((x < 0) | (x != np.round(x)))
        row = int(bad[0]) if bad.size else None
    if row is None:
        where = f"instances.{field}"
    else:
        where = f"instances.{field}[{row}]" if columnar else f"instances[{row}].{field}"
    return InputError(where, exc.problem, exc.expected, exc.hint)


# ----------------------------------------------------------------------------- OpenAPI schemas
def _value_schema(column: InputColumn) -> dict:
    out: dict = {"type": column.value_type}
    if column.kind == "categorical" and column.levels is not None and len(column.levels) <= MAX_ENUM:
        if column.new_levels:  # a group factor: other levels are new groups (see new_groups)
            out["description"] = (f"group factor; levels seen at fit: {list(column.levels)[:20]}"
                                  f"{' ...' if len(column.levels) > 20 else ''} (others are new groups)")
            out["examples"] = list(column.levels[:5])
        else:
            out["enum"] = list(column.levels)
    return out


def columns_request_schema(columns: Sequence[InputColumn], max_rows: int) -> dict:
    """JSON Schema of the ``instances`` of a formula model: records or columnar, by data column."""
    record = {"type": "object", "additionalProperties": False,
              "properties": {c.name: _value_schema(c) for c in columns}, "required": [c.name for c in columns]}
    columnar = {"type": "object", "additionalProperties": False,
                "properties": {c.name: {"type": "array", "items": _value_schema(c), "minItems": 1,
                                        "maxItems": max_rows} for c in columns},
                "required": [c.name for c in columns]}
    return {"oneOf": [{"type": "array", "items": record, "minItems": 1, "maxItems": max_rows}, columnar]}


def describe_columns(columns: Sequence[InputColumn]) -> dict:
    """The input description of a formula model shown by ``GET /v1/models/{name}``."""
    return {"kind": "columns", "new_groups": list(NEW_GROUPS),
            "columns": [{**c.to_json(), "type": c.value_type} for c in columns]}
