"""The operator's parts wired together, and which objects an event puts to work.

The watch caches (k8s/informer.py) call the `on_*` methods here with every
change they see; each marks the work it implies in the queue
(handlers/queue.py) and returns. Worker threads take the work, one key at a
time, and hand it to the part that owns it, one file per concern:

- servers.py: reconcile a SecondaryServer (read, render, apply, observe);
- server_status.py: its status and Events from its pods;
- zones.py: a Zone's configuration half, from the servers that select it;
- zone_status.py: a Zone's whole status, written by this and by the monitor;
- state.py: what each server's last reconcile published, for everyone else;
- targets.py: what the serial monitor probes (routes.py: what the relay routes).

A burst of Zone events becomes one reconcile of their server (the queue merges
marks of one key); a key is never worked on by two workers at once, so one
server's reconciles never interleave. Everything shared across servers is a
published snapshot or guarded by its owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from secondary_dns import metrics
from secondary_dns.api import IPNetwork, ObjectRef, SpecError, conditions
from secondary_dns.api.agent_contract import LABEL_SERVER
from secondary_dns.handlers.events import EventPoster
from secondary_dns.handlers.queue import ServerWork, WorkQueue, ZoneWork
from secondary_dns.handlers.server_status import ServerStatusWriter
from secondary_dns.handlers.servers import ServerReconciler
from secondary_dns.handlers.state import ServerState, ServerStates
from secondary_dns.handlers.targets import monitored_zones
from secondary_dns.handlers.zone_status import PROGRESS_SECONDS, ZoneStatusWriter
from secondary_dns.handlers.zones import ZoneObserver
from secondary_dns.k8s import resources
from secondary_dns.k8s.api import Cluster
from secondary_dns.k8s.informer import DELETED
from secondary_dns.render.relay import relay_plan_secret_name, secret_server
from secondary_dns.routes import MonitoredZone
from secondary_dns.status.times import timestamp_text

log = logging.getLogger(__name__)

# A failed piece of work is tried again after this long, doubling up to the maximum.
RETRY_INITIAL_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0


def utc_now() -> str:
    return timestamp_text(time.time())


@dataclass(frozen=True)
class ZoneKey:
    """The queue key of a Zone's status work (written apart from its servers' work)."""

    ref: ObjectRef


def _declared(obj: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    """What of an object a reconcile reads: spec (by generation), labels, deletion."""
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        tuple(sorted((meta.get("labels") or {}).items())),
        bool(meta.get("deletionTimestamp")),
    )


def _declared_ref(
    event: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> ObjectRef | None:
    """The object of an event that changed what a reconcile reads; None for the others.

    Most events only carry a status change (most of them our own writes): not work.
    """
    if event != DELETED and _declared(old) == _declared(new):
        return None
    obj = new or old
    return None if obj is None else ObjectRef.of(obj)


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
        queue: WorkQueue | None = None,
        operator_namespace: str | None = None,
        relay_plans_namespace: str | None = None,
        progress_window: float = PROGRESS_SECONDS,
    ) -> None:
        self.cluster = cluster
        self.states = ServerStates()
        self.zone_status = ZoneStatusWriter(
            cluster, post_event, now, progress_window=progress_window
        )
        self.zones = ZoneObserver(cluster, self.states, self.zone_status, notify_address)
        self.server_status = ServerStatusWriter(cluster, post_event, now, notify_address)
        self.servers = ServerReconciler(
            cluster,
            post_event,
            self.server_status,
            refused_primary_networks,
            default_image,
            operator_namespace,
            relay_plans_namespace,
        )
        self.relay_plans_namespace = relay_plans_namespace
        self.queue = queue if queue is not None else WorkQueue()
        # A Zone status held back while in progress is written by its status work.
        self.zone_status.on_due = lambda ref: self.queue.add(ZoneKey(ref), ZoneWork())
        # Called when what is served changed (the serial monitor probes fast then).
        self.on_change: Callable[[], None] = lambda: None
        # True while the watch caches make their first lists (handlers/operator.py):
        # a Zone listed before its servers would look served by none.
        self.listing = False
        # (the published states, the monitored zones built from them)
        self._monitored: tuple[Mapping[ObjectRef, ServerState], list[MonitoredZone]] | None = None
        # Failed keys: how long the next retry waits.
        self._retry: dict[Hashable, float] = {}
        self._guard = threading.Lock()

    # ---- events: mark work, return ----------------------------------------------

    def on_server(
        self, event: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        ref = _declared_ref(event, old, new)
        if ref is not None:
            self.queue.add(ref, ServerWork(spec=True))

    def on_zone(
        self, event: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        ref = _declared_ref(event, old, new)
        if ref is None or self.listing:
            # While listing: `caches_synced` looks at every Zone once all is listed.
            return
        servers = self.zones.servers_of(ref, [zone for zone in (old, new) if zone is not None])
        for server in servers:
            self.queue.add(server, ServerWork(zones=frozenset({ref})))
        if not servers:
            self.queue.add(ZoneKey(ref), ZoneWork())

    def on_child(
        self, event: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        """A Pod or a child of a server changed (by its LABEL_SERVER label)."""
        obj = new or old
        assert obj is not None
        meta = obj.get("metadata") or {}
        server = (meta.get("labels") or {}).get(LABEL_SERVER)
        if not server:
            return
        ref = ObjectRef(str(meta.get("namespace") or ""), server)
        kind = obj.get("kind")
        if kind == "Pod":
            self.queue.add(ref, ServerWork(pods=True))
        elif kind == "StatefulSet":
            # Its status follows the pods; its spec (generation) or its deletion is drift.
            drift = event == DELETED or _generation(old) != _generation(new)
            self.queue.add(ref, ServerWork(pods=True, children=drift))
        else:
            # Our own writes are kept by the cache without an event: this is someone else's.
            self.queue.add(ref, ServerWork(children=True))

    def caches_synced(self) -> None:
        """Every watch cache has listed: the Zones served by no server get their status.

        The Zones of the servers are the resync's (every server, at once). Deciding
        while the caches were still listing could find a Zone before its server and
        write `ConfigValid=False` (served by no server) for a moment: a new leader or
        a restart would then flap Zones' status.
        """
        self.listing = False
        for zone in self.cluster.cache.all_items(resources.ZONES):
            ref = ObjectRef.of(zone)
            if not self.zones.servers_of(ref, [zone]):
                self.queue.add(ZoneKey(ref), ZoneWork())

    def resync(self, full: bool = True) -> None:
        """Level-triggered catch-up, called by the resync thread (handlers/operator.py).

        `full`: every server, as if everything about it changed (drift is put
        right, Secrets are read again). Otherwise only the servers with a Zone
        left out for a missing or unusable TSIG Secret: the operator reads
        Secrets by name and does not watch them (it may not list the cluster's
        Secrets), so this is how such a Zone heals within seconds of its Secret
        appearing. A key changed in place is picked up by the next full resync.
        """
        if not full:
            for ref, state in sorted(self.states.all().items()):
                if _waits_for_secret(state):
                    self.queue.add(ref, ServerWork(secrets=True))
            return
        self.cluster.cache.expire()
        known = {ObjectRef.of(obj) for obj in self.cluster.cached_servers()}
        for ref in sorted(known | set(self.states.all())):
            self.queue.add(ref, ServerWork(resync=True))

    # ---- the relay's plans and address ------------------------------------------

    def set_notify_address(self, address: str | None) -> None:
        """The relay Service got (or changed) its address: every status shows the new one."""
        if address == self.server_status.notify_address:
            return
        log.info("NOTIFY address is now %s", address)
        self.server_status.notify_address = address
        self.zones.notify_address = address
        states = self.states.all()
        for ref in sorted(states):
            self.queue.add(ref, ServerWork(resync=True))
        # A resync that changes nothing writes no Zone status (see work_server), so
        # the Zones' statuses are work of their own here.
        self._refresh_zones({zone for state in states.values() for zone in state.zones})

    def _delete_relay_plan(self, ref: ObjectRef) -> None:
        if self.relay_plans_namespace:
            name = relay_plan_secret_name(ref)
            self.cluster.delete("v1", "Secret", self.relay_plans_namespace, name)

    def sweep_relay_plans(self) -> None:
        """Delete the relay plans of servers deleted while no operator was leading.

        Plans live in the operator's namespace and cannot be owned by a server in
        another one, so garbage collection does not remove them.
        """
        if not self.relay_plans_namespace:
            return
        for secret in self.cluster.list_children(
            "v1", "Secret", self.relay_plans_namespace, "secondarydns.io/relay-plan"
        ):
            ref = secret_server(secret)
            if ref is not None and self.cluster.get_server(ref.namespace, ref.name) is None:
                log.info("deleting the relay plan of %s (the server is gone)", ref)
                self._delete_relay_plan(ref)

    # ---- workers -------------------------------------------------------------------

    def run_worker(self, stop: threading.Event) -> None:
        """Take and do work until `stop` is set; a worker thread's body."""
        while not stop.is_set():
            self.work_once(stop)

    def work_once(self, stop: threading.Event, timeout: float = 1.0, wait: bool = True) -> bool:
        """Do the next piece of work; False when there was none within `timeout`."""
        taken = self.queue.take(stop, timeout, ignore_window=not wait)
        if taken is None:
            return False
        key, work = taken
        try:
            self._work(key, work)
        except Exception:
            log.exception("work on %s failed; it is tried again", key)
            self._retry_later(key, work)
        else:
            with self._guard:
                self._retry.pop(key, None)
        finally:
            self.queue.done(key)
        return True

    def drain(self) -> None:
        """Do every piece of work queued, without waiting for windows (tests, shutdown).

        Zone statuses held back while in progress are written too.
        """
        stop = threading.Event()
        while True:
            while self.work_once(stop, timeout=0.0, wait=False):
                pass
            held = self.zone_status.take_due()
            if not held:
                return
            for ref in held:
                self.queue.add(ZoneKey(ref), ZoneWork())

    def _retry_later(self, key: Hashable, work: ServerWork | ZoneWork) -> None:
        with self._guard:
            delay = self._retry.get(key, RETRY_INITIAL_SECONDS)
            self._retry[key] = min(delay * 2, RETRY_MAX_SECONDS)
        # A resync in place of the failed work: whatever it had to look at is looked at.
        retry = ServerWork(resync=True) if isinstance(work, ServerWork) else work
        timer = threading.Timer(delay, self.queue.add, args=(key, retry))
        timer.daemon = True
        timer.start()

    def _work(self, key: Hashable, work: ServerWork | ZoneWork) -> None:
        if isinstance(key, ZoneKey):
            try:
                self.zones.refresh(key.ref.namespace, key.ref.name)
            except Exception:
                metrics.STATUS_WRITE_ERRORS.inc()
                raise
        elif isinstance(key, ObjectRef) and isinstance(work, ServerWork):
            self.work_server(key, work)

    # ---- SecondaryServer -------------------------------------------------------

    def work_server(self, ref: ObjectRef, work: ServerWork) -> None:
        """Everything `work` says may have changed about one server (idempotent)."""
        previous = self.states.get(ref)
        obj = self.cluster.get_server(ref.namespace, ref.name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            # Going away: its children follow by garbage collection; recreating
            # any of them now would only race the namespace's termination.
            removed = self.states.remove(ref)
            self.server_status.forget(ref)
            self.servers.forget(ref)
            self._delete_relay_plan(ref)
            self._refresh_zones(set(removed.zones) if removed is not None else set())
            return
        full = previous is None or work.spec or work.zones or work.children
        full = full or work.secrets or work.resync
        if not full:
            self._observe_pods(obj, previous)
            return
        started = time.monotonic()
        result = "ok"
        try:
            reconciled = self.servers.reconcile(obj, work, previous)
        except SpecError:
            result = "invalid_spec"
            reconciled = None
        except Exception:
            result = "error"
            raise
        finally:
            metrics.RECONCILES.labels(result=result).inc()
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        if reconciled is None:
            return
        state = reconciled.state
        self.states.publish(state)
        if previous is None or previous.rendered.config_hash != state.rendered.config_hash:
            # What is served changed: the serial monitor reads the targets again now,
            # from the state just published. A poke before the publish showed the
            # monitor the old state, and a new Zone waited for its next report round,
            # up to 10 s (bench/scale.py: a new Zone's first evaluation 8-11 s after
            # its create).
            self.on_change()
        # Not for a resync that changed nothing: it would recompute every Zone's status
        # every resync (10,000 at 10,000 Zones, every minute). A status edited by
        # someone else is put right by the serial monitor, which writes the whole
        # status of every Zone it watches at least every RECHECK_SECONDS.
        everything = previous is None or reconciled.rebuilt or work.spec
        if everything or _pod_errors(previous) != _pod_errors(state):
            affected = set(state.zones) | (previous.zones if previous else set())
        else:
            # The Zones whose outcome changed, and those whose status follows the
            # rollout; every other Zone's status reads nothing that changed.
            affected = set(reconciled.zones) | self.zone_status.followers(state.zones)
        self._refresh_zones(affected)

    def _refresh_zones(self, zones: set[ObjectRef]) -> None:
        """Each Zone's status as work of its own, after the server's work.

        Written inline, the statuses of a server's 10,000 Zones (one request
        each) held its key for minutes, and the Zones created meanwhile reached
        the replicas only after them. As their own work, the next reconcile of
        the server goes first (the queue serves server work before Zone work),
        several workers write statuses, and one failing write is retried alone.
        """
        for zone in sorted(zones):
            self.queue.add(ZoneKey(zone), ZoneWork())

    def _observe_pods(self, obj: Mapping[str, Any], state: ServerState | None) -> None:
        """Pods or the StatefulSet changed: observe and write status (no render, no apply)."""
        assert state is not None
        observed = self.servers.observe(obj, state)
        if observed is None or (observed.pods, observed.replicas) == (state.pods, state.replicas):
            return
        self.states.publish(observed)
        # A replica came, went or changed address: serials and Zone status follow.
        self.on_change()
        if _pod_errors(state) != _pod_errors(observed) or _addresses(state) != _addresses(observed):
            affected = set(state.zones)
        else:
            affected = self.zone_status.followers(state.zones)
        self._refresh_zones(affected)

    # ---- serial monitoring -----------------------------------------------------

    def monitored_zones(self) -> list[MonitoredZone]:
        """What the serial monitor and the NOTIFY relay work from, as last published.

        The same list object while no server's state was published anew: the
        monitor asks every report round (10 s), and building it, with the routes
        that follow from it, is O(zones).
        """
        states = self.states.all()
        known = self._monitored
        if known is None or known[0] is not states:
            known = (states, monitored_zones(states))
            self._monitored = known
        return known[1]


def _waits_for_secret(state: ServerState) -> bool:
    return any(
        rejection.reason in (conditions.SECRET_NOT_FOUND, conditions.INVALID_TSIG_KEY)
        for rejection in state.rendered.rejected.values()
    )


def _generation(obj: Mapping[str, Any] | None) -> Any:
    return ((obj or {}).get("metadata") or {}).get("generation")


def _pod_errors(state: ServerState | None) -> tuple[tuple[str, str | None], ...]:
    """What the engines rejected: every Zone's status shows it."""
    return tuple((pod.name, pod.config_error) for pod in (state.pods if state else ()))


def _addresses(state: ServerState) -> tuple[tuple[str, Any], ...]:
    return tuple((pod.name, pod.address) for pod in state.pods)
