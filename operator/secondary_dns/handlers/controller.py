"""The operator's parts wired together, and which objects an event puts to work.

kopf's handlers (handlers/operator.py) call one `Controller`, kept in kopf's
memo; it decides what an event affects and hands the work to the part that
owns it, one file per concern:

- servers.py: reconcile a SecondaryServer (read, render, apply, observe);
- server_status.py: its status and Events from its pods;
- zones.py: a Zone's configuration half, from the servers that select it;
- zone_status.py: a Zone's whole status, written by this and by the monitor;
- state.py: what each server's last reconcile published, for everyone else;
- targets.py: what the serial monitor probes and the relay routes.

Handlers run in kopf's thread pool: one lock per server keeps two events of
one server from interleaving; everything shared across servers is a published
snapshot or guarded by its owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from secondary_dns import metrics
from secondary_dns.api import IPNetwork, ObjectRef, SpecError
from secondary_dns.handlers.events import EventPoster
from secondary_dns.handlers.server_status import ServerStatusWriter
from secondary_dns.handlers.servers import ServerReconciler
from secondary_dns.handlers.state import ServerState, ServerStates
from secondary_dns.handlers.targets import MonitoredZone, monitored_zones
from secondary_dns.handlers.zone_status import ZoneStatusWriter
from secondary_dns.handlers.zones import ZoneObserver
from secondary_dns.k8s.api import Cluster
from secondary_dns.status.times import timestamp_text

log = logging.getLogger(__name__)


def utc_now() -> str:
    return timestamp_text(time.time())


class SpecChanges:
    """Which watch events carry something a reconcile reads: spec, labels or deletion.

    Most events only carry a status change, most of them our own writes; without
    this filter every status write would come back as a full reconcile.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._seen: dict[tuple[str, ObjectRef], tuple[Any, ...]] = {}

    def worth_reconciling(self, event_type: str | None, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        key = (str(obj.get("kind", "")), ObjectRef(meta.get("namespace", ""), meta.get("name", "")))
        seen = (
            meta.get("uid"),
            meta.get("generation"),
            tuple(sorted((meta.get("labels") or {}).items())),
            bool(meta.get("deletionTimestamp")),
        )
        with self._guard:
            if event_type == "DELETED":
                self._seen.pop(key, None)
                return True
            if self._seen.get(key) == seen:
                return False
            self._seen[key] = seen
            return True


class Controller:
    def __init__(
        self,
        cluster: Cluster,
        post_event: EventPoster,
        *,
        now: Callable[[], str] = utc_now,
        notify_address: str | None = None,
        refused_primary_networks: tuple[IPNetwork, ...] = (),
        default_image: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.states = ServerStates()
        self.zone_status = ZoneStatusWriter(cluster, post_event, now)
        self.zones = ZoneObserver(cluster, self.states, self.zone_status, notify_address)
        self.server_status = ServerStatusWriter(cluster, post_event, now, notify_address)
        self.servers = ServerReconciler(
            cluster,
            post_event,
            self.server_status,
            self._changed,
            refused_primary_networks,
            default_image,
        )
        self.spec_changes = SpecChanges()
        # Called when what is served changed (the serial monitor probes fast then).
        self.on_change: Callable[[], None] = lambda: None
        self._locks: dict[ObjectRef, threading.RLock] = {}
        self._guard = threading.Lock()

    def _changed(self) -> None:
        self.on_change()

    def _lock(self, ref: ObjectRef) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(ref, threading.RLock())

    def worth_reconciling(self, event_type: str | None, obj: Mapping[str, Any]) -> bool:
        return self.spec_changes.worth_reconciling(event_type, obj)

    # ---- SecondaryServer -------------------------------------------------------

    def reconcile_server(self, namespace: str, name: str) -> None:
        """Everything a server should be, from what is declared now (idempotent)."""
        ref = ObjectRef(namespace, name)
        affected: set[ObjectRef] = set()
        with self._lock(ref):
            previous = self.states.get(ref)
            obj = self.cluster.get_server(namespace, name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                # Going away: its children follow by garbage collection; recreating
                # any of them now would only race the namespace's termination.
                removed = self.states.remove(ref)
                self.server_status.forget(ref)
                affected = set(removed.zones) if removed is not None else set()
            else:
                state = self._reconcile(obj, previous)
                if state is not None:
                    self.states.publish(state)
                    affected = set(state.zones) | (previous.zones if previous else set())
        for zone in sorted(affected):
            self.zones.refresh(zone.namespace, zone.name)

    def _reconcile(
        self, obj: Mapping[str, Any], previous: ServerState | None
    ) -> ServerState | None:
        started = time.monotonic()
        result = "ok"
        try:
            return self.servers.reconcile(obj, previous)
        except SpecError:
            result = "invalid_spec"
            return None
        except Exception:
            result = "error"
            raise
        finally:
            metrics.RECONCILES.labels(result=result).inc()
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    def refresh_server_status(self, namespace: str, name: str) -> None:
        """Pods or the StatefulSet changed: observe and write status (no render, no apply)."""
        ref = ObjectRef(namespace, name)
        with self._lock(ref):
            state = self.states.get(ref)
            obj = self.cluster.get_server(namespace, name)
            if obj is None:
                return
            if state is not None:
                observed = self.servers.observe(obj, state)
                if observed is None or (observed.pods, observed.replicas) == (
                    state.pods,
                    state.replicas,
                ):
                    return
                self.states.publish(observed)
        if state is None:
            # Nothing reconciled in this process yet (a restart): the full reconcile.
            self.reconcile_server(namespace, name)
            return
        # A replica came, went or changed address: serials and Zone status follow.
        self.on_change()
        for zone in sorted(state.zones):
            self.zones.refresh(zone.namespace, zone.name)

    # ---- Zone and Secret -------------------------------------------------------

    def zone_changed(self, namespace: str, name: str) -> None:
        """A Zone was added, changed or deleted: reconcile every server it is or was on."""
        for server in sorted(self.zones.servers_of(namespace, name)):
            self.reconcile_server(server.namespace, server.name)
        self.zones.refresh(namespace, name)

    def secret_changed(self, namespace: str, name: str) -> None:
        """A TSIG key appeared, changed or went away: the servers using it render again."""
        for ref, state in sorted(self.states.all().items()):
            if ref.namespace == namespace and name in state.secrets:
                self.reconcile_server(ref.namespace, ref.name)

    def uses_secret(self, namespace: str, name: str) -> bool:
        return any(
            ref.namespace == namespace and name in state.secrets
            for ref, state in self.states.all().items()
        )

    # ---- serial monitoring -----------------------------------------------------

    def monitored_zones(self) -> list[MonitoredZone]:
        """What the serial monitor and the NOTIFY relay work from, as last published."""
        return monitored_zones(self.states.all())
