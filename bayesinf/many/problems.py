"""One fitting problem per group: split a DataFrame by a key column, derive each group's seed from
the key, and turn each group's rows into a model and its arguments.

Three ways to say what to fit (``ModelSpec``):

- a formula string: ``Model.from_formula(formula, data=rows, family=..., link=..., priors=...)``
  per group, so each group has its own design and data-scaled default priors;
- a NumPyro model and ``columns``: ``{"x": "x", "X": ["x1", "x2"], "y": "y"}`` maps model
  arguments to a column (a ``(rows,)`` array) or a list of columns (``(rows, k)``); ``model_kwargs``
  adds fixed arguments (plate sizes, flags);
- ``make_args(rows) -> (model, args, kwargs)``, a function of the group's rows.

Formula groups are sampled through ``SharedPriorFormula``, the same model with its prior
parameters passed as data, so groups whose designs have the same structure share one compiled
sampler although their data-scaled priors differ. Each group's ``Posterior`` still holds the
group's own ``FormulaModel`` (predict, save and load as for ``Model.fit``).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ..data import bind_arguments, describe, split_arguments
from ..errors import InputError
from ..fitting import cast_arrays
from ..inference.binding import BoundModel
from ..runtime import precision
from ..sites import ModelSites, inspect_model, with_rows

__all__ = ["ModelSpec", "GroupProblem", "split_groups", "group_seed", "key_to_json", "key_from_json",
           "prepare_group", "SharedPriorFormula"]

_PRIOR_PREFIX = "prior__"


# ----------------------------------------------------------------------------- group keys and seeds
def _normalize_key(value, column: str):
    """A group key as a plain ``int`` or ``str``; other types are refused."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(column, f"holds the boolean group key {value!r}", "int or str group keys")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise InputError(column, f"holds the group key {value!r} of type {type(value).__name__}", "int or str group keys")


def key_to_json(key) -> dict:
    """``{"key": ..., "type": "int" | "str"}``: the key with its type, for JSON files."""
    return {"key": key, "type": "int" if isinstance(key, int) else "str"}


def key_from_json(entry: Mapping):
    kind, key = entry.get("type"), entry.get("key")
    if kind == "int" and isinstance(key, int) and not isinstance(key, bool):
        return key
    if kind == "str" and isinstance(key, str):
        return key
    raise ValueError(f"invalid group key entry {dict(entry)!r}")


def group_seed(seed: int, key) -> int:
    """The seed of group ``key``: the first 32 bits of sha256 of ``(seed, key type, key)``.

    Depends on the key, not on the group's position, so adding or removing groups leaves the
    other groups' seeds (and, for a given strategy, their draws) unchanged.
    """
    text = f"{int(seed)}|{'int' if isinstance(key, int) else 'str'}|{key}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def split_groups(data, by: str) -> list[tuple[Any, Any]]:
    """``[(key, rows), ...]`` sorted by key (ints before strings); errors name the column at fault."""
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        raise InputError("df", f"must be a pandas DataFrame; got {type(data).__name__}")
    if not isinstance(by, str):
        raise InputError("by", f"must be the name of one column; got {by!r}")
    if by not in data.columns:
        raise InputError(by, "is missing from the data (it is the 'by' column that names the groups)",
                         f"one of the columns {list(map(str, data.columns))[:20]}")
    column = data[by]
    missing = column.isna().to_numpy()
    if missing.any():
        rows = list(data.index[missing][:5])
        raise InputError(by, f"has {int(missing.sum())} missing group keys (rows {rows})", "a key in every row",
                         "Drop those rows or give them a group.")
    if len(data) == 0:
        raise InputError("df", "has no rows")
    groups = {}
    for raw, rows in data.groupby(by, sort=False, observed=True):
        key = _normalize_key(raw, by)
        if key in groups:
            raise InputError(by, f"holds group key {key!r} in two spellings (e.g. 1 and 1.0)")
        groups[key] = rows
    return sorted(groups.items(), key=lambda kv: (isinstance(kv[0], str), kv[0]))


# ----------------------------------------------------------------------------- what to fit
@dataclass(frozen=True)
class ModelSpec:
    """What ``fit_many`` fits to each group: ``kind`` is "formula", "columns" or "make_args"."""

    kind: str
    formula: str | None = None
    family: str = "gaussian"
    link: str | None = None
    priors: Mapping[str, Any] | None = None
    model: Callable | None = None
    columns: Mapping[str, Any] | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    make_args: Callable | None = None

    @classmethod
    def create(cls, model_or_formula, columns=None, model_kwargs=None, family="gaussian", link=None,
               priors=None) -> "ModelSpec":
        if isinstance(model_or_formula, str):
            if columns is not None or model_kwargs:
                raise InputError("columns" if columns is not None else "model_kwargs",
                                 "is given with a formula, which names its own columns and arguments")
            return cls("formula", formula=model_or_formula, family=family, link=link, priors=priors)
        if not callable(model_or_formula):
            raise InputError("model_or_formula", f"is a {type(model_or_formula).__name__}",
                             "a formula string, a NumPyro model with columns=..., or make_args(rows)")
        if family != "gaussian" or link is not None or priors is not None:
            raise InputError("family", "link and priors apply to formulas only")
        if columns is None:
            if model_kwargs:
                raise InputError("model_kwargs", "is given without columns; make_args returns all arguments")
            return cls("make_args", make_args=model_or_formula)
        if not isinstance(columns, Mapping) or not columns:
            raise InputError("columns", f"must map model arguments to columns; got {columns!r}",
                             "e.g. {'x': 'x', 'X': ['x1', 'x2'], 'y': 'y'}")
        for arg, col in columns.items():
            if not (isinstance(col, str) or (isinstance(col, (list, tuple)) and col
                                             and all(isinstance(c, str) for c in col))):
                raise InputError(f"columns[{arg!r}]", f"is {col!r}", "a column name or a list of column names")
        return cls("columns", model=model_or_formula, columns=dict(columns), model_kwargs=dict(model_kwargs or {}))

    def arguments(self, rows, *, response: bool = True, observed: tuple[str, ...] = ()):
        """``(model, args, kwargs)`` for a group's rows; with ``response=False`` the arguments in
        ``observed`` are left out (prediction)."""
        if self.kind == "formula":
            from ..formula import Model

            built = Model.from_formula(self.formula, data=rows, family=self.family, link=self.link,
                                       priors=self.priors)
            return built.model, (), dict(built.data)
        if self.kind == "columns":
            kwargs = dict(self.model_kwargs)
            for arg, col in self.columns.items():
                if not response and arg in observed:
                    continue
                names = [col] if isinstance(col, str) else list(col)
                absent = [c for c in names if c not in rows.columns]
                if absent:
                    raise InputError(absent[0], f"is missing from the data (columns[{arg!r}] needs it)")
                kwargs[arg] = rows[col].to_numpy()
            return self.model, (), kwargs
        out = self.make_args(rows)
        if not (isinstance(out, tuple) and len(out) == 3 and callable(out[0]) and isinstance(out[1], (tuple, list))
                and isinstance(out[2], Mapping)):
            raise InputError("make_args", f"returned {type(out).__name__}", "a tuple (model, args, kwargs)",
                             "To fit a NumPyro model directly, pass columns={'argument': 'column', ...}.")
        model, args, kwargs = out[0], tuple(out[1]), dict(out[2])
        if not response and observed:
            bound = bind_arguments(model, args, kwargs, partial=True)
            return model, (), {k: v for k, v in bound.items() if k not in observed}
        return model, args, kwargs

    def to_json(self) -> dict:
        """The spec as JSON (for ``FitCollection.save``); a ``make_args`` is kept by import path."""
        from ..fitting import model_import_path

        if self.kind == "formula":
            return {"kind": "formula", "formula": self.formula}
        if self.kind == "columns":
            return {"kind": "columns", "columns": {k: (v if isinstance(v, str) else list(v))
                                                   for k, v in self.columns.items()},
                    "model_kwargs": dict(self.model_kwargs)}
        return {"kind": "make_args", "make_args": model_import_path(self.make_args)}


# ----------------------------------------------------------------------------- formula models
class _TracedPrior:
    """A ``Prior`` whose parameters are traced arrays (no validation: they come from a valid Prior)."""

    __slots__ = ("dist", "params")

    def __init__(self, dist: str, params: Mapping[str, Any]):
        self.dist = dist
        self.params = dict(params)

    @property
    def is_positive(self) -> bool:
        from ..formula.priors import _POSITIVE

        return self.dist in _POSITIVE

    def distribution(self, shape=(), support: str = "real"):
        from ..formula.priors import Prior

        return Prior.distribution(self, shape, support)


def _formula_signature(model) -> tuple:
    """Everything of a ``FormulaModel`` that its NumPyro program depends on, except prior values."""
    design = model.design
    groups = tuple((g.label, g.num_levels, tuple(g.design.columns), bool(g.term.correlated),
                    tuple((n, tuple(i)) for n, i in g.effect_names())) for g in design.groups)
    priors = tuple(sorted((k, p.dist, tuple((name, np.shape(v)) for name, v in p.params.items()))
                          for k, p in model.priors.items()))
    return (model.family.name, model.link, design.response, tuple((n, tuple(i)) for n, i in design.fixed.terms),
            groups, priors)


class SharedPriorFormula:
    """A ``FormulaModel`` with its prior parameters as arguments ``prior__<site>__<param>``.

    Equal for formula models of the same structure (terms, columns, group levels, families of the
    priors), so ``bayesinf`` compiles one sampler for all of them.
    """

    def __init__(self, model):
        self.template = model
        self.signature = _formula_signature(model)

    def __call__(self, X, Z=None, groups=None, trials=None, y=None, **prior_params):
        priors = {}
        for name, prior in self.template.priors.items():
            params = {k: prior_params[f"{_PRIOR_PREFIX}{name}__{k}"] for k in prior.params}
            priors[name] = _TracedPrior(prior.dist, params)
        model = copy.copy(self.template)
        model.priors = priors
        return model(X, Z, groups, trials, y)

    @staticmethod
    def prior_arrays(model) -> dict[str, np.ndarray]:
        return {f"{_PRIOR_PREFIX}{name}__{k}": np.asarray(v, dtype=np.float64)
                for name, prior in model.priors.items() for k, v in prior.params.items()}

    def __eq__(self, other):
        return isinstance(other, SharedPriorFormula) and self.signature == other.signature

    def __hash__(self):
        return hash(self.signature)

    def __repr__(self):
        return f"SharedPriorFormula({self.template!r})"


# ----------------------------------------------------------------------------- one group's problem
@dataclass
class GroupProblem:
    """A group's model and data, ready to sample.

    ``model``/``arrays`` are what the group's ``Posterior`` holds; ``sampler_model``/
    ``sampler_arrays`` are what is sampled (the same, except for formulas: ``SharedPriorFormula``
    with the prior parameters added to the arrays).
    """

    key: Any
    seed: int
    model: Callable
    arrays: dict[str, np.ndarray]
    schema: Any
    sites: ModelSites
    sampler_model: BoundModel
    sampler_arrays: dict[str, np.ndarray]
    min_rows: int

    @property
    def num_rows(self) -> int:
        return self.schema.num_rows


def prepare_group(spec: ModelSpec, key, rows, seed: int, dtype: str, min_rows: int | None = None) -> GroupProblem:
    """Build group ``key``'s model and arguments from its ``rows``, trace it, record its schema.

    Every group is traced on its own data: what the trace finds can depend on the values (the
    number of classes of a count response, for one), not only on the shapes.
    """
    model, args, kwargs = spec.arguments(rows)
    int_ranges = None
    if spec.kind == "formula":
        int_ranges = model.int_ranges or None
        needed = kwargs["X"].shape[1] + len(model.family.aux)
    else:
        needed = 1
    bound = bind_arguments(model, args, kwargs)
    arrays, columns, static = split_arguments(bound)
    arrays = cast_arrays(arrays, dtype)
    bound_model = BoundModel(model, static)
    with precision(dtype):
        sites, trace = inspect_model(bound_model, arrays)
        schema = describe(tuple(bound), arrays, columns, static, tuple(sites.observed_args.values()), None,
                          int_ranges)
        sites = with_rows(sites, trace, schema.num_rows)
    sampler_model, sampler_arrays = bound_model, arrays
    if spec.kind == "formula":
        sampler_model = BoundModel(SharedPriorFormula(model), static)
        sampler_arrays = {**arrays, **cast_arrays(SharedPriorFormula.prior_arrays(model), dtype)}
    return GroupProblem(key, seed, model, arrays, schema, sites, sampler_model, sampler_arrays,
                        needed if min_rows is None else int(min_rows))
