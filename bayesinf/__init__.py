"""bayesinf: Bayesian inference on NumPyro/JAX — fit, diagnose, predict calibrated intervals, save.

>>> import bayesinf as bi
>>> post = bi.fit(model, X, y=y, method="nuts", seed=0)          # doctest: +SKIP
>>> pred = post.predict(X_new, levels=(0.5, 0.9))                 # doctest: +SKIP

Importing the package asks XLA for parallel CPU devices (see ``bayesinf.runtime``) and loads
nothing heavy; JAX and NumPyro are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .runtime import configure_host_devices

configure_host_devices()

__version__ = "0.1.0"

_LAZY = {
    "fit": ("bayesinf.fitting", "fit"),
    "load": ("bayesinf.persistence", "load"),
    "load_predictor": ("bayesinf.export", "load_predictor"),
    "PortablePredictor": ("bayesinf.export", "PortablePredictor"),
    "Posterior": ("bayesinf.posterior", "Posterior"),
    "Prediction": ("bayesinf.prediction", "Prediction"),
    "Diagnosis": ("bayesinf.diagnostics", "Diagnosis"),
    "NUTSConfig": ("bayesinf.config", "NUTSConfig"),
    "SVIConfig": ("bayesinf.config", "SVIConfig"),
    "InputError": ("bayesinf.errors", "InputError"),
    "ModelFileError": ("bayesinf.errors", "ModelFileError"),
    "NotFittedError": ("bayesinf.errors", "NotFittedError"),
    "ConvergenceWarning": ("bayesinf.errors", "ConvergenceWarning"),
    "CalibrationWarning": ("bayesinf.errors", "CalibrationWarning"),
    "datasets": ("bayesinf.datasets", None),
    "check": ("bayesinf.check", None),
    "compare": ("bayesinf.check", "compare"),
    "calibration": ("bayesinf.calibration", None),
    "plots": ("bayesinf.plots", None),
    "monitor": ("bayesinf.monitor", None),
    "batch": ("bayesinf.batch", None),
    "ModelStore": ("bayesinf.store", "ModelStore"),
    "fit_many": ("bayesinf.many", "fit_many"),
    "FitCollection": ("bayesinf.many", "FitCollection"),
    "load_many": ("bayesinf.many", "load_many"),
    "fit_minibatch": ("bayesinf.minibatch", "fit_minibatch"),
    "ArraySource": ("bayesinf.sources", "ArraySource"),
    "ParquetSource": ("bayesinf.sources", "ParquetSource"),
    "Model": ("bayesinf.formula", "Model"),
    "Prior": ("bayesinf.formula", "Prior"),
    "BayesianLinearRegression": ("bayesinf.estimators", "BayesianLinearRegression"),
    "BayesianLogisticRegression": ("bayesinf.estimators", "BayesianLogisticRegression"),
    "BayesianPoissonRegression": ("bayesinf.estimators", "BayesianPoissonRegression"),
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from . import batch, calibration, check, datasets, monitor, plots
    from .check import compare
    from .estimators import BayesianLinearRegression, BayesianLogisticRegression, BayesianPoissonRegression
    from .formula import Model, Prior
    from .many import FitCollection, fit_many, load_many
    from .minibatch import fit_minibatch
    from .sources import ArraySource, ParquetSource
    from .store import ModelStore
    from .config import NUTSConfig, SVIConfig
    from .diagnostics import Diagnosis
    from .errors import CalibrationWarning, ConvergenceWarning, InputError, ModelFileError, NotFittedError
    from .fitting import fit
    from .export import PortablePredictor, load_predictor
    from .persistence import load
    from .posterior import Posterior
    from .prediction import Prediction


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'bayesinf' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = import_module(module) if attr is None else getattr(import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
