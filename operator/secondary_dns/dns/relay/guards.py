"""The relay's memory of what it saw lately: signed NOTIFYs (replays) and drops (its log).

Both are bounded whatever is sent: the replay cache holds at most `capacity`
MACs, the rejection log at most MAX_SOURCES sources per interval.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from enum import Enum

import dns.name


class Seen(Enum):
    NEW = "new"
    # The same message again from the same address: the sender's retransmission
    # after a lost answer (RFC 1996 §3.6). Answer it again, do not fan it out again.
    RETRANSMISSION = "retransmission"
    # The same message from another address: someone replays a captured NOTIFY.
    REPLAY = "replay"


class ReplayCache:
    """The MACs of signed NOTIFYs accepted while their signature is still within its fudge.

    RFC 8945 §5.2.3 bounds a signed message's validity by time only; within that
    window a captured message verifies again. Each one the relay accepts sets
    every replica of the zone refreshing, so a replay must not.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        # (key name, MAC) -> (wall-clock expiry, source address), oldest first.
        self._seen: OrderedDict[tuple[dns.name.Name, bytes], tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check(
        self, key_name: dns.name.Name, mac: bytes, source: str, now: float, expires: float
    ) -> Seen:
        """Whether this signed message was seen before; a new one is remembered until `expires`."""
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest[0] > now and len(self._seen) < self.capacity:
                break
            self._seen.popitem(last=False)
        found = self._seen.get((key_name, mac))
        if found is not None:
            return Seen.RETRANSMISSION if found[1] == source else Seen.REPLAY
        self._seen[(key_name, mac)] = (expires, source)
        return Seen.NEW


class RejectionLog:
    """Dropped messages as one summary line per interval, not a line per message.

    A stranger can send thousands of messages a second; a line each would drown
    the operator's log and cost more than the drop. A drop after a quiet
    interval is logged at once (someone is looking for why their NOTIFY did
    not arrive); drops within the interval after it are summed into one line
    at its end: counts by reason, the sources that sent most, the last detail.
    """

    MAX_SOURCES = 256

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._reasons: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._last = ""
        self._emitted_at = -float("inf")

    @property
    def pending(self) -> int:
        return sum(self._reasons.values())

    def note(self, reason: str, source: str, detail: str) -> float | None:
        """Count one drop; the seconds after which `flush` is due, when it must be scheduled."""
        first = not self._reasons
        self._reasons[reason] += 1
        if source in self._sources or len(self._sources) < self.MAX_SOURCES:
            self._sources[source] += 1
        self._last = f"from {source}: {detail}"
        waited = self.clock() - self._emitted_at
        if waited >= self.interval:
            self.flush()
            return None
        return self.interval - waited if first else None

    def flush(self) -> None:
        if not self._reasons:
            return
        total = sum(self._reasons.values())
        reasons = " ".join(f"{reason}={count}" for reason, count in sorted(self._reasons.items()))
        sources = ", ".join(f"{s} ({n})" for s, n in self._sources.most_common(3))
        self.logger.info(
            "NOTIFY relay dropped %d message%s: %s; most from %s; last %s",
            total,
            "" if total == 1 else "s",
            reasons,
            sources,
            self._last,
        )
        self._reasons.clear()
        self._sources.clear()
        self._emitted_at = self.clock()
