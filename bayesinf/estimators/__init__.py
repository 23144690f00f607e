"""scikit-learn estimators backed by bayesinf: ``fit(X, y)``, ``predict``, ``predict_interval``,
``sample_posterior_predictive``, ``score`` (and ``predict_proba`` for the classifier)."""

from .base import DEFAULT_PRIORS, BayesianGLMBase
from .glm import BayesianLinearRegression, BayesianLogisticRegression, BayesianPoissonRegression

__all__ = ["BayesianLinearRegression", "BayesianLogisticRegression", "BayesianPoissonRegression",
           "BayesianGLMBase", "DEFAULT_PRIORS"]
