"""Interpreting a fitted model: conditional effects, average predictive comparisons and
permutation importance, for formula posteriors (``Model.from_formula(...).fit()``) and the fitted
scikit-learn estimators of ``bayesinf.estimators``. Each function returns a pandas DataFrame (one
row per grid point, comparison or column) and has a plot that returns a matplotlib figure.

What is computed
----------------
By default every quantity is a function of the *expected value* ``E(y | x, theta)`` -- the mean of
the outcome distribution for each posterior draw ``theta`` (``scale="mean"``). For a formula
posterior it is read off the response distribution of the model traced with each draw
substituted (inverse link of the linear predictor; ``n p`` for a binomial); for an estimator it is
``eta``, ``exp(eta)`` or ``P(y = classes_[1])``. Intervals are equal-tailed over posterior draws,
so they hold parameter uncertainty only, not outcome noise. ``scale="draws"`` uses posterior
predictive draws instead, made with one seed for both arms of a comparison (common random
numbers): the outcome noise cancels exactly for a location family (gaussian, student-t with the
identity link) and only partly for discrete outcomes.

- ``conditional_effects``: ``E(y)`` over a grid of one variable, optionally crossed with the values
  of ``by``; every other variable is held at its mean (numeric) or its most frequent level in
  ``data`` (categorical), unless given in ``at``. Group factors (``county`` of ``(1 | county)``) not
  varied are held at the population level: their varying effects are left out (brms's default
  ``re_formula = NA``).
- ``average_predictive_comparison``: for each draw, the average over the rows of ``data`` of
  ``[E(y | x_j + h) - E(y | x_j)] / h`` (numeric ``x_j``; a forward difference, ``h`` = 1% of the
  sd by default, so the average marginal effect) or of ``E(y | x_j = level) - E(y | x_j =
  reference)`` (categorical); the interval is over those per-draw averages. For a gaussian model
  with the identity link and no interactions it equals the coefficient, draw by draw. This is the
  average marginal effect of the econometrics literature; Gelman & Pardoe (2007) weight pairs of
  rows instead.
- ``permutation_importance``: the drop in a posterior predictive score when one column of ``data``
  is permuted (Breiman 2001; Fisher, Rudin & Dominici 2019), repeated ``num_repeats`` times; the
  interval is over the repeats (permutation noise), the score is computed with all draws. Scores:
  ``"lpd"`` mean log pointwise predictive density ``mean_i log mean_s p(y_i | theta_s)`` (nats per
  row), ``"r2"`` R^2 of the posterior mean of ``E(y)``, ``"accuracy"`` for binary/class outcomes.
  On the fit data it measures what the fitted model uses, not out-of-sample value: pass held-out
  rows for that.

Compared with Bambi and brms
----------------------------
Bambi's ``interpret`` module (``plot_predictions``/``predictions``, ``comparisons``, ``slopes``)
follows R's marginaleffects: predictions on a grid with the other covariates at mean/mode,
comparisons and slopes either at given values or averaged over the data (``average_by``), for the
mean or the predictive distribution (``pps=True``). ``conditional_effects`` here is its
``predictions``; ``average_predictive_comparison`` its ``comparisons``/``slopes`` with
``average_by`` over all rows (or per ``by`` level). Bambi has no permutation importance. brms's
``conditional_effects`` holds numeric covariates at their mean and factors at their reference level,
shows moderators (``effects = "x:z"``) at mean and mean +- sd (as our numeric ``by`` does), ignores
group-level effects by default and can plot predictive intervals (``method = "posterior_predict"``);
it has no averaged comparisons (those come from the marginaleffects package) or importance.
Differences here: categorical covariates are held at their mode (Bambi's choice; brms uses the
reference level -- pass ``at`` to choose), group factors can be ``by`` (one curve per county with
its fitted varying effects), and the same functions work for the scikit-learn estimators.

References
----------
Gelman, A., & Pardoe, I. (2007). Average predictive comparisons for models with nonlinearity,
interactions, and variance components. Sociological Methodology, 37, 23-51.
Fisher, A., Rudin, C., & Dominici, F. (2019). All models are wrong, but many are useful. JMLR 20.
"""

from __future__ import annotations

import weakref
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import InputError
from .intervals import check_levels, quantiles

__all__ = ["effects", "conditional_effects", "average_predictive_comparison", "permutation_importance",
           "plot_effects", "plot_conditional_effects", "plot_comparisons", "plot_importance"]

SCALES = ("mean", "draws")
SCORES = ("lpd", "r2", "accuracy")
KINDS = ("conditional", "comparison")
#: Numeric variables with at most this many distinct values are gridded at those values.
MAX_DISCRETE = 5
#: Rows per compiled call of a formula model (rows are padded to a power of two up to this).
BLOCK_ROWS = 4096
#: Value written into a group-factor column to ask for the population level (effect zero).
POPULATION = "__population__"


# ============================================================================ targets
class _Target:
    """What the functions need of a fitted object: its variables and E(y) / log p(y) per draw."""

    columns: tuple[str, ...]
    categorical: dict[str, list]   # column -> levels, reference first
    group_factors: tuple[str, ...]
    response: str | None

    def check_variable(self, variable, field: str = "variable") -> str:
        name = self.column_name(variable)
        if name not in self.columns:
            raise InputError(field, f"{variable!r} is not a variable of the model", f"one of {list(self.columns)}")
        return name

    def column_name(self, variable) -> str:
        return variable if isinstance(variable, str) else repr(variable)

    def frame(self, data):
        raise NotImplementedError

    def is_categorical(self, column: str) -> bool:
        return column in self.categorical or column in self.group_factors


class _FormulaTarget(_Target):
    def __init__(self, post):
        self.post = post
        self.model = post.model
        design = self.model.design
        self.design = design
        self.response = design.response
        self.group_factors = tuple(dict.fromkeys(c for g in design.groups for c in g.term.factor))
        columns = list(design.fixed.variables) + [v for g in design.groups for v in g.design.variables]
        columns += list(self.group_factors) + ([design.trials] if design.trials else [])
        self.columns = tuple(dict.fromkeys(columns))
        self.categorical = {}
        for m in (design.fixed, *(g.design for g in design.groups)):
            self.categorical.update(m.categories())
        self.family = self.model.family.name

    def frame(self, data):
        import pandas as pd

        if not isinstance(data, pd.DataFrame):
            raise InputError("data", f"must be a pandas DataFrame for a formula posterior; got {type(data).__name__}")
        for c in self.columns:
            if c not in data.columns:
                raise InputError(c, "is missing from the data", f"a DataFrame with columns {list(self.columns)}")
        return data

    def levels_of(self, column, data) -> list:
        if column in self.categorical:
            return list(self.categorical[column])
        values = data[column]
        if hasattr(values, "cat"):
            return list(values.cat.categories)
        from .formula.design import _natural

        return sorted(values.unique().tolist(), key=lambda v: _natural(str(v)))

    def _arrays(self, frame, new_groups):
        arrays = self.model.arguments(frame, new_groups=new_groups)
        return arrays

    def _per_row(self, what: str, frame, new_groups: str, y=None) -> np.ndarray:
        from .runtime import precision

        arrays = self._arrays(frame, new_groups)
        n = len(frame)
        if y is not None:
            arrays["y"] = np.asarray(y, dtype=np.float64)
        block = min(_bucket(n), BLOCK_ROWS)
        fn = _formula_fn(self.post, what)
        draws = self.post.flat_draws(self.post.sites.latent)
        float_type = np.float64 if self.post.dtype == "float64" else np.float32
        out = []
        with precision(self.post.dtype):
            draws = {k: np.asarray(v, float_type) if np.issubdtype(v.dtype, np.floating) else v
                     for k, v in draws.items()}
            for start in range(0, n, block):
                part = {}
                for k, v in arrays.items():
                    v = v[start:start + block]
                    if len(v) < block:
                        v = np.concatenate([v, np.repeat(v[-1:], block - len(v), axis=0)])
                    part[k] = v.astype(float_type) if np.issubdtype(v.dtype, np.floating) else v.astype(np.int32)
                out.append(np.asarray(fn(draws, part))[:, :min(block, n - start)])
        return np.concatenate(out, axis=1).astype(np.float64)

    def expected(self, frame, scale: str, seed: int, new_groups: str) -> np.ndarray:
        if scale == "mean":
            return self._per_row("mean", frame, new_groups)
        pred = self.post.predict(frame, levels=(0.5,), seed=seed, return_draws=True, new_groups=new_groups)
        return np.asarray(pred.draws, dtype=np.float64)

    def log_density(self, frame, y, new_groups: str) -> np.ndarray:
        return self._per_row("log_prob", frame, new_groups, y=y)

    def outcome(self, data, y):
        if y is None:
            y = self.response
        if isinstance(y, str):
            if y not in data.columns:
                raise InputError(y, "is missing from the data", "the response column (or pass y= an array)")
            y = data[y].to_numpy()
        y = np.asarray(y)
        return self.model.family.check(y, self.response, None if not self.design.trials
                                       else np.asarray(data[self.design.trials])).astype(np.float64)

    @property
    def is_binary(self) -> bool:
        return self.family == "bernoulli"


_FORMULA_FNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _formula_fn(post, what: str):
    """Jitted ``(draws, arrays) -> (draws, rows)`` mean or log density of the response (one per
    posterior, compiled once per row block size)."""
    cache = _FORMULA_FNS.setdefault(post, {})
    if what not in cache:
        import jax
        from numpyro import handlers

        from .inference.binding import BoundModel

        model = BoundModel(post.model, post.schema.static)
        site = post.sites.observed[0]

        def one(draw, arrays):
            arrays = dict(arrays)
            y = arrays.pop("y", None)
            trace = handlers.trace(handlers.substitute(handlers.seed(model, 0), data=draw)).get_trace(**arrays)
            distribution = trace[site]["fn"]
            return distribution.mean if what == "mean" else distribution.log_prob(y)

        cache[what] = jax.jit(jax.vmap(one, in_axes=(0, None)))
    return cache[what]


class _EstimatorTarget(_Target):
    def __init__(self, est):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(est, "coef_draws_")
        self.est = est
        self.has_names = hasattr(est, "feature_names_in_")
        names = est.feature_names_in_ if self.has_names else [f"x{i}" for i in range(est.n_features_in_)]
        self.columns = tuple(str(c) for c in names)
        self.categorical, self.group_factors, self.response = {}, (), None
        self.family = est._family
        self.num_classes = len(getattr(est, "classes_", ()))

    def column_name(self, variable):
        if isinstance(variable, (int, np.integer)) and not isinstance(variable, bool) and \
                0 <= variable < len(self.columns):
            return self.columns[int(variable)]
        return str(variable) if isinstance(variable, str) else repr(variable)

    def frame(self, data):
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            missing = [c for c in self.columns if c not in data.columns]
            if missing:
                raise InputError(missing[0], "is missing from the data", f"columns {list(self.columns)}")
            return data[list(self.columns)].astype(np.float64)
        X = np.asarray(data, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.columns):
            raise InputError("data", f"has shape {X.shape}", f"(rows, {len(self.columns)}) features")
        return pd.DataFrame(X, columns=list(self.columns))

    def levels_of(self, column, data):
        return sorted(data[column].unique().tolist())

    def _eta(self, frame):
        X = frame if self.has_names else frame.to_numpy(np.float64)
        return self.est._eta(X)

    def expected(self, frame, scale, seed, new_groups):
        if self.family == "bernoulli" and self.num_classes > 2:
            raise InputError("post", f"is a classifier with {self.num_classes} classes; E(y) needs a binary or "
                             "numeric outcome", hint="Use permutation_importance, or fit one class against the rest.")
        if scale == "draws":
            X = frame if self.has_names else frame.to_numpy(np.float64)
            draws = self.est.sample_posterior_predictive(X)
            if self.family == "bernoulli":
                draws = (draws == self.est.classes_[1])
            return np.asarray(draws, dtype=np.float64)
        eta = self._eta(frame)
        if self.family == "gaussian":
            return eta
        if self.family == "poisson":
            return np.exp(np.minimum(eta, 50.0))
        return 1.0 / (1.0 + np.exp(-eta))

    def log_density(self, frame, y, new_groups):
        from scipy.special import gammaln, xlogy

        eta = self._eta(frame)
        if self.family == "gaussian":
            sigma = self.est.sigma_draws_[:, None]
            return -0.5 * ((y - eta) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
        if self.family == "poisson":
            rate = np.exp(np.minimum(eta, 50.0))
            return xlogy(y, rate) - rate - gammaln(y + 1.0)
        from .estimators.model import class_probabilities

        probs = class_probabilities(eta)
        return np.log(np.take_along_axis(probs, y.astype(np.int64)[None, :, None], axis=-1)[..., 0])

    def outcome(self, data, y):
        if y is None or isinstance(y, str):
            raise InputError("y", "must be the outcome array for an estimator", "an array of length rows")
        y = np.asarray(y)
        if self.family != "bernoulli":
            return y.astype(np.float64)
        classes = self.est.classes_
        codes = np.searchsorted(classes, y)
        codes = np.minimum(codes, len(classes) - 1)
        bad = classes[codes] != y
        if bad.any():
            raise InputError("y", f"has label {y[bad][0]!r}, not a class seen at fit", f"one of {list(classes)}")
        return codes.astype(np.float64)

    @property
    def is_binary(self) -> bool:
        return self.family == "bernoulli"


def _target(post) -> _Target:
    from .formula.model import FormulaModel

    if isinstance(getattr(post, "model", None), FormulaModel):
        return _FormulaTarget(post)
    if hasattr(post, "coef_draws_") or (hasattr(post, "_eta") and hasattr(post, "_family")):
        return _EstimatorTarget(post)
    raise InputError("post", f"is a {type(post).__name__}", "a formula Posterior (Model.from_formula(...).fit()) or "
                     "a fitted bayesinf estimator",
                     "Effects need to know the model's variables; write the model as a formula.")


def _bucket(n: int) -> int:
    return 1 << (max(n, 16) - 1).bit_length()


def _check_choice(value, allowed, field, owner):
    if value not in allowed:
        raise InputError(field, f"of {owner} must be one of {allowed}; got {value!r}")
    return value


def _summary(per_draw: np.ndarray, levels: Sequence[float]) -> dict[str, np.ndarray]:
    """Mean, sd and equal-tailed bounds over the last axis of ``per_draw``."""
    probs = [p for v in levels for p in ((1 - v) / 2, (1 + v) / 2)]
    q = quantiles(per_draw, probs)
    out = {"mean": per_draw.mean(axis=-1), "sd": per_draw.std(axis=-1, ddof=1)}
    for i, v in enumerate(levels):
        out[f"lower_{v:g}"] = q[2 * i]
        out[f"upper_{v:g}"] = q[2 * i + 1]
    return out


def _held_values(target: _Target, data, exclude, at: Mapping[str, Any] | None) -> dict[str, Any]:
    """The value every other variable is held at: mean (numeric), mode (categorical), population
    level (group factors not in the fixed design)."""
    held = {}
    design = getattr(target, "design", None)
    fixed_vars = set(design.fixed.variables) if design is not None else set(target.columns)
    trials = design.trials if design is not None else None
    for c in target.columns:
        if c in exclude:
            continue
        column = data[c]
        if c in target.group_factors and c not in fixed_vars:
            held[c] = POPULATION
        elif target.is_categorical(c) or not _is_numeric(column):
            held[c] = column.mode().iloc[0]
        elif c == trials:
            held[c] = int(round(float(column.mean())))
        else:
            held[c] = float(column.mean())
    for c, v in (at or {}).items():
        name = target.check_variable(c, "at")
        if name in exclude:
            raise InputError("at", f"sets {name!r}, which is the variable or by of the effect")
        held[name] = v
    return held


def _is_numeric(column) -> bool:
    return np.issubdtype(column.dtype, np.number) and column.dtype != bool


# ============================================================================ conditional effects
def conditional_effects(post, variable, data, by=None, grid=20, at: Mapping[str, Any] | None = None,
                        levels=(0.9,), scale: str = "mean", seed: int = 0):
    """Expected outcome over a grid of ``variable`` (one curve per value of ``by``), the other
    variables held fixed.

    Parameters
    ----------
    post : Posterior or fitted estimator
        A formula posterior or a fitted ``bayesinf.estimators`` estimator.
    variable : str (or int feature index for an estimator)
    data : pandas.DataFrame (or array (rows, features) for an estimator)
        The rows that set the grid's range and the held values.
    by : str, optional
        A second variable: its levels (categorical, group factor) or mean - sd, mean, mean + sd
        (numeric).
    grid : int or sequence
        Number of evenly spaced points from the data's min to max of a numeric variable (a numeric
        variable with at most 5 distinct values uses those), or the grid values themselves.
        A categorical variable uses its levels.
    at : mapping, optional
        Values of other variables, overriding mean / mode / population level.
    levels : float or sequence of float
        Levels of the equal-tailed intervals over posterior draws.
    scale : {"mean", "draws"}
        Expected value per draw (default) or posterior predictive draws made with ``seed``.
    seed : int

    Returns
    -------
    pandas.DataFrame
        One row per grid point (x ``by`` value): ``variable``, ``by``, ``mean``, ``sd``,
        ``lower_<level>``, ``upper_<level>``. ``attrs`` holds ``kind``, ``variable``, ``by``,
        ``held`` (the values of the other variables) and ``scale``.

    Raises
    ------
    InputError
        Unknown variable or ``by``, ``by`` equal to ``variable``, missing column, bad ``grid``.
    """
    import pandas as pd

    target = _target(post)
    levels = check_levels(levels, "conditional_effects")
    _check_choice(scale, SCALES, "scale", "conditional_effects")
    data = target.frame(data)
    variable = target.check_variable(variable)
    if by is not None:
        by = target.check_variable(by, "by")
        if by == variable:
            raise InputError("by", f"is {by!r}, the same as variable", "another variable of the model")
    values = _grid(target, variable, data, grid)
    exclude = {variable} | ({by} if by is not None else set())
    held = _held_values(target, data, exclude, at)
    if by is None:
        rows = pd.DataFrame({variable: values})
    else:
        by_values = _by_values(target, by, data)
        rows = pd.DataFrame([(v, b) for b in by_values for v in values], columns=[variable, by])
    frame = rows.assign(**{c: [v] * len(rows) for c, v in held.items()})
    if isinstance(target, _FormulaTarget):
        for c in target.group_factors:  # a sentinel string in a numeric column makes it object
            frame[c] = frame[c].astype(object)
    per_draw = target.expected(frame[list(target.columns)] if isinstance(target, _EstimatorTarget) else frame,
                               scale, seed, "population")
    table = rows.assign(**_summary(per_draw.T, levels))
    table.attrs.update(kind="conditional", variable=variable, by=by, held=held, scale=scale,
                       response=target.response or "y", levels=levels)
    return table


def _grid(target, variable, data, grid) -> list:
    if target.is_categorical(variable) or not _is_numeric(data[variable]):
        if not isinstance(grid, (int, np.integer)):
            return list(grid)
        return target.levels_of(variable, data)
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        if grid < 2:
            raise InputError("grid", f"of conditional_effects must be at least 2 points; got {grid}")
        unique = np.unique(data[variable].to_numpy())
        if len(unique) <= MAX_DISCRETE:
            return unique.tolist()
        return np.linspace(unique[0], unique[-1], int(grid)).tolist()
    values = np.asarray(grid, dtype=np.float64).ravel()
    if values.size == 0 or not np.isfinite(values).all():
        raise InputError("grid", "of conditional_effects must hold finite numbers", "a non-empty sequence")
    return values.tolist()


def _by_values(target, by, data) -> list:
    if target.is_categorical(by) or not _is_numeric(data[by]):
        return target.levels_of(by, data)
    unique = np.unique(data[by].to_numpy())
    if len(unique) <= MAX_DISCRETE:
        return unique.tolist()
    m, s = float(data[by].mean()), float(data[by].std())
    return [m - s, m, m + s]


# ============================================================================ comparisons
def average_predictive_comparison(post, variable, data, by=None, h: float | None = None, levels=(0.9,),
                                  scale: str = "mean", seed: int = 0, new_groups: str = "sample"):
    """Average change of the expected outcome per unit change of each variable, over ``data``'s rows.

    For each posterior draw ``s`` and numeric ``x_j``:
    ``mean_i [E(y | x_ij + h, theta_s) - E(y | x_ij, theta_s)] / h``; for a categorical ``x_j``,
    ``mean_i [E(y | x_ij = level) - E(y | x_ij = reference)]`` per non-reference level (reference:
    the first level). Mean, sd and intervals are over these per-draw averages.

    Parameters
    ----------
    post, data : as ``conditional_effects``
    variable : str or sequence of str
    by : str, optional
        Average within the subsets of rows sharing a value of this column (one row per value).
    h : float, optional
        Step of a numeric variable, in its units. Default: 1% of its sd in ``data`` (1 if constant),
        so the result is the average derivative; pass ``h=1`` for a one-unit change. With
        ``scale="draws"`` and a discrete outcome use a unit step: a tiny step divides draw noise.
    levels, scale, seed : as ``conditional_effects``
    new_groups : {"sample", "population", "error"}
        Group levels of ``data`` not seen at fit (formula posteriors), as in ``predict``.

    Returns
    -------
    pandas.DataFrame
        ``variable``, ``contrast`` (``"per unit"`` or ``"level - reference"``), ``by``, ``mean``,
        ``sd``, ``lower_<level>``, ``upper_<level>``; ``attrs`` holds ``kind``, ``h`` and ``scale``.
    """
    import pandas as pd

    target = _target(post)
    levels = check_levels(levels, "average_predictive_comparison")
    _check_choice(scale, SCALES, "scale", "average_predictive_comparison")
    data = target.frame(data).reset_index(drop=True)
    variables = [variable] if isinstance(variable, (str, int, np.integer)) else list(variable)
    variables = [target.check_variable(v) for v in variables]
    if by is not None:
        by = target.check_variable(by, "by") if by in target.columns else by
        if by not in data.columns:
            raise InputError(by, "is missing from the data", "a column of data to group the rows by")
        groups = {b: np.flatnonzero((data[by] == b).to_numpy()) for b in dict.fromkeys(data[by].tolist())}
    else:
        groups = {None: np.arange(len(data))}
    if h is not None and (not np.isfinite(h) or h <= 0):
        raise InputError("h", f"of average_predictive_comparison must be a positive number; got {h!r}")
    records, steps = [], {}
    for name in variables:
        if target.is_categorical(name) or not _is_numeric(data[name]):
            arms = target.levels_of(name, data)
            reference = arms[0]
            base = target.expected(data.assign(**{name: [reference] * len(data)}), scale, seed, new_groups)
            contrasts = [(f"{level} - {reference}", target.expected(data.assign(**{name: [level] * len(data)}),
                                                                      scale, seed, new_groups) - base)
                         for level in arms[1:]]
        else:
            sd = float(data[name].std())
            step = float(h) if h is not None else (0.01 * sd if sd > 0 else 1.0)
            steps[name] = step
            base = target.expected(data, scale, seed, new_groups)
            moved = target.expected(data.assign(**{name: data[name].to_numpy(np.float64) + step}), scale, seed,
                                    new_groups)
            contrasts = [("per unit", (moved - base) / step)]
        for label, diff in contrasts:
            for b, rows in groups.items():
                summary = _summary(diff[:, rows].mean(axis=1), levels)
                records.append({"variable": name, "contrast": label, **({"by": b} if by is not None else {}),
                                **{k: float(v) for k, v in summary.items()}})
    table = pd.DataFrame(records)
    if by is not None:
        table = table.rename(columns={"by": by})
    table.attrs.update(kind="comparison", by=by, h=steps, scale=scale, response=target.response or "y",
                       levels=levels)
    return table


# ============================================================================ importance
def permutation_importance(post, data, y=None, columns=None, score: str = "lpd", num_repeats: int = 10,
                           levels=(0.9,), seed: int = 0, new_groups: str = "sample"):
    """Drop in a posterior predictive score when one column of ``data`` is permuted.

    Parameters
    ----------
    post, data : as ``conditional_effects``
    y : str or array, optional
        The observed outcome: a column of ``data`` or an array (rows,). Default: the formula's
        response column; required for an estimator.
    columns : sequence of str, optional
        Columns to permute (default: every variable of the model).
    score : {"lpd", "r2", "accuracy"}
        Mean log pointwise predictive density (nats per row), R^2 of the posterior mean of E(y),
        or accuracy of the most probable class (binary outcomes).
    num_repeats : int
        Permutations per column (at least 2).
    levels : float or sequence of float
        Levels of the equal-tailed intervals over the repeats.
    seed : int
        Seed of the permutations.
    new_groups : as ``average_predictive_comparison``.

    Returns
    -------
    pandas.DataFrame
        One row per column: ``column``, ``baseline`` (score of the intact data), ``mean`` (mean drop;
        larger = more important), ``sd`` over repeats, ``se`` (``sd / sqrt(num_repeats)``),
        ``lower_<level>``, ``upper_<level>``.
    """
    import pandas as pd

    target = _target(post)
    levels = check_levels(levels, "permutation_importance")
    _check_choice(score, SCORES, "score", "permutation_importance")
    if not isinstance(num_repeats, (int, np.integer)) or isinstance(num_repeats, bool) or num_repeats < 2:
        raise InputError("num_repeats", f"of permutation_importance must be an int >= 2; got {num_repeats!r}")
    if score == "accuracy" and not target.is_binary:
        raise InputError("score", f"'accuracy' needs a class outcome; the model's family is '{target.family}'",
                         "'lpd' or 'r2'")
    raw = data
    data = target.frame(data).reset_index(drop=True)
    outcome = target.outcome(raw if not isinstance(target, _EstimatorTarget) else data, y)
    if len(outcome) != len(data):
        raise InputError("y", f"has {len(outcome)} values for {len(data)} rows", "one per row of data")
    trials = getattr(getattr(target, "design", None), "trials", None)
    names = [c for c in target.columns if c != trials] if columns is None else \
        [target.check_variable(c, "columns") for c in columns]

    def evaluate(frame) -> float:
        if score == "lpd":
            from scipy.special import logsumexp

            ll = target.log_density(frame, outcome, new_groups)
            return float(np.mean(logsumexp(ll, axis=0) - np.log(ll.shape[0])))
        mean = target.expected(frame, "mean", seed, new_groups).mean(axis=0)
        if score == "r2":
            return float(1.0 - np.sum((outcome - mean) ** 2) / np.sum((outcome - outcome.mean()) ** 2))
        return float(np.mean((mean > 0.5) == (outcome > 0.5)))

    baseline = evaluate(data)
    rng = np.random.default_rng(seed)
    records = []
    for name in names:
        drops = np.array([baseline - evaluate(data.assign(**{name: rng.permutation(data[name].to_numpy())}))
                          for _ in range(num_repeats)])
        summary = _summary(drops, levels)
        records.append({"column": name, "baseline": baseline, **{k: float(v) for k, v in summary.items()},
                        "se": float(summary["sd"] / np.sqrt(num_repeats))})
    table = pd.DataFrame(records)
    table = table[["column", "baseline", "mean", "sd", "se"] + [c for c in table.columns if c.startswith(("lower",
                                                                                                           "upper"))]]
    table.attrs.update(kind="importance", score=score, num_repeats=int(num_repeats), levels=levels)
    return table


# ============================================================================ entry point
def effects(post, variable, by=None, data=None, kind: str = "conditional", **kwargs):
    """``conditional_effects`` (``kind="conditional"``) or ``average_predictive_comparison``
    (``kind="comparison"``) of ``variable`` on ``data``; other options pass through."""
    _check_choice(kind, KINDS, "kind", "effects")
    if data is None:
        raise InputError("data", "of effects is required", "the rows to compute the effects on (e.g. the fit data)")
    fn = conditional_effects if kind == "conditional" else average_predictive_comparison
    return fn(post, variable, data, by=by, **kwargs)


# ============================================================================ plots
def _axes(ax, size):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=size, layout="constrained")


def _level(table, level):
    chosen = level if level is not None else max(table.attrs.get("levels", (0.9,)))
    if f"lower_{chosen:g}" not in table.columns:
        raise InputError("level", f"{chosen!r} is not an interval of the table",
                         f"one of {[c[6:] for c in table.columns if c.startswith('lower_')]}")
    return chosen


def plot_conditional_effects(table, level: float | None = None, max_legend: int = 10, ax=None):
    """Curve (numeric variable) or points (categorical) of E(y) with its interval band, one colour
    per ``by`` value; one axis."""
    fig, ax = _axes(ax, (6, 4))
    level = _level(table, level)
    variable, by = table.attrs["variable"], table.attrs.get("by")
    groups = [(None, table)] if by is None else list(table.groupby(by, sort=False))
    numeric = np.issubdtype(np.asarray(table[variable]).dtype, np.number) and table[variable].nunique() > 2
    labels = list(dict.fromkeys(table[variable].tolist()))
    for i, (b, part) in enumerate(groups):
        color = f"C{i % 10}"
        lo, hi = part[f"lower_{level:g}"].to_numpy(), part[f"upper_{level:g}"].to_numpy()
        label = None if b is None else f"{by} = {b}"
        if numeric:
            x = part[variable].to_numpy(np.float64)
            ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
            ax.plot(x, part["mean"], color=color, label=label)
        else:
            x = np.array([labels.index(v) for v in part[variable]]) + 0.3 * (i / max(len(groups), 1) - 0.5) * \
                (len(groups) > 1)
            m = part["mean"].to_numpy()
            ax.errorbar(x, m, yerr=[m - lo, hi - m], fmt="o", color=color, capsize=3, label=label)
    if not numeric:
        ax.set_xticks(range(len(labels)), [str(v) for v in labels])
    if by is not None and len(groups) <= max_legend:
        ax.legend(fontsize="small")
    what = "E(y)" if table.attrs.get("scale", "mean") == "mean" else "predicted y"
    ax.set(xlabel=variable, ylabel=f"{what}: {table.attrs.get('response', 'y')}",
           title=f"Conditional effect of {variable} ({level:.0%} interval)")
    return fig


def plot_comparisons(table, level: float | None = None, ax=None):
    """Forest plot of average predictive comparisons: one row per variable / contrast (/ by)."""
    level = _level(table, level)
    fig, ax = _axes(ax, (6, 1.0 + 0.4 * len(table)))
    by = table.attrs.get("by")
    names = [f"{r.variable}: {r.contrast}" + (f" | {by}={getattr(r, by)}" if by else "")
             for r in table.itertuples()]
    y = np.arange(len(table))[::-1]
    m = table["mean"].to_numpy()
    ax.errorbar(m, y, xerr=[m - table[f"lower_{level:g}"], table[f"upper_{level:g}"] - m], fmt="o", capsize=3)
    ax.axvline(0.0, color="0.5", lw=1)
    ax.set_yticks(y, names)
    ax.set(xlabel=f"change in E({table.attrs.get('response', 'y')})",
           title=f"Average predictive comparisons ({level:.0%} interval)")
    return fig


def plot_importance(table, level: float | None = None, ax=None):
    """Horizontal bars of the mean score drop per column (largest on top) with the interval over
    repeated permutations."""
    level = _level(table, level)
    ordered = table.sort_values("mean")
    fig, ax = _axes(ax, (6, 1.0 + 0.4 * len(table)))
    m = ordered["mean"].to_numpy()
    err = [m - ordered[f"lower_{level:g}"].to_numpy(), ordered[f"upper_{level:g}"].to_numpy() - m]
    ax.barh(np.arange(len(ordered)), m, xerr=np.maximum(err, 0), color="C0", alpha=0.8, capsize=3)
    ax.set_yticks(np.arange(len(ordered)), ordered["column"].tolist())
    ax.axvline(0.0, color="0.5", lw=1)
    ax.set(xlabel=f"drop in {table.attrs.get('score', 'score')} when permuted",
           title=f"Permutation importance ({table.attrs.get('num_repeats', '?')} repeats, {level:.0%} interval)")
    return fig


def plot_effects(table, **kwargs):
    """The plot of any table made here (dispatch on ``table.attrs["kind"]``)."""
    kind = table.attrs.get("kind")
    plots = {"conditional": plot_conditional_effects, "comparison": plot_comparisons, "importance": plot_importance}
    if kind not in plots:
        raise InputError("table", "was not made by bayesinf.effects (no attrs['kind'])",
                         "the result of conditional_effects, average_predictive_comparison or permutation_importance")
    return plots[kind](table, **kwargs)
