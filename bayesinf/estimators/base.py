"""The scikit-learn contract of the Bayesian GLM estimators, written once.

``fit`` standardizes the features, fits ``bayesinf.estimators.model.glm`` with ``bayesinf.fit``
(NUTS or SVI) and keeps the posterior draws of the intercept and coefficients mapped back to the
original scale (``intercept_draws_``, ``coef_draws_``); every prediction is a pure numpy function
of those draws, so a fitted estimator pickles as plain arrays.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from ..formula.priors import Prior
from .model import glm, linear_predictor, pad, prior_tuple, sample_response

__all__ = ["BayesianGLMBase", "DEFAULT_PRIORS"]

#: Priors on the standardized scale (features and, for linear regression, the response divided by
#: their sd): weakly informative, as rstanarm's defaults.
DEFAULT_PRIORS = {"intercept": Prior("normal", mu=0.0, sigma=2.5), "coef": Prior("normal", mu=0.0, sigma=2.5),
                  "sigma": Prior("exponential", rate=1.0)}


class BayesianGLMBase(BaseEstimator):
    """Shared parameters and machinery; use the concrete estimators.

    Parameters
    ----------
    method : {"nuts", "svi"}
        Inference method (``bayesinf.fit``).
    chains : int
        NUTS chains.
    draws : int
        Posterior draws per chain (SVI: draws from the fitted guide).
    warmup : int
        NUTS warmup iterations per chain.
    num_steps : int
        Most SVI optimization steps.
    seed : int
        Seed of the fit and of predictive draws.
    priors : dict, optional
        ``{"intercept": Prior, "coef": Prior, "sigma": Prior}`` on the standardized scale; keys left
        out keep the defaults (``DEFAULT_PRIORS``).
    """

    _family = "gaussian"

    def __init__(self, method="nuts", chains=2, draws=1000, warmup=500, num_steps=5000, seed=0, priors=None):
        self.method = method
        self.chains = chains
        self.draws = draws
        self.warmup = warmup
        self.num_steps = num_steps
        self.seed = seed
        self.priors = priors

    # ------------------------------------------------------------------ fitting
    def _priors(self) -> dict:
        chosen = dict(DEFAULT_PRIORS)
        for key, prior in (self.priors or {}).items():
            if key not in chosen:
                raise ValueError(f"The 'priors' parameter of {type(self).__name__} has an unknown key {key!r}; "
                                 f"expected some of {sorted(chosen)}.")
            if not isinstance(prior, Prior):
                raise ValueError(f"The 'priors' parameter of {type(self).__name__} must map to "
                                 f"bayesinf.formula.Prior values. Got {type(prior).__name__} for {key!r} instead.")
            chosen[key] = prior
        return chosen

    def _fit_arrays(self, X, y_std, num_classes=2):
        from ..fitting import fit

        if self.method not in ("nuts", "svi"):
            raise ValueError(f"The 'method' parameter of {type(self).__name__} must be 'nuts' or 'svi'. "
                             f"Got {self.method!r} instead.")
        self.x_mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.x_scale_ = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(self.x_mean_)), sd, 1.0)
        X_std = (X - self.x_mean_) / self.x_scale_
        priors = self._priors()
        static = dict(family="categorical" if self._family == "bernoulli" else self._family, num_classes=num_classes,
                      intercept_prior=prior_tuple(priors["intercept"]), coef_prior=prior_tuple(priors["coef"]),
                      sigma_prior=prior_tuple(priors["sigma"]))
        options = dict(method=self.method, draws=self.draws, seed=self.seed, progress=False,
                       row_args=("X", "y", "mask"))
        if self.method == "nuts":
            options.update(chains=self.chains, warmup=self.warmup)
        else:
            options.update(num_steps=self.num_steps, check_every=min(1000, self.num_steps))
        X_pad, y_pad, mask = pad(X_std, y_std)
        posterior = fit(glm, X_pad, y_pad, mask, **static, **options)
        flat = posterior.flat_draws(["intercept", "coef"] + (["sigma"] if self._family == "gaussian" else []))
        coef_std = np.asarray(flat["coef"], dtype=np.float64)[:, :X.shape[1]]
        scale = self.x_scale_[:, None] if coef_std.ndim == 3 else self.x_scale_
        coef = coef_std / scale[None]
        shift = np.einsum("dfo,f->do", coef, self.x_mean_) if coef.ndim == 3 else coef @ self.x_mean_
        self.intercept_draws_ = np.asarray(flat["intercept"], dtype=np.float64) - shift
        self.coef_draws_ = coef
        self.sigma_draws_ = np.asarray(flat["sigma"], dtype=np.float64) if "sigma" in flat else None
        self.convergence_ = str(posterior.diagnose())

    # ------------------------------------------------------------------ prediction
    def _eta(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_draws_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return linear_predictor(X, self.intercept_draws_, self.coef_draws_)

    def _response_draws(self, eta) -> np.ndarray:
        return sample_response(self._family if self._family != "bernoulli" else "categorical", eta,
                               self.sigma_draws_, self.seed)

    def predict_interval(self, X, level=0.9) -> np.ndarray:
        """Equal-tailed posterior predictive interval per row, ``(rows, 2)`` (lower, upper)."""
        check_level(level, "predict_interval")
        draws = self.sample_posterior_predictive(X)
        tail = (1.0 - level) / 2.0
        return np.quantile(draws, [tail, 1.0 - tail], axis=0).T

    def sample_posterior_predictive(self, X) -> np.ndarray:
        """Posterior predictive draws of the response, ``(draws, rows)`` (one per posterior draw,
        seeded by ``seed``; class labels for a classifier)."""
        draws = self._response_draws(self._eta(X))
        return self.classes_[draws] if hasattr(self, "classes_") else draws

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def check_level(level, owner: str) -> None:
    if not isinstance(level, (float, int)) or isinstance(level, bool) or not 0 < level < 1:
        raise ValueError(f"The 'level' parameter of {owner} must be a float in (0, 1). Got {level!r} instead.")
