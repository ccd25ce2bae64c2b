"""Work for the reconcilers: marked by events, coalesced, one worker per key at a time.

An event never reconciles by itself: it marks what it affects (a server, with
what changed about it; or a Zone that no server serves) and returns. A mark
waits a short window for more (a burst of Zone events becomes one reconcile
of their server), marks of one key merge, and a key is never handed to two
workers at once; marks that arrive while it is being worked on wait for the
next turn. As client-go's workqueue does for Go controllers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace

from secondary_dns.api import ObjectRef

# How long a first mark waits for more before its key is worked on.
COALESCE_SECONDS = 0.05


@dataclass(frozen=True)
class ServerWork:
    """What the next reconcile of one SecondaryServer must look at."""

    # The server itself changed (or is new to this process): read it and every
    # Zone of its namespace again.
    spec: bool = False
    # Zones that changed (added, edited, deleted).
    zones: frozenset[ObjectRef] = frozenset()
    # Its Pods or StatefulSet changed: observe them.
    pods: bool = False
    # A child changed: compare every child with what it should be.
    children: bool = False
    # Read the Secrets its Zones use again (a key may have appeared or changed).
    secrets: bool = False
    # The periodic resync: all of the above.
    resync: bool = False

    def merged(self, other: ServerWork) -> ServerWork:
        return replace(
            self,
            spec=self.spec or other.spec,
            zones=self.zones | other.zones,
            pods=self.pods or other.pods,
            children=self.children or other.children,
            secrets=self.secrets or other.secrets,
            resync=self.resync or other.resync,
        )


@dataclass(frozen=True)
class ZoneWork:
    """Write one Zone's status (its servers' outcome for it changed, or none serves it)."""

    def merged(self, other: ZoneWork) -> ZoneWork:
        return self


Work = ServerWork | ZoneWork


@dataclass
class _Pending:
    work: Work
    ready_at: float


@dataclass
class WorkQueue:
    window: float = COALESCE_SECONDS
    clock: Callable[[], float] = time.monotonic
    _pending: dict[Hashable, _Pending] = field(default_factory=dict)
    # ZoneWork, in arrival order (see _ready).
    _zones: dict[Hashable, _Pending] = field(default_factory=dict)
    _active: set[Hashable] = field(default_factory=set)
    _condition: threading.Condition = field(default_factory=threading.Condition)

    def add(self, key: Hashable, work: Work) -> None:
        with self._condition:
            lane = self._zones if isinstance(work, ZoneWork) else self._pending
            pending = lane.get(key)
            if pending is None:
                lane[key] = _Pending(work, self.clock() + self.window)
            else:
                pending.work = pending.work.merged(work)  # type: ignore[arg-type]
            self._condition.notify()

    def __len__(self) -> int:
        with self._condition:
            return len(self._pending) + len(self._zones)

    def _ready(self, now: float, ignore_window: bool) -> Hashable | None:
        """Server work first (it publishes configurations), then Zone status work.

        Server keys are few; Zone keys can be every Zone (a server's change of
        outcome refreshes each Zone's status as work of its own), so they are
        kept in arrival order and only their head is looked at.
        """
        best: Hashable | None = None
        best_at = 0.0
        for key, pending in self._pending.items():
            if key in self._active or (pending.ready_at > now and not ignore_window):
                continue
            if best is None or pending.ready_at < best_at:
                best, best_at = key, pending.ready_at
        if best is not None:
            return best
        for key, pending in self._zones.items():
            if pending.ready_at > now and not ignore_window:
                return None  # arrival order: the later ones are not ready either
            if key not in self._active:
                return key
        return None

    def take(
        self, stop: threading.Event, timeout: float = 1.0, ignore_window: bool = False
    ) -> tuple[Hashable, Work] | None:
        """The next key whose window passed, with its merged work; None after `timeout`."""
        deadline = self.clock() + timeout
        with self._condition:
            while not stop.is_set():
                now = self.clock()
                key = self._ready(now, ignore_window)
                if key is not None:
                    self._active.add(key)
                    lane = self._pending if key in self._pending else self._zones
                    return key, lane.pop(key).work
                if now >= deadline:
                    return None
                waits = [
                    p.ready_at - now for k, p in self._pending.items() if k not in self._active
                ]
                waits += [p.ready_at - now for p in list(self._zones.values())[:1]]
                self._condition.wait(min([deadline - now, *[w for w in waits if w > 0]]))
        return None

    def done(self, key: Hashable) -> None:
        with self._condition:
            self._active.discard(key)
            self._condition.notify_all()
