"""A model with its static arguments fixed, called with the data arrays as keyword arguments.

Passing data as arguments of the compiled function (never as closed-over constants) keeps XLA
from constant-folding large arrays and lets a new dataset of the same shapes reuse a compilation.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

__all__ = ["BoundModel", "shape_key"]


class BoundModel:
    """``model`` with ``static`` arguments bound; ``BoundModel(**arrays)`` runs it.

    Equal when the model and the static values are equal, so it can key compilation caches.
    """

    __slots__ = ("model", "static", "_key")

    def __init__(self, model: Callable, static: Mapping[str, Any]):
        self.model = model
        self.static = dict(static)
        self._key = (model, tuple(sorted((k, _hashable(v)) for k, v in self.static.items())))

    def __call__(self, **arrays):
        return self.model(**self.static, **arrays)

    def __eq__(self, other):
        return isinstance(other, BoundModel) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        return f"BoundModel({getattr(self.model, '__qualname__', self.model)!r}, static={self.static})"


def _hashable(value):
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


def shape_key(arrays: Mapping[str, Any]) -> tuple:
    """Hashable (name, shape, dtype) description of a dict of arrays."""
    return tuple(sorted((k, tuple(v.shape), str(v.dtype)) for k, v in arrays.items()))
