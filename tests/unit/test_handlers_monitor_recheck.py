"""The serial monitor re-evaluates a zone in sync only when its inputs change (or lately not)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dns.name
import pytest
from kubernetes.client.exceptions import ApiException

import secondary_dns.handlers.monitor as monitor_module
from secondary_dns.api import ObjectRef
from secondary_dns.api.agent_contract import ZonesDocument, ZoneState
from secondary_dns.api.soa import ProbeResult, ProbeTarget, SoaAnswer
from secondary_dns.handlers.monitor import FULL_RECHECK_SECONDS, RECHECK_SECONDS, SerialMonitor
from secondary_dns.routes import MonitoredZone
from secondary_dns.status.schedule import recheck_at
from secondary_dns.status.serial import ReplicaTarget
from tests.fake_cluster import FakeApiServer, run_statefulset
from tests.handlers_harness import (
    API,
    NS,
    Operator,
    condition,
    declared_namespace,
    start_operator,
)

REF = ObjectRef("dns", "example")
PRIMARY = ProbeTarget("192.0.2.1", 53)
REPLICAS = [ReplicaTarget(f"edge-{i}", "edge", None, f"10.0.0.{i}") for i in range(3)]


def answer(serial: int | None, target: ProbeTarget = PRIMARY) -> ProbeResult:
    soa = SoaAnswer(serial, 3600, 600, 86400, 60) if serial is not None else None
    return ProbeResult(target, soa, None if soa else "timeout", 0.001)


def replicas(*serials: int | None) -> list[tuple[ReplicaTarget, ProbeResult | None]]:
    return [(target, answer(serial)) for target, serial in zip(REPLICAS, serials, strict=True)]


def monitor() -> SerialMonitor:
    zone_status: Any = None
    return SerialMonitor(lambda: [], zone_status, None)


def test_a_zone_in_sync_with_the_same_answers_is_not_evaluated_again() -> None:
    watcher, primaries = monitor(), [answer(5)]
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {}, 0.0)
    # A report round: new results, the same answers.
    due = recheck_at(REF, 0.0, RECHECK_SECONDS)
    assert 0.0 < due <= RECHECK_SECONDS
    assert watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {}, due - 0.001)
    # ... until its own time within RECHECK_SECONDS has come.
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {}, due)


def test_a_new_probe_a_new_answer_or_a_zone_out_of_sync_is_evaluated() -> None:
    watcher, primaries = monitor(), [answer(5)]
    watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {}, 0.0)
    # A new primary probe with the same answer: unchanged (only its clock moves).
    assert watcher._unchanged_in_sync(REF, [answer(5)], replicas(5, 5, 5), {}, 1.0)
    assert not watcher._unchanged_in_sync(REF, [answer(6)], replicas(6, 6, 6), {}, 1.5)
    primaries = [answer(5)]
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 4), {}, 2.0)
    # Behind: every round evaluates it (Stale waits for its grace, measured in time).
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 4), {}, 3.0)
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, None), {}, 4.0)
    watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {}, 5.0)
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {"edge-0": 9.0}, 6.0)


# ---- report rounds: only what changed is evaluated, the rest at its own offset

ADDRESSES = [target.address for target in REPLICAS]


def monitored(name: str) -> MonitoredZone:
    key: Any = None
    return MonitoredZone(
        ref=ObjectRef("dns", name),
        name=dns.name.from_text(f"{name}.example"),
        primaries=(PRIMARY,),
        primary_keys=(),
        notify_sources=(),
        replicas=tuple((target, key) for target in REPLICAS),
    )


class Network:
    """What the replicas' agents report and what SOA probes answer, by zone and address."""

    def __init__(self, zones: list[MonitoredZone]) -> None:
        self.replicas = {str(t.address) for zone in zones for t, _ in zone.replicas}
        self.serials = {
            (zone.name.to_text(), where): 5
            for zone in zones
            for where in [*(str(t.address) for t, _ in zone.replicas), "primary"]
        }
        self.expires = 9000.0

    async def fetch_raw(self, addresses: Any, *_: Any, **__: Any) -> dict[str, bytes]:
        def state(zone: str, address: str) -> ZoneState:
            return ZoneState(self.serials[(zone, address)], self.expires, None)

        return {
            str(address): ZonesDocument(
                None,
                {
                    dns.name.from_text(zone): state(zone, str(address))
                    for zone, where in self.serials
                    if where == address
                },
            ).encode()
            for address in addresses
        }

    async def probe_all(self, requests: Any, **_: Any) -> list[ProbeResult]:
        results = []
        for zone, target in requests:
            where = target.address if target.address in self.replicas else "primary"
            serial = self.serials[(zone.to_text(), where)]
            results.append(answer(serial, target))
        return results


class CountingMonitor(SerialMonitor):
    def __init__(self, zones: list[MonitoredZone]) -> None:
        zone_status: Any = None
        self.now = 0.0
        super().__init__(lambda: zones, zone_status, None, clock=lambda: self.now)
        self.evaluated: list[tuple[float, str]] = []

    def record(self, zone: MonitoredZone, *args: Any, **kwargs: Any) -> None:
        self.evaluated.append((self.now, zone.ref.name))


def test_a_report_round_evaluates_what_changed_and_each_zone_in_sync_at_its_own_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    zones = [monitored(name) for name in ("alpha", "beta", "gamma")]
    network = Network(zones)
    monkeypatch.setattr(monitor_module, "fetch_raw", network.fetch_raw)
    monkeypatch.setattr(monitor_module, "probe_all", network.probe_all)
    watcher = CountingMonitor(zones)
    asyncio.run(watcher.round())
    assert sorted(name for _, name in watcher.evaluated) == ["alpha", "beta", "gamma"]
    watcher.evaluated.clear()
    # "gamma" has one replica behind: evaluated at every round (its grace is time).
    network.serials[("gamma.example.", ADDRESSES[2])] = 4
    rounds = [10.0 * i for i in range(1, 8)]
    for now in rounds:
        watcher.now = now
        asyncio.run(watcher.observe(set(), set(), True))
    by_zone: dict[str, list[float]] = {}
    for now, name in watcher.evaluated:
        by_zone.setdefault(name, []).append(now)
    assert by_zone.pop("gamma") == rounds
    # In sync with unchanged reports: once, at the first round after its own time.
    for zone in zones[:2]:
        due = recheck_at(zone.ref, 0.0, RECHECK_SECONDS)
        assert by_zone[zone.ref.name] == [min(now for now in rounds if now >= due)]
    # A replica's new timers (a refresh) are news: every zone is evaluated again.
    watcher.evaluated.clear()
    network.expires = 9500.0
    watcher.now = 80.0
    asyncio.run(watcher.observe(set(), set(), True))
    assert sorted(name for _, name in watcher.evaluated) == ["alpha", "beta", "gamma"]


# ---- a zone due again whose stored Zone did not change is not evaluated in full


def served_zone() -> tuple[FakeApiServer, Operator, list[MonitoredZone]]:
    """The harness's Zone on its SecondaryServer, whose replica pods run: what is monitored."""
    api = declared_namespace()
    operator = start_operator(api)
    operator.catch_up()
    run_statefulset(api, NS, "edge")
    operator.catch_up()
    return api, operator, operator.controller.monitored_zones()


def test_a_due_zone_is_evaluated_in_full_only_when_its_stored_zone_changed_or_lately_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api, operator, zones = served_zone()
    network = Network(zones)
    monkeypatch.setattr(monitor_module, "fetch_raw", network.fetch_raw)
    monkeypatch.setattr(monitor_module, "probe_all", network.probe_all)
    watcher = operator.monitor
    now = 0.0
    watcher.clock = lambda: now
    full: list[float] = []
    record = watcher.record

    def counted(*args: Any, **kwargs: Any) -> Any:
        full.append(now)
        return record(*args, **kwargs)

    monkeypatch.setattr(watcher, "record", counted)
    asyncio.run(watcher.round())
    assert full == [0.0]
    (ref,) = [zone.ref for zone in zones]
    assert condition(api.get(API, "Zone", NS, ref.name), "Synced")["status"] == "True"

    def report_rounds(until: float) -> None:
        nonlocal now
        while now + 10.0 <= until:
            now += 10.0
            asyncio.run(watcher.observe(set(), set(), True))

    # Due within the minute, the stored Zone as evaluated: a cache lookup only.
    report_rounds(120.0)
    assert full == [0.0]
    # Someone edits its status: put right when it is next due.
    zone = api.get(API, "Zone", NS, ref.name)
    assert zone is not None
    api.set_status(zone, {"conditions": []})
    operator.sync_caches()
    report_rounds(180.0)
    assert len(full) == 2 and 120.0 < full[1] <= 180.0
    assert condition(api.get(API, "Zone", NS, ref.name), "Synced")["status"] == "True"
    # And in full at least every FULL_RECHECK_SECONDS whatever happens.
    report_rounds(full[1] + FULL_RECHECK_SECONDS + RECHECK_SECONDS + 10.0)
    assert len(full) == 3 and full[2] - full[1] >= FULL_RECHECK_SECONDS
    # A status write that fails is tried again at the zone's next turn.
    api.set_status(zone, {"conditions": []})
    operator.sync_caches()
    path = api.path_of(zone) + "/status"
    api.fail("PATCH", path, ApiException(status=500, reason="etcd is down"), times=1)
    started = len(full)
    report_rounds(now + RECHECK_SECONDS)
    report_rounds(now + RECHECK_SECONDS)
    assert len(full) == started + 2  # the failed write, then the one that succeeds
    assert condition(api.get(API, "Zone", NS, ref.name), "Synced")["status"] == "True"


# ---- a step between report rounds looks at the zones it asks about, not at all of them


class WalkedZones(dict[ObjectRef, MonitoredZone]):
    """The monitored zones, counting every walk over all of them."""

    walks = 0

    def __iter__(self) -> Any:
        self.walks += 1
        return super().__iter__()


def test_a_step_between_report_rounds_does_not_walk_every_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The primaries' budget makes a step every 0.25 s: its work must not grow with the
    number of zones (a set of every ref was 0.2 ms a step at 10,000 zones)."""
    zones = [monitored(name) for name in ("alpha", "beta", "gamma")]
    network = Network(zones)
    asked: list[str] = []

    async def probe_all(requests: Any, **kwargs: Any) -> list[ProbeResult]:
        asked.extend(zone.to_text() for zone, _ in requests)
        return await network.probe_all(requests, **kwargs)

    monkeypatch.setattr(monitor_module, "fetch_raw", network.fetch_raw)
    monkeypatch.setattr(monitor_module, "probe_all", probe_all)
    watcher = CountingMonitor(zones)
    asyncio.run(watcher.round())
    walked = WalkedZones(watcher._zones)
    watcher._zones = walked
    asked.clear()
    watcher.now = 1.0
    asyncio.run(watcher.observe({zones[1].ref}, set(), False))
    assert asked == ["beta.example."]
    assert walked.walks == 0
    # A hot zone: its replicas are asked by SOA, still without a walk over every zone.
    asked.clear()
    asyncio.run(watcher.observe(set(), {zones[2].ref}, False))
    assert asked == ["gamma.example."] * 3
    assert walked.walks == 0


def test_a_report_round_waits_for_agents_whose_fresh_look_takes_longer_than_a_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At thousands of zones an agent's fresh look (named's statistics channel) takes
    seconds; a report given up after the SOA probe's timeout made the round ask every
    zone of that replica by SOA instead."""
    zones = [monitored(name) for name in ("alpha", "beta", "gamma")]
    network = Network(zones)
    look_seconds = 3.0  # longer than the monitor's SOA timeout (2 s)
    asked: list[int] = []

    async def slow_agents(addresses: Any, *args: Any, timeout: float, **kwargs: Any) -> Any:
        return await network.fetch_raw(addresses) if timeout > look_seconds else {}

    async def probes(requests: Any, **kwargs: Any) -> list[ProbeResult]:
        asked.append(sum(1 for _, target in requests if target.address in network.replicas))
        return await network.probe_all(requests, **kwargs)

    monkeypatch.setattr(monitor_module, "fetch_raw", slow_agents)
    monkeypatch.setattr(monitor_module, "probe_all", probes)
    watcher = CountingMonitor(zones)
    assert watcher.timeout < look_seconds
    asyncio.run(watcher.round())
    asked.clear()
    watcher.now = 10.0
    asyncio.run(watcher.observe(set(), set(), True))
    # The reports answered every replica's serial: only the spot checks (2 a replica).
    assert sum(asked) == len(REPLICAS) * monitor_module.SPOT_CHECKS


# ---- the zones evaluated in a step are written by every writer at once, to the last


class BlockingMonitor(CountingMonitor):
    """`record` (an evaluation and its status write) waits as a request to the API would."""

    def __init__(self, zones: list[MonitoredZone], wait: Any) -> None:
        super().__init__(zones)
        self.wait = wait

    def record(self, zone: MonitoredZone, *args: Any, **kwargs: Any) -> None:
        self.wait(zone.ref.name)
        super().record(zone, *args, **kwargs)


def evaluate_in_a_small_default_executor(
    watcher: SerialMonitor, zones: list[MonitoredZone]
) -> None:
    """`_evaluate_all` of every zone, in an event loop whose default executor has 2
    threads (asyncio's default is cpu_count + 4: 6 on the 2-core machine measured)."""

    watcher._evaluated.clear()  # as if never evaluated: each zone is evaluated again

    async def evaluate() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
        await watcher._evaluate_all([zone.ref for zone in zones])

    asyncio.run(evaluate())


def test_every_status_writer_writes_at_once_whatever_the_default_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """16 writers asked of asyncio's default executor were 6 at most (bench/scale.py)."""
    zones = [monitored(f"z{index}") for index in range(monitor_module.STATUS_WRITERS)]
    network = Network(zones)
    monkeypatch.setattr(monitor_module, "fetch_raw", network.fetch_raw)
    monkeypatch.setattr(monitor_module, "probe_all", network.probe_all)
    # Every writer holds its zone until all of them hold one (a deadlock guard, not a
    # measure: it only runs out when the writers are fewer than STATUS_WRITERS).
    together = threading.Barrier(monitor_module.STATUS_WRITERS, timeout=30)
    watcher = BlockingMonitor(zones, lambda name: together.wait())
    asyncio.run(watcher.round())
    assert len(watcher.evaluated) == len(zones)
    watcher.evaluated.clear()
    evaluate_in_a_small_default_executor(watcher, zones)
    assert sorted(name for _, name in watcher.evaluated) == sorted(z.ref.name for z in zones)


def test_a_slow_status_write_holds_up_no_other_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zones are handed to writers one at a time: a writer busy with a slow zone does not
    keep zones of its own waiting (fixed shares of the zones did, to the end of a step)."""
    zones = [monitored(f"z{index:02d}") for index in range(3 * monitor_module.STATUS_WRITERS)]
    network = Network(zones)
    monkeypatch.setattr(monitor_module, "fetch_raw", network.fetch_raw)
    monkeypatch.setattr(monitor_module, "probe_all", network.probe_all)
    others_done = threading.Event()
    written: list[str] = []
    guard = threading.Lock()

    def wait(name: str) -> None:
        if name == zones[0].ref.name and watcher.evaluated:
            # The slow write: it ends only once every other zone is written (the guard
            # runs out only if some zone waits behind it).
            assert others_done.wait(timeout=30), "a zone waited behind a slow write"
            return
        with guard:
            written.append(name)
            if len(written) == len(zones) - 1:
                others_done.set()

    watcher = BlockingMonitor(zones, lambda name: None)
    asyncio.run(watcher.round())
    watcher.wait = wait
    evaluate_in_a_small_default_executor(watcher, zones)
    assert others_done.is_set()
    assert len(written) == len(zones) - 1


def test_a_step_evaluates_its_zones_a_batch_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 Zones served in one report were evaluated in one piece: every evaluation
    (about 6 KB) held until the last of 10,000 status writes, a peak of ~65 MiB the
    allocator kept once converged (bench/scale.py --allocators). Now EVALUATION_BATCH
    at a time, one batch after the other, each zone once."""
    zones = [monitored(f"z{index:02d}") for index in range(10)]
    network = Network(zones)
    monkeypatch.setattr(monitor_module, "fetch_raw", network.fetch_raw)
    monkeypatch.setattr(monitor_module, "probe_all", network.probe_all)
    monkeypatch.setattr(monitor_module, "EVALUATION_BATCH", 4)
    watcher = CountingMonitor(zones)
    batches: list[list[str]] = []
    record_all = watcher._record_all

    async def recording(work: Any, wall: float) -> Any:
        batches.append([zone.ref.name for zone, *_ in work])
        assert len(watcher.evaluated) == sum(map(len, batches[:-1])), "batches overlapped"
        return await record_all(work, wall)

    monkeypatch.setattr(watcher, "_record_all", recording)
    asyncio.run(watcher.round())
    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert sorted(name for batch in batches for name in batch) == [z.ref.name for z in zones]
    assert sorted(name for _, name in watcher.evaluated) == [z.ref.name for z in zones]


def test_a_report_round_asks_the_zones_a_report_leaves_out_within_a_budget_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica whose report lists none of its zones (they are loading there) had every
    zone asked by SOA in the round: 9,113 SOAs, a 23 s round in which nothing was
    evaluated, at 3,000 Zones. Now UNREPORTED_PROBES a round, in turn."""
    zones = [monitored(f"z{index}") for index in range(5)]
    network = Network(zones)
    silent = ADDRESSES[2]
    asked: list[tuple[str, str]] = []
    answering = {address: True for address in ADDRESSES}

    async def reports(addresses: Any, *args: Any, **kwargs: Any) -> dict[str, bytes]:
        fetched = await network.fetch_raw(addresses)
        fetched[silent] = ZonesDocument(None, {}).encode()
        return {address: raw for address, raw in fetched.items() if answering[address]}

    async def probes(requests: Any, **kwargs: Any) -> list[ProbeResult]:
        asked.extend((zone.to_text(), target.address) for zone, target in requests)
        return await network.probe_all(requests, **kwargs)

    monkeypatch.setattr(monitor_module, "fetch_raw", reports)
    monkeypatch.setattr(monitor_module, "probe_all", probes)
    monkeypatch.setattr(monitor_module, "UNREPORTED_PROBES", 2)
    watcher = CountingMonitor(zones)
    asyncio.run(watcher.round())
    asked_silent: list[list[str]] = []
    for now in (10.0, 20.0, 30.0):
        asked.clear()
        watcher.now = now
        asyncio.run(watcher.observe(set(), set(), True))
        asked_silent.append(sorted(zone for zone, address in asked if address == silent))
    assert [len(names) for names in asked_silent] == [2, 2, 2]
    every = {f"z{index}.example." for index in range(5)}
    assert set().union(*asked_silent) == every
    # A replica distrusted (it answered other than it reported), or whose agent did not
    # answer (no report will list its zones), is asked for every zone.
    watcher._distrusted[ADDRESSES[0]] = 1000.0
    answering[silent] = False
    asked.clear()
    watcher.now = 40.0
    asyncio.run(watcher.observe(set(), set(), True))
    assert {zone for zone, address in asked if address == ADDRESSES[0]} == every
    assert {zone for zone, address in asked if address == silent} == every
