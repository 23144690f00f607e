"""``ProgramCache``: the least-recently-used cache that keeps compiled programs (samplers, SVI
steps, jitted maps) per model, shapes and settings, so a repeated fit does not compile again."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable


class ProgramCache:
    """At most ``size`` entries; ``get`` marks an entry as recently used, ``put`` evicts the least
    recently used one when full."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        """The entry under ``key`` (None if absent)."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> Any:
        """Keep ``value`` under ``key`` and return it."""
        self._entries[key] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def items(self):
        """``(key, entry)`` pairs, least recently used first."""
        return self._entries.items()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
