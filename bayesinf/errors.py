"""Exceptions and warnings raised by bayesinf.

Every user-facing error names the argument, column, file or site at fault, what was expected
and what was found, so a caller can fix the input without reading the traceback.
"""

from __future__ import annotations

__all__ = [
    "BayesinfError",
    "InputError",
    "ModelFileError",
    "NotFittedError",
    "ConvergenceWarning",
    "CalibrationWarning",
    "warn",
]


class BayesinfError(Exception):
    """Base class of the errors raised by bayesinf."""


class InputError(BayesinfError, ValueError):
    """Bad user input: names the field at fault, the value found and what was expected.

    Parameters
    ----------
    field : str
        Argument, column or parameter at fault, e.g. ``"X"`` or ``"X[:, 'floor']"``.
    problem : str
        What is wrong, as a sentence fragment ("contains 3 NaN values").
    expected : str, optional
        What would have been accepted.
    hint : str, optional
        How to fix it.
    """

    def __init__(self, field: str, problem: str, expected: str | None = None, hint: str | None = None):
        self.field = field
        self.problem = problem
        self.expected = expected
        self.hint = hint
        message = f"'{field}' {problem}."
        if expected:
            message += f" Expected {expected}."
        if hint:
            message += f" {hint}"
        super().__init__(message)


class ModelFileError(BayesinfError, OSError):
    """A saved model is missing, corrupt, tampered with, or not a bayesinf model."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"Cannot load '{self.path}': {problem}")


class NotFittedError(BayesinfError, AttributeError):
    """An estimator was used before ``fit``."""


class ConvergenceWarning(UserWarning):
    """The sampler or optimizer shows signs of not having converged (see ``Posterior.diagnose``)."""


class CalibrationWarning(UserWarning):
    """Recalibration data too few for a level: its conformal interval is the whole line."""


def warn(warning: Warning) -> None:
    """Emit ``warning`` attributed to the first caller outside the bayesinf package (the user's
    line), however deep inside bayesinf it was raised."""
    import os
    import warnings

    warnings.warn(warning, skip_file_prefixes=(os.path.dirname(os.path.abspath(__file__)) + os.sep,))
