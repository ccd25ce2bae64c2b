"""The serial monitor's loop: observe -> evaluate -> status, metrics, repairs.

Runs as one asyncio task in kopf's event loop. What it asks, and when
(docs/serial-status.md):

- **Replicas report**: every `steady_interval` one `GET /zones?maxAge=0` per
  replica pod gives the serial of every zone it serves (the engine's own
  statistics: named's statistics channel, `knotc zone-status`), instead of one
  SOA query per zone per pod. A reported serial stands for an answer when the
  monitor has seen that serial's SOA (from a primary or an earlier probe);
  otherwise, and for replicas whose agent does not answer, the SOA is asked.
- **Spot checks**: each report round also asks `spot_checks` zones of each
  replica by SOA, in turn. A replica that answers an older serial than it reports
  (or no answer) is distrusted for DISTRUST_SECONDS: all its zones are asked by
  SOA meanwhile, and the probe's answer, what clients get, is what counts.
- **Primaries on a budget** (`status.schedule.ProbeSchedule`): queries per second
  shared by every zone's primaries, no zone later than its SOA refresh.
- **Hot zones**: a NOTIFY the relay accepted or fanned out, a primary seen with a
  new serial, or a change of what serves a zone makes that zone (and only that
  zone) hot: its replicas and primaries are asked by SOA every few tens of
  milliseconds until every replica serves the primary's serial.
- **Primaries behind a replica**: a replica serving a serial newer than the
  primaries' last answer means that answer predates a change: the primaries are
  asked again before the zone is evaluated (once per such serial).

Each zone is evaluated with the pure `status.serial.evaluate` when something
about it was observed, and its status written only when it changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dns.serial

from secondary_dns import metrics
from secondary_dns.api import ObjectRef
from secondary_dns.api.agent_contract import AGENT_PORT, ZoneState
from secondary_dns.api.soa import ProbeResult, ProbeTarget, SoaAnswer
from secondary_dns.dns.agent_client import ZoneReports, fetch_raw, zone_key
from secondary_dns.dns.notify import send_notify
from secondary_dns.dns.probe import DEFAULT_ATTEMPTS, ProbeRequest, probe_all
from secondary_dns.dns.relay import NotifyRelay
from secondary_dns.dns.wakeup import NotifyListener
from secondary_dns.handlers.zone_status import ZoneStatusWriter
from secondary_dns.k8s.resources import ZONES
from secondary_dns.routes import MonitoredZone, relay_routes, wakeup_routes
from secondary_dns.status.schedule import (
    DEFAULT_BUDGET,
    DEFAULT_HOT_BUDGET,
    DEFAULT_MIN_INTERVAL,
    HOT_SECONDS,
    ProbeSchedule,
    ScheduledZone,
    later,
    recheck_at,
)
from secondary_dns.status.serial import (
    DEFAULT_REPAIR_GRACE,
    DEFAULT_STALE_GRACE,
    ReplicaTarget,
    SerialEvaluation,
    ZoneHistory,
    evaluate,
    history_from_status,
    newest,
)

log = logging.getLogger(__name__)

# Seconds between two report rounds (every replica's /zones, spot checks).
STEADY_INTERVAL = 10.0
# SOA probes per replica pod per report round that check its report.
SPOT_CHECKS = 2
# How long a replica that answered differently than it reported is asked by SOA only.
DISTRUST_SECONDS = 300.0
# SOAs remembered per zone, by serial (a report's serial is resolved against them).
SOA_MEMORY = 8
# The loop never spins faster than this, whatever the schedule says.
MIN_SLEEP = 0.005
# A zone in sync whose inputs did not change since it was last evaluated (no new
# primary probe, every replica reporting what it reported) is evaluated again at
# least this often, not at every report round: at 10,000 zones a round would
# otherwise evaluate (and compare the status of) every zone every STEADY_INTERVAL.
# What moves with time alone for a zone in sync (refresh overdue, expiry near) is
# measured in hours. Each zone is due at its own offset within the period
# (`recheck_at`), so a report round re-evaluates about
# STEADY_INTERVAL / RECHECK_SECONDS of the zones, not all of them once a minute.
RECHECK_SECONDS = 60.0
# A zone in sync falling due with the same answers, whose stored Zone is still the
# very version its last full evaluation read or wrote (nobody changed the object
# since: no edit of its status to put right), is only evaluated in full this often;
# in between its turn costs a cache lookup. Bounds how late a time-only change of a
# zone in sync shows (Expiring, at half of SOA expire: RFC 1912 suggests 2-4 weeks).
FULL_RECHECK_SECONDS = 600.0
# How long a report round waits for the agents' GET /zones?maxAge=0 (a fresh look:
# named's statistics channel for every zone): this share of `steady_interval` (5 s),
# or the SOA probe's `timeout` when that is longer. A look at 3,000 zones took
# 1.1-2.0 s on a loaded 2-core machine (bench/scale.py); with the SOA probe's 2 s,
# 20 of 36 reports failed while 3,000 Zones converged, and each failed report turns
# into an SOA probe of every zone of that replica, in the same step: the round took
# longer, not shorter.
REPORT_TIMEOUT_SHARE = 0.5
# SOA probes per replica pod per report round of zones its report, read, leaves out
# (the zone is not loaded there yet, or the serial it reports was never seen from a
# primary); the others wait for a later round, in turn. Each round asked all of them:
# while 3,000 new Zones were loading, a round asked 9,113 SOAs and took 23 s
# (bench/scale.py, load 10-13), and nothing was evaluated or written meanwhile; most
# were zones a replica did not serve yet, which its next report lists. With the
# probes' concurrency (64) and timeout (2 s), 3 replicas' 128 take at most 12 s even
# if none answers. A replica whose agent did not answer, or that is distrusted
# (DISTRUST_SECONDS), is asked for every zone, as before: no report will list them.
UNREPORTED_PROBES = 128
# Threads that evaluate zones (and write their status) at once in one step. Each
# write is a round trip that mostly waits (py-spy: every writer thread in an SSL
# read); with 4, 3,000 Zones whose replicas all served them turned Ready at 11-27 a
# second while the API server took ~200 writes a second (bench/scale.py). They are
# the monitor's own threads: asyncio's default executor has cpu_count + 4 (6 on 2
# cores), so 16 writers asked of it were 6, and the 16 fixed shares of the zones
# they were handed ended one after the other (4 writing at the end of a step).
STATUS_WRITERS = 16
# Zones evaluated (and written) together, at most: a step that evaluates more takes
# them this many at a time, so that what one evaluation builds (about 6 KB: its
# conditions and replica statuses) is held for this many zones, not for every zone
# of the step until its last write. 10,000 Zones whose replicas served them in one
# report held about 65 MiB of evaluations at once, a peak the Python allocator kept
# as free space once converged (bench/scale.py --allocators). 32 a writer keeps
# every writer busy but at the end of each batch.
EVALUATION_BATCH = 32 * STATUS_WRITERS


@dataclass
class _Questions:
    """The SOA queries of one probe round, and what each is for."""

    requests: list[ProbeRequest] = dataclasses.field(default_factory=list)
    attempts: list[int] = dataclasses.field(default_factory=list)
    # (zone, None) a primary, (zone, pod) a replica
    slots: list[tuple[ObjectRef, str | None]] = dataclasses.field(default_factory=list)

    def ask(self, zone: MonitoredZone, target: ProbeTarget, pod: str | None) -> None:
        self.requests.append((zone.name, target))
        # A primary's silence turns PrimaryUnreachable on at once, so a timed-out
        # query to it is sent again (one lost datagram is not an outage). A
        # replica gets one try: a pod that is gone shows as missing at once, and
        # Stale waits for its own grace anyway.
        self.attempts.append(DEFAULT_ATTEMPTS if pod is None else 1)
        self.slots.append((zone.ref, pod))

    def ask_primaries(self, zone: MonitoredZone) -> None:
        for primary in zone.primaries:
            self.ask(zone, primary, None)


@dataclass(frozen=True)
class _SpotCheck:
    ref: ObjectRef
    pod: str
    address: str
    reported: int


class SerialMonitor:
    def __init__(
        self,
        targets: Callable[[], list[MonitoredZone]],
        zone_status: ZoneStatusWriter,
        relay: NotifyRelay | None,
        *,
        steady_interval: float = STEADY_INTERVAL,
        timeout: float = 2.0,
        concurrency: int = 64,
        stale_grace: float = DEFAULT_STALE_GRACE,
        repair_grace: float = DEFAULT_REPAIR_GRACE,
        repair: bool = True,
        budget: float = DEFAULT_BUDGET,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        hot_budget: float = DEFAULT_HOT_BUDGET,
        spot_checks: int = SPOT_CHECKS,
        agent_port: int = AGENT_PORT,
        clock: Callable[[], float] = time.monotonic,
        wakeup: NotifyListener | None = None,
    ) -> None:
        # What to watch (handlers/targets.py), read from the published server states.
        self.targets = targets
        self.zone_status = zone_status
        # An in-process relay (tests; the operator's relay is its own Deployment) and
        # where the relay Deployment's forwarded NOTIFYs arrive (dns/wakeup.py): the
        # routes of both follow the zones monitored.
        self.relay = relay
        self.wakeup = wakeup
        self.steady_interval = steady_interval
        self.timeout = timeout
        self.concurrency = concurrency
        self.stale_grace = stale_grace
        self.repair_grace = repair_grace
        self.repair = repair
        self.spot_checks = spot_checks
        self.agent_port = agent_port
        self.clock = clock
        self.schedule = ProbeSchedule(budget, min_interval, hot_budget)
        self.histories: dict[ObjectRef, ZoneHistory] = {}
        # Queries sent, by kind: "primary" and "replica" SOA probes, "report" GET /zones.
        self.queries: Counter[str] = Counter()
        self.report_mismatches = 0
        self._names: dict[ObjectRef, Any] = {}
        self._zones: dict[ObjectRef, MonitoredZone] = {}
        self._primary_results: dict[ObjectRef, list[ProbeResult]] = {}
        self._replica_results: dict[ObjectRef, dict[str, ProbeResult]] = {}
        self._soa: dict[ObjectRef, dict[int, SoaAnswer]] = {}
        # Each replica's agent's last /zones (this report round's), by address, and
        # each monitored zone's name as those reports key it.
        self._reports = ZoneReports()
        self._keys: dict[ObjectRef, str] = {}
        self._distrusted: dict[str, float] = {}
        self._spot_cursor: dict[str, int] = {}
        self._unreported_cursor: dict[str, int] = {}
        # address -> the zones (and pod) whose answer this report round took from its report
        self._reported: dict[str, list[tuple[ObjectRef, str]]] = {}
        self._next_report = -math.inf
        # zone -> (a digest of the primary results, the replicas' answers and the
        # expiry it was last evaluated with, when it is due again, the resourceVersion
        # of the stored Zone its last full evaluation left, and when that was), for
        # RECHECK_SECONDS.
        self._evaluated: dict[ObjectRef, tuple[bytes, float, str | None, float]]
        self._evaluated = {}
        # zone -> the primary results last taken into account (a new list: a new probe).
        self._probed_at: dict[ObjectRef, list[ProbeResult]] = {}
        # zone -> the newest replica serial its primaries were last asked again about
        # (`_primaries_behind_replicas`).
        self._primary_asked_about: dict[ObjectRef, int] = {}
        self._targets_stale = True
        self._targets_seen: list[MonitoredZone] | None = None
        self._watching = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard = threading.Lock()
        # (zone, serial) heated from other threads, applied by the loop.
        self._heat: list[tuple[ObjectRef | None, int | None]] = []
        # zone -> (when, serial) of the last NOTIFY the relay accepted or fanned out
        self._notifies: dict[ObjectRef, tuple[float, int | None]] = {}
        # The STATUS_WRITERS threads that evaluate zones and write their status
        # (started at the first evaluation).
        self._writers: ThreadPoolExecutor | None = None

    # ---- events (any thread)

    def poke(self) -> None:
        """What is served changed: read the targets now; changed zones turn hot."""
        self._post(None, None)

    def notified(self, ref: ObjectRef, serial: int | None = None) -> None:
        """A NOTIFY for this Zone was accepted, or its fan-out acknowledged: probe it now.

        Only this zone is probed fast (a NOTIFY says nothing of the others).
        Callable from any thread (the relay runs in its own).
        """
        self._post(ref, serial)

    def _post(self, ref: ObjectRef | None, serial: int | None) -> None:
        with self._guard:
            self._heat.append((ref, serial))
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # ---- the loop

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            now = self.clock()
            wake_at = now + self.steady_interval
            try:
                await self.step()
                now = self.clock()
                wake_at = min(self.schedule.next_wake(now), self._next_report)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad step must not end monitoring
                log.exception("serial monitor step failed")
            try:
                await asyncio.wait_for(self._wake.wait(), max(MIN_SLEEP, wake_at - now))
            except TimeoutError:
                pass

    async def step(self) -> None:
        """Everything due now: a report round, the primaries on the budget, hot zones."""
        now = self.clock()
        with self._guard:
            heat, self._heat = self._heat, []
        if any(ref is None for ref, _ in heat):
            self._targets_stale = True
        report_round = now >= self._next_report
        if report_round or self._targets_stale:
            await self._refresh_targets(now)
        for ref, serial in heat:
            if ref is not None:
                self.schedule.heat(ref, now, serial)
                # The newest serial announced lately; a NOTIFY without one (the relay
                # reports it on arrival, the serial with its fan-out) announces any.
                known = self._notifies.get(ref)
                recent = known[1] if known is not None and now - known[0] <= HOT_SECONDS else None
                self._notifies[ref] = (now, None if serial is None else later(recent, serial))
        due = self.schedule.due(now)
        primaries = set(due.primaries) | {ref for ref, with_primaries in due.hot if with_primaries}
        hot = {ref for ref, _ in due.hot}
        if report_round:
            self._next_report = now + self.steady_interval
        await self.observe(primaries, hot, report_round)

    async def round(self) -> None:
        """Everything at once: every primary, every replica's report (tests, the first look)."""
        await self._refresh_targets(self.clock())
        await self.observe(set(self._zones), set(), True)

    async def _refresh_targets(self, now: float) -> None:
        zones = await asyncio.to_thread(self.targets)
        if zones is self._targets_seen:
            # The same list as last time (the controller keeps it while no server's
            # state is published anew): routes and schedule are already these.
            self._targets_stale = False
            return
        self._targets_seen = zones
        if self.relay is not None:
            self.relay.set_routes(relay_routes(zones))
        if self.wakeup is not None:
            self.wakeup.set_routes(wakeup_routes(zones))
        current = {zone.ref: zone for zone in zones}
        self.schedule.set_zones(
            {
                ref: ScheduledZone(
                    len(zone.primaries), sum(1 for t, _ in zone.replicas if t.address)
                )
                for ref, zone in current.items()
            }
        )
        if self._watching:
            # What serves a zone changed (a replica came, went or moved): look at it now.
            for ref, zone in current.items():
                if self._zones.get(ref) != zone:
                    self.schedule.heat(ref, now)
        self._watching = True
        self._zones = current
        self._keys = {ref: zone_key(zone.name) for ref, zone in current.items()}
        for gone in set(self._primary_results) - set(current):
            self._evaluated.pop(gone, None)
            self._probed_at.pop(gone, None)
            self._primary_asked_about.pop(gone, None)
            self._notifies.pop(gone, None)
            self._primary_results.pop(gone, None)
            self._replica_results.pop(gone, None)
            self._soa.pop(gone, None)
        self._targets_stale = False
        self.forget_unmonitored(set(current))

    # ---- observing

    async def observe(
        self, primaries: set[ObjectRef], hot: set[ObjectRef], report_round: bool
    ) -> None:
        """Ask what is due, then evaluate every zone something was learnt about."""
        zones = self._zones
        if report_round:
            await self._read_reports(zones)
        questions = _Questions()
        ask = questions.ask
        for ref in sorted(primaries):
            zone = zones.get(ref)
            if zone is None:
                continue
            if not zone.primaries:
                self._primary_results[ref] = []
            questions.ask_primaries(zone)
        learnt = set(primaries) | hot
        spot: list[tuple[int, _SpotCheck]] = []
        now = self.clock()
        # address -> the zones its report does not answer for (asked within a budget)
        unreported: dict[str, list[tuple[MonitoredZone, ReplicaTarget]]] = {}
        if report_round:
            self._reported = {}
        # Outside a report round only the zones asked about now (at 10,000 zones the
        # budget makes a step every 0.25 s; it must not walk them all, nor make a set
        # of them: 0.2 ms a step at 10,000 zones, the one part of such a step that
        # grew with their number). The zones are in order already (the targets are
        # sorted).
        for ref in list(zones) if report_round else sorted(r for r in learnt if r in zones):
            zone = zones[ref]
            known = self._replica_results.setdefault(ref, {})
            for gone in set(known) - {target.pod for target, _ in zone.replicas}:
                del known[gone]  # a replica pod that no longer serves the zone
            for target, _ in zone.replicas:
                if not target.address:
                    known.pop(target.pod, None)
                    continue
                if ref in hot:
                    ask(zone, ProbeTarget(target.address, target.port), target.pod)
                    continue
                if report_round:
                    previous = known.get(target.pod)
                    reported = self._from_report(ref, target, previous, now)
                    if reported is None and (
                        target.address in self._distrusted
                        or self._reports.states(target.address) is None
                    ):  # a replica distrusted, or whose agent did not answer: every zone
                        learnt.add(ref)
                        ask(zone, ProbeTarget(target.address, target.port), target.pod)
                        continue
                    if reported is None:
                        unreported.setdefault(target.address, []).append((zone, target))
                        continue
                    self._reported.setdefault(target.address, []).append((ref, target.pod))
                    if reported is not previous or self._reports.changed(
                        target.address, self._keys[ref]
                    ):  # a new answer, or the same serial with new timers (a refresh)
                        known[target.pod] = reported
                        learnt.add(ref)
                    continue
                if target.pod not in known and ref in learnt:
                    ask(zone, ProbeTarget(target.address, target.port), target.pod)
        for address, candidates in sorted(unreported.items()):
            start = self._unreported_cursor.get(address, 0) % len(candidates)
            count = min(UNREPORTED_PROBES, len(candidates))
            for i in range(count):
                zone, target = candidates[(start + i) % len(candidates)]
                learnt.add(zone.ref)
                ask(zone, ProbeTarget(address, target.port), target.pod)
            self._unreported_cursor[address] = start + count
        if report_round:
            # Zones whose reports said what they said last round are evaluated only
            # when due again (RECHECK_SECONDS), and a zone never evaluated yet is due.
            evaluated = self._evaluated
            learnt.update(ref for ref in zones if ref not in evaluated or evaluated[ref][1] <= now)
            for check in self._choose_spot_checks():
                zone = zones[check.ref]
                spot.append((len(questions.requests), check))
                target = next(t for t, _ in zone.replicas if t.pod == check.pod)
                ask(zone, ProbeTarget(check.address, target.port), check.pod)
        results = await self._probe(questions)
        for index, check in spot:
            self._check_report(check, results[index], now)
        for (ref, pod), result in zip(questions.slots, results, strict=True):
            if pod is None:
                continue
            self._replica_results.setdefault(ref, {})[pod] = result
        learnt_now = sorted(ref for ref in learnt if ref in zones)
        again = _Questions()
        for ref in self._primaries_behind_replicas(learnt_now, asked=primaries):
            again.ask_primaries(zones[ref])
        await self._probe(again)
        await self._evaluate_all(learnt_now)

    def _primaries_behind_replicas(
        self, refs: Iterable[ObjectRef], asked: AbstractSet[ObjectRef]
    ) -> list[ObjectRef]:
        """Those of `refs` whose primaries' last answer is older than what a replica serves
        (and that were not `asked` together with their replicas).

        A replica serves what it transferred from a primary, so that answer was
        taken before the primary's change: compared with it, replicas that just
        transferred read as "newer than the primary's" serial, and the zone as
        SerialWentBackwards (Synced and Ready False, SerialRegressed True) until
        the primaries' next probe. A hot zone's primaries are asked at most every
        HOT_PRIMARY_INTERVAL (0.25 s), so that was the status ~0.2 s after most
        changes (bench/propagation.py), and at 10,000 zones the budget asks a
        primary every 200 s. Asked once per newer serial a replica shows: a
        primary that really went backwards (RFC 2182 §7) is not asked at every step.
        """
        behind: list[ObjectRef] = []
        for ref in refs:
            # Most zones' primaries agree and their replicas answer the same serial: no
            # serial arithmetic for them (every zone learnt in a step comes here: all of
            # them at the first report round, 2.5 us each).
            answered = {
                r.serial for r in self._primary_results.get(ref, ()) if r.serial is not None
            }
            if not answered:
                continue
            primary = answered.pop() if len(answered) == 1 else newest(sorted(answered))
            other = {
                serial
                for result in self._replica_results.get(ref, {}).values()
                if (serial := result.serial) is not None and serial != primary
            }
            if not other:
                continue
            replica = newest(sorted(other))
            if (
                primary is None
                or replica is None
                or not dns.serial.Serial(replica) > dns.serial.Serial(primary)
                or self._primary_asked_about.get(ref) == replica
            ):
                continue
            self._primary_asked_about[ref] = replica
            if ref not in asked:
                behind.append(ref)
        return behind

    async def _probe(self, questions: _Questions) -> list[ProbeResult]:
        if not questions.requests:
            return []
        results = await probe_all(
            questions.requests,
            concurrency=self.concurrency,
            timeout=self.timeout,
            attempts=questions.attempts,
        )
        by_zone: dict[ObjectRef, list[ProbeResult]] = {}
        for (ref, pod), result in zip(questions.slots, results, strict=True):
            kind = "primary" if pod is None else "replica"
            self.queries[kind] += 1
            metrics.SOA_PROBES.labels(target=kind).inc()
            if result.error:
                metrics.PROBE_ERRORS.labels(target=kind).inc()
            if result.answer is not None:
                self._remember_soa(ref, result.answer)
            if pod is None:
                by_zone.setdefault(ref, []).append(result)
        for ref, primary_results in by_zone.items():
            self._primary_results[ref] = primary_results
        return results

    def _remember_soa(self, ref: ObjectRef, answer: SoaAnswer) -> None:
        known = self._soa.setdefault(ref, {})
        # The same answer again keeps its object: a report of that serial then gives
        # the same result as before, which tells the zone unchanged by identity.
        kept = known.pop(answer.serial, None)
        known[answer.serial] = kept if kept == answer else answer
        while len(known) > SOA_MEMORY:
            del known[next(iter(known))]

    async def _read_reports(self, zones: Mapping[ObjectRef, MonitoredZone]) -> None:
        addresses = {t.address for zone in zones.values() for t, _ in zone.replicas if t.address}
        timeout = max(self.timeout, self.steady_interval * REPORT_TIMEOUT_SHARE)
        fetched = await fetch_raw(addresses, self.agent_port, timeout=timeout, max_age=0)
        self.queries["report"] += len(addresses)
        self._reports.update(fetched)
        for address in addresses:
            read = self._reports.states(address) is not None
            metrics.AGENT_REPORTS.labels(result="ok" if read else "error").inc()

    def _report_state(self, ref: ObjectRef, address: str | None) -> ZoneState | None:
        states = self._reports.states(address) if address else None
        key = self._keys.get(ref)
        return states.get(key) if states is not None and key is not None else None

    def _trusted(self, address: str, now: float) -> bool:
        until = self._distrusted.get(address)
        if until is None:
            return True
        if now < until:
            return False
        del self._distrusted[address]
        return True

    def _from_report(
        self,
        ref: ObjectRef,
        target: ReplicaTarget,
        previous: ProbeResult | None,
        now: float,
    ) -> ProbeResult | None:
        """The replica's answer as its agent reports it; None when only a probe can tell.

        `previous` itself when it already is that answer (the same SOA, no error):
        most zones' reports say what they said the round before, and the monitor
        tells an unchanged zone by identity.
        """
        assert target.address
        if not self._trusted(target.address, now):
            return None
        state = self._report_state(ref, target.address)
        if state is None or state.serial is None:
            return None
        soa = self._soa.get(ref, {}).get(state.serial)
        if soa is None:
            return None
        if (
            previous is not None
            and previous.answer is soa
            and previous.error is None
            and previous.target.address == target.address
            and previous.target.port == target.port
        ):
            return previous
        return ProbeResult(ProbeTarget(target.address, target.port), soa, None, 0.0, responded=True)

    def _choose_spot_checks(self) -> list[_SpotCheck]:
        """`spot_checks` zones per replica whose serials came from its report, in turn."""
        checks: list[_SpotCheck] = []
        for address, candidates in sorted(self._reported.items()):
            start = self._spot_cursor.get(address, 0) % len(candidates)
            count = min(self.spot_checks, len(candidates))
            for i in range(count):
                ref, pod = candidates[(start + i) % len(candidates)]
                reported = self._replica_results[ref][pod].serial
                assert reported is not None
                checks.append(_SpotCheck(ref, pod, address, reported))
            self._spot_cursor[address] = start + count
        return checks

    def _check_report(self, check: _SpotCheck, result: ProbeResult, now: float) -> None:
        """Does the replica answer what its agent reported? A newer answer is a transfer
        that completed in between; an older one, or none, is a replica not to trust."""
        answered = result.serial
        if answered is not None and (
            answered == check.reported
            or dns.serial.Serial(answered) > dns.serial.Serial(check.reported)
        ):
            return
        self.report_mismatches += 1
        metrics.REPORT_MISMATCHES.inc()
        self._distrusted[check.address] = now + DISTRUST_SECONDS
        zone = self._zones.get(check.ref)
        log.warning(
            "replica %s reports serial %s for %s but answers %s; asking it by SOA for %.0fs",
            check.pod,
            check.reported,
            zone.name if zone is not None else check.ref,
            answered if answered is not None else result.error,
            DISTRUST_SECONDS,
        )

    # ---- evaluating

    def _unchanged_in_sync(
        self,
        ref: ObjectRef,
        primary_results: list[ProbeResult],
        replica_results: list[tuple[ReplicaTarget, ProbeResult | None]],
        expiry: Mapping[str, float],
        now: float,
    ) -> bool:
        """True when the zone's last evaluation saw the same answers, in sync, lately.

        Primaries and replicas are compared by what they answered (each probe
        and each report round makes new results of the same answers).
        Remembers these inputs when they call for an evaluation.
        """
        primary_answers = tuple(
            (result.target, result.serial, result.error) for result in primary_results
        )
        answers = tuple(
            (target.pod, target.address, result.serial if result else None,
             result.error if result else None)
            for target, result in replica_results
        )  # fmt: skip
        expiry_key = tuple(sorted(expiry.items()))
        last = self._evaluated.get(ref)
        serials = {result.serial for result in primary_results}
        in_sync = (
            len(serials) == 1
            and None not in serials
            and all(result.error is None for result in primary_results)
            and all(serial in serials and error is None for _, _, serial, error in answers)
        )
        # Kept as a digest of their text: the answers themselves (each a tuple of
        # tuples, floats and strings) were 7.3 MiB at 10,000 Zones (bench/memory.py).
        inputs = hashlib.blake2b(
            repr((primary_answers, answers, expiry_key)).encode(), digest_size=16
        ).digest()
        same = in_sync and last is not None and last[0] == inputs
        if same and last is not None:
            if now < last[1]:
                return True
            version = last[2]
            if (
                now - last[3] < FULL_RECHECK_SECONDS
                and version is not None
                and self._stored_version(ref) == version
            ):
                # Due, but nothing it reads changed, its stored status included.
                next_due = recheck_at(ref, now, RECHECK_SECONDS)
                self._evaluated[ref] = (inputs, next_due, version, last[3])
                return True
        # Out of sync: due at every report round (Stale and repairs wait for graces
        # measured in time, and the answers may not change meanwhile).
        due = recheck_at(ref, now, RECHECK_SECONDS) if in_sync else now
        self._evaluated[ref] = (inputs, due, None, now)
        return False

    def _stored(self, ref: ObjectRef) -> Mapping[str, Any] | None:
        """The Zone in the watch cache; None when gone or not watched (then no cut)."""
        cluster = getattr(self.zone_status, "cluster", None)
        informer = cluster.cache.informer(ZONES, ref.namespace) if cluster is not None else None
        return informer.get(ref.namespace, ref.name) if informer is not None else None

    def _stored_version(self, ref: ObjectRef) -> str | None:
        """The resourceVersion of the Zone in the watch cache; None without one."""
        version = ((self._stored(ref) or {}).get("metadata") or {}).get("resourceVersion")
        return str(version) if version is not None else None

    def _written_version(self, ref: ObjectRef, evaluation: SerialEvaluation) -> str | None:
        """The stored Zone's version when its status holds what `evaluation` says, else None
        (its write failed, or waits for the configuration path: the next turn evaluates)."""
        obj = self._stored(ref)
        status = dict((obj or {}).get("status") or {})
        if obj is None or evaluation.serial_status.apply(status) != status:
            return None
        return self._stored_version(ref)

    def _primary_seen(self, zone: MonitoredZone, wall: float) -> None:
        """A primary answered the serial it answered before: only its clock moves.

        The light half of an evaluation (the last-probe metric, and the history a
        later evaluation measures PrimaryUnreachable from); the budget's probes of
        zones in sync, most of the monitor's steady work, end here.
        """
        history = self.histories.get(zone.ref)
        if history is None:
            return
        self.histories[zone.ref] = dataclasses.replace(history, primary_seen_at=wall)
        metrics.record_primary_seen(zone.ref.namespace, zone.name, wall)

    async def _evaluate_all(self, refs: list[ObjectRef]) -> None:
        wall = time.time()
        now = self.clock()
        work: list[tuple[MonitoredZone, list[ProbeResult], list[Any], dict[str, float]]] = []
        for ref in refs:
            zone = self._zones[ref]
            primary_results = self._primary_results.get(ref)
            if primary_results is None:
                continue  # its primaries are not asked yet: nothing to compare with
            known = self._replica_results.get(ref, {})
            replica_results = [
                (target, known.get(target.pod) if target.address else None)
                for target, _ in zone.replicas
            ]
            if any(target.address and result is None for target, result in replica_results):
                continue  # a replica not asked yet: the next step asks it
            expiry = self._engine_expiry(zone)
            # A hot zone is always evaluated: the evaluation is what cools it.
            unchanged = self._unchanged_in_sync(ref, primary_results, replica_results, expiry, now)
            if unchanged and not self.schedule.is_hot(ref, now):
                if self._probed_at.get(ref) is not primary_results:
                    self._primary_seen(zone, wall)
                    self._probed_at[ref] = primary_results
                continue
            self._probed_at[ref] = primary_results
            work.append((zone, primary_results, replica_results, expiry))
        repairs: list[tuple[MonitoredZone, ReplicaTarget, Any]] = []
        for start in range(0, len(work), EVALUATION_BATCH):
            batch = work[start : start + EVALUATION_BATCH]
            repairs.extend(await self._evaluate_batch(batch, wall))
        if repairs and self.repair:
            await asyncio.gather(*(self._repair(*repair) for repair in repairs))

    async def _evaluate_batch(
        self,
        work: list[tuple[MonitoredZone, list[ProbeResult], list[Any], dict[str, float]]],
        wall: float,
    ) -> list[tuple[MonitoredZone, ReplicaTarget, Any]]:
        """Evaluate and record the zones of `work`, follow what each evaluation means;
        the replicas to repair (their NOTIFY is sent once the whole step is evaluated)."""
        before = {zone.ref: self.histories.get(zone.ref) for zone, _, _, _ in work}
        evaluations = await self._record_all(work, wall)
        for item, evaluation in zip(work, evaluations, strict=True):
            last = self._evaluated.get(item[0].ref)
            if evaluation is not None and last is not None:
                # The version its status was compared with (or written as) just now.
                version = self._written_version(item[0].ref, evaluation)
                self._evaluated[item[0].ref] = (*last[:2], version, last[3])
        now = self.clock()
        repairs: list[tuple[MonitoredZone, ReplicaTarget, Any]] = []
        for (zone, _, _, _), evaluation in zip(work, evaluations, strict=True):
            if evaluation is None:
                continue
            unannounced = self._follow(zone, evaluation, before[zone.ref], now)
            metrics.record_serial_evaluation(zone.ref.namespace, zone.name, evaluation, wall)
            keys = {target.pod: key for target, key in zone.replicas}
            behind = {target.pod: target for target in [*evaluation.repairs, *unannounced]}
            repairs.extend((zone, target, keys[pod]) for pod, target in sorted(behind.items()))
        return repairs

    async def _record_all(
        self,
        work: list[tuple[MonitoredZone, list[ProbeResult], list[Any], dict[str, float]]],
        wall: float,
    ) -> list[SerialEvaluation | None]:
        """`record` each zone of `work` in the STATUS_WRITERS threads; the evaluations in order.

        Each evaluation may write its Zone's status (one request), so 10,000 Zones
        turning Synced at once are not 10,000 round trips one after the other; zones
        are independent (one lock per Zone). Each writer takes the next zone when it
        is done with one, so a slow write holds up only itself: every writer is busy
        until the last zone is taken.
        """
        if self._writers is None:
            self._writers = ThreadPoolExecutor(STATUS_WRITERS, thread_name_prefix="status-writer")
        evaluations: list[SerialEvaluation | None] = [None] * len(work)
        pending = iter(enumerate(work))
        taking = threading.Lock()

        def write_each() -> None:
            while True:
                with taking:
                    taken = next(pending, None)
                if taken is None:
                    return
                index, (zone, primary_results, replica_results, expiry) = taken
                evaluations[index] = self.record(
                    zone, primary_results, replica_results, wall, expiry
                )

        loop = asyncio.get_running_loop()
        writers = min(STATUS_WRITERS, len(work))
        await asyncio.gather(
            *(loop.run_in_executor(self._writers, write_each) for _ in range(writers))
        )
        return evaluations

    def _follow(
        self,
        zone: MonitoredZone,
        evaluation: SerialEvaluation,
        before: ZoneHistory | None,
        now: float,
    ) -> list[ReplicaTarget]:
        """What the evaluation means for the schedule: a new primary serial, a zone in sync.

        Returns the replicas to NOTIFY at once: those behind a new primary serial
        that no NOTIFY announced (the primary delays its NOTIFYs, BIND's
        notify-delay, or they were lost), so that they do not wait for a repair
        grace or their refresh timer.
        """
        ref = zone.ref
        primary = evaluation.primary_serial
        unannounced: list[ReplicaTarget] = []
        if primary is not None and evaluation.primary_reachable:
            soa = evaluation.history.primary_soa
            self.schedule.set_refresh(ref, float(soa.refresh) if soa is not None else None)
            previous = before.primary_serial if before is not None else None
            if previous is not None and previous != primary:
                # A change: it may keep changing, and replicas must follow it now.
                notified = self._announced(ref, primary, now)
                self.schedule.primary_changed(ref, now, notified)
                self.schedule.heat(ref, now)
                if not notified:
                    unannounced = [v.target for v in evaluation.replicas if v.behind]
        if not self.schedule.is_hot(ref, now):
            return unannounced
        announced = self.schedule.hot_serial(ref)
        caught_up = announced is None or (
            primary is not None and dns.serial.Serial(primary) >= dns.serial.Serial(announced)
        )
        if caught_up and evaluation.replicas and all(v.in_sync for v in evaluation.replicas):
            self.schedule.cool(ref)
        return unannounced

    def _announced(self, ref: ObjectRef, serial: int, now: float) -> bool:
        """Did a NOTIFY for the zone announce `serial` (or one without a serial) lately?"""
        notify = self._notifies.get(ref)
        if notify is None or now - notify[0] > HOT_SECONDS:
            return False
        announced = notify[1]
        return announced is None or dns.serial.Serial(announced) >= dns.serial.Serial(serial)

    def _engine_expiry(self, zone: MonitoredZone) -> dict[str, float]:
        """Each replica's own expire timer for the zone, from its last report."""
        expiry: dict[str, float] = {}
        for target, _ in zone.replicas:
            state = self._report_state(zone.ref, target.address)
            if state is not None and state.expires is not None:
                expiry[target.pod] = state.expires
        return expiry

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
        """Evaluate what is known of one zone and write its status if it changed."""
        known = self.histories.get(zone.ref)
        self._names[zone.ref] = zone.name

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

    async def _repair(self, zone: MonitoredZone, target: ReplicaTarget, key: Any) -> None:
        # The primary is ahead and this replica has not caught up: tell it now
        # instead of waiting for its refresh timer (RFC 1996 §3).
        if not target.address:
            return
        error = await send_notify(zone.name, ProbeTarget(target.address, target.port), key=key)
        metrics.REPAIR_NOTIFIES.labels(result="ok" if error is None else "error").inc()
        if error is not None:
            log.info("repair NOTIFY for %s to %s failed: %s", zone.name, target.pod, error)
