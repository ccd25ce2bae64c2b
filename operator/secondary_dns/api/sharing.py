"""Equal values held once: what the operator keeps for each of 10,000 Zones is
mostly equal from Zone to Zone (the same primaries, ACLs, conditions).

A bounded table of the values seen last: a value equal to one remembered is
given back as the remembered object, so every holder shares it; a value that
no other shares costs a slot here only while it is among the last `size`
distinct ones, not one for each value ever seen (a fleet whose values all
differ pays for `size` slots, not for the fleet). Thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_SIZE = 4096


class RecentValues(Generic[K, V]):
    """The value remembered for a key among the last `size` distinct keys seen."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._values: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def one(self, key: K, value: V) -> V:
        """The value remembered for `key`, else `value`, remembered from now on."""
        with self._lock:
            found = self._values.get(key)
            if found is not None:
                self._values.move_to_end(key)
                return found
            self._values[key] = value
            if len(self._values) > self.size:
                self._values.popitem(last=False)
            return value


def shared(values: RecentValues[object, object], value: V) -> V:
    """`value` (hashable, compared by equality) as the equal object remembered, if any."""
    found: V = values.one(value, value)  # type: ignore[assignment]
    return found
