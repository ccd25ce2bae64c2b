"""kubelet's back-off (client-go `flowcontrol.Backoff`), for crash loops and image pulls.

Both start at 10 s and double to 5 min (kubelet's `backOffPeriod` and
`MaxContainerBackOff`); an entry that was last updated more than twice the
maximum before the event is forgotten, which is why a container that ran
for 10 minutes starts again from 10 s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

INITIAL_SECONDS = 10.0
MAX_SECONDS = 300.0


def go_duration(seconds: float) -> str:
    """Go's time.Duration text, as kubelet's messages print it: 10s, 1m20s, 5m0s."""
    whole = int(seconds)
    minutes, rest = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{rest}s"
    if minutes:
        return f"{minutes}m{rest}s"
    return f"{rest}s"


class Backoff:
    """Per-key back-off; `now` is a monotonic clock in seconds."""

    def __init__(
        self,
        now: Callable[[], float],
        initial: float = INITIAL_SECONDS,
        maximum: float = MAX_SECONDS,
    ) -> None:
        self.now = now
        self.initial = initial
        self.maximum = maximum
        self._entries: dict[str, tuple[float, float]] = {}  # key: (backoff, last update)
        self._lock = threading.Lock()

    def _expired(self, event: float, last_update: float) -> bool:
        return event - last_update > 2 * self.maximum

    def get(self, key: str) -> float:
        with self._lock:
            entry = self._entries.get(key)
        return entry[0] if entry else 0.0

    def next(self, key: str, event: float) -> None:
        """Record one more failure at `event`: the first waits `initial`, then double."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self._expired(event, entry[1]):
                delay = self.initial
            else:
                delay = min(entry[0] * 2, self.maximum)
            self._entries[key] = (delay, self.now())

    def in_backoff_since(self, key: str, event: float) -> bool:
        """True while less than the current back-off has passed since `event` (an exit)."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or self._expired(event, entry[1]):
            return False
        return self.now() - event < entry[0]

    def in_backoff_since_update(self, key: str, event: float) -> bool:
        """True while less than the current back-off has passed since the last failure."""
        with self._lock:
            entry = self._entries.get(key)
        return entry is not None and event - entry[1] < entry[0]

    def forget(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k.startswith(prefix)]:
                del self._entries[key]
