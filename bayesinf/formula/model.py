"""Formula models: ``Model.from_formula(...)`` builds a NumPyro model from a formula and a
DataFrame; ``FormulaModel`` is that model (a callable), which ``bayesinf.fit`` fits like any other.

Parameters (NumPyro sites), e.g. for ``y ~ x + C(g) + (1 + x | county)``:

- one site per fixed-effects term: ``Intercept``, ``x``, ``C(g)`` (a vector over its columns);
- per group term, non-centred: offsets ``1+x|county_offset`` of shape ``(levels + 1, k)`` with a
  standard normal prior, sds ``1|county_sigma`` and ``x|county_sigma``, for a correlated term
  ``1+x|county_cor_u`` (the unconstrained coordinates of the Cholesky factor L, LKJ prior) and the
  correlations ``1+x|county_cor`` (below the diagonal of L L^T, deterministic);
  the effects ``1|county`` and ``x|county`` (deterministic, one value per fitted level) are
  ``diag(sd) L z`` (Papaspiliopoulos, Roberts & Sköld 2007 for the non-centred form);
- the family's auxiliary parameters: ``sigma``, ``nu``, ``alpha``, ``shape``.

Offset row ``levels`` belongs to a group level not seen at fit: its effect is a draw from the
fitted population distribution. Row ``levels + 1`` is a zero effect (``new_groups="population"``).
At predict time each unseen level gets an independent effect of its own (``new_levels``, see
``_new_level_effects``); models saved before that existed give every unseen level row ``levels``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from .design import Design, fit_design
from .families import get_family
from .parse import parse_formula
from .priors import Prior, default_priors

__all__ = ["Model", "FormulaModel", "build_model"]

BUILDER = "bayesinf.formula.model:build_model"


class FormulaModel:
    """The NumPyro model of a formula. Called as ``model(X, Z, groups, trials, y)``.

    Parameters
    ----------
    design : Design
    family : str
    link : str
    priors : mapping of str -> Prior
        One prior per parameter name (complete; see ``Model.priors``).
    """

    def __init__(self, design: Design, family: str, link: str, priors: Mapping[str, Prior]):
        self.design = design
        self.family = get_family(family)
        self.link = self.family.check_link(link)
        self.priors = dict(priors)

    def __repr__(self):
        return f"FormulaModel(family={self.family.name!r}, link={self.link!r}, fixed={self.design.fixed.formula!r})"

    # ------------------------------------------------------------------ the NumPyro model
    def __call__(self, X, Z=None, groups=None, trials=None, y=None, new_levels=None):
        """The model as it is fit: ``new_levels`` is accepted (it is a row argument of the data) and
        ignored, since no row of the fit data has an unseen level; see ``predictive``."""
        self.predictive(X, Z, groups, trials, y, None)

    def __bayesinf_predictive__(self):
        """The model that predictions run (``Posterior.predict_fn``): ``predictive``, which gives
        each unseen group level its own effect. The fit's gradient never pays for that."""
        return self.predictive

    def predictive(self, X, Z=None, groups=None, trials=None, y=None, new_levels=None):
        """Run the model.

        Parameters
        ----------
        X : array (rows, p)
            Fixed-effects design.
        Z : array (rows, q), optional
            Varying-effects designs of all group terms, side by side.
        groups : int array (rows, terms), optional
            Level index per group term (``levels`` = new level, ``levels + 1`` = no effect).
        trials : int array (rows,), optional
            Binomial trials.
        y : array (rows,), optional
            Observed response; None to sample it.
        new_levels : int array (rows, terms), optional
            Per group term, an id of the row's unseen level (0: a level seen at fit, or no effect).
            Rows of the same id share an effect; different ids get independent draws from the
            fitted population (``_new_level_effects``). Without it every unseen level takes offset
            row ``levels``.
        """
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        eta = jnp.zeros(X.shape[0], dtype=jnp.result_type(float))
        for name, idx in self.design.fixed.terms:
            shape = () if len(idx) == 1 else (len(idx),)
            b = numpyro.sample(name, self.priors[name].distribution(shape))
            eta = eta + (X[:, idx[0]] * b if not shape else X[:, list(idx)] @ b)
        start = 0
        for t, group in enumerate(self.design.groups):
            k, J = len(group.design.columns), group.num_levels
            sds = []
            for name, idx in group.effect_names():
                shape = () if len(idx) == 1 else (len(idx),)
                sd = numpyro.sample(f"{name}_sigma", self.priors[f"{name}_sigma"].distribution(shape, "positive"))
                sds.append(jnp.reshape(sd, (-1,)))
            sd = jnp.concatenate(sds)
            z = numpyro.sample(f"{group.label}_offset", dist.Normal(0.0, 1.0).expand([J + 1, k]).to_event(2))
            if group.term.correlated and k > 1:
                prior = self.priors[f"{group.label}_cor"]
                if prior.dist != "lkj":
                    raise InputError(f"{group.label}_cor", f"has prior {prior!r}", "Prior('lkj', eta=...)")
                chol = _correlation_cholesky(f"{group.label}_cor_u", k, prior.params["eta"])
                rows, cols = np.tril_indices(k, -1)
                numpyro.deterministic(f"{group.label}_cor", (chol @ chol.T)[rows, cols])
                effects = (z @ chol.T) * sd
            else:
                effects = z * sd
            for name, idx in group.effect_names():
                value = effects[:J, idx[0]] if len(idx) == 1 else effects[:J, list(idx)]
                numpyro.deterministic(name, value)
            effects = jnp.concatenate([effects, jnp.zeros((1, k), effects.dtype)])  # population slot
            row_effects = effects[groups[:, t]]
            if new_levels is not None:
                scale = (lambda u: (u @ chol.T) * sd) if group.term.correlated and k > 1 else (lambda u: u * sd)
                row_effects = _new_level_effects(row_effects, new_levels[:, t], z[J], scale)
            eta = eta + jnp.sum(Z[:, start:start + k] * row_effects, axis=-1)
            start += k
        aux = {name: numpyro.sample(name, self.priors[name].distribution((), "positive")) for name in self.family.aux}
        with numpyro.plate("rows", X.shape[0]):
            numpyro.sample(self.design.response, self.family.likelihood(eta, self.link, aux, trials), obs=y)

    def input_columns(self):
        """The data columns ``predict`` reads, as ``InputColumn``s: name, numeric or categorical,
        JSON value type, levels seen at fit (see ``bayesinf.formula.design.InputColumn``)."""
        return self.design.input_columns()

    # ------------------------------------------------------------------ hooks used by bayesinf
    def arguments(self, data, *, new_groups: str = "sample", response: bool = False) -> dict[str, np.ndarray]:
        """Model arguments for a DataFrame (``response=True`` at fit, to include ``y``)."""
        arrays = self.design.arrays(data, new_groups=new_groups, response=response)
        if response:
            arrays["y"] = self.family.check(arrays["y"], self.design.response, arrays.get("trials"))
        return arrays

    def __bayesinf_arguments__(self, *args, new_groups: str = "sample", **kwargs):
        """Turn ``predict(data_frame, new_groups=...)`` into model arguments; arrays pass through."""
        import pandas as pd

        if len(args) == 1 and isinstance(args[0], pd.DataFrame) and not kwargs:
            return (), self.arguments(args[0], new_groups=new_groups)
        if "data" in kwargs and isinstance(kwargs["data"], pd.DataFrame) and not args and len(kwargs) == 1:
            return (), self.arguments(kwargs["data"], new_groups=new_groups)
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:  # columns by name, as JSON records
            return (), self.arguments(pd.DataFrame(dict(args[0])), new_groups=new_groups)
        if args and isinstance(args[0], pd.DataFrame):
            raise InputError("predict", "got a DataFrame and other arguments",
                             "a single DataFrame with the formula's columns")
        if args:  # raw design arrays go by name (X=..., Z=...); positional data must be a frame
            columns = [c.name for c in self.design.input_columns()]
            raise InputError("data", f"is a {type(args[0]).__name__}, not a pandas DataFrame",
                             f"a DataFrame (or a dict of columns) with the columns {columns}")
        return args, kwargs

    def __bayesinf_spec__(self) -> dict:
        """The model as plain JSON; ``build_model`` rebuilds it (used by ``Posterior.save``/``load``)."""
        return {"builder": BUILDER, "spec": {
            "design": self.design.to_json(), "family": self.family.name, "link": self.link,
            "priors": {k: v.to_json() for k, v in self.priors.items()},
        }}

    def __bayesinf_coords__(self) -> tuple[dict, dict]:
        """ArviZ ``(dims, coords)`` naming the axes of the sites: group levels and term columns."""
        dims, coords = {}, {}
        columns = self.design.fixed.columns
        for name, idx in self.design.fixed.terms:
            if len(idx) > 1:
                dims[name] = [f"{name}_dim"]
                coords[f"{name}_dim"] = [columns[i] for i in idx]
        for group in self.design.groups:
            factor = group.term.factor_label
            coords[factor] = list(group.levels)
            coords[f"{factor}__slot"] = list(group.levels) + ["__new__"]
            gcols = group.design.columns
            coords[f"{group.label}_dim"] = list(gcols)
            dims[f"{group.label}_offset"] = [f"{factor}__slot", f"{group.label}_dim"]
            for name, idx in group.effect_names():
                if len(idx) > 1:
                    coords[f"{name}_dim"] = [gcols[i] for i in idx]
                    dims[name] = [factor, f"{name}_dim"]
                    dims[f"{name}_sigma"] = [f"{name}_dim"]
                else:
                    dims[name] = [factor]
            if group.term.correlated and len(gcols) > 1:
                rows, cols = np.tril_indices(len(gcols), -1)
                coords[f"{group.label}_pair"] = [f"{gcols[j]}:{gcols[i]}" for i, j in zip(rows, cols)]
                dims[f"{group.label}_cor"] = [f"{group.label}_pair"]
                dims[f"{group.label}_cor_u"] = [f"{group.label}_pair"]
        return dims, coords

    @property
    def int_ranges(self) -> dict[str, tuple[int, int]]:
        """Allowed level indices at predict (fitted levels, new level, population slot)."""
        if not self.design.groups:
            return {}
        ranges = {"groups": (0, self.design.max_group_index)}
        if self.design.per_level_new_effects:
            ranges["new_levels"] = (0, 2**31 - 1)  # ids of unseen levels (GroupDesign.new_level_ids)
        return ranges


def _input_statistics(design: Design, data) -> dict[str, dict]:
    """Column -> summary statistics of the fit data's input columns (``bayesinf.store``'s format)."""
    from ..store import column_statistics

    return {c.name: column_statistics(data[c.name].to_numpy(), categorical=c.kind == "categorical")
            for c in design.input_columns()}


def _new_level_effects(row_effects, ids, z_new, scale):
    """``row_effects`` ``(rows, k)`` with the rows of unseen levels (``ids > 0``) replaced by
    ``scale(u)``, ``u ~ Normal(0, I_k)``, a function of the level's id and of the posterior draw
    of the new-level offset ``z_new`` ``(k,)``: per posterior draw, rows of one new level share an
    effect and different new levels get independent ones. ``z_new`` is a prior-only latent (no
    data row has the new level), so numbers hashed from its bits are independent of every other
    parameter of the draw. The hash is MurmurHash3's 32-bit finalizer (a few integer operations:
    this runs for every row and draw of a prediction), its top 24 bits a uniform, ``ndtri`` the
    normal."""
    import jax.numpy as jnp
    from jax import lax
    from jax.scipy.special import ndtri

    bits = lax.bitcast_convert_type(z_new[0].astype(jnp.float32), jnp.uint32)
    level = _fmix32(bits ^ ids.astype(jnp.uint32)[:, None] * jnp.uint32(0x9E3779B1))
    coordinate = jnp.arange(1, z_new.shape[0] + 1, dtype=jnp.uint32) * jnp.uint32(0x85EBCA77)
    h = _fmix32(level ^ coordinate)  # (rows, k)
    u = ((h >> 8).astype(jnp.float32) + 0.5) * (2.0 ** -24)
    return jnp.where((ids > 0)[:, None], scale(ndtri(u).astype(row_effects.dtype)), row_effects)


def _fmix32(h):
    """MurmurHash3's finalizer on uint32 arrays (wrapping arithmetic)."""
    import jax.numpy as jnp

    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _correlation_cholesky(name: str, dim: int, eta: float):
    """Cholesky factor of a ``dim x dim`` correlation matrix with an LKJ(``eta``) prior.

    The site holds the ``dim * (dim - 1) / 2`` unconstrained coordinates of NumPyro's
    ``CorrCholeskyTransform`` (the LKJ density pushed through it), not the factor itself: the
    factor has constant entries (a unit first row and zeros above the diagonal) on which R-hat and
    ESS are undefined.
    """
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions.transforms import CorrCholeskyTransform

    transform = CorrCholeskyTransform()
    u = numpyro.sample(name, dist.TransformedDistribution(dist.LKJCholesky(dim, eta), transform.inv))
    return transform(u)


def build_model(spec: Mapping[str, Any]) -> FormulaModel:
    """Rebuild a ``FormulaModel`` from ``FormulaModel.__bayesinf_spec__()["spec"]``."""
    return FormulaModel(Design.from_json(spec["design"]), spec["family"], spec["link"],
                        {k: Prior.from_json(v) for k, v in spec["priors"].items()})


class Model:
    """A regression model written as a formula, with its data.

    Make one with ``Model.from_formula``; ``fit`` returns a ``bayesinf.Posterior`` whose
    ``predict`` takes a DataFrame.

    Attributes
    ----------
    formula : str
    family, link : str
    model : FormulaModel
        The NumPyro model (``bayesinf.fit(m.model, **m.data)`` is what ``fit`` does).
    data : dict of str -> np.ndarray
        The model's arguments for the fit data.
    input_statistics : dict of str -> dict
        Summary statistics of the fit data's input columns (``bayesinf.store.column_statistics``),
        kept on the fitted posterior for drift checks.
    """

    def __init__(self, formula: str, model: FormulaModel, data: Mapping[str, np.ndarray],
                 input_statistics: Mapping[str, Any] | None = None):
        self.formula = formula
        self.model = model
        self.data = dict(data)
        self.input_statistics = dict(input_statistics or {})

    @classmethod
    def from_formula(cls, formula: str, data, family: str = "gaussian", link: str | None = None,
                     priors: Mapping[str, Prior] | None = None) -> "Model":
        """Build the model of ``formula`` on ``data``.

        Parameters
        ----------
        formula : str
            ``"y ~ x + (1 + x | g)"``; see ``bayesinf.formula.parse`` for the syntax.
        data : pandas.DataFrame
        family : {"gaussian", "student_t", "bernoulli", "binomial", "poisson", "negative_binomial", "gamma"}
        link : str, optional
            The family's default if None (identity, logit or log).
        priors : mapping of str -> Prior, optional
            Replacements of default priors by parameter name (see ``Model.priors``).

        Raises
        ------
        InputError
            Unknown family or link, malformed formula, missing column, a response the family
            cannot model, a prior for an unknown parameter.
        """
        fam = get_family(family)
        link = fam.check_link(link)
        parsed = parse_formula(formula)
        if fam.name == "binomial" and parsed.trials is None:
            raise InputError("formula", f"{formula!r} has no trials for family 'binomial'",
                             "a response written as 'successes | trials(n) ~ ...'")
        if parsed.trials is not None and fam.name != "binomial":
            raise InputError("formula", f"gives trials, which only family 'binomial' uses (family is {fam.name!r})")
        design = fit_design(parsed, data)
        arrays = design.arrays(data, response=True)
        y = fam.check(arrays["y"], design.response, arrays.get("trials"))
        arrays["y"] = y
        z_by_term, start = [], 0
        for g in design.groups:
            k = len(g.design.columns)
            z_by_term.append(arrays["Z"][:, start:start + k])
            start += k
        chosen = default_priors(design, arrays["X"], z_by_term, y, fam, link)
        for name, prior in (priors or {}).items():
            if name not in chosen:
                raise InputError("priors", f"names {name!r}, which is not a parameter of the model",
                                 f"some of {list(chosen)}")
            if not isinstance(prior, Prior):
                raise InputError(f"priors[{name!r}]", f"is a {type(prior).__name__}", "a bayesinf.formula.Prior")
            chosen[name] = prior
        names = set(chosen) | {name for g in design.groups for name, _ in g.effect_names()}
        if design.response in names:
            raise InputError("formula", f"response {design.response!r} clashes with a parameter name")
        return cls(formula, FormulaModel(design, fam.name, link, chosen), arrays, _input_statistics(design, data))

    @property
    def priors(self) -> dict[str, Prior]:
        """The prior of every parameter, by name (defaults and overrides)."""
        return dict(self.model.priors)

    def __repr__(self):
        lines = [f"Model({self.formula!r}, family={self.model.family.name!r}, link={self.model.link!r}, "
                 f"rows={self.data['X'].shape[0]})", "priors:"]
        lines += [f"  {k}: {v!r}" for k, v in self.model.priors.items()]
        return "\n".join(lines)

    def fit(self, method: str = "nuts", **kwargs):
        """Fit with ``bayesinf.fit`` (same options); returns a ``Posterior``.

        Group indices may point at the new-level slot at predict time (``int_ranges`` is set).
        The posterior's ``settings["input_statistics"]`` keeps summaries of the fit data's input
        columns (what ``ModelStore`` saves for drift checks: the design arrays are not the
        columns a user sends).
        """
        from ..fitting import fit

        kwargs.setdefault("int_ranges", self.model.int_ranges or None)
        post = fit(self.model, **self.data, method=method, **kwargs)
        post.settings["input_statistics"] = self.input_statistics
        return post

    def prior_predictive(self, num_draws: int = 500, seed: int = 0, data=None) -> dict[str, np.ndarray]:
        """Draws from the prior and the prior predictive distribution.

        Parameters
        ----------
        num_draws : int
        seed : int
        data : pandas.DataFrame, optional
            Rows to simulate for (default: the fit data).

        Returns
        -------
        dict of str -> np.ndarray
            Every site, ``(num_draws, *site_shape)``; the response is ``(num_draws, rows)``.
        """
        import jax
        from numpyro.infer import Predictive

        if not isinstance(num_draws, (int, np.integer)) or num_draws < 1:
            raise InputError("num_draws", f"of prior_predictive must be a positive int; got {num_draws!r}")
        arrays = dict(self.data) if data is None else self.model.arguments(data)
        arrays.pop("y", None)
        out = Predictive(self.model, num_samples=int(num_draws))(jax.random.PRNGKey(seed), **arrays)
        return {k: np.asarray(v) for k, v in out.items()}
