"""How rows of a table become a model's predict arguments, and predictions become output columns.

An ``InputPlan`` is plain data (it travels to Dask workers): which input columns the model reads,
which are copied to the output (``keep``), and, for a plain NumPyro model, which columns make up
each row argument. Checks name the input column and the row's index in the whole input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import InputError

__all__ = ["InputPlan", "make_plan", "prediction_columns", "EXTRA"]

#: What to do with input columns the model does not read and ``keep`` does not list.
EXTRA = ("error", "ignore")


@dataclass(frozen=True)
class InputPlan:
    """Input columns of a batch prediction and how they map to the model.

    Attributes
    ----------
    is_formula : bool
        The model turns a DataFrame into arguments itself (a formula model).
    arguments : mapping of str -> tuple of str
        Plain models: row argument -> its input columns, in order (flattened C-order for
        arguments with several values per row).
    shapes : mapping of str -> tuple of int
        Plain models: values per row of each row argument (the shape after the row axis).
    dtypes : mapping of str -> str
        Plain models: fit dtype of each row argument.
    int_ranges : mapping of str -> (int, int)
        Plain models: allowed values of integer row arguments (as at fit).
    model_columns : tuple of str
        Input columns the model reads.
    numeric : tuple of str
        Input columns that must hold numbers.
    categories : mapping of str -> list
        Formula models: categorical columns and the levels seen at fit.
    text : tuple of str
        Formula models: group-level columns (compared as text).
    keep : tuple of str
        Input columns copied to the output, first.
    new_groups : str or None
        Formula models: how unseen group levels are predicted.
    """

    is_formula: bool
    model_columns: tuple[str, ...]
    numeric: tuple[str, ...]
    keep: tuple[str, ...] = ()
    arguments: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: Mapping[str, str] = field(default_factory=dict)
    int_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    categories: Mapping[str, list] = field(default_factory=dict)
    text: tuple[str, ...] = ()
    new_groups: str | None = None

    @property
    def read_columns(self) -> tuple[str, ...]:
        """Columns read from the input: kept columns, then the model's."""
        return tuple(dict.fromkeys(self.keep + self.model_columns))

    def to_json(self) -> dict:
        """The plan as plain JSON (part of the fingerprint of a run)."""
        return {"is_formula": self.is_formula, "model_columns": list(self.model_columns), "keep": list(self.keep),
                "arguments": {k: list(v) for k, v in self.arguments.items()}, "new_groups": self.new_groups}

    def csv_types(self) -> dict[str, str]:
        """Column types to read a CSV file with (``"float64"``, ``"int64"``, ``"bool"`` or ``"string"``),
        so types do not depend on what the first rows of the file happen to hold."""
        types = {c: "string" for c in self.keep}
        for c in self.numeric:
            types[c] = "float64"
        for name, cols in self.arguments.items():
            kind = np.dtype(self.dtypes[name]).kind
            for c in cols:  # integers are read as float64 and checked to be integral (2.0 is 2)
                types[c] = "bool" if kind == "b" else "float64"
        for c, levels in self.categories.items():
            types[c] = _level_type(levels)
        for c in self.text:
            types[c] = "string"
        return types

    def check_columns(self, available, extra: str = "error") -> None:
        """Raise ``InputError`` for model or kept columns missing from ``available`` or repeated in it,
        and (unless ``extra="ignore"``) for columns neither read by the model nor kept or repeated."""
        available = [str(c) for c in available]
        counts = Counter(available)
        repeated = [c for c in available if counts[c] > 1 and (extra == "error" or c in self.read_columns)]
        if repeated:
            raise InputError(repeated[0], f"appears {counts[repeated[0]]} times in the input's columns "
                             f"{available}", "each column name once", "Rename or drop the extra copies.")
        missing = [c for c in self.model_columns if c not in available]
        if missing:
            raise InputError(missing[0], f"is missing from the input (the model reads column(s) {list(self.model_columns)})",
                             f"input columns including {list(self.model_columns)}")
        missing = [c for c in self.keep if c not in available]
        if missing:
            raise InputError(missing[0], "is listed in keep but missing from the input", f"one of {available}")
        unused = [c for c in available if c not in self.model_columns and c not in self.keep]
        if unused and extra == "error":
            raise InputError(unused[0], f"is an input column the model does not read (unused: {unused})",
                             f"only the columns {list(self.model_columns)}",
                             "Pass keep=[...] to copy columns to the output, or extra='ignore' to skip them.")

    def arguments_for(self, frame, start: int) -> tuple[tuple, dict[str, Any]]:
        """``(args, kwargs)`` of ``Posterior.predict`` for the rows of ``frame`` (a pandas DataFrame
        whose first row is row ``start`` of the whole input); raises ``InputError`` naming the
        column and the global row at fault."""
        for c in self.model_columns:
            _check_present(frame[c], c, start)
        for c in self.numeric:
            _check_numeric(frame[c], c, start)
        if self.is_formula:
            for c, levels in self.categories.items():
                seen = frame[c].isin(levels).to_numpy()
                if not seen.all():
                    row = int(np.flatnonzero(~seen)[0])
                    value = frame[c].iloc[row]
                    value = value.item() if hasattr(value, "item") else value
                    raise InputError(c, f"has level {value!r} at row {start + row}, which was not in "
                                     "the data at fit", f"one of the levels seen at fit {list(levels)}")
            return (frame.reset_index(drop=True),), {"new_groups": self.new_groups}
        kwargs = {}
        for name, cols in self.arguments.items():
            kind = np.dtype(self.dtypes[name]).kind
            values = frame[list(cols)].to_numpy()
            if kind == "f" or values.dtype == object:  # mixed int/float/bool columns: numbers
                values = values.astype(np.float64)
            if kind in "iub":
                if values.dtype.kind == "f":
                    _check_integral(values, cols, start, name, self.dtypes[name])
                    if kind in "iu":  # integral floats (2.0, as pandas writes an int column that held NaN)
                        values = values.astype(self.dtypes[name])
                if name in self.int_ranges:
                    low, high = self.int_ranges[name]
                    bad = (values < low) | (values > high)
                    if bad.any():
                        row, col = np.argwhere(bad)[0]
                        raise InputError(cols[col], f"has value {values[row, col].item()!r} at row {start + row}, outside "
                                         f"the range [{low}, {high}] seen at fit (an unseen category or index)",
                                         f"values in [{low}, {high}]")
            kwargs[name] = values.reshape(len(frame), *self.shapes[name])
        return (), kwargs


def _check_integral(values: np.ndarray, cols, start: int, name: str, dtype: str) -> None:
    """``InputError`` naming the column and rows of the first column of ``values`` (float, ``(rows,
    len(cols))``) that holds non-integers or integers the fit dtype cannot hold (or that a float64
    cannot represent exactly, beyond 2**53; bool: other than 0 and 1)."""
    if np.dtype(dtype).kind == "b":
        low, high = 0.0, 1.0
    else:
        info = np.iinfo(dtype)
        low, high = max(float(info.min), -2.0**53), min(float(info.max), 2.0**53)
    expected = f"integers, as at fit (argument '{name}', dtype {np.dtype(dtype).name})"
    for problem, bad in (("non-integer", values != np.round(values)), ("out-of-range", (values < low) | (values > high))):
        if bad.any():
            col = int(np.flatnonzero(bad.any(axis=0))[0])
            rows = start + np.flatnonzero(bad[:, col])
            first = values[rows[0] - start, col].item()
            where = (f"the {problem} value {first!r} at row {rows[0]}" if rows.size == 1 else
                     f"{rows.size} {problem} values in rows {rows[0]}-{rows[-1]} (first {first!r} at row {rows[0]})")
            raise InputError(cols[col], f"has {where}",
                             expected if problem == "non-integer" else f"{expected} in [{int(low)}, {int(high)}]")


def _level_type(levels) -> str:
    if levels and all(isinstance(v, bool) for v in levels):
        return "bool"
    if levels and all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
        return "int64"
    if levels and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
        return "float64"
    return "string"


def _check_present(column, name: str, start: int) -> None:
    missing = column.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise InputError(name, f"has {int(missing.sum())} missing (NaN or empty) values in rows {start}-"
                         f"{start + len(column) - 1} (first at row {start + row})", "a value in every row",
                         "Drop or impute the missing values first.")


def _check_numeric(column, name: str, start: int) -> None:
    import pandas as pd

    if not (pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype)):
        raise InputError(name, f"has dtype {column.dtype} in rows {start}-{start + len(column) - 1}",
                         "numbers (int, float or bool)")
    values = column.to_numpy()
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InputError(name, f"has the infinite value {values[row].item()!r} at row {start + row}", "finite numbers")


def _formula_design(model):
    design = getattr(model, "design", None)
    return design if design is not None and hasattr(design, "fixed") and hasattr(design, "groups") else None


def make_plan(post, columns: Mapping[str, Any] | None = None, keep=(), new_groups: str = "sample") -> InputPlan:
    """The ``InputPlan`` of ``post``'s model.

    Parameters
    ----------
    post : Posterior
    columns : mapping of str -> str or sequence of str, optional
        Plain models: input column(s) of each row argument; an argument with ``k`` values per row
        takes ``k`` columns (C order for several trailing axes). Default: the column names the
        argument was fit with (a DataFrame), or the argument's own name for one value per row.
    keep : sequence of str
        Input columns copied to the output before the predictions (ids, say).
    new_groups : {"sample", "population", "error"}
        Formula models: prediction for group levels not seen at fit.
    """
    if isinstance(keep, str):
        keep = (keep,)
    keep = tuple(str(c) for c in keep)
    to_arguments = getattr(post.model, "__bayesinf_arguments__", None)
    design = _formula_design(post.model)
    if to_arguments is not None and design is not None:
        if columns:
            raise InputError("columns", "is for plain NumPyro models; a formula model reads the columns its "
                             "formula names", hint="Rename the input columns to the formula's names.")
        categorical = dict(design.fixed.categories())
        factors = [c for g in design.groups for c in g.term.factor]
        variables = list(design.fixed.variables)
        for g in design.groups:
            variables += list(g.design.variables)
        needed = variables + factors + ([design.trials] if design.trials else [])
        model_columns = tuple(dict.fromkeys(needed))
        numeric = tuple(c for c in dict.fromkeys(variables + ([design.trials] if design.trials else []))
                        if c not in categorical and c not in factors)
        return InputPlan(True, model_columns, numeric, keep, categories=categorical,
                         text=tuple(dict.fromkeys(factors)), new_groups=new_groups)
    columns = dict(columns or {})
    row_specs = [s for s in post.schema.specs if s.role == "rows"]
    unknown = [k for k in columns if k not in {s.name for s in row_specs}]
    if unknown:
        raise InputError("columns", f"names {unknown[0]!r}, which is not a row argument of the model",
                         f"some of {[s.name for s in row_specs]}")
    arguments, shapes, dtypes, ranges = {}, {}, {}, {}
    for spec in row_specs:
        size = int(np.prod(spec.shape)) if spec.shape else 1
        given = columns.get(spec.name)
        if given is None:
            if spec.columns is not None:
                given = spec.columns
            elif size == 1:
                given = (spec.name,)
            else:
                raise InputError("columns", f"gives no input columns for the argument '{spec.name}', which has "
                                 f"{size} values per row and was fit without column names",
                                 f"columns={{'{spec.name}': [<{size} column names>]}}")
        cols = (given,) if isinstance(given, str) else tuple(str(c) for c in given)
        if len(cols) != size:
            raise InputError(f"columns['{spec.name}']", f"lists {len(cols)} column(s)",
                             f"{size} (the argument has shape (rows, {', '.join(map(str, spec.shape))}) at fit)"
                             .replace(", )", ")"))
        arguments[spec.name], shapes[spec.name], dtypes[spec.name] = cols, tuple(spec.shape), spec.dtype
        if spec.int_range is not None:
            ranges[spec.name] = tuple(spec.int_range)
    model_columns = tuple(dict.fromkeys(c for cols in arguments.values() for c in cols))
    return InputPlan(False, model_columns, model_columns, keep, arguments, shapes, dtypes, ranges)


def prediction_columns(pred) -> dict[str, np.ndarray]:
    """Output columns of a ``Prediction``: per observed site ``mean, sd, median, lower_<level>,
    upper_<level>`` and ``p_<k>`` probabilities (as ``Prediction.to_pandas``; prefixed ``<site>_``
    when the model has several observed sites, and ``<site>[i]_`` per value of a site with several
    values per row)."""
    out = {}
    prefix_sites = len(pred.sites) > 1
    for name, s in pred.sites.items():
        event = s.mean.shape[1:]
        for idx in np.ndindex(*event):
            p = f"{name}[{','.join(map(str, idx))}]_" if event else (f"{name}_" if prefix_sites else "")
            sel = (slice(None),) + idx
            out[p + "mean"] = s.mean[sel]
            out[p + "sd"] = s.sd[sel]
            out[p + "median"] = s.median[sel]
            for i, v in enumerate(pred.levels):
                out[f"{p}lower_{v:g}"] = s.lower[(i,) + sel]
                out[f"{p}upper_{v:g}"] = s.upper[(i,) + sel]
            if s.probs is not None:
                for k in range(s.probs.shape[1]):
                    out[f"{p}p_{k}"] = s.probs[:, k]
    return out
