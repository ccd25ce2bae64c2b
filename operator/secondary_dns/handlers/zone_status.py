"""Writing a Zone's status: both observers, one function, one lock per Zone.

The reconciler observes a Zone's configuration (`ZoneConfig`), the serial
monitor what its replicas serve (`SerialStatus`). Each keeps its latest
observation here, and each write computes the whole status from both with
`status.zone.zone_status`, so Ready is decided in one place whichever of the
two writes. After an operator restart the serial half is read back from the
stored status until the monitor has evaluated the zone again, so a restart
rewrites nothing.
"""

from __future__ import annotations

import logging
import threading
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


class ZoneStatusWriter:
    def __init__(self, cluster: Cluster, post_event: EventPoster, now: Callable[[], str]) -> None:
        self.cluster = cluster
        self.post_event = post_event
        self.now = now
        self._guard = threading.Lock()
        # Zone status has two writers in this process (configuration, serial
        # monitor); a lock per Zone keeps them from racing into 409 retries.
        self._locks: dict[ObjectRef, threading.Lock] = {}
        self._configs: dict[ObjectRef, ZoneConfig] = {}
        # Absent: not seen by the monitor in this process (read the stored status);
        # None: seen, but not evaluated in its current configuration.
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

    def write_config(self, zone: Mapping[str, Any], config: ZoneConfig) -> None:
        """The configuration path observed `config` of this Zone object."""
        ref = ObjectRef.of(zone)
        previous = dict(zone.get("status") or {})
        now = self.now()
        computed: dict[str, dict[str, Any]] = {}

        def compute(current: Mapping[str, Any]) -> Mapping[str, Any]:
            stored = dict(current.get("status") or {})
            serial = self._serial(ref, stored)
            status = zone_status(stored, config, serial, now)
            computed["status"] = status
            self._follow(ref, follows_rollout(config, serial, status))
            return status

        with self._lock(ref):
            with self._guard:
                self._configs[ref] = config
            written = self.cluster.update_status(
                ZONE_PLURAL, ref.namespace, ref.name, compute, cached=zone
            )
        if written:
            self._post_events(zone, previous, computed["status"])

    def write_serial(
        self, ref: ObjectRef, evaluate: Callable[[Mapping[str, Any]], SerialEvaluation]
    ) -> SerialEvaluation | None:
        """The monitor's evaluation of the Zone as stored now; None when it is gone."""
        now = self.now()
        outcome: dict[str, SerialEvaluation] = {}

        def compute(current: Mapping[str, Any]) -> Mapping[str, Any]:
            stored = dict(current.get("status") or {})
            evaluation = evaluate(current)
            outcome["evaluation"] = evaluation
            with self._guard:
                self._serials[ref] = evaluation.serial_status
                config = self._configs.get(ref)
            if config is None:
                # The configuration path has not looked at this Zone yet (it is on
                # its way: the server's reconcile refreshes it); it writes both halves.
                return stored
            status = zone_status(stored, config, evaluation.serial_status, now)
            self._follow(ref, follows_rollout(config, evaluation.serial_status, status))
            return status

        with self._lock(ref):
            try:
                self.cluster.update_status(ZONE_PLURAL, ref.namespace, ref.name, compute)
            except Exception as error:  # an API error or timeout: this Zone's write alone
                # The evaluation stands (its repairs go out; the zone's next primary
                # probe, or RECHECK_SECONDS, writes the status); the monitor's round
                # goes on with the other zones.
                log.warning("status of Zone %s not written: %s", ref, error)
                metrics.STATUS_WRITE_ERRORS.inc()
        return outcome.get("evaluation")

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

    def _post_events(
        self, zone: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        config_valid = find_condition(new["conditions"], conditions.CONFIG_VALID)
        before = find_condition(previous.get("conditions") or [], conditions.CONFIG_VALID)
        if config_valid and (before is None or before.get("reason") != config_valid["reason"]):
            event_type = "Normal" if config_valid["status"] == conditions.TRUE else "Warning"
            self.post_event(zone, event_type, config_valid["reason"], config_valid["message"])
        request = new.get("retransferRequest")
        if request and request != previous.get("retransferRequest"):
            self.post_event(
                zone,
                "Normal",
                conditions.RETRANSFER_REQUESTED,
                f"every replica was told to transfer {new.get('zone', '')} in full "
                f"(AXFR) for spec.retransferRequest {request!r}",
            )
