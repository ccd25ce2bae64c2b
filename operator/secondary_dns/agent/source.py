"""Where the agent learns its configuration: an interface, and a fixed in-memory source.

The Kubernetes source (kube.py) watches ConfigMaps and a Secret; tests and
local runs can feed shards directly. Either way the agent only sees snapshots.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from secondary_dns.agent.assemble import ConfigShard, KeySecret


@dataclass(frozen=True)
class Snapshot:
    shards: tuple[ConfigShard, ...]
    secret: KeySecret | None
    # False until every watch has listed once: an empty list before that means
    # "not known yet", not "no configuration".
    synced: bool


class ConfigSource(Protocol):
    def start(self, changed: Callable[[], None]) -> None:
        """Begin delivering; call `changed` (from any thread) whenever the snapshot moved."""

    def snapshot(self) -> Snapshot: ...

    def stop(self) -> None: ...


class StaticConfigSource:
    """Shards and a Secret set by the caller (tests, local experiments)."""

    def __init__(self, shards: Iterable[ConfigShard] = (), secret: KeySecret | None = None) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot(tuple(shards), secret, synced=True)
        self._changed: Callable[[], None] | None = None

    def start(self, changed: Callable[[], None]) -> None:
        self._changed = changed
        changed()

    def set(self, shards: Iterable[ConfigShard], secret: KeySecret | None) -> None:
        with self._lock:
            self._snapshot = Snapshot(tuple(shards), secret, synced=True)
        if self._changed is not None:
            self._changed()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def stop(self) -> None:
        self._changed = None
