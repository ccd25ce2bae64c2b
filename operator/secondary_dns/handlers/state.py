"""What the operator knows of each SecondaryServer between events, published whole.

kopf runs the handlers in a thread pool and the serial monitor and the NOTIFY
relay in the event loop; they share only these snapshots. A reconcile builds a
new frozen `ServerState` and swaps it in with one assignment of a new read-only
mapping, so a reader sees the old state or the new one, never half of each,
and needs no lock. Rebuilt from the API after an operator restart (the first
reconcile of each server).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from secondary_dns.api import ObjectRef, TsigKey
from secondary_dns.render import RenderedConfig
from secondary_dns.status.server import ObservedPod


@dataclass(frozen=True)
class ServerState:
    """What the last reconcile of one SecondaryServer rendered and observed."""

    ref: ObjectRef
    # The configuration applied, with the plan it was rendered from.
    rendered: RenderedConfig
    # The key the NOTIFY relay signs with for this server's replicas.
    relay_key: TsigKey = field(repr=False)
    # The Zones that select the server (served or left out), and the Secrets they
    # use: a change of either reconciles the server again.
    zones: frozenset[ObjectRef]
    secrets: frozenset[str]
    # Its pods as last observed, and the replicas its spec asks for.
    pods: tuple[ObservedPod, ...]
    replicas: int

    def replica_names(self) -> list[str]:
        """Every replica the StatefulSet should have, and any other pod it still has.

        A replica whose Pod is gone for the moment is listed: status shows it
        missing rather than forgetting it.
        """
        expected = {f"{self.ref.name}-{ordinal}" for ordinal in range(self.replicas)}
        return sorted(expected | {pod.name for pod in self.pods})


class ServerStates:
    """The published ServerState of every server reconciled in this process."""

    def __init__(self) -> None:
        self._states: Mapping[ObjectRef, ServerState] = MappingProxyType({})
        self._writer = threading.Lock()

    def get(self, ref: ObjectRef) -> ServerState | None:
        return self._states.get(ref)

    def all(self) -> Mapping[ObjectRef, ServerState]:
        """A consistent view: the mapping as one publication left it."""
        return self._states

    def publish(self, state: ServerState) -> None:
        """Swap in the server's new state; one equal to the published one changes nothing.

        A resync that finds nothing changed keeps the published mapping itself, so
        what readers built from it (the monitored zones, the NOTIFY routes, the
        probe schedule: O(zones) each) is kept too.
        """
        with self._writer:
            if self._states.get(state.ref) == state:
                return
            self._states = MappingProxyType({**self._states, state.ref: state})

    def remove(self, ref: ObjectRef) -> ServerState | None:
        with self._writer:
            removed = self._states.get(ref)
            self._states = MappingProxyType({r: s for r, s in self._states.items() if r != ref})
            return removed
