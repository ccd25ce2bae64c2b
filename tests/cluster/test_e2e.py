"""End to end on the local cluster: a real primary, the operator, real named pods.

The primary is a real BIND on a 10.x address of the cluster namespace that
NOTIFYs the operator's relay; the SecondaryServer's three pods run real named and
agents (the pod runner); the Zone's status comes from the operator's serial monitor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rdatatype
import pytest

from localcluster import netns, release
from localcluster.cluster import LocalCluster
from localcluster.named import PrimaryServer, soa_serial
from localcluster.scenario import (
    OperatorProcess,
    condition,
    replica_addresses,
    served_zone,
    zone_status,
)
from localcluster.waiting import wait_for

ORIGIN = dns.name.from_text("example.test.")
SERVER = "edge"
ZONE_OBJECT = "example"


@dataclass
class Setup:
    cluster: LocalCluster
    namespace: str
    primary: PrimaryServer
    operator: OperatorProcess

    def status(self) -> dict[str, Any]:
        return zone_status(self.cluster, self.namespace, ZONE_OBJECT)

    def zone(self) -> Any:
        result = self.cluster.kubectl(
            "get", "zone", "-n", self.namespace, ZONE_OBJECT, "-o", "json"
        )
        return json.loads(result.stdout)

    def replicas(self) -> dict[str, str]:
        return replica_addresses(self.cluster, self.namespace, SERVER)

    def wait_synced(self, serial: int, timeout: float = 90) -> dict[str, Any]:
        def synced() -> dict[str, Any] | None:
            zone = self.zone()
            status = zone.get("status") or {}
            cond = condition(zone, "Synced")
            if (
                status.get("primarySerial") == serial
                and status.get("servedSerial") == serial
                and status.get("replicasInSync") == 3
                and cond is not None
                and cond["status"] == "True"
            ):
                return zone
            return None

        found: dict[str, Any] = wait_for(f"Zone Synced at {serial}", synced, timeout=timeout)
        return found


@pytest.fixture(scope="module")
def setup(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("e2e")
    with served_zone(
        cluster, workdir, ORIGIN.to_text(), ZONE_OBJECT, {SERVER: ("bind9", 3)}, prefix="e2e"
    ) as served:
        setup = Setup(cluster, served.namespace, served.primary, served.operator)
        setup.wait_synced(served.primary.serial(ORIGIN) or 0, timeout=180)
        yield setup


def test_serial_bump_reaches_every_replica_and_status(setup: Setup) -> None:
    zone = setup.zone()
    # Published by itself: the relay Service's ClusterIP, the address the primary notifies.
    assert zone["status"]["notifyAddress"] == release.relay_service_address(setup.cluster)
    serial = setup.primary.set_record(ORIGIN, "www", "A", "192.0.2.80")
    addresses = setup.replicas()
    assert len(addresses) == 3
    wait_for(
        "every replica at the new serial",
        lambda: all(soa_serial(ORIGIN, a) == serial for a in addresses.values()),
        timeout=30,
        every=0.1,
    )
    synced = setup.wait_synced(serial)
    assert synced["status"]["synced"] == "3/3"
    replicas = synced["status"]["replicas"]
    assert {r["pod"] for r in replicas} == set(addresses)
    assert {r["failureDomain"] for r in replicas} == {"zone-a", "zone-b", "zone-c"}
    assert all(r["serial"] == serial and r["inSync"] for r in replicas)
    ready = condition(synced, "Ready")
    assert ready is not None and ready["status"] == "True", ready
    assert setup.operator.metric("secondarydns_notify_relayed_total") > 0
    # The relay told the leader too (its serial monitor probed fast).
    assert setup.operator.operator.metric("secondarydns_monitor_wakeups_total") > 0


def test_primary_down_is_reported_and_replicas_keep_answering(setup: Setup) -> None:
    serial = setup.primary.serial(ORIGIN)
    setup.primary.stop()
    try:
        unreachable = wait_for(
            "PrimaryUnreachable",
            lambda: (
                (c := condition(setup.zone(), "PrimaryUnreachable")) and c["status"] == "True" and c
            ),
            timeout=60,
        )
        assert "10.250.0.10" in unreachable["message"]
        addresses = setup.replicas()
        assert all(soa_serial(ORIGIN, a) == serial for a in addresses.values())
    finally:
        setup.primary.start()
    wait_for(
        "PrimaryUnreachable to clear",
        lambda: (c := condition(setup.zone(), "PrimaryUnreachable")) and c["status"] == "False",
        timeout=60,
    )
    bumped = setup.primary.set_record(ORIGIN, "www", "A", "192.0.2.81")
    setup.wait_synced(bumped)


def test_serial_regression_is_reported_with_recovery_steps(setup: Setup) -> None:
    replicas_serial = setup.primary.serial(ORIGIN)
    assert replicas_serial is not None
    lower = replicas_serial - 100
    # How a serial really goes backwards: the zone is replaced (a restore, a new
    # tool) and the primary starts from the file; BIND refuses a lower serial on
    # a mere reload while it keeps a journal for IXFR.
    setup.primary.stop()
    zone_file = setup.primary.zone_path(ORIGIN)
    zone_file.with_name(zone_file.name + ".jnl").unlink(missing_ok=True)
    zone = setup.primary.zone(ORIGIN)
    with zone.writer() as txn:
        soa = txn.get(dns.name.empty, dns.rdatatype.SOA)
        (rdata,) = list(soa)
        txn.replace(dns.name.empty, soa.ttl, rdata.replace(serial=lower))
    setup.primary.start()
    regressed = wait_for(
        "SerialRegressed",
        lambda: (c := condition(setup.zone(), "SerialRegressed")) and c["status"] == "True" and c,
        timeout=60,
    )
    message = regressed["message"]
    assert str(replicas_serial) in message and str(lower) in message
    step = (replicas_serial + 2**31 - 1) % 2**32
    assert str(step) in message, message
    # Replicas never follow a serial that went backwards (RFC 1982): still the old one.
    assert all(soa_serial(ORIGIN, a) == replicas_serial for a in setup.replicas().values())

    # Recovery as the message says, shortened: one step past the replicas.
    with zone.writer() as txn:
        soa = txn.get(dns.name.empty, dns.rdatatype.SOA)
        (rdata,) = list(soa)
        txn.replace(dns.name.empty, soa.ttl, rdata.replace(serial=replicas_serial + 1))
    setup.primary.serve_zone(zone)
    setup.wait_synced(replicas_serial + 1)
    cleared = condition(setup.zone(), "SerialRegressed")
    assert cleared is not None and cleared["status"] == "False"


def test_deleted_replica_shows_missing_then_comes_back_in_sync(setup: Setup) -> None:
    serial = setup.primary.serial(ORIGIN)
    victim = f"{SERVER}-1"
    setup.cluster.kubectl("delete", "pod", "-n", setup.namespace, victim, "--wait=false")
    seen_missing = wait_for(
        "the deleted replica to show as not in sync",
        lambda: (s := setup.status()).get("replicasInSync", 3) < 3 and s,
        timeout=60,
        every=0.1,
    )
    entry = next(r for r in seen_missing["replicas"] if r["pod"] == victim)
    assert entry["inSync"] is False
    assert seen_missing["synced"].endswith("/3")
    setup.wait_synced(serial or 0, timeout=120)


def test_notify_from_unlisted_address_is_dropped(setup: Setup) -> None:
    stranger = "10.250.0.99"
    netns.require_inside(setup.cluster.netns)
    netns.add_address(setup.cluster.netns, stranger)
    rejected_before = setup.operator.metric(
        "secondarydns_notify_rejected_total", 'reason="unknown_source"'
    )
    relayed_before = setup.operator.metric("secondarydns_notify_relayed_total")
    notify = dns.message.make_query(ORIGIN, dns.rdatatype.SOA)
    notify.set_opcode(dns.opcode.NOTIFY)
    with pytest.raises(dns.exception.Timeout):  # dropped: no answer at all
        relay_service = release.relay_service_address(setup.cluster)
        dns.query.udp(notify, relay_service, port=53, source=stranger, timeout=2)
    wait_for(
        "the rejection to be counted",
        lambda: (
            setup.operator.metric("secondarydns_notify_rejected_total", 'reason="unknown_source"')
            > rejected_before
        ),
        timeout=10,
    )
    time.sleep(1)
    assert setup.operator.metric("secondarydns_notify_relayed_total") == relayed_before


def test_retransfer_request_makes_every_replica_transfer_in_full(setup: Setup) -> None:
    serial = setup.primary.serial(ORIGIN) or 0
    setup.wait_synced(serial, timeout=120)

    def full_transfers() -> int:
        return sum(1 for kind, _ in setup.primary.outgoing_transfers(ORIGIN) if kind == "AXFR")

    before = full_transfers()
    patch = json.dumps({"spec": {"retransferRequest": "e2e-ticket-1"}})
    started = time.monotonic()
    setup.cluster.kubectl(
        "patch", "zone", "-n", setup.namespace, ZONE_OBJECT, "--type=merge", "-p", patch
    )
    # One AXFR per replica at an unchanged serial: only the request asks for them.
    wait_for(
        "three more full transfers", lambda: full_transfers() >= before + 3, timeout=30, every=0.05
    )
    transferred = time.monotonic() - started
    wait_for(
        "status.retransferRequest to show the request",
        lambda: setup.status().get("retransferRequest") == "e2e-ticket-1",
        timeout=60,
        every=0.1,
    )
    print(
        f"\nretransferRequest -> 3 AXFRs {transferred:.2f}s, "
        f"-> status.retransferRequest {time.monotonic() - started:.2f}s"
    )
    assert setup.primary.serial(ORIGIN) == serial
    events = setup.cluster.kubectl(
        "get", "events", "-n", setup.namespace, "-o", "json",
        "--field-selector", f"involvedObject.name={ZONE_OBJECT},reason=RetransferRequested",
    )  # fmt: skip
    messages = [item["message"] for item in json.loads(events.stdout)["items"]]
    assert messages and "e2e-ticket-1" in messages[0], messages
    setup.wait_synced(serial, timeout=60)
    # Nothing else asks again: no further full transfers without a new request.
    settled = full_transfers()
    time.sleep(3)
    assert full_transfers() == settled
