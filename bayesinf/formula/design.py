"""Design matrices of a formula, fitted once and re-applied to new data.

The fixed part goes through formulaic; its model spec (category levels, contrasts, the state of
stateful transforms such as ``scale(x)``) is kept as plain JSON, so new data get the same
encodings, transforms and column order, at predict time and after ``bayesinf.load``. Group terms
keep the list of levels seen at fit; a level outside it maps to the "new level" slot.
"""

from __future__ import annotations

import functools
import re
import warnings
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from .parse import GroupTerm, ParsedFormula, check_terms

__all__ = ["MatrixDesign", "GroupDesign", "Design", "InputColumn", "NEW_GROUPS", "MAX_LISTED_LEVELS", "fit_design"]

#: How prediction treats group levels not seen at fit.
NEW_GROUPS = ("sample", "population", "error")
#: Group-factor columns with more distinct values than this at fit do not list their levels.
MAX_LISTED_LEVELS = 1000
#: JSON types of data columns, from the column's dtype at fit.
VALUE_TYPES = ("number", "integer", "boolean", "string")

_C_CALL = re.compile(r"^C\(\s*([A-Za-z_][A-Za-z0-9_.]*)")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> JSON-able Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_frame(data: Any, owner: str):
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        raise InputError("data", f"of {owner} must be a pandas DataFrame; got {type(data).__name__}")
    return data


def _check_columns(data, required, what: str) -> None:
    missing = [c for c in required if c not in data.columns]
    if missing:
        raise InputError(missing[0], f"is missing from the data ({what} needs column(s) {sorted(required)})",
                         f"a DataFrame with columns {sorted(required)}")
    for c in required:
        column = data[c]
        if column.isna().any():
            row = int(np.flatnonzero(column.isna().to_numpy())[0])
            raise InputError(c, f"has {int(column.isna().sum())} missing values (first at row {row})",
                             "no missing values", "Drop or impute the missing rows first.")


@dataclass(frozen=True)
class MatrixDesign:
    """One formulaic right-hand side with the state it was fitted with.

    Attributes
    ----------
    formula : str
        The right-hand side, e.g. ``"1 + floor"``.
    columns : tuple of str
        Design-matrix columns, in order.
    terms : tuple of (str, tuple of int)
        Each formulaic term (``"Intercept"``, ``"floor"``, ``"C(g)"``) with its column positions.
    variables : tuple of str
        Data columns the formula reads.
    state : dict
        formulaic state as JSON: ``ensure_full_rank``, ``transform_state``, ``encoder_state``.
    """

    formula: str
    columns: tuple[str, ...]
    terms: tuple[tuple[str, tuple[int, ...]], ...]
    variables: tuple[str, ...]
    state: Mapping[str, Any]

    @classmethod
    def fit(cls, formula: str, data) -> tuple["MatrixDesign", np.ndarray]:
        """Fit the design on ``data``; returns it and the design matrix ``(rows, columns)``."""
        from formulaic import model_matrix
        from formulaic.errors import FormulaicError

        check_terms(formula)  # formulaic evaluates the terms: only whitelisted code gets there
        try:
            matrix = model_matrix(formula, data, na_action="raise")
        except FormulaicError as exc:
            name = _missing_name(exc)
            if name is not None:
                raise InputError(name, "is missing from the data", f"a column named {name!r}") from None
            raise InputError("formula", f"cannot be evaluated on the data: {exc}") from None
        except SyntaxError as exc:
            raise InputError("formula", f"{formula!r} is malformed: {exc}") from None
        except ValueError as exc:  # formulaic's null check: a transform gave NaN, e.g. the log of a negative
            raise InputError("formula", f"gives missing values on the data ({exc})",
                             "transforms that are finite on every row") from None
        spec = matrix.model_spec
        columns = tuple(str(c) for c in matrix.columns)
        position = {c: i for i, c in enumerate(columns)}
        terms = []
        for structure in spec.structure:
            name = "Intercept" if str(structure.term) == "1" else str(structure.term)
            terms.append((name, tuple(position[c] for c in structure.columns)))
        encoder = {}
        for factor, (kind, st) in spec.encoder_state.items():
            encoder[str(factor)] = [kind.value, {k: _plain(v) for k, v in st.items() if k == "categories"}]
        state = {"ensure_full_rank": bool(spec.ensure_full_rank), "transform_state": _plain(spec.transform_state),
                 "encoder_state": encoder}
        variables = tuple(sorted(str(v) for v in spec.required_variables))
        design = cls(formula, columns, tuple(terms), variables, state)
        return design, np.asarray(matrix.to_numpy(), dtype=np.float64)

    @functools.cached_property
    def _model_spec(self):
        """The formulaic ``ModelSpec``, built once per design (it is immutable)."""
        return self._spec()

    def _spec(self):
        from formulaic import ModelSpec
        from formulaic.parser.types import Factor

        check_terms(self.formula, self.variables)  # never evaluate unchecked code (e.g. read from a file)
        encoder = {k: (Factor.Kind(kind), dict(st)) for k, (kind, st) in self.state["encoder_state"].items()}
        return ModelSpec(formula=self.formula, ensure_full_rank=self.state["ensure_full_rank"],
                         transform_state=dict(self.state["transform_state"]), encoder_state=encoder,
                         na_action="raise")

    def categories(self) -> dict[str, list]:
        """Data column -> levels seen at fit, for every categorical factor that is a plain column
        (``g``) or ``C(g, ...)``."""
        out = {}
        for factor, (kind, st) in self.state["encoder_state"].items():
            if kind != "categorical" or "categories" not in st:
                continue
            match = _C_CALL.match(factor)
            column = factor if factor in self.variables else (match.group(1) if match else None)
            if column is not None:
                out[column] = list(st["categories"])
        return out

    def matrix(self, data) -> np.ndarray:
        """The design matrix of new ``data``, ``(rows, len(columns))``, with the fitted encodings.

        Raises
        ------
        InputError
            A column is missing or has missing values, or a categorical column has a level not
            seen at fit.
        """
        _check_columns(data, self.variables, f"the formula '{self.formula}'")
        if not self.variables and self.columns == ("Intercept",):  # '(1 | g)': a column of ones
            return np.ones((len(data), 1), dtype=np.float64)
        for column, levels in self.categories().items():
            seen = set(levels)
            unseen = [v for v in dict.fromkeys(data[column].tolist()) if v not in seen]
            if unseen:
                raise InputError(column, f"has level {unseen[0]!r}, which was not in the data at fit",
                                 f"one of the levels seen at fit {levels}",
                                 "A fixed effect cannot be predicted for a new category; model the column as a "
                                 "group term '(1 | column)' to predict new levels.")
        from formulaic.errors import DataMismatchWarning

        with warnings.catch_warnings(), np.errstate(all="ignore"):  # NaN from a transform is reported below
            warnings.simplefilter("error", DataMismatchWarning)
            try:
                matrix = self._model_spec.get_model_matrix(data)
            except DataMismatchWarning as exc:
                raise InputError("data", f"has categorical levels not seen at fit: {exc}") from None
            except ValueError as exc:  # formulaic's null check: a transform gave NaN, e.g. the log of a negative
                raise InputError("data", f"gives missing values through the formula's transforms ({exc})",
                                 "values for which every transform of the formula is finite") from None
        if tuple(str(c) for c in matrix.columns) != self.columns:
            raise InputError("data", f"gives design columns {list(matrix.columns)}", f"{list(self.columns)}")
        return np.asarray(matrix.to_numpy(), dtype=np.float64)

    def to_json(self) -> dict:
        return {"formula": self.formula, "columns": list(self.columns),
                "terms": [[name, list(idx)] for name, idx in self.terms], "variables": list(self.variables),
                "state": _plain(self.state)}

    @classmethod
    def from_json(cls, d) -> "MatrixDesign":
        check_terms(str(d["formula"]), tuple(str(v) for v in d["variables"]))  # refuse code other than terms
        return cls(str(d["formula"]), tuple(d["columns"]), tuple((str(n), tuple(int(i) for i in idx))
                                                                    for n, idx in d["terms"]),
                   tuple(d["variables"]), dict(d["state"]))


def _missing_name(exc: Exception) -> str | None:
    match = (re.search(r"name '([^']+)' is not defined", str(exc))
             or re.search(r"`([^`]+)` is not present in the dataset", str(exc)))
    return match.group(1) if match else None


def level_keys(data, factor: tuple[str, ...]) -> np.ndarray:
    """The group level of every row as a string (columns joined by ':'), ``(rows,)``."""
    keys = data[factor[0]].astype(str).to_numpy(dtype=object)
    for column in factor[1:]:
        keys = keys + ":" + data[column].astype(str).to_numpy(dtype=object)
    return keys


def _numeric_spellings(key: str) -> list[str]:
    """Other spellings of a level key whose parts are numbers: ``"84.0"`` -> ``["84"]``, ``"84"``
    -> ``["84.0"]`` (parts joined by ':' as in ``level_keys``). An integer-coded group read as
    floats (pandas does so once a column held a missing value) keeps its levels."""
    parts = key.split(":")
    spellings = [[], []]
    for part in parts:
        try:
            number = float(part)
        except ValueError:
            return []
        if not number.is_integer():
            return []
        spellings[0].append(str(int(number)))
        spellings[1].append(str(number))
    return [k for k in (":".join(p) for p in spellings) if k != key]


@dataclass(frozen=True)
class GroupDesign:
    """A group term fitted on data: its varying-effects design and the levels seen at fit.

    Index ``len(levels)`` is the "new level" slot (effect drawn from the population distribution)
    and ``len(levels) + 1`` the "population" slot (effect zero).
    """

    term: GroupTerm
    design: MatrixDesign
    levels: tuple[str, ...]

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def label(self) -> str:
        """Name of the term in parameter names: ``"1+floor|county"``."""
        return "+".join(_effect_name(t) for t, _ in self.design.terms) + "|" + self.term.factor_label

    def effect_names(self) -> list[tuple[str, tuple[int, ...]]]:
        """Per formulaic term of the expression: the effect's name (``"floor|county"``) and columns."""
        return [(f"{_effect_name(t)}|{self.term.factor_label}", idx) for t, idx in self.design.terms]

    def new_level_ids(self, indices: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Per row, ``(rows,)`` int32, from ``lookup``'s results: 0 unless the row is in the new-level
        slot, else an id of its unseen level in ``[1, 2**31)``: the CRC-32 of its key, so the same
        new level gets the same id (and effect) in every request, chunk and process."""
        ids = np.zeros(len(indices), dtype=np.int32)
        for row in np.flatnonzero(indices == self.num_levels):
            key = str(keys[row])
            key = next(iter(_numeric_spellings(key)), key) if "." in key else key  # 99.0 is level 99
            ids[row] = (zlib.crc32(key.encode()) & 0x7FFFFFFE) + 1
        return ids

    def lookup(self, data, new_groups: str = "sample") -> tuple[np.ndarray, np.ndarray]:
        """Level index of every row of ``data``, ``(rows,)`` (unseen levels per ``new_groups``), and
        the rows' level keys."""
        keys = level_keys(data, self.term.factor)
        position = {level: i for i, level in enumerate(self.levels)}
        out = np.array([position.get(k, -1) for k in keys], dtype=np.int64)
        unseen = out < 0
        for row in np.flatnonzero(unseen):  # 84.0 (a float column, CSV text) is level 84, and back
            out[row] = next((position[k] for k in _numeric_spellings(keys[row]) if k in position), -1)
        unseen = out < 0
        if unseen.any():
            if new_groups == "error":
                first = keys[np.flatnonzero(unseen)[0]]
                raise InputError(self.term.factor_label, f"has level {first!r}, which was not in the data at fit",
                                 "levels seen at fit", "Pass new_groups='sample' to draw the effect of a new group "
                                 "from the population, or 'population' to leave it out.")
            out[unseen] = self.num_levels if new_groups == "sample" else self.num_levels + 1
        return out, keys

    def to_json(self) -> dict:
        return {"term": self.term.to_json(), "design": self.design.to_json(), "levels": list(self.levels)}

    @classmethod
    def from_json(cls, d) -> "GroupDesign":
        return cls(GroupTerm.from_json(d["term"]), MatrixDesign.from_json(d["design"]), tuple(d["levels"]))


def _effect_name(term: str) -> str:
    return "1" if term == "Intercept" else term


@dataclass(frozen=True)
class InputColumn:
    """A data column a formula model reads at predict time.

    Attributes
    ----------
    name : str
        Column name in the DataFrame.
    kind : {"numeric", "categorical"}
        Categorical: a factor of the fixed part (``g`` or ``C(g)`` with levels), a group factor
        (``(1 | g)``), or any non-numeric column.
    value_type : {"number", "integer", "boolean", "string"}
        JSON type of the column's values, from its dtype at fit.
    levels : tuple or None
        Categorical columns: the levels seen at fit, as plain values of ``value_type`` (None for a
        group factor with more than ``MAX_LISTED_LEVELS``). None for numeric columns.
    new_levels : bool
        True for a column read only as a group factor: a level not seen at fit is predicted as
        ``new_groups`` says. False: a value outside ``levels`` is an error.
    """

    name: str
    kind: str
    value_type: str
    levels: tuple | None = None
    new_levels: bool = False

    @property
    def dtype(self) -> str:
        """numpy dtype a DataFrame column of this input gets."""
        return {"number": "float64", "integer": "int64", "boolean": "bool", "string": "object"}[self.value_type]

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "value_type": self.value_type,
                "levels": None if self.levels is None else list(self.levels), "new_levels": self.new_levels}

    @classmethod
    def from_json(cls, d) -> "InputColumn":
        return cls(str(d["name"]), str(d["kind"]), str(d["value_type"]),
                   None if d.get("levels") is None else tuple(d["levels"]), bool(d.get("new_levels", False)))


def _value_type(column) -> str:
    import pandas as pd

    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "number"
    return "string"


def _input_columns(fixed: MatrixDesign, groups, trials: str | None, data=None) -> tuple[InputColumn, ...]:
    """The data columns of a design, in the order the formula names them: fixed-part variables,
    group-term variables, group factors, trials. ``data`` (the fit's DataFrame) gives the value
    types and the levels of group factors; without it (designs saved before these were recorded)
    they are taken from the design's own state."""
    categories = {}
    for design in (fixed, *(g.design for g in groups)):
        categories.update(design.categories())
    factor_levels = {}
    for g in groups:
        for j, column in enumerate(g.term.factor):
            if data is not None:
                values = sorted({_plain(v) for v in data[column].unique()}, key=lambda v: _natural(str(v)))
            else:  # levels are kept as text ('a:b' for several factor columns)
                values = sorted({level.split(":")[j] if len(g.term.factor) > 1 else level for level in g.levels},
                                key=_natural)
            factor_levels[column] = values
    variables = list(fixed.variables) + [v for g in groups for v in g.design.variables]
    names = list(dict.fromkeys(variables + list(factor_levels) + ([trials] if trials else [])))
    out = []
    for name in names:
        if data is not None:
            value_type = _value_type(data[name])
        elif name in factor_levels and name not in categories:
            levels = factor_levels[name]
            value_type = "integer" if all(re.fullmatch(r"-?\d+", v) for v in levels) else "string"
            factor_levels[name] = [int(v) for v in levels] if value_type == "integer" else levels
        elif name in categories:
            value_type = _json_type_of(categories[name])
        else:
            value_type = "number"
        if name in categories:
            out.append(InputColumn(name, "categorical", value_type, tuple(categories[name]), False))
        elif name in factor_levels:
            levels = factor_levels[name]
            out.append(InputColumn(name, "categorical", value_type,
                                   tuple(levels) if len(levels) <= MAX_LISTED_LEVELS else None,
                                   name not in variables))
        elif value_type == "string":
            out.append(InputColumn(name, "categorical", value_type, None, False))
        else:
            out.append(InputColumn(name, "numeric", value_type))
    return tuple(out)


def _json_type_of(levels) -> str:
    if all(isinstance(v, bool) for v in levels):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
        return "integer"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
        return "number"
    return "string"


@dataclass(frozen=True)
class Design:
    """Everything needed to turn a DataFrame into the formula model's arguments.

    ``inputs`` describes the data columns read at predict time (see ``input_columns``).
    """

    response: str
    trials: str | None
    fixed: MatrixDesign
    groups: tuple[GroupDesign, ...]
    inputs: tuple[InputColumn, ...] = ()
    #: True: the model takes ``new_levels`` and draws an independent effect for every unseen
    #: level (designs saved before this existed share one draw among all unseen levels).
    per_level_new_effects: bool = False

    def input_columns(self) -> tuple[InputColumn, ...]:
        """The data columns that predict reads: names, numeric or categorical, JSON value types and
        levels (the response is not one of them)."""
        return self.inputs or _input_columns(self.fixed, self.groups, self.trials)

    def arrays(self, data, *, new_groups: str = "sample", response: bool = False) -> dict[str, np.ndarray]:
        """Model arguments for ``data``: ``X (rows, p)``, ``Z (rows, q)`` and ``groups (rows, terms)``
        when there are group terms, ``trials (rows,)`` for a binomial response, and ``y (rows,)``
        when ``response``."""
        _check_frame(data, "predict" if not response else "fit")
        if new_groups not in NEW_GROUPS:
            raise InputError("new_groups", f"must be one of {NEW_GROUPS}; got {new_groups!r}")
        needed = [self.response] if response else []
        needed += [self.trials] if self.trials else []
        needed += [*self.fixed.variables, *(v for g in self.groups for v in (*g.design.variables, *g.term.factor))]
        _check_columns(data, list(dict.fromkeys(needed)), "the formula")
        self._check_numeric_columns(data)
        out = {"X": self.fixed.matrix(data)}
        if self.groups:
            out["Z"] = np.concatenate([g.design.matrix(data) for g in self.groups], axis=1)
            looked = [g.lookup(data, new_groups) for g in self.groups]
            out["groups"] = np.stack([indices for indices, _ in looked], axis=1)
            if self.per_level_new_effects:
                out["new_levels"] = np.stack([g.new_level_ids(*lk) for g, lk in zip(self.groups, looked)], axis=1)
        if self.trials:
            out["trials"] = _integers(data[self.trials], self.trials, minimum=0)
        if response:
            out["y"] = data[self.response]
        return out

    def _check_numeric_columns(self, data) -> None:
        """A column that was numeric at fit must still be: text there would otherwise turn it into
        a factor, and the error would be about design columns."""
        import pandas as pd

        for column in self.inputs:
            if column.kind == "numeric" and column.name in data.columns:
                values = data[column.name]
                if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
                    raise InputError(column.name, f"is not numeric (dtype {values.dtype}); it was numeric at fit",
                                     "numbers")

    @property
    def max_group_index(self) -> int:
        return max((g.num_levels + 1 for g in self.groups), default=0)

    def to_json(self) -> dict:
        return {"response": self.response, "trials": self.trials, "fixed": self.fixed.to_json(),
                "groups": [g.to_json() for g in self.groups], "inputs": [c.to_json() for c in self.inputs],
                "per_level_new_effects": self.per_level_new_effects}

    @classmethod
    def from_json(cls, d) -> "Design":
        return cls(str(d["response"]), d.get("trials"), MatrixDesign.from_json(d["fixed"]),
                   tuple(GroupDesign.from_json(g) for g in d["groups"]),
                   tuple(InputColumn.from_json(c) for c in d.get("inputs", ())),
                   bool(d.get("per_level_new_effects", False)))


def _integers(column, name: str, minimum: int | None = None) -> np.ndarray:
    values = np.asarray(column)
    if not np.issubdtype(values.dtype, np.number) or not np.all(values == np.round(values)):
        raise InputError(name, f"must hold integers; got dtype {values.dtype}")
    if minimum is not None and (values < minimum).any():
        raise InputError(name, f"has negative value {values[values < minimum][0]}", "non-negative integers")
    return values.astype(np.int64)


def fit_design(parsed: ParsedFormula, data) -> Design:
    """Fit the designs of ``parsed`` on ``data`` (a DataFrame)."""
    _check_frame(data, "Model.from_formula")
    if len(data) == 0:
        raise InputError("data", "has no rows", "at least one row")
    needed = [parsed.response] + ([parsed.trials] if parsed.trials else [])
    needed += [c for g in parsed.groups for c in g.factor] + list(parsed.columns)
    _check_columns(data, list(dict.fromkeys(needed)), f"the formula '{parsed.text}'")
    fixed, _ = MatrixDesign.fit(parsed.fixed, data)
    groups = []
    for term in parsed.groups:
        design, _ = MatrixDesign.fit(term.expr, data)
        if not design.columns:
            raise InputError("formula", f"group term '({term.expr} | {term.factor_label})' has no columns")
        levels = tuple(dict.fromkeys(sorted(set(level_keys(data, term.factor)), key=_natural)))
        groups.append(GroupDesign(term, design, levels))
    inputs = _input_columns(fixed, groups, parsed.trials, data)
    return Design(parsed.response, parsed.trials, fixed, tuple(groups), inputs, per_level_new_effects=True)


def _natural(key: str):
    """Sort levels numerically when they are numbers ("2" before "10"), else as text."""
    try:
        return (0, float(key), "")
    except ValueError:
        return (1, 0.0, key)
