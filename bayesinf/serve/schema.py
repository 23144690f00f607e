"""Request parsing and the OpenAPI schemas of the prediction service, built from a model's saved
``InputSchema``.

A request's ``instances`` are either records (a list of objects, one per row, keyed by the model's
row arguments) or columnar (one object of equal-length lists). A row argument that was 2-D at fit,
``X`` of shape ``(rows, k)``, is given as ``"X": [k numbers]`` per record, or, when it was a
DataFrame, by its column names flattened into the record (``{"a": 1.0, "b": 2.0}``). Parsing is
strict: a missing, extra, non-numeric or non-finite field is an ``InputError`` naming it, e.g.
``instances[3].floor``; the core (``Posterior.predict``) then checks dtypes, shapes and the
integer ranges seen at fit. Formula models' requests name the formula's data columns instead
(``bayesinf.serve.columns``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..data import InputSchema
from ..errors import InputError
from ..formula.design import NEW_GROUPS
from ..intervals import KINDS, check_kind, check_levels

__all__ = ["Limits", "PredictOptions", "parse_options", "parse_instances", "request_schema", "response_schema",
           "error_schema"]

MAX_LEVELS = 16


@dataclass(frozen=True)
class Limits:
    """Bounds on one request: rows, raw draws returned per row, and body bytes."""

    max_rows: int = 1000
    max_return_draws: int = 1000
    max_body_bytes: int = 1 << 20


@dataclass(frozen=True)
class PredictOptions:
    levels: tuple[float, ...]
    kind: str
    seed: int
    return_draws: int
    new_groups: str = "sample"  # formula models: prediction for group levels not seen at fit


_OPTIONS = ("instances", "levels", "kind", "seed", "return_draws", "new_groups")


def parse_options(body: Any, limits: Limits, num_draws: int | None = None) -> PredictOptions:
    """Check the body's top level and its options (everything but ``instances``).

    ``num_draws`` is the number of predictive draws of the model (chains times draws): a
    ``return_draws`` above it is refused rather than quietly giving fewer draws.
    """
    if not isinstance(body, dict):
        raise InputError("body", f"must be a JSON object; got {type(body).__name__}")
    extra = [k for k in body if k not in _OPTIONS]
    if extra:
        raise InputError(extra[0], "is not a field of a predict request", f"some of {list(_OPTIONS)}")
    if "instances" not in body:
        raise InputError("instances", "is missing", "a list of records or an object of columns")
    levels = body.get("levels", [0.5, 0.9])
    if isinstance(levels, list) and not all(_is_number(v) for v in levels) or \
            not isinstance(levels, list) and not _is_number(levels):
        raise InputError("levels", f"must be a number or a list of numbers in (0, 1); got {levels!r}")
    if isinstance(levels, list) and len(levels) > MAX_LEVELS:
        raise InputError("levels", f"has {len(levels)} entries", f"at most {MAX_LEVELS}")
    levels = check_levels(levels)
    kind = body.get("kind", "eti")
    if not isinstance(kind, str):
        raise InputError("kind", f"must be one of {KINDS}; got {kind!r}")
    kind = check_kind(kind)
    seed = body.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed <= 2**32 - 1:
        raise InputError("seed", f"must be an integer in [0, {2**32 - 1}]; got {seed!r}")
    return_draws = body.get("return_draws", 0)
    if not _is_int(return_draws) or not 0 <= return_draws <= limits.max_return_draws:
        raise InputError("return_draws", f"must be an integer in [0, {limits.max_return_draws}]; got {return_draws!r}")
    if num_draws is not None and return_draws > num_draws:
        raise InputError("return_draws", f"is {return_draws}, but this model has only {num_draws} posterior draws",
                         f"an integer in [0, {min(num_draws, limits.max_return_draws)}]")
    new_groups = body.get("new_groups", "sample")
    if new_groups not in NEW_GROUPS:
        raise InputError("new_groups", f"must be one of {list(NEW_GROUPS)}; got {new_groups!r}"[:200])
    return PredictOptions(levels, kind, int(seed), int(return_draws), new_groups)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_value(v: Any, field: str, spec, is_int: bool, is_bool: bool, largest: float) -> Any:
    if is_bool:
        if isinstance(v, bool) or v in (0, 1) and _is_int(v):
            return v
        raise InputError(field, f"must be true or false; got {v!r}")
    if not _is_number(v):
        raise InputError(field, f"must be a number; got {type(v).__name__} {v!r}"[:200])
    if is_int:
        if isinstance(v, float) and not (math.isfinite(v) and v == int(v)):
            raise InputError(field, f"must be an integer; got {v!r}")
        low, high = spec.int_range if spec.int_range is not None else (-(2**31), 2**31 - 1)
        if not low <= v <= high:
            raise InputError(field, f"has value {v!r} outside the range [{low}, {high}] seen at fit "
                             "(an unseen category or index)", f"an integer in [{low}, {high}]")
        return v
    if not math.isfinite(v):
        raise InputError(field, f"must be a finite number; got {v!r}")
    if abs(v) > largest:
        raise InputError(field, f"is {v!r}, too large for {np.dtype(spec.dtype).name}")
    return v


def _value_checker(spec):
    dtype = np.dtype(spec.dtype)
    is_bool = dtype == bool
    is_int = bool(np.issubdtype(dtype, np.integer))
    largest = float(np.finfo(dtype).max) if np.issubdtype(dtype, np.floating) else math.inf
    return lambda v, field: _check_value(v, field, spec, is_int, is_bool, largest)


def _nested(value: Any, shape: tuple[int, ...], field: str, check) -> list:
    """Check a nested list of numbers of exactly ``shape``."""
    if not shape:
        return check(value, field)
    if not isinstance(value, list) or len(value) != shape[0]:
        got = f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
        raise InputError(field, f"must be a list of {shape[0]} values; got {got}")
    return [_nested(v, shape[1:], f"{field}[{i}]", check) for i, v in enumerate(value)]


def row_fields(schema: InputSchema) -> dict[str, tuple[str, ...] | None]:
    """Row argument name -> its DataFrame columns (if it was a DataFrame of shape (rows, k))."""
    return {s.name: (s.columns if s.columns is not None and len(s.shape) == 1 else None)
            for s in schema.specs if s.role == "rows"}


def parse_instances(schema: InputSchema, instances: Any, limits: Limits) -> tuple[int, dict[str, np.ndarray]]:
    """Turn ``instances`` (records or columnar) into row arrays in the fit's dtypes.

    Returns ``(num_rows, {row argument: array (rows, *shape)})``; raises ``InputError`` naming
    the field at fault.
    """
    specs = [s for s in schema.specs if s.role == "rows"]
    if isinstance(instances, list):
        num_rows = len(instances)
        if num_rows == 0:
            raise InputError("instances", "is empty", "at least one record")
        if num_rows > limits.max_rows:
            raise InputError("instances", f"has {num_rows} rows", f"at most {limits.max_rows} per request")
        return num_rows, _parse_records(specs, instances)
    if isinstance(instances, dict):
        return _parse_columns(specs, instances, limits)
    raise InputError("instances", f"must be a list of records or an object of columns; got {type(instances).__name__}")


def _parse_records(specs, records: list) -> dict[str, np.ndarray]:
    checks = {s.name: _value_checker(s) for s in specs}
    allowed = set()
    for s in specs:
        allowed.add(s.name)
        if s.columns is not None and len(s.shape) == 1:
            allowed.update(s.columns)
    values: dict[str, list] = {s.name: [] for s in specs}
    for i, record in enumerate(records):
        where = f"instances[{i}]"
        if not isinstance(record, dict):
            raise InputError(where, f"must be an object keyed by the model's inputs; got {type(record).__name__}")
        for key in record:
            if key not in allowed:
                raise InputError(f"{where}.{key}"[:200], "is not an input of the model", f"some of {sorted(allowed)}")
        for s in specs:
            by_columns = s.columns is not None and len(s.shape) == 1 and any(c in record for c in s.columns)
            if s.name in record:
                if by_columns:
                    raise InputError(f"{where}.{s.name}", "is given both whole and by its columns",
                                     f"either '{s.name}' or the columns {list(s.columns)}")
                values[s.name].append(_nested(record[s.name], s.shape, f"{where}.{s.name}", checks[s.name]))
            elif by_columns:
                missing = [c for c in s.columns if c not in record]
                if missing:
                    raise InputError(f"{where}.{missing[0]}", "is missing", f"all of the columns {list(s.columns)}")
                values[s.name].append([checks[s.name](record[c], f"{where}.{c}") for c in s.columns])
            else:
                raise InputError(f"{where}.{s.name}", "is missing",
                                 f"'{s.name}'" + (f" or its columns {list(s.columns)}" if s.columns else ""))
    return {s.name: _to_array(s, values[s.name], "instances") for s in specs}


def _parse_columns(specs, columns: Mapping, limits: Limits) -> tuple[int, dict[str, np.ndarray]]:
    allowed = {}
    for s in specs:
        allowed[s.name] = s
        if s.columns is not None and len(s.shape) == 1:
            for c in s.columns:
                allowed.setdefault(c, s)
    for key in columns:
        if key not in allowed:
            raise InputError(f"instances.{key}"[:200], "is not an input of the model", f"some of {sorted(allowed)}")
    num_rows = None
    arrays = {}

    def column(key):
        nonlocal num_rows
        v = columns[key]
        if not isinstance(v, list):
            raise InputError(f"instances.{key}", f"must be a list with one value per row; got {type(v).__name__}")
        if num_rows is None:
            if not v:
                raise InputError(f"instances.{key}", "is empty", "at least one row")
            if len(v) > limits.max_rows:
                raise InputError("instances", f"has {len(v)} rows", f"at most {limits.max_rows} per request")
            num_rows = len(v)
        elif len(v) != num_rows:
            raise InputError(f"instances.{key}", f"has {len(v)} rows but other columns have {num_rows}",
                             "the same number of rows in every column")
        return v

    for s in specs:
        check = _value_checker(s)
        by_columns = s.columns is not None and len(s.shape) == 1 and any(c in columns for c in s.columns)
        if s.name in columns:
            if by_columns:
                raise InputError(f"instances.{s.name}", "is given both whole and by its columns",
                                 f"either '{s.name}' or the columns {list(s.columns)}")
            v = column(s.name)
            arrays[s.name] = _to_array(s, [_nested(x, s.shape, f"instances.{s.name}[{i}]", check)
                                          for i, x in enumerate(v)], "instances")
        elif by_columns:
            missing = [c for c in s.columns if c not in columns]
            if missing:
                raise InputError(f"instances.{missing[0]}", "is missing", f"all of the columns {list(s.columns)}")
            cols = [[check(x, f"instances.{c}[{i}]") for i, x in enumerate(column(c))] for c in s.columns]
            arrays[s.name] = _to_array(s, [list(r) for r in zip(*cols)], "instances")
        else:
            raise InputError(f"instances.{s.name}", "is missing",
                             f"'{s.name}'" + (f" or its columns {list(s.columns)}" if s.columns else ""))
    return num_rows, arrays


def _to_array(spec, values: list, field: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.dtype(spec.dtype))
    except (OverflowError, ValueError) as exc:  # pragma: no cover - values were checked one by one
        raise InputError(f"{field}.{spec.name}", f"cannot be converted to {spec.dtype} ({exc})") from None


# ----------------------------------------------------------------------------- OpenAPI schemas
def _value_schema(spec) -> dict:
    dtype = np.dtype(spec.dtype)
    if dtype == bool:
        return {"type": "boolean"}
    if np.issubdtype(dtype, np.integer):
        out = {"type": "integer"}
        if spec.int_range is not None:
            out.update(minimum=spec.int_range[0], maximum=spec.int_range[1])
        return out
    limit = float(np.finfo(dtype).max)
    return {"type": "number", "minimum": -limit, "maximum": limit}


def _shaped(schema: dict, shape: tuple[int, ...]) -> dict:
    for n in reversed(shape):
        schema = {"type": "array", "items": schema, "minItems": n, "maxItems": n}
    return schema


def request_schema(schema: InputSchema, limits: Limits, title: str, columns=None) -> dict:
    """JSON Schema of a predict request for a model with this input schema.

    Records use the argument names (a DataFrame argument may instead be given by its columns,
    which the service also accepts); columnar instances are an object of equal-length lists.
    A formula model's requests (``columns``: its ``InputColumn``s) name its data columns instead,
    and may set ``new_groups``.
    """
    if columns is not None:
        from .columns import columns_request_schema

        out = request_schema(schema, limits, title)
        out["properties"]["instances"] = columns_request_schema(columns, limits.max_rows)
        out["properties"]["new_groups"] = {"type": "string", "enum": list(NEW_GROUPS), "default": "sample",
                                           "description": "group levels not seen at fit: effect drawn from the "
                                           "population ('sample'), left out ('population'), or an error"}
        return out
    specs = [s for s in schema.specs if s.role == "rows"]
    record = {"type": "object", "additionalProperties": False,
              "properties": {s.name: _shaped(_value_schema(s), s.shape) for s in specs},
              "required": [s.name for s in specs]}
    columnar = {"type": "object", "additionalProperties": False,
                "properties": {s.name: {"type": "array", "items": _shaped(_value_schema(s), s.shape),
                                        "minItems": 1, "maxItems": limits.max_rows} for s in specs},
                "required": [s.name for s in specs]}
    return {
        "title": title,
        "type": "object",
        "additionalProperties": False,
        "required": ["instances"],
        "properties": {
            "instances": {"oneOf": [
                {"type": "array", "items": record, "minItems": 1, "maxItems": limits.max_rows},
                columnar,
            ]},
            "levels": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                       "minItems": 1, "maxItems": MAX_LEVELS, "default": [0.5, 0.9]},
            "kind": {"type": "string", "enum": list(KINDS), "default": "eti"},
            "return_draws": {"type": "integer", "minimum": 0, "maximum": limits.max_return_draws, "default": 0},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "default": 0},
        },
    }


def generic_request_schema(limits: Limits) -> dict:
    """Request schema of the name-parametrized routes (the per-model routes document the fields)."""
    return {
        "title": "PredictRequest",
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {"oneOf": [{"type": "array", "items": {"type": "object"}, "minItems": 1,
                                     "maxItems": limits.max_rows}, {"type": "object"}]},
            "levels": {"type": "array", "items": {"type": "number"}},
            "kind": {"type": "string", "enum": list(KINDS)},
            "return_draws": {"type": "integer", "minimum": 0, "maximum": limits.max_return_draws},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
            "new_groups": {"type": "string", "enum": list(NEW_GROUPS)},
        },
    }


def response_schema() -> dict:
    """JSON Schema of a predict response."""
    number_or_nested = {}  # a number for scalar sites, nested lists for sites with an event shape
    site = {
        "type": "object",
        "required": ["mean", "sd", "median", "intervals"],
        "properties": {
            "mean": number_or_nested, "sd": number_or_nested, "median": number_or_nested,
            "intervals": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["lower", "upper"],
                "properties": {"lower": number_or_nested, "upper": number_or_nested}}},
            "probs": {"type": "array", "items": {"type": "number"}},
            "draws": {"type": "array"},
        },
    }
    return {
        "title": "PredictResponse",
        "type": "object",
        "required": ["model", "version", "kind", "levels", "seed", "request_id", "predictions"],
        "properties": {
            "model": {"type": "string"}, "version": {"type": "integer"},
            "request_id": {"type": "string", "description": "uuid4 hex, also in the X-Request-ID header"},
            "kind": {"type": "string"}, "levels": {"type": "array", "items": {"type": "number"}},
            "seed": {"type": "integer"},
            "predictions": {"type": "array", "items": {"type": "object", "additionalProperties": site}},
        },
    }


def error_schema() -> dict:
    """JSON Schema of an error response: ``{"detail": {"field": ..., "message": ...}}`` (and the
    ``request_id`` on predict routes)."""
    return {
        "title": "Error",
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "object", "required": ["field", "message"],
                                  "properties": {"field": {"type": "string"}, "message": {"type": "string"}}},
                       "request_id": {"type": "string", "description": "on predict routes"}},
    }
