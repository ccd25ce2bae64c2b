"""Writing a Zone's status: both observers, one function, one lock per Zone.

The reconciler observes a Zone's configuration (`ZoneConfig`), the serial
monitor what its replicas serve (`SerialStatus`). Each keeps its latest
observation here, and each write computes the whole status from both with
`status.zone.zone_status`, so Ready is decided in one place whichever of the
two writes. The serial half is kept here only until it is written: then the
stored status holds it (the watch cache has the object as written), and it is
read back from there (`SerialStatus.from_status`), as after an operator
restart, until the monitor evaluates the zone again; a restart rewrites
nothing. Kept for every Zone, the halves were 36 MiB at 10,000 Zones, each a
copy of what the watch cache holds (bench/memory.py).

A Zone on its way (Reconciling=True: the rollout, the first probes, replicas
transferring) passes through several statuses within seconds: "0/3 replicas
serve the configuration", then 1/3, 2/3, then the monitor's "0/3 in sync",
1/3, 2/3. Written one by one that is five or more writes per Zone; at 10,000
Zones created together the API server's status writes, not the replicas, set
how long convergence takes. So a status in progress is written at most once
per window per Zone (a new Zone's window opens when it is first seen): one
held back is written when its window ends, computed then from the latest of
both halves (latest wins). The window is `progress_window` (2 s), longer while
many Zones are in progress together (a burst): their progress statuses share
PROGRESS_WRITES_PER_SECOND, up to PROGRESS_MAX_SECONDS, so that a burst's
writes go to the statuses that say something new. Anything else, Ready above
all, and a fault, is written at once: the last replica serving a change shows
as soon as the monitor sees it.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from secondary_dns import metrics
from secondary_dns.api import ZONE_PLURAL, ObjectRef, conditions
from secondary_dns.handlers.events import EventPoster
from secondary_dns.k8s.api import Cluster
from secondary_dns.status.conditions import find_condition
from secondary_dns.status.serial import SerialEvaluation, SerialStatus
from secondary_dns.status.zone import ZoneConfig, follows_rollout, zone_status

log = logging.getLogger(__name__)

# Seconds between two writes of a Zone's status while it is in progress (see above),
# at least; more while many Zones are in progress at once, so that their statuses in
# progress make at most PROGRESS_WRITES_PER_SECOND writes a second together; at most
# PROGRESS_MAX_SECONDS, which keeps that budget up to 12,000 Zones in progress. It was
# 60 s: 10,000 Zones created together then wrote a status in progress at 167 a second
# (each Zone's first, 60 s after it was seen, and again every 60 s) while their Ready
# statuses waited for the same API server (bench/scale.py: on this machine the API
# server takes 40-70 status writes a second; convergence followed the writes). With
# the window that long a Zone of such a burst that converges within it is written
# once, Ready; one still on its way shows its progress within 10 minutes, and sooner
# as the others converge (the window is computed anew when it ends).
PROGRESS_SECONDS = 2.0
PROGRESS_WRITES_PER_SECOND = 20.0
PROGRESS_MAX_SECONDS = 600.0


def in_progress(status: Mapping[str, Any]) -> bool:
    """Reconciling=True: Ready waits only for work under way (status.zone.reconciling)."""
    reconciling = find_condition(status.get("conditions") or [], conditions.RECONCILING)
    return reconciling is not None and reconciling.get("status") == conditions.TRUE


def _evaluated_before(serial: SerialStatus | None, generation: int) -> list[int]:
    """[the primary serial it shows] when the monitor's half was evaluated for a
    generation older than `generation` and shows one; else []."""
    if serial is None:
        return []
    synced = find_condition(serial.conditions, conditions.SYNCED)
    evaluated = synced.get("observedGeneration") if synced is not None else None
    primary_serial = serial.fields.get("primarySerial")
    if isinstance(evaluated, int) and evaluated < generation and isinstance(primary_serial, int):
        return [primary_serial]
    return []


class ZoneStatusWriter:
    def __init__(
        self,
        cluster: Cluster,
        post_event: EventPoster,
        now: Callable[[], str],
        *,
        progress_window: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.post_event = post_event
        self.now = now
        self.progress_window = progress_window
        self.clock = clock
        # Called (from a thread of this writer) when a held-back status is due: the
        # controller queues the Zone's status work, which writes it.
        self.on_due: Callable[[ObjectRef], None] = lambda ref: None
        # Called with the primary serial the status shows when a Zone's spec changed
        # (a new generation) but the monitor's half was evaluated for an older one:
        # the monitor evaluates it now (`SerialMonitor.notified` heats the zone; the
        # serial it is told is the one already known, so a newer one still counts as
        # unannounced), and its Synced carries the new generation at once. A change
        # that does not change what is probed (allowTransfer) would otherwise leave
        # a zone in sync unevaluated until its next recheck, a minute later.
        self.on_stale_serial: Callable[[ObjectRef, int], None] = lambda ref, serial: None
        self._guard = threading.Lock()
        self._due_changed = threading.Condition(self._guard)
        # When this process last wrote each Zone's status (or first saw a new Zone).
        self._written_at: dict[ObjectRef, float] = {}
        # Zones whose status in progress is held back -> when it is due; the heap
        # orders them (entries of Zones written meanwhile are skipped).
        self._held: dict[ObjectRef, float] = {}
        self._due: list[tuple[float, ObjectRef]] = []
        # Held Zones whose time came: their next write goes out whatever it is.
        self._released: set[ObjectRef] = set()
        # Zones whose status, as last computed, is in progress (they share the budget).
        self._progressing: set[ObjectRef] = set()
        self._timer: threading.Thread | None = None
        # False: no thread hands out held statuses; the caller does (take_due), as
        # tests with a clock of their own do.
        self.run_timer = True
        # Zone status has two writers in this process (configuration, serial
        # monitor); a lock per Zone keeps them from racing into 409 retries.
        self._locks: dict[ObjectRef, threading.Lock] = {}
        self._configs: dict[ObjectRef, ZoneConfig] = {}
        # Absent: not seen by the monitor in this process, or its half is written
        # (read the stored status); None: seen, but not evaluated in its current
        # configuration; a SerialStatus: not written yet (held back, or waiting for
        # the configuration's half).
        self._serials: dict[ObjectRef, SerialStatus | None] = {}
        # Zones whose status depends on their servers' rollout (follows_rollout).
        self._followers: set[ObjectRef] = set()

    def _lock(self, ref: ObjectRef) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(ref, threading.Lock())

    def _serial(self, ref: ObjectRef, stored: Mapping[str, Any]) -> SerialStatus | None:
        with self._guard:
            if ref in self._serials:
                return self._serials[ref]
        return SerialStatus.from_status(stored)

    def _stored_serial(self, ref: ObjectRef, serial: SerialStatus | None) -> None:
        """`serial`, kept for the Zone, is now in its stored status: read it from there.

        Not when a newer one came meanwhile, nor an explicit None (the stored
        status still shows the serial conditions of before).
        """
        with self._guard:
            if serial is not None and self._serials.get(ref) is serial:
                del self._serials[ref]

    def write_config(self, zone: Mapping[str, Any], config: ZoneConfig) -> None:
        """The configuration path observed `config` of this Zone object."""
        ref = ObjectRef.of(zone)
        previous = dict(zone.get("status") or {})
        now = self.now()
        computed: dict[str, dict[str, Any]] = {}
        stale: list[int] = []
        # The serial half the status returned by the last compute holds; None: held.
        combined: list[SerialStatus | None] = [None]

        def compute(current: Mapping[str, Any]) -> Mapping[str, Any]:
            stored = dict(current.get("status") or {})
            serial = self._serial(ref, stored)
            stale[:] = _evaluated_before(serial, config.generation)
            status = zone_status(stored, config, serial, now)
            computed["status"] = status
            self._follow(ref, follows_rollout(config, serial, status))
            held = self._hold(ref, stored, status)
            combined[0] = None if held else serial
            return stored if held else status

        with self._lock(ref):
            with self._guard:
                self._configs[ref] = config
            written = self.cluster.update_status(
                ZONE_PLURAL, ref.namespace, ref.name, compute, cached=zone
            )
            if written:
                self._wrote(ref)
            self._stored_serial(ref, combined[0])
        for primary_serial in stale:
            self.on_stale_serial(ref, primary_serial)
        if written:
            self._post_events(zone, previous, computed["status"])

    def write_serial(
        self, ref: ObjectRef, evaluate: Callable[[Mapping[str, Any]], SerialEvaluation]
    ) -> SerialEvaluation | None:
        """The monitor's evaluation of the Zone as stored now; None when it is gone."""
        now = self.now()
        outcome: dict[str, SerialEvaluation] = {}
        # The serial half the status returned by the last compute holds; None: not in it.
        combined: list[SerialStatus | None] = [None]

        def compute(current: Mapping[str, Any]) -> Mapping[str, Any]:
            stored = dict(current.get("status") or {})
            evaluation = evaluate(current)
            outcome["evaluation"] = evaluation
            serial = evaluation.serial_status
            combined[0] = None
            with self._guard:
                self._serials[ref] = serial
                config = self._configs.get(ref)
            if config is None:
                # The configuration path has not looked at this Zone yet (it is on
                # its way: the server's reconcile refreshes it); it writes both halves.
                return stored
            status = zone_status(stored, config, serial, now)
            self._follow(ref, follows_rollout(config, serial, status))
            if self._hold(ref, stored, status):
                return stored
            combined[0] = serial
            return status

        with self._lock(ref):
            try:
                if self.cluster.update_status(ZONE_PLURAL, ref.namespace, ref.name, compute):
                    self._wrote(ref)
                # Written, or the stored status already says it.
                self._stored_serial(ref, combined[0])
            except Exception as error:  # an API error or timeout: this Zone's write alone
                # The evaluation stands (its repairs go out; the zone's next primary
                # probe, or RECHECK_SECONDS, writes the status); the monitor's round
                # goes on with the other zones.
                log.warning("status of Zone %s not written: %s", ref, error)
                metrics.STATUS_WRITE_ERRORS.inc()
        return outcome.get("evaluation")

    # ---- statuses in progress, held back (see the module's docstring)

    def _hold(self, ref: ObjectRef, stored: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        """Whether `status` (which differs from `stored`, or equals it) waits for its window."""
        if self.progress_window <= 0:
            return False
        progressing = in_progress(status)
        now = self.clock()
        with self._guard:
            if progressing:
                self._progressing.add(ref)
            else:
                self._progressing.discard(ref)
            if ref in self._released:
                self._released.discard(ref)
                return False
            if status == stored or not progressing:
                return False
            if stored.get("observedGeneration") not in (None, 0, status.get("observedGeneration")):
                # A new generation observed goes out at once (in progress or not):
                # GitOps tools wait for it, and the monitor's half may already
                # show the new spec's primaries beside the old generation.
                return False
            last = self._written_at.get(ref)
            if last is None:
                if stored.get("conditions"):
                    return False  # a status this process has not written yet: at once
                # A new Zone: its first status waits for the window, and carries
                # what both halves know by then.
                last = self._written_at[ref] = now
            due = last + self.window()
            if now >= due:
                return False
            if self._held.get(ref) != due:
                self._held[ref] = due
                heapq.heappush(self._due, (due, ref))
                self._start_timer()
                self._due_changed.notify()
            return True

    def window(self) -> float:
        """Seconds between two writes of one Zone's status in progress, now (under the guard)."""
        shared = len(self._progressing) / PROGRESS_WRITES_PER_SECOND
        return min(PROGRESS_MAX_SECONDS, max(self.progress_window, shared))

    def _wrote(self, ref: ObjectRef) -> None:
        with self._guard:
            self._written_at[ref] = self.clock()
            self._held.pop(ref, None)
            self._released.discard(ref)

    def take_due(self, now: float | None = None) -> list[ObjectRef]:
        """The held Zones whose window has ended at `now` (None: all of them), released."""
        with self._guard:
            return self._take_due(now)

    def _take_due(self, now: float | None) -> list[ObjectRef]:
        taken = []
        later: list[tuple[float, ObjectRef]] = []
        while self._due and (now is None or self._due[0][0] <= now):
            due, ref = heapq.heappop(self._due)
            if self._held.get(ref) != due:
                continue  # written meanwhile, or held again for later
            # The window as it is now: a burst that began after this Zone was held
            # makes it longer (the budget is shared by every Zone in progress).
            again = self._written_at.get(ref, due) + self.window()
            if now is not None and again > now:
                self._held[ref] = again
                later.append((again, ref))
                continue
            del self._held[ref]
            self._released.add(ref)
            taken.append(ref)
        for entry in later:
            heapq.heappush(self._due, entry)
        return taken

    def _start_timer(self) -> None:
        if self._timer is None and self.run_timer:
            self._timer = threading.Thread(target=self._run_timer, name="zone-status", daemon=True)
            self._timer.start()

    def _run_timer(self) -> None:
        while True:
            with self._due_changed:
                while not self._due or self._due[0][0] > self.clock():
                    wait = self._due[0][0] - self.clock() if self._due else None
                    self._due_changed.wait(wait)
                due = self._take_due(self.clock())
            for ref in due:
                self.on_due(ref)

    def _follow(self, ref: ObjectRef, follows: bool) -> None:
        with self._guard:
            if follows:
                self._followers.add(ref)
            else:
                self._followers.discard(ref)

    def followers(self, zones: AbstractSet[ObjectRef]) -> set[ObjectRef]:
        """Those of `zones` whose status depends on their servers' rollout (usually few)."""
        with self._guard:
            return {ref for ref in self._followers if ref in zones}

    def forget_serial(self, ref: ObjectRef) -> None:
        """The monitor no longer evaluates the Zone (it is served nowhere now)."""
        with self._guard:
            self._serials[ref] = None
            self._followers.add(ref)

    def forget(self, ref: ObjectRef) -> None:
        """The Zone is gone."""
        with self._guard:
            self._configs.pop(ref, None)
            self._serials.pop(ref, None)
            self._locks.pop(ref, None)
            self._followers.discard(ref)
            self._written_at.pop(ref, None)
            self._held.pop(ref, None)
            self._released.discard(ref)
            self._progressing.discard(ref)

    def _post_events(
        self, zone: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        config_valid = find_condition(new["conditions"], conditions.CONFIG_VALID)
        before = find_condition(previous.get("conditions") or [], conditions.CONFIG_VALID)
        if config_valid and (before is None or before.get("reason") != config_valid["reason"]):
            # A fault is told at once; a Zone rendered is told only when it was told
            # something else before (a fault fixed, a limitation come or gone), not
            # when it is new or its server had not rendered it yet (Unknown): its
            # status says so, and 10,000 Zones created together would otherwise
            # make 10,000 Events, a write each.
            if config_valid["status"] == conditions.FALSE:
                self.post_event(zone, "Warning", config_valid["reason"], config_valid["message"])
            elif config_valid["status"] == conditions.TRUE and before is not None:
                if before.get("status") != conditions.UNKNOWN:
                    self.post_event(zone, "Normal", config_valid["reason"], config_valid["message"])
        request = new.get("retransferRequest")
        if request and request != previous.get("retransferRequest"):
            self.post_event(
                zone,
                "Normal",
                conditions.RETRANSFER_REQUESTED,
                f"every replica was told to transfer {new.get('zone', '')} in full "
                f"(AXFR) for spec.retransferRequest {request!r}",
            )
