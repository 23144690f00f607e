"""``Posterior``: the result of ``bayesinf.fit`` — draws, diagnostics, ArviZ export, prediction
and persistence for one fitted model, whatever the inference method."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from . import arviz_io
from .data import InputSchema, check_seed, prepare_predict_inputs
from .diagnostics import Diagnosis, diagnose_nuts, diagnose_svi
from .errors import ConvergenceWarning, InputError, warn
from .intervals import check_kind, check_levels
from .prediction import BLOCK_ROWS, Prediction, assemble
from .runtime import precision
from .sites import ModelSites

__all__ = ["Posterior", "DEFAULT_LEVEL", "DEFAULT_KIND"]

#: Interval reported by ``summary`` unless asked otherwise: 90% equal-tailed (5% and 95% quantiles,
#: as Stan prints). ArviZ's own default is 89% ETI; we state ours instead of inheriting it.
DEFAULT_LEVEL = 0.9
DEFAULT_KIND = "eti"
#: Predictive draws are kept on the ``Prediction`` up to this many bytes unless asked otherwise.
KEEP_DRAWS_BYTES = 512 * 2**20


def summary_executor():
    """The process-wide thread pool that summarizes prediction row blocks (one thread per core)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        _EXECUTOR = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="bayesinf-summary")
    return _EXECUTOR


_EXECUTOR = None


class Posterior:
    """Posterior draws of a NumPyro model and everything computed from them.

    Made by ``bayesinf.fit`` or ``bayesinf.load``; do not construct directly.

    Attributes
    ----------
    model : callable
        The NumPyro model function.
    method : {"nuts", "svi"}
    draws : dict of str -> np.ndarray
        Posterior draws per latent and deterministic site, ``(chains, draws, *site_shape)``.
    sample_stats : dict of str -> np.ndarray
        Sampler statistics, ``(chains, draws)`` (empty for SVI).
    losses : np.ndarray or None
        SVI loss (negative ELBO) per step.
    schema : InputSchema
        The model's arguments as seen at fit; new data is checked against it.
    data : dict of str -> np.ndarray
        The array arguments the model was fit on.
    settings : dict
        Fit settings (method-specific), as plain values.
    info : dict
        Timings and driver facts of the fit.
    """

    def __init__(self, *, model: Callable, method: str, draws: Mapping[str, np.ndarray],
                 sample_stats: Mapping[str, np.ndarray], schema: InputSchema, data: Mapping[str, np.ndarray],
                 sites: ModelSites, settings: Mapping[str, Any], info: Mapping[str, Any], dtype: str, seed: int,
                 losses: np.ndarray | None = None, model_path: str | None = None):
        self.model = model
        self.method = method
        self.draws = dict(draws)
        self.sample_stats = dict(sample_stats)
        self.schema = schema
        self.data = dict(data)
        self.sites = sites
        self.settings = dict(settings)
        self.info = dict(info)
        self.dtype = dtype
        self.seed = seed
        self.losses = losses
        self.model_path = model_path
        self._predictors: dict = {}
        self._summary_cache: dict = {}

    # ----------------------------------------------------------------- basic facts
    @property
    def num_chains(self) -> int:
        """Number of chains (1 for SVI)."""
        return next(iter(self.draws.values())).shape[0]

    @property
    def num_draws(self) -> int:
        """Draws per chain."""
        return next(iter(self.draws.values())).shape[1]

    def flat_draws(self, names=None) -> dict[str, np.ndarray]:
        """Draws with chains merged: ``(chains * draws, *site_shape)`` per site."""
        names = self.draws if names is None else names
        return {k: self.draws[k].reshape(-1, *self.draws[k].shape[2:]) for k in names}

    def __repr__(self):
        params = ", ".join(self.sites.latent[:8]) + (" ..." if len(self.sites.latent) > 8 else "")
        rows = self.settings.get("num_rows", self.schema.num_rows) if self.settings.get("minibatch") else \
            self.schema.num_rows  # a minibatch fit keeps one batch of rows, and saw them all
        return (f"Posterior(method={self.method!r}, chains={self.num_chains}, draws={self.num_draws}, "
                f"rows={rows}, params=[{params}], observed={list(self.sites.observed)})")

    # ----------------------------------------------------------------- diagnostics
    def to_arviz(self, log_likelihood: bool = True, posterior_predictive: bool = False, seed: int = 0):
        """ArviZ 1.x ``DataTree`` with groups posterior, sample_stats, observed_data, constant_data,
        (by default) log_likelihood pointwise per observed row, and optionally posterior_predictive
        on the fit data (drawn with ``seed``)."""
        observed = {s: self.data[a] for s, a in self.sites.observed_args.items()}
        constant = {k: v for k, v in self.data.items() if k not in self.sites.observed_args.values()}
        ll = self.log_likelihood() if log_likelihood else None
        pp = self.posterior_predictive(seed) if posterior_predictive else None
        coords_of = getattr(self.model, "__bayesinf_coords__", None)  # named dims of built models
        dims, coords = coords_of() if coords_of is not None else (None, None)
        return arviz_io.to_datatree(
            self.draws, sample_stats=self.sample_stats, observed_data=observed, log_likelihood=ll,
            posterior_predictive=pp, constant_data=constant, dims=dims, coords=coords,
            attrs={"inference_library": "bayesinf", "method": self.method},
        )

    def posterior_predictive(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Posterior predictive draws on the fit data, ``(chains, draws, rows, ...)`` per observed site."""
        predictor = self.predict_fn()
        arrays = {k: v for k, v in self.data.items() if k not in self.schema.names("observed")}
        parts: dict[str, list] = {s: [] for s in self.sites.observed}
        with precision(self.dtype):
            for _, _, out in predictor.chunks(arrays, self.schema.num_rows, seed):
                for s, v in out.items():
                    parts[s].append(v)
        out = {}
        for s, v in parts.items():
            draws_first = np.concatenate(v, axis=1)  # (draws, rows, ...)
            out[s] = draws_first.reshape(self.num_chains, self.num_draws, *draws_first.shape[1:])
        return out

    def log_likelihood(self) -> dict[str, np.ndarray]:
        """Pointwise log likelihood per observed site, ``(chains, draws, rows, ...)``."""
        import jax
        from numpyro.infer.util import log_likelihood

        from .inference.binding import BoundModel

        model = BoundModel(self.model, self.schema.static)
        with precision(self.dtype):
            flat = self.flat_draws(self.sites.latent)
            ll = jax.jit(lambda d, a: log_likelihood(model, d, **a))(flat, self.data)
        return {k: np.asarray(v).reshape(self.num_chains, self.num_draws, *v.shape[1:]) for k, v in ll.items()}

    def summary(self, level: float = DEFAULT_LEVEL, kind: str = DEFAULT_KIND, var_names=None):
        """Posterior summary (pandas DataFrame): mean, sd, interval bounds, MCSE, bulk/tail ESS, R-hat.

        Computed by ArviZ (``az.summary``); the interval is ``level`` of ``kind`` ("eti" or "hdi").
        """
        level = check_levels(level, "summary", "level")[0]
        kind = check_kind(kind, "summary")
        if isinstance(var_names, str):
            var_names = [var_names]
        if var_names is not None:
            known = set(self.draws)
            unknown = [v for v in var_names if v not in known]
            if unknown:
                raise InputError("var_names", f"of summary names {unknown}, which are not sites of the posterior",
                                 f"some of {sorted(known)}")
        key = (level, kind)
        if key not in self._summary_cache:
            tree = arviz_io.to_datatree(self.draws, sample_stats=self.sample_stats)
            self._summary_cache[key] = arviz_io.summary(tree, level=level, kind=kind)
        table = self._summary_cache[key]
        if var_names is not None:
            names = set(var_names)
            keep = [i for i in table.index if i.split("[")[0] in names]
            table = table.loc[keep]
        return table.copy()

    def diagnose(self) -> Diagnosis:
        """Convergence verdict (see ``bayesinf.diagnostics`` for the thresholds)."""
        if self.method == "svi":
            return diagnose_svi(self.info, self.losses if self.losses is not None else np.array([]))
        table = self.summary().loc[lambda t: [i.split("[")[0] in self.sites.latent for i in t.index]]
        tree = arviz_io.to_datatree(self.draws, sample_stats=self.sample_stats)
        return diagnose_nuts(table, self.sample_stats, arviz_io.bfmi(tree), self.num_chains)

    def warn_if_unconverged(self) -> Diagnosis:
        """Run ``diagnose`` and emit a ``ConvergenceWarning`` carrying the verdict if it found problems."""
        diagnosis = self.diagnose()
        if not diagnosis.ok:
            warn(ConvergenceWarning(str(diagnosis)))
        return diagnosis

    # ----------------------------------------------------------------- prediction
    def predict_fn(self, memory_budget: int | None = None):
        """The compiled ``Predictor`` of this posterior (built once, reused by ``predict``)."""
        from .predictive import DEFAULT_MEMORY_BUDGET, Predictor

        budget = memory_budget or DEFAULT_MEMORY_BUDGET
        if budget not in self._predictors:
            static = dict(self.schema.static)
            static.update({a: None for a in self.schema.names("observed")})
            keep = [s for s in self.sites.latent if s not in self.sites.row_latent]
            predictive = getattr(self.model, "__bayesinf_predictive__", None)  # models built by bayesinf
            with precision(self.dtype):
                self._predictors[budget] = Predictor(
                    predictive() if predictive is not None else self.model, static, self.flat_draws(keep), self.sites.observed, self.schema.names("rows"),
                    row_event_size=sum(self.sites.row_event_size.values()) or 1, memory_budget=budget,
                    itemsize=8 if self.dtype == "float64" else 4,
                )
        return self._predictors[budget]

    def predict(self, *args, levels=(0.5, 0.9), kind: str = "eti", seed: int = 0,
                return_draws: bool | None = None, memory_budget: int | None = None, row_offset: int = 0,
                **kwargs) -> Prediction:
        """Posterior predictive distribution for new data.

        Parameters
        ----------
        *args, **kwargs
            New values of the model's row arguments, as at fit (observed arguments left out).
        levels : float or sequence of float
            Interval levels in (0, 1).
        kind : {"eti", "hdi"}
            Equal-tailed or highest-density intervals.
        seed : int
            Seed of the predictive draws; the same seed and data give the same numbers. A row's
            draws depend only on the seed, its inputs and its index (``row_offset`` + position),
            not on the other rows or the chunking (see ``bayesinf.predictive``).
        return_draws : bool, optional
            Keep the raw predictive draws on the result. Default: when they take at most 512 MiB.
        memory_budget : int, optional
            Bytes of predictive draws computed at once (default 256 MiB).
        row_offset : int
            Index of the first row in a larger table scored in pieces (``bayesinf.batch``): the
            rows get the draws they get in a single call on the whole table.

        Returns
        -------
        Prediction
        """
        levels = check_levels(levels)
        kind = check_kind(kind)
        seed = check_seed(seed, "predict")
        if isinstance(row_offset, bool) or not isinstance(row_offset, (int, np.integer)) or row_offset < 0:
            raise InputError("row_offset", f"of predict must be a non-negative int; got {row_offset!r}")
        index = _pandas_index(*args, *kwargs.values())
        to_arguments = getattr(self.model, "__bayesinf_arguments__", None)
        if to_arguments is not None:  # models built by bayesinf turn user data (a DataFrame) into arguments
            args, kwargs = to_arguments(*args, **kwargs)
        num_rows, arrays, static = prepare_predict_inputs(self.model, self.schema, self.data, args, kwargs)
        if index is not None and len(index) != num_rows:
            index = None
        predictor = self.predict_fn(memory_budget)
        if static != predictor.model.static:
            changed = [k for k in static if static[k] != predictor.model.static.get(k)]
            raise InputError(changed[0], "differs from the value the model was fit with",
                             f"{predictor.model.static.get(changed[0])!r}")
        if return_draws is None:
            total = num_rows * predictor.num_draws * sum(self.sites.row_event_size.values()) * 4
            return_draws = total <= KEEP_DRAWS_BYTES
        info = {s: {"num_classes": self.sites.num_classes.get(s)} for s in self.sites.observed}
        with precision(self.dtype):
            chunks = predictor.chunks(arrays, num_rows, seed, row_offset=int(row_offset))
            prediction = assemble(chunks, num_rows, info, levels, kind, seed, bool(return_draws),
                                  executor=summary_executor() if num_rows > BLOCK_ROWS else None)
        return prediction if index is None else dataclasses.replace(prediction, index=index)

    # ----------------------------------------------------------------- model checking
    def calibration(self, *args, **kwargs):
        """Calibration report on held-out data (see ``bayesinf.calibration.calibration``)."""
        from .calibration import calibration

        return calibration(self, *args, **kwargs)

    def recalibrate(self, *args, **kwargs):
        """Conformal recalibration on a calibration split (see ``bayesinf.calibration.recalibrate``)."""
        from .calibration import recalibrate

        return recalibrate(self, *args, **kwargs)

    def effects(self, variable: str, by: str | None = None, data=None, kind: str = "conditional", **kwargs):
        """Conditional effects or average predictive comparisons of ``variable`` (``bayesinf.effects``)."""
        from .effects import effects

        return effects(self, variable, by=by, data=data, kind=kind, **kwargs)

    def ppc(self, seed: int = 0):
        """DataTree with the posterior predictive on the fit data (see ``bayesinf.check.ppc``)."""
        from .check import ppc

        return ppc(self, seed)

    def update(self, *args, mode: str = "refit", warmup: int | None = None, seed: int = 0, **kwargs) -> "Posterior":
        """A new posterior given new data rows, warm-started from this one (see ``bayesinf.update``).

        ``mode="refit"`` fits the old and new rows together; ``mode="sequential"`` fits the new
        rows with this posterior (a normal approximation in unconstrained space) as the prior.
        """
        from .update import update

        return update(self, *args, mode=mode, warmup=warmup, seed=seed, **kwargs)

    # ----------------------------------------------------------------- compression and export
    def compress(self, num_draws: int = 500, method: str = "herding", seed: int = 0) -> "Posterior":
        """A new ``Posterior`` keeping ``num_draws`` draws, for faster prediction (``bayesinf.compress``)."""
        from .compress import compress

        return compress(self, num_draws, method, seed)

    def export(self, path, max_rows: int | None = None, **kwargs):
        """Write the compiled predictive function, draws and manifest to ``path``, loadable without
        the model's code by ``bayesinf.load_predictor`` (see ``bayesinf.export.export``)."""
        from .export import export

        return export(self, path, max_rows=max_rows, **kwargs)

    # ----------------------------------------------------------------- persistence
    def save(self, path, draws_dtype: str | None = None) -> None:
        """Save to directory ``path`` (npz arrays + JSON manifest with checksums; atomic).

        ``draws_dtype`` ("float16" or "bfloat16") stores the posterior draws in 16 bits (half the
        file); loading gives float32 draws. Default: as they are.
        """
        from .persistence import save

        save(self, path, draws_dtype=draws_dtype)


def _pandas_index(*values):
    """The index of the first pandas DataFrame or Series among ``values``, else None."""
    for value in values:
        if type(value).__module__.startswith("pandas") and hasattr(value, "index"):
            return value.index
    return None
