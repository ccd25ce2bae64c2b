"""The serial monitor's loop: probe -> evaluate -> status, metrics, repairs.

Runs as one asyncio task in kopf's event loop: every round probes the SOA of
every primary and every replica of every monitored zone (bounded concurrency,
no thread per zone), evaluates each zone with the pure `status.serial.evaluate`,
and writes the Zone's status only when it changed. It probes fast for a while
after a NOTIFY or a configuration change, slowly in steady state. The NOTIFY
relay's routes are refreshed from the same snapshot each round.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from secondary_dns import metrics
from secondary_dns.api import ObjectRef
from secondary_dns.api.agent_contract import ZonesDocument
from secondary_dns.api.soa import ProbeResult, ProbeTarget
from secondary_dns.dns.agent_client import fetch_zones
from secondary_dns.dns.notify import send_notify
from secondary_dns.dns.probe import DEFAULT_ATTEMPTS, ProbeRequest, probe_all
from secondary_dns.dns.relay import NotifyRelay
from secondary_dns.handlers.targets import MonitoredZone, relay_routes
from secondary_dns.handlers.zone_status import ZoneStatusWriter
from secondary_dns.status.serial import (
    DEFAULT_REPAIR_GRACE,
    DEFAULT_STALE_GRACE,
    ReplicaTarget,
    SerialEvaluation,
    ZoneHistory,
    evaluate,
    history_from_status,
)

log = logging.getLogger(__name__)

STEADY_INTERVAL = 10.0
FAST_INTERVAL = 0.5
FAST_WINDOW = 30.0
# How old a replica's expire timers may be before the next round asks its agent again.
ENGINE_REFRESH_SECONDS = 5.0


class SerialMonitor:
    def __init__(
        self,
        targets: Callable[[], list[MonitoredZone]],
        zone_status: ZoneStatusWriter,
        relay: NotifyRelay | None,
        *,
        steady_interval: float = STEADY_INTERVAL,
        fast_interval: float = FAST_INTERVAL,
        fast_window: float = FAST_WINDOW,
        timeout: float = 2.0,
        concurrency: int = 64,
        stale_grace: float = DEFAULT_STALE_GRACE,
        repair_grace: float = DEFAULT_REPAIR_GRACE,
        repair: bool = True,
    ) -> None:
        # What to probe (handlers/targets.py), read from the published server states.
        self.targets = targets
        self.zone_status = zone_status
        self.relay = relay
        self.steady_interval = steady_interval
        self.fast_interval = fast_interval
        self.fast_window = fast_window
        self.timeout = timeout
        self.concurrency = concurrency
        self.stale_grace = stale_grace
        self.repair_grace = repair_grace
        self.repair = repair
        self.histories: dict[ObjectRef, ZoneHistory] = {}
        self._names: dict[ObjectRef, Any] = {}
        self._fast_until = 0.0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard = threading.Lock()
        # replica address -> (monotonic time fetched, its agent's /zones)
        self._engines: dict[str, tuple[float, ZonesDocument]] = {}

    def poke(self) -> None:
        """Probe fast for a while: a NOTIFY arrived or the configuration changed.

        Callable from any thread (kopf runs sync handlers in a thread pool).
        """
        with self._guard:
            self._fast_until = time.monotonic() + self.fast_window
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not end monitoring
                log.exception("serial monitor round failed")
            with self._guard:
                fast = time.monotonic() < self._fast_until
            try:
                await asyncio.wait_for(
                    self._wake.wait(), self.fast_interval if fast else self.steady_interval
                )
            except TimeoutError:
                pass
            self._wake.clear()

    async def round(self) -> None:
        zones = await asyncio.to_thread(self.targets)
        if self.relay is not None:
            self.relay.set_routes(relay_routes(zones))
        requests: list[ProbeRequest] = []
        # A primary's silence turns PrimaryUnreachable on at once, so a timed-out
        # query to it is sent again (one lost datagram is not an outage). A
        # replica gets one try: a pod that is gone shows as missing within one
        # round, and Stale waits for its own grace anyway.
        attempts: list[int] = []
        for zone in zones:
            for primary in zone.primaries:
                requests.append((zone.name, primary))
                attempts.append(DEFAULT_ATTEMPTS)
            for target, _ in zone.replicas:
                if target.address:
                    requests.append((zone.name, ProbeTarget(target.address, target.port)))
                    attempts.append(1)
        probed, engines = await asyncio.gather(
            probe_all(
                requests, concurrency=self.concurrency, timeout=self.timeout, attempts=attempts
            ),
            self._engine_expiry(zones),
        )
        results = iter(probed)
        now = time.time()
        repairs: list[tuple[MonitoredZone, ReplicaTarget, Any]] = []
        live: set[ObjectRef] = set()
        for zone in zones:
            live.add(zone.ref)
            self._names[zone.ref] = zone.name
            primary_results = [next(results) for _ in zone.primaries]
            replica_results: list[tuple[ReplicaTarget, ProbeResult | None]] = [
                (target, next(results) if target.address else None) for target, _ in zone.replicas
            ]
            for result in primary_results:
                if result.error:
                    metrics.PROBE_ERRORS.labels(target="primary").inc()
            for _, replica_result in replica_results:
                if replica_result is not None and replica_result.error:
                    metrics.PROBE_ERRORS.labels(target="replica").inc()
            engine_expiry = {
                target.pod: state.expires
                for target, _ in zone.replicas
                if target.address
                and (document := engines.get(target.address)) is not None
                and (state := document.zones.get(zone.name)) is not None
                and state.expires is not None
            }
            evaluation = await asyncio.to_thread(
                self.record, zone, primary_results, replica_results, now, engine_expiry
            )
            if evaluation is None:
                continue
            metrics.record_serial_evaluation(zone.ref.namespace, zone.name, evaluation, now)
            keys = {target.pod: key for target, key in zone.replicas}
            repairs.extend((zone, target, keys[target.pod]) for target in evaluation.repairs)
        self.forget_unmonitored(live)
        if repairs and self.repair:
            await asyncio.gather(*(self._repair(*repair) for repair in repairs))

    def forget_unmonitored(self, live: set[ObjectRef]) -> None:
        """Zones served nowhere any more: their clocks, metrics and serial half go."""
        for ref in set(self.histories) - live:
            del self.histories[ref]
            self.zone_status.forget_serial(ref)
            name = self._names.pop(ref, None)
            if name is not None:
                metrics.forget_zone(ref.namespace, name)

    def record(
        self,
        zone: MonitoredZone,
        primary_results: list[ProbeResult],
        replica_results: list[tuple[ReplicaTarget, ProbeResult | None]],
        now: float,
        engine_expiry: Mapping[str, float] | None = None,
    ) -> SerialEvaluation | None:
        """Evaluate one round of one zone's probes and write its status if it changed."""
        known = self.histories.get(zone.ref)

        def evaluate_stored(current: Mapping[str, Any]) -> SerialEvaluation:
            previous = dict(current.get("status") or {})
            # First sight of this zone in this process: rebuild the clocks from the
            # stored status, so a restart does not rewrite it for nothing.
            history = known if known is not None else history_from_status(previous)
            return evaluate(
                generation=int(current["metadata"].get("generation", 0)),
                primaries=primary_results,
                replicas=replica_results,
                history=history,
                previous_status=previous,
                now=now,
                stale_grace=self.stale_grace,
                repair_grace=self.repair_grace,
                engine_expiry=engine_expiry,
            )

        evaluation = self.zone_status.write_serial(zone.ref, evaluate_stored)
        if evaluation is not None:
            self.histories[zone.ref] = evaluation.history
        return evaluation

    async def _engine_expiry(self, zones: list[MonitoredZone]) -> dict[str, ZonesDocument]:
        """Each replica's zone timers (address -> its agent's /zones), at most every few seconds.

        They move only at refreshes (hours apart in production), so a fast round
        after a NOTIFY reuses the last answer; an agent that does not answer is
        left out and its replica falls back to what the probes infer.
        """
        addresses = {t.address for zone in zones for t, _ in zone.replicas if t.address}
        now = time.monotonic()
        fetched_at = {address: at for address, (at, _) in self._engines.items()}
        due = [a for a in addresses if now - fetched_at.get(a, -math.inf) >= ENGINE_REFRESH_SECONDS]
        if due:
            fetched = await fetch_zones(due, timeout=self.timeout)
            for address in due:
                if address in fetched:
                    self._engines[address] = (now, fetched[address])
                else:
                    self._engines.pop(address, None)
        for gone in set(self._engines) - addresses:
            del self._engines[gone]
        return {address: document for address, (_, document) in self._engines.items()}

    async def _repair(self, zone: MonitoredZone, target: ReplicaTarget, key: Any) -> None:
        # The primary is ahead and this replica has not caught up: tell it now
        # instead of waiting for its refresh timer (RFC 1996 §3).
        if not target.address:
            return
        error = await send_notify(zone.name, ProbeTarget(target.address, target.port), key=key)
        metrics.REPAIR_NOTIFIES.labels(result="ok" if error is None else "error").inc()
        if error is not None:
            log.info("repair NOTIFY for %s to %s failed: %s", zone.name, target.pod, error)
