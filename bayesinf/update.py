"""Updating a fitted posterior with new data rows: ``Posterior.update``.

Two modes:

- ``"refit"`` (default): fit the model again on the old and the new rows together, warm-started
  from the previous fit. NUTS chains start at previous draws (one per chain, in unconstrained
  space), with the previous adapted step size and an inverse mass matrix estimated from the
  previous draws in unconstrained space (the estimator Stan's windowed adaptation applies to
  warmup draws, here over every kept draw); the warmup then only re-tunes the step size, in
  one dual averaging window (``WARM_WARMUP`` iterations by default, mass matrix held fixed). SVI starts from the previous
  guide parameters and runs at most ``num_steps // 4`` steps. The result is the exact posterior
  of the combined data, whatever the model.
- ``"sequential"``: fit on the new rows alone, with the previous posterior as the prior. The
  previous posterior is approximated by a multivariate normal fitted to its draws in NumPyro's
  unconstrained space (mean and covariance of the draws), which replaces the model's priors on
  all latent sites jointly. This is exact (up to the Monte Carlo error of the fitted mean and
  covariance) when the previous posterior is Gaussian in unconstrained space, as in conjugate
  Gaussian models; otherwise it is an approximation that is good when the previous posterior is
  close to Gaussian in unconstrained space and the new rows come from the same process. The
  likelihood of the old rows is never evaluated again, so the cost depends on the new rows only.

Either way the new posterior records where it came from in ``info["lineage"]`` (also kept in
``settings["lineage"]``, which is saved with the model), and a formula model's posterior keeps the
statistics of every data column over the old and new rows in ``settings["input_statistics"]``
(``bayesinf.store.merge_column_statistics``), so a ``ModelStore`` describes it by its columns.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .config import GUIDES, INIT_STRATEGIES, NUTSConfig, SVIConfig
from .data import _conform, bind_arguments, check_seed
from .errors import InputError

__all__ = ["update", "MODES", "WARM_WARMUP", "previous_posterior_normal", "lineage_of"]

MODES = ("refit", "sequential")
#: Warmup iterations of a warm-started NUTS refit: one window of step size adaptation from the
#: previous value, the mass matrix already right. On the radon model 25 and 50 iterations give the
#: cold refit's bulk ESS per draw (measured in ``benchmarks/update.py``; see ``docs/update.md``).
WARM_WARMUP = 50
#: Name of the joint latent vector of a sequential update's model.
JOINT_SITE = "_previous_posterior"
#: Relative jitter added to the diagonal of the fitted covariance (times its mean diagonal), so the
#: Cholesky factor exists when draws are nearly collinear.
COV_JITTER = 1e-6


def update(posterior, *args, mode: str = "refit", warmup: int | None = None, seed: int = 0,
           draws: int | None = None, num_steps: int | None = None, progress: bool | None = None,
           warn: bool = True, model_kwargs: Mapping[str, Any] | None = None, **kwargs):
    """A new posterior given new data rows, from ``posterior`` (not modified).

    Parameters
    ----------
    posterior : Posterior
    *args, **kwargs
        The new rows: the model's row and observed arguments, as at fit (a DataFrame for a
        formula model). Other array and static arguments are the fit's.
    mode : {"refit", "sequential"}
        See the module documentation.
    warmup : int, optional
        NUTS warmup iterations (default ``WARM_WARMUP`` when warm-started, else the fit's).
    seed : int
        Seed of every random number of the update.
    draws : int, optional
        Draws per chain (default: the fit's).
    num_steps : int, optional
        Most SVI steps (default: a quarter of the fit's, at least two convergence checks).
    progress : bool, optional
    warn : bool
        Emit a ``ConvergenceWarning`` when the new posterior does not pass ``diagnose``.
    model_kwargs : mapping, optional
        New rows for arguments whose names clash with the options above.

    Returns
    -------
    Posterior
        With ``info["lineage"]``: the parent's fit time, seed, rows, method (and store name and
        version when it came from a ``ModelStore``), the mode and the rows added. When the parent
        keeps per-column input statistics (a formula model), they cover the new rows too.

    Raises
    ------
    InputError
        Unknown mode; new rows missing an argument or a column, with the wrong shape, no rows, or
        values outside those seen at fit (unseen categories or group levels); a sequential update
        of a model with per-row latent sites or a custom SVI guide.
    """
    from .fitting import default_progress

    if mode not in MODES:
        raise InputError("mode", f"of update must be one of {MODES}; got {mode!r}")
    seed = check_seed(seed, "update")
    if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        raise InputError("warmup", f"of update must be an int >= 0; got {warmup!r}")
    progress = default_progress() if progress is None else bool(progress)
    given = {**kwargs, **(model_kwargs or {})}
    new = new_rows(posterior, args, given)
    statistics = merged_input_statistics(posterior, args[0] if args else given["data"]) \
        if _is_frame_call(args, given) else None
    num_new = next(iter(new.values())).shape[0]
    combined = {k: (np.concatenate([v, new[k]]) if k in new else v) for k, v in posterior.data.items()}
    lineage = {
        "parent": _parent(posterior),
        "mode": mode,
        "rows_added": int(num_new),
        "num_rows": int(posterior.schema.num_rows + num_new),
        "generation": int((lineage_of(posterior) or {}).get("generation", 0)) + 1,
    }
    if mode == "refit":
        out = _refit(posterior, combined, lineage, warmup=warmup, seed=seed, draws=draws, num_steps=num_steps,
                     progress=progress, warn=warn)
    else:
        out = _sequential(posterior, new, combined, lineage, warmup=warmup, seed=seed, draws=draws,
                          num_steps=num_steps, progress=progress, warn=warn)
    if statistics is not None:
        out.settings["input_statistics"] = statistics
    return out


# ----------------------------------------------------------------------------- new rows
def new_rows(posterior, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check the new rows against the posterior's input schema; return its row and observed
    arguments, conformed to the fit's dtypes and column order."""
    import inspect

    model = posterior.model
    schema = posterior.schema
    parameters = inspect.signature(model).parameters
    if _is_frame_call(args, kwargs):
        frame = args[0] if args else kwargs["data"]
        given = _formula_arguments(model, frame)
    else:
        for name in kwargs:
            if name not in parameters:
                raise InputError(name, "is not an argument of the model", f"some of {list(parameters)}")
        given = bind_arguments(model, args, kwargs, partial=True)
    row_names = schema.names("rows", "observed")
    out: dict[str, np.ndarray] = {}
    first = None
    for spec in schema.specs:
        if spec.role in ("rows", "observed"):
            if given.get(spec.name) is None:
                what = "observed values" if spec.role == "observed" else "values"
                raise InputError(spec.name, "is missing from the new rows", f"new {what} for '{spec.name}'",
                                 f"update needs every row argument: {list(row_names)}.")
            out[spec.name] = _conform(spec, given[spec.name])
            if first is None:
                first = spec.name
            elif out[spec.name].shape[0] != out[first].shape[0]:
                raise InputError(spec.name, f"has {out[spec.name].shape[0]} rows but '{first}' has "
                                 f"{out[first].shape[0]}", "the same number of rows in every row argument")
        elif spec.name in given:
            fit_value = schema.static.get(spec.name) if spec.role == "static" else posterior.data[spec.name]
            if not _same(given[spec.name], fit_value):
                raise InputError(spec.name, "differs from the value the model was fit with",
                                 "the fit's value (update adds rows; it does not change other arguments)",
                                 "Fit anew with bayesinf.fit to change it.")
    for name in given:
        if name not in schema.names() and given[name] is not None:
            raise InputError(name, "was not given at fit, so update cannot add rows to it")
    if first is None:
        raise InputError("update", "found no row arguments in the model's schema")
    return out


def _is_frame_call(args, kwargs) -> bool:
    import pandas as pd

    return (len(args) == 1 and isinstance(args[0], pd.DataFrame) and not kwargs) or \
        (not args and list(kwargs) == ["data"] and isinstance(kwargs["data"], pd.DataFrame))


def _formula_arguments(model, frame) -> dict[str, np.ndarray]:
    """Arguments of a model built by bayesinf for a DataFrame of new rows, response included."""
    if len(frame) == 0:
        raise InputError("data", "has no rows", "at least one new row")
    to_arguments = getattr(model, "arguments", None)
    design = getattr(model, "design", None)
    if to_arguments is None or design is None:
        hook = getattr(model, "__bayesinf_arguments__", None)
        if hook is None:
            raise InputError("data", "is a DataFrame, but the model takes arrays",
                             "the model's arguments as at fit")
        _, given = hook(frame)
        return given
    from .formula.design import level_keys

    for group in design.groups:  # a new level would add parameters: the model itself changes
        missing = [c for c in group.term.factor if c not in frame.columns]
        if missing:
            continue  # reported by the design, naming the column
        seen = set(group.levels)
        unseen = [k for k in dict.fromkeys(level_keys(frame, group.term.factor)) if k not in seen]
        if unseen:
            raise InputError(group.term.factor_label, f"has level {unseen[0]!r}, which was not in the data the "
                             "posterior was fit on", "levels seen at fit",
                             "A new group level adds parameters, so update cannot add it: fit "
                             "Model.from_formula on the old and new rows together.")
    return to_arguments(frame, new_groups="error", response=True)


def merged_input_statistics(posterior, frame) -> dict[str, dict] | None:
    """Per input column, the statistics of the posterior's rows (its ``settings["input_statistics"]``,
    kept by a formula model's fit) and of the new rows ``frame``, merged by
    ``bayesinf.store.merge_column_statistics``; None when the posterior keeps none."""
    old = posterior.settings.get("input_statistics")
    input_columns = getattr(posterior.model, "input_columns", None)
    if not old or not callable(input_columns):
        return None
    from .store import merge_column_statistics

    merged = {}
    for column in input_columns():
        if column.name in old and column.name in frame.columns:
            try:
                merged[column.name] = merge_column_statistics(old[column.name], frame[column.name].to_numpy(),
                                                              categorical=column.kind == "categorical")
            except InputError as error:  # name the data column, not the function's argument
                raise InputError(column.name, error.problem, error.expected) from None
    return merged


def _same(a, b) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except Exception:
        return False


# ----------------------------------------------------------------------------- lineage
def lineage_of(posterior) -> dict | None:
    """The lineage of an updated posterior (``info["lineage"]``, or as saved in its settings)."""
    return posterior.info.get("lineage") or posterior.settings.get("lineage")


def _parent(posterior) -> dict:
    parent = {
        "fitted_at": posterior.info.get("fitted_at"),
        "seed": int(posterior.seed),
        "num_rows": int(posterior.schema.num_rows),
        "method": posterior.method,
    }
    store = posterior.info.get("store")
    if isinstance(store, Mapping):
        parent["store_name"] = store.get("name")
        parent["store_version"] = store.get("version")
    return parent


# ----------------------------------------------------------------------------- refit
def _fit_inputs(posterior):
    schema = posterior.schema
    columns = {s.name: s.columns for s in schema.specs if s.role != "static"}
    int_ranges = {s.name: s.int_range for s in schema.specs if s.role == "rows" and s.int_range is not None}
    return schema.names(), columns, dict(schema.static), schema.names("rows"), int_ranges or None


def _nuts_config(posterior, **changes) -> NUTSConfig:
    s = posterior.settings
    init = s.get("init", "uniform")
    config = NUTSConfig(chains=int(s["chains"]), draws=int(s["draws"]), warmup=int(s["warmup"]),
                        target_accept=float(s["target_accept"]), dense_mass=bool(s["dense_mass"]),
                        max_tree_depth=int(s["max_tree_depth"]),
                        init_mass_matrix=s.get("init_mass_matrix", "identity"),
                        chain_method=s.get("chain_method", "parallel"),
                        init=init if isinstance(init, str) and init in INIT_STRATEGIES else "uniform")
    return config.replace(**{k: v for k, v in changes.items() if v is not None})


def _svi_config(posterior, **changes) -> SVIConfig:
    s = posterior.settings
    guide = s["guide"]
    if guide not in GUIDES:
        raise InputError("posterior", f"was fit with the custom SVI guide {guide!r}, which update cannot rebuild",
                         hint="Fit anew with bayesinf.fit(..., guide=...) on the old and new rows.")
    config = SVIConfig(guide=guide, optimizer=s["optimizer"], learning_rate=float(s["learning_rate"]),
                       num_steps=int(s["num_steps"]), draws=int(s["draws"]), num_particles=int(s["num_particles"]),
                       check_every=int(s["check_every"]), rtol=float(s["rtol"]), rank=s.get("rank"))
    return config.replace(**{k: v for k, v in changes.items() if v is not None})


def _warm_svi_steps(config: SVIConfig, num_steps: int | None) -> int:
    if num_steps is not None:
        return num_steps
    return max(2 * config.check_every, config.num_steps // 4)


def _latent_shapes_match(posterior, combined) -> bool:
    from .inference.binding import BoundModel
    from .sites import abstract_trace

    trace = abstract_trace(BoundModel(posterior.model, posterior.schema.static), combined)
    return all(tuple(np.shape(trace[k]["value"])) == posterior.draws[k].shape[2:] for k in posterior.sites.latent)


def _refit(posterior, combined, lineage, *, warmup, seed, draws, num_steps, progress, warn):
    from .fitting import fit_arrays, guide_params_of
    from .inference.binding import BoundModel
    from .runtime import precision

    order, columns, static, row_args, int_ranges = _fit_inputs(posterior)
    with precision(posterior.dtype):
        warm = _latent_shapes_match(posterior, combined)
    common = dict(seed=seed, dtype=posterior.dtype, progress=progress, row_args=row_args, int_ranges=int_ranges,
                  warn=warn)
    if posterior.method == "svi":
        config = _svi_config(posterior, draws=draws)
        guide_params = guide_params_of(posterior.settings) if warm else None
        if guide_params is not None:
            config = config.replace(num_steps=_warm_svi_steps(config, num_steps))
        elif num_steps is not None:
            config = config.replace(num_steps=num_steps)
        lineage["warm_start"] = guide_params is not None
        return fit_arrays(posterior.model, order, combined, columns, static, config, guide_params=guide_params,
                          info={"lineage": lineage}, settings={"lineage": lineage}, **common)
    start = None
    if warm:
        with precision(posterior.dtype):
            model = BoundModel(posterior.model, static)
            flat, shapes = unconstrained_draws(posterior, model, combined)
        config = _nuts_config(posterior, draws=draws, warmup=WARM_WARMUP if warmup is None else warmup,
                              adapt_mass_matrix=False)
        start = warm_start(posterior, flat, shapes, config, seed)
    else:  # the parameter vector changed shape: nothing to start from
        config = _nuts_config(posterior, draws=draws, warmup=warmup)
    lineage["warm_start"] = start is not None
    lineage["warmup"] = config.warmup
    return fit_arrays(posterior.model, order, combined, columns, static, config, start=start,
                      info={"lineage": lineage}, settings={"lineage": lineage}, **common)


def unconstrained_draws(posterior, model, arrays) -> tuple[np.ndarray, dict[str, tuple[int, ...]]]:
    """The posterior's latent draws in unconstrained space, flattened: ``(chains * draws, dim)``, and
    the unconstrained shape of each site."""
    from .inference.nuts import flatten_sites, unconstrain_draws

    if not posterior.sites.row_latent:
        # The transforms depend on the sites' supports, not on the rows: one row keeps the
        # vectorized trace over thousands of draws cheap however big the data.
        rows = set(posterior.schema.names("rows", "observed"))
        arrays = {k: (v[:1] if k in rows else v) for k, v in arrays.items()}
    constrained = posterior.flat_draws(posterior.sites.latent)
    values = unconstrain_draws(model, arrays, constrained, posterior.dtype)
    bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
    if bad:
        raise InputError("posterior", f"has draws of {bad} outside their support", "finite unconstrained values")
    shapes = {k: tuple(v.shape[1:]) for k, v in values.items()}
    return flatten_sites(values).astype(np.float64), shapes


def _inverse_mass_matrix(flat: np.ndarray, dense: bool) -> np.ndarray:
    if dense:
        cov = np.atleast_2d(np.cov(flat, rowvar=False))
        return cov + COV_JITTER * np.mean(np.diag(cov)) * np.eye(cov.shape[0])
    var = np.var(flat, axis=0, ddof=1)
    return var + COV_JITTER * np.mean(var)


def warm_start(posterior, flat: np.ndarray, shapes, config: NUTSConfig, seed: int):
    """A NUTS ``Start`` from a previous posterior's unconstrained draws ``flat`` ``(n, dim)``:
    ``config.chains`` distinct draws as positions, its final adapted step sizes (median over chains
    when the number of chains changed; 1 after an SVI fit, adapted in warmup), and an inverse
    mass matrix from the draws' (co)variance."""
    from .inference.nuts import Start, unflatten_sites

    rng = np.random.default_rng(seed)
    picks = rng.choice(flat.shape[0], size=config.chains, replace=flat.shape[0] < config.chains)
    positions = unflatten_sites(flat[picks], shapes)
    if "step_size" in posterior.sample_stats:
        last = np.asarray(posterior.sample_stats["step_size"])[:, -1].astype(np.float64)
        step = last if last.size == config.chains else np.full(config.chains, np.median(last))
    else:
        step = np.ones(config.chains)
    return Start(positions, step, _inverse_mass_matrix(flat, config.dense_mass))


# ----------------------------------------------------------------------------- sequential
def previous_posterior_normal(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(dim,)`` and Cholesky factor ``(dim, dim)`` of the normal fitted to draws ``(n, dim)``."""
    if flat.shape[0] <= flat.shape[1]:
        raise InputError("posterior", f"has {flat.shape[0]} draws for {flat.shape[1]} unconstrained parameters, too "
                         "few to fit the normal approximation of a sequential update",
                         "more draws than parameters", "Use mode='refit', or fit with more draws.")
    loc = flat.mean(axis=0)
    cov = np.atleast_2d(np.cov(flat, rowvar=False))
    cov = cov + COV_JITTER * np.mean(np.diag(cov)) * np.eye(cov.shape[0])
    return loc, np.linalg.cholesky(cov)


class _PriorReplaced:
    """The model with its latent sites' priors replaced by one multivariate normal over their joint
    unconstrained vector ``JOINT_SITE``. Called with ``prior_loc``, ``prior_scale_tril`` and the
    model's arguments; the latent sites reappear, constrained, as deterministic sites."""

    def __init__(self, model, shapes: Mapping[str, tuple[int, ...]]):
        self.model = model
        self.shapes = dict(shapes)
        self._key = (model, tuple(sorted(self.shapes.items())))

    def __eq__(self, other):
        return isinstance(other, _PriorReplaced) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __call__(self, prior_loc, prior_scale_tril, **arguments):
        import numpyro
        import numpyro.distributions as dist

        from .inference.nuts import unflatten_sites

        u = numpyro.sample(JOINT_SITE, dist.MultivariateNormal(prior_loc, scale_tril=prior_scale_tril))
        values = unflatten_sites(u, self.shapes, num_batch=0)
        captured: dict = {}
        with _fix_latent(values, captured):
            self.model(**arguments)
        for name in sorted(captured):
            numpyro.deterministic(name, captured[name])


def _fix_latent(values, captured):
    """A NumPyro handler (see ``FixLatent``) for ``_PriorReplaced``."""
    from numpyro.primitives import Messenger

    class FixLatent(Messenger):
        """Sets each named latent site to the constrained image of its unconstrained value, renames
        it and masks its log density (its prior is part of the joint normal)."""

        def __init__(self, values, captured):
            self.values = values
            self.captured = captured
            super().__init__()

        def process_message(self, msg):
            if msg["type"] != "sample" or msg["name"] not in self.values or msg.get("is_observed"):
                return
            from numpyro.distributions.transforms import biject_to

            name = msg["name"]
            value = biject_to(msg["fn"].support)(self.values[name])
            self.captured[name] = value
            msg["name"] = f"{JOINT_SITE}/{name}"
            msg["value"] = value
            msg["is_observed"] = True
            msg["fn"] = msg["fn"].mask(False)

    return FixLatent(values, captured)


def _sequential(posterior, new, combined, lineage, *, warmup, seed, draws, num_steps, progress, warn):
    from .fitting import with_deterministic, settings_of, trace_fit
    from .inference import BoundModel, run_nuts, run_svi
    from .inference.nuts import Start
    from .posterior import Posterior
    from .runtime import enable_compilation_cache, precision

    if posterior.sites.row_latent:
        raise InputError("mode", f"'sequential' cannot update a model with per-row latent sites "
                         f"{list(posterior.sites.row_latent)}", hint="Use mode='refit'.")
    order, columns, static, row_args, int_ranges = _fit_inputs(posterior)
    enable_compilation_cache()
    with precision(posterior.dtype):
        _, sites, _, schema = trace_fit(posterior.model, order, combined, columns, static, row_args, int_ranges)
        model = BoundModel(posterior.model, static)
        flat, shapes = unconstrained_draws(posterior, model, combined)
        loc, chol = previous_posterior_normal(flat)
        dtype = np.dtype(posterior.dtype)
        arrays = {**{k: v for k, v in posterior.data.items() if k not in new}, **new,
                  "prior_loc": loc.astype(dtype), "prior_scale_tril": chol.astype(dtype)}
        replaced = BoundModel(_PriorReplaced(posterior.model, shapes), static)
        keep = (*posterior.sites.latent, *posterior.sites.deterministic)
        if posterior.method == "nuts":
            config = _nuts_config(posterior, draws=draws, warmup=WARM_WARMUP if warmup is None else warmup,
                                  adapt_mass_matrix=False)
            start = warm_start(posterior, flat, {JOINT_SITE: (flat.shape[1],)}, config, seed)
            result = run_nuts(replaced, arrays, config, seed, dtype=posterior.dtype, progress=progress,
                              start=Start({JOINT_SITE: start.positions[JOINT_SITE]}, start.step_size,
                                          start.inverse_mass_matrix))
            draws_ = {k: v for k, v in result.draws.items() if k in keep}
            stats, losses, info = result.stats, None, {**result.info, "warm_start": True}
            lineage["warmup"] = config.warmup
        else:
            config = _svi_config(posterior, draws=draws)
            config = config.replace(num_steps=_warm_svi_steps(config, num_steps))
            result = run_svi(replaced, arrays, config, seed, latent_sites=(JOINT_SITE,), dtype=posterior.dtype,
                             progress=progress, init_params=_sequential_guide_params(config, loc, chol))
            full = with_deterministic(replaced, result.draws, arrays, keep, seed)
            draws_ = {k: v for k, v in full.items() if k in keep}
            stats, losses, info = {}, result.losses, dict(result.info)
    import datetime as _dt

    lineage["warm_start"] = True
    lineage["approximation"] = "multivariate normal prior fitted to the parent's unconstrained draws"
    info.update(fitted_at=_dt.datetime.now(_dt.timezone.utc).isoformat(), lineage=lineage)
    settings = {**settings_of(config), "lineage": lineage}
    out = Posterior(model=posterior.model, method=posterior.method, draws=draws_, sample_stats=stats, schema=schema,
                    data=combined, sites=sites, settings=settings, info=info, dtype=posterior.dtype, seed=seed,
                    losses=losses, model_path=posterior.model_path)
    if warn:
        out.warn_if_unconverged()
    return out


def _sequential_guide_params(config: SVIConfig, loc: np.ndarray, chol: np.ndarray) -> dict | None:
    """Start a sequential SVI fit at the prior (the previous posterior's normal approximation)."""
    if config.guide == "mvn":
        return {"auto_loc": loc, "auto_scale_tril": chol}
    if config.guide == "normal":
        return {f"{JOINT_SITE}_auto_loc": loc, f"{JOINT_SITE}_auto_scale": np.sqrt(np.sum(chol**2, axis=1))}
    if config.guide == "laplace":
        return {"auto_loc": loc}
    return None
