"""The serial monitor against real engines: every zone's serial in one /zones call per replica.

A real primary, one replica pod (the real engine, named or knotd, with the real
agent serving /zones on the pod address) and the operator's SerialMonitor:
what the monitor asked (SOA queries, agent reports) and what it concluded
(the replica serial gauges a user scrapes, the zone's memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import pytest
from prometheus_client import REGISTRY

from localcluster.named import NamedFleet, PrimaryServer, TsigCredentials, free_port, make_zone
from secondary_dns.agent.endpoints import AgentHTTPServer
from secondary_dns.api import ObjectRef
from secondary_dns.api.agent_contract import ZonesDocument, ZoneState
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.relay import NotifyRelay
from secondary_dns.handlers import monitor as monitor_module
from secondary_dns.handlers.monitor import SerialMonitor
from secondary_dns.handlers.targets import MonitoredZone
from secondary_dns.handlers.zone_status import ZoneStatusWriter
from secondary_dns.k8s.api import Cluster
from secondary_dns.status.serial import ReplicaTarget
from tests.agent_configs import RELAY_KEY, PrimaryZone
from tests.dataplane.agent_harness import AgentPod
from tests.dataplane.engines import Engine
from tests.fake_cluster import FakeApiServer, custom_resource

NS = "dns"
ZONES = [f"z{i:02d}.test." for i in range(20)]
POD = "edge-0"


def monitored(zones: list[str], primary: str, replica: str, engine: str) -> list[MonitoredZone]:
    target = ReplicaTarget(POD, "edge", None, replica, engine=engine)
    return [
        MonitoredZone(
            ref=ObjectRef(NS, zone.rstrip(".").replace(".", "-")),
            name=dns.name.from_text(zone),
            primaries=(ProbeTarget(primary),),
            primary_keys=(),
            notify_sources=(),
            replicas=((target, RELAY_KEY),),
        )
        for zone in zones
    ]


def make_monitor(zones: list[MonitoredZone], agent_port: int, **options: object) -> SerialMonitor:
    api = FakeApiServer()
    for zone in zones:
        api.apply(custom_resource("Zone", NS, zone.ref.name, {"zone": zone.name.to_text()}))
    writer = ZoneStatusWriter(Cluster(api), lambda *_: None, lambda: "2026-01-01T00:00:00Z")
    return SerialMonitor(
        lambda: zones,
        writer,
        None,
        agent_port=agent_port,
        repair=False,
        **options,  # type: ignore[arg-type]
    )


def replica_serial(monitor: SerialMonitor, zone: MonitoredZone) -> int | None:
    return monitor.histories[zone.ref].replicas[POD].serial


def scraped_serial(zone: MonitoredZone, engine: str) -> float | None:
    return REGISTRY.get_sample_value(
        "secondarydns_replica_serial",
        {
            "namespace": NS,
            "zone": zone.name.to_text(),
            "server": "edge",
            "pod": POD,
            "engine": engine,
        },
    )


@pytest.fixture
def primary(fleet: NamedFleet, transfer_key: TsigCredentials) -> PrimaryServer:
    return fleet.start_primary([make_zone(zone, serial=1) for zone in ZONES], transfer_key)


@pytest.fixture
def pod(
    fleet: NamedFleet,
    transfer_key: TsigCredentials,
    primary: PrimaryServer,
    tmp_path: Path,
    engine: Engine,
) -> Iterator[AgentPod]:
    address = fleet.address()
    listen = f"{address}:{free_port()}"
    with AgentPod(tmp_path / "pod", address, transfer_key, engine.name, listen) as agent_pod:
        agent_pod.publish(agent_pod.bundle([PrimaryZone(z, primary.address) for z in ZONES]))
        for zone in ZONES:
            agent_pod.wait_until_serving(zone, 1)
        yield agent_pod


def test_replica_serials_come_from_one_report_per_pod_not_a_query_per_zone(
    primary: PrimaryServer, pod: AgentPod, engine: Engine
) -> None:
    zones = monitored(ZONES, primary.address, pod.address, engine.name)
    monitor = make_monitor(zones, pod.http.port)
    # The first round has no SOA to match the reported serials with: it asks.
    asyncio.run(monitor.round())
    assert [replica_serial(monitor, zone) for zone in zones] == [1] * len(ZONES)

    asked = dict(monitor.queries)
    asyncio.run(monitor.round())
    replica_queries = monitor.queries["replica"] - asked["replica"]
    # One /zones answer for 20 zones; SOA queries only for the spot checks.
    assert monitor.queries["report"] - asked["report"] == 1
    assert replica_queries == monitor.spot_checks == 2
    assert [replica_serial(monitor, zone) for zone in zones] == [1] * len(ZONES)
    assert scraped_serial(zones[0], engine.name) == 1

    # A change the replica transferred shows at the next round, at its new serial.
    changed = zones[5]
    serial = primary.set_record(changed.name, "www", "A", "192.0.2.80")
    primary.notify(pod.dns, changed.name)
    pod.wait_until_serving(changed.name.to_text(), serial)
    asyncio.run(monitor.round())
    assert replica_serial(monitor, changed) == serial == 2
    assert scraped_serial(changed, engine.name) == 2
    assert [replica_serial(monitor, z) for z in zones if z is not changed] == [1] * 19
    assert monitor.report_mismatches == 0


def test_a_replica_answering_older_than_it_reports_is_caught_by_spot_checks(
    primary: PrimaryServer, pod: AgentPod, engine: Engine
) -> None:
    # The pod's agent says every zone is at serial 2; the engine serves 1 (the
    # primary moved to 2 without telling it, and its refresh is an hour away).
    zones = monitored(ZONES[:3], primary.address, pod.address, engine.name)
    for zone in zones:
        assert primary.set_record(zone.name, "www", "A", "192.0.2.81") == 2
    claims = ZonesDocument(None, {zone.name: ZoneState(serial=2) for zone in zones}).encode()
    liar = AgentHTTPServer(
        f"{pod.address}:0", lambda: (True, ""), lambda: (True, ""), REGISTRY, lambda _: claims
    )
    liar.start()
    try:
        monitor = make_monitor(zones, liar.port, spot_checks=1)
        asyncio.run(monitor.round())
        asyncio.run(monitor.round())
        # The second round took the report for every zone, and its one spot check
        # found the lie: that zone shows what the replica answers.
        assert monitor.report_mismatches == 1
        assert sorted(replica_serial(monitor, zone) for zone in zones) == [1, 2, 2]
        assert pod.dns.serial(zones[0].name) == 1

        # From then on the replica is asked by SOA for every zone.
        asked = monitor.queries["replica"]
        asyncio.run(monitor.round())
        assert monitor.queries["replica"] - asked == len(zones)
        assert [replica_serial(monitor, zone) for zone in zones] == [1] * len(zones)
    finally:
        liar.stop()


def notify_from(source: str, zone: dns.name.Name, address: str, port: int) -> None:
    """The primary's NOTIFY (RFC 1996), sent from its address to the relay."""
    request = dns.message.make_query(zone, "SOA")
    request.flags = dns.flags.AA
    request.set_opcode(dns.opcode.NOTIFY)
    response = dns.query.udp(request, address, port=port, timeout=2, source=source)
    assert response.rcode() == dns.rcode.NOERROR


def test_one_notify_makes_only_the_notified_zone_probed_fast(
    fleet: NamedFleet,
    transfer_key: TsigCredentials,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13 item 5: one accepted NOTIFY used to make the monitor probe every zone of
    every tenant every 0.5 s (40 zones: 0 -> 1,280 SOA queries per 5 s)."""
    names = [f"n{i:02d}.test." for i in range(40)]
    primary = fleet.start_primary([make_zone(zone, serial=1) for zone in names], transfer_key)
    agent_port = free_port()
    relay_address = fleet.address()
    with contextlib.ExitStack() as stack:
        pods = []
        for index in range(3):
            address = fleet.address()
            pod = stack.enter_context(
                AgentPod(
                    tmp_path / f"pod-{index}",
                    address,
                    transfer_key,
                    "bind9",
                    f"{address}:{agent_port}",
                )
            )
            pod.publish(pod.bundle([PrimaryZone(z, primary.address) for z in names]))
            pods.append(pod)
        for pod in pods:
            for zone in names:
                pod.wait_until_serving(zone, 1)
        network = (ipaddress.ip_network(f"{primary.address}/32"),)
        zones = [
            MonitoredZone(
                ref=ObjectRef(NS, zone.rstrip(".").replace(".", "-")),
                name=dns.name.from_text(zone),
                primaries=(ProbeTarget(primary.address),),
                primary_keys=(),
                notify_sources=network,
                replicas=tuple(
                    (
                        ReplicaTarget(f"edge-{i}", "edge", None, pod.address, engine="bind9"),
                        RELAY_KEY,
                    )
                    for i, pod in enumerate(pods)
                ),
            )
            for zone in names
        ]
        asked: list[tuple[float, dns.name.Name, str]] = []
        real_probe_all = monitor_module.probe_all

        async def recording(requests: Any, **options: Any) -> Any:
            for request in requests:
                kind = "primary" if request[1].address == primary.address else "replica"
                asked.append((time.monotonic(), request[0], kind))
            return await real_probe_all(requests, **options)

        monkeypatch.setattr(monitor_module, "probe_all", recording)
        notified = zones[17]

        async def scenario() -> tuple[Counter[str], Counter[str], Counter[str], float]:
            relay = NotifyRelay()
            monitor = make_monitor(zones, agent_port)
            monitor.relay = relay
            relay.on_notify = lambda route: monitor.notified(route.ref)
            relay.on_fanned_out = lambda route, serial: monitor.notified(route.ref, serial)
            await relay.start(relay_address, 0)
            task = asyncio.create_task(monitor.run())
            try:

                def all_synced(serial: int, only: list[MonitoredZone]) -> bool:
                    return all(
                        z.ref in monitor.histories
                        and all(
                            r.serial == serial for r in monitor.histories[z.ref].replicas.values()
                        )
                        and monitor.histories[z.ref].primary_serial == serial
                        for z in only
                    )

                while not all_synced(1, zones):
                    await asyncio.sleep(0.05)
                # A steady window, after the first look at everything has settled.
                await asyncio.sleep(5)
                steady_from = time.monotonic()
                await asyncio.sleep(5)
                steady = window(asked, steady_from, steady_from + 5, notified)
                serial = await asyncio.to_thread(
                    primary.set_record, notified.name, "www", "A", "192.0.2.90"
                )
                started = time.monotonic()
                await asyncio.to_thread(
                    notify_from, primary.address, notified.name, relay_address, relay.bound_port
                )
                while not all_synced(serial, [notified]):
                    await asyncio.sleep(0.005)
                synced_after = time.monotonic() - started
                await asyncio.sleep(max(0.0, started + 5 - time.monotonic()))
                after = window(asked, started, started + 5, notified)
                others_replica = Counter(
                    kind
                    for at, zone, kind in asked
                    if started <= at < started + 5 and zone != notified.name and kind == "replica"
                )
                return steady, after, others_replica, synced_after
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await relay.stop()

        steady, after, others_replica, synced_after = asyncio.run(scenario())
    print(
        f"\n40 zones, 3 replicas: SOA queries in 5 s, steady: {dict(steady)}; "
        f"in the 5 s after one NOTIFY: {dict(after)}; "
        f"the notified zone's status in sync {synced_after * 1000:.0f} ms after the NOTIFY"
    )
    # The notified zone was asked fast; every other zone only as in steady state:
    # their replicas at most by the report rounds' spot checks (2 per replica).
    assert after["notified replica"] >= 3
    assert others_replica["replica"] <= 2 * 3
    assert after["other primary"] <= steady["other primary"] + 40


def window(
    asked: list[tuple[float, dns.name.Name, str]], start: float, end: float, notified: MonitoredZone
) -> Counter[str]:
    """Queries between two times: (notified|other) (primary|replica)."""
    return Counter(
        f"{'notified' if zone == notified.name else 'other'} {kind}"
        for at, zone, kind in asked
        if start <= at < end
    )


def test_a_change_no_notify_announced_is_notified_to_the_replicas_by_the_monitor(
    primary: PrimaryServer, pod: AgentPod, engine: Engine
) -> None:
    """A primary that delays or loses its NOTIFY: its next probe sees the change, and the
    monitor NOTIFYs the replicas behind it at once (no repair grace: an hour here, as the
    zone's refresh, so nothing else could make the replica transfer)."""
    zones = monitored(ZONES[:4], primary.address, pod.address, engine.name)
    monitor = make_monitor(zones, pod.http.port, repair_grace=3600.0)
    monitor.repair = True
    changed = zones[2]

    async def scenario() -> float:
        task = asyncio.create_task(monitor.run())
        try:
            while not all(
                z.ref in monitor.histories and replica_serial(monitor, z) == 1 for z in zones
            ):
                await asyncio.sleep(0.05)
            serial = await asyncio.to_thread(
                primary.set_record, changed.name, "www", "A", "192.0.2.91"
            )
            served = time.monotonic()
            while pod.dns.serial(changed.name) != serial:
                assert time.monotonic() - served < 60, "the replica never got the change"
                await asyncio.sleep(0.005)
            return time.monotonic() - served
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    seconds = asyncio.run(scenario())
    print(
        f"\n{engine.name}: a change without NOTIFY served by the replica "
        f"{seconds * 1000:.0f} ms later"
    )
    assert [pod.dns.serial(z.name) for z in zones if z is not changed] == [1, 1, 1]
