"""Two operator replicas, one leader (a Lease), and a NOTIFY relay that does not need one.

Both operators and both relays run as processes with the chart's ServiceAccount
tokens (localcluster/release.py), the relays behind the chart's relay Service.
The leader is killed (SIGKILL, as when its node dies) and the other takes over
once the Lease runs out; nothing is written twice and no Zone status flaps.
While no operator leads, a NOTIFY from the primary to the relay Service still
reaches every replica (their SOA refresh is a day: only the NOTIFY explains it).
The figures are printed (pytest -s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.name
import pytest

from localcluster import release
from localcluster.cluster import LocalCluster
from localcluster.named import PrimaryServer, soa_serial
from localcluster.release import Installation, ReleaseProcess
from localcluster.scenario import (
    apply,
    demo_zone,
    ensure_namespace,
    kubectl_json,
    replica_addresses,
    run_operator,
    server_manifest,
    start_primary,
    wait_synced,
    zone_manifest,
    zone_status,
)
from localcluster.waiting import wait_for
from tests.cluster.operator_fixture import settled_objects, written_objects

pytestmark = pytest.mark.cluster
ORIGIN = dns.name.from_text("leader.test.")
SERVER = "edge"
ZONE_OBJECT = "leader"


@dataclass
class Fleet:
    cluster: LocalCluster
    namespace: str
    workdir: Path
    primary: PrimaryServer
    installation: Installation
    extra: list[ReleaseProcess] = field(default_factory=list)

    def leaders(self) -> list[ReleaseProcess]:
        return [
            p for p in self.installation.operators if p.alive() and p.metric("secondarydns_leader")
        ]

    def leader_and_standby(self) -> tuple[ReleaseProcess, ReleaseProcess]:
        """Two live operators, one of them leading (a killed one is replaced first)."""
        for index, process in enumerate(self.installation.operators):
            if not process.alive():
                replacement = release.start_operator(
                    self.cluster,
                    self.workdir / f"operator-{len(self.extra) + 2}.log",
                    identity=f"operator-{len(self.extra) + 2}",
                    probe_seconds=2,
                    resync_seconds=10,
                )
                self.extra.append(replacement)
                self.installation.operators[index] = replacement
                wait_for("the new operator's metrics", replacement.ready, timeout=60)
        leader: ReleaseProcess = wait_for(
            "one operator leading",
            lambda: found[0] if len(found := self.leaders()) == 1 else None,
            timeout=60,
        )
        standby = next(p for p in self.installation.operators if p is not leader)
        assert standby.metric("secondarydns_leader") == 0
        return leader, standby

    def lease_holder(self) -> str:
        lease = kubectl_json(
            self.cluster, "get", "lease", "-n", release.NAMESPACE, release.OPERATOR
        )
        return str(lease["spec"].get("holderIdentity") or "")


@pytest.fixture(scope="module")
def fleet(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("leader")
    namespace = f"leader-{int(time.time()) % 100000}"
    ensure_namespace(cluster, namespace)
    primary = start_primary(
        cluster, workdir / "primary", demo_zone(ORIGIN.to_text(), refresh=86400)
    )
    try:
        with run_operator(
            cluster,
            workdir / "operator.log",
            operators=2,
            relays=2,
            probe_seconds=2,
            resync_seconds=10,
        ) as installation:
            apply(
                cluster,
                namespace,
                primary.key.secret_manifest("transfer", namespace),
                server_manifest(SERVER, replicas=3),
                zone_manifest(ZONE_OBJECT, ORIGIN.to_text(), SERVER, "transfer"),
            )
            wait_synced(cluster, namespace, ZONE_OBJECT, timeout=240)
            fleet = Fleet(cluster, namespace, workdir, primary, installation)
            try:
                yield fleet
            finally:
                for process in fleet.extra:
                    process.stop()
    finally:
        primary.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_standby_takes_over_without_writing_twice(fleet: Fleet) -> None:
    leader, standby = fleet.leader_and_standby()
    assert fleet.lease_holder().startswith(f"{leader.identity}_")
    before = settled_objects(fleet.cluster, fleet.namespace)
    zone_before = zone_status(fleet.cluster, fleet.namespace, ZONE_OBJECT)
    server_before = kubectl_json(fleet.cluster, "get", "sdns", "-n", fleet.namespace, SERVER)
    writes_before = standby.metric("secondarydns_api_writes_total")

    killed = time.monotonic()
    leader.kill()
    wait_for(
        "the standby to lead",
        lambda: standby.metric("secondarydns_leader") == 1,
        timeout=60,
        every=0.1,
    )
    takeover = time.monotonic() - killed
    holder = fleet.lease_holder()
    print(f"\ntakeover after SIGKILL of the leader: {takeover:.1f}s (Lease held by {holder})")
    assert holder.startswith(f"{standby.identity}_")

    # The new leader reconciles everything once and then resyncs (every 10 s):
    # nothing may change, and no one else may have written.
    time.sleep(15)
    after = written_objects(fleet.cluster, fleet.namespace)
    changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    writes = standby.metric("secondarydns_api_writes_total") - writes_before
    print(f"API writes by the new leader (server-side applies that change nothing): {writes:.0f}")
    server_after = kubectl_json(fleet.cluster, "get", "sdns", "-n", fleet.namespace, SERVER)
    assert changed == {}, (changed, server_before["status"], server_after["status"])
    # No Zone status flapping: the very same status, not a rewritten one.
    assert zone_status(fleet.cluster, fleet.namespace, ZONE_OBJECT) == zone_before


def test_notify_reaches_every_replica_while_no_operator_leads(fleet: Fleet) -> None:
    leader, standby = fleet.leader_and_standby()
    addresses = replica_addresses(fleet.cluster, fleet.namespace, SERVER)
    assert len(addresses) == 3
    relayed_before = sum(
        r.metric("secondarydns_notify_relayed_total") for r in fleet.installation.relays
    )

    leader.kill()
    killed = bumped = time.monotonic()
    # The clock runs from before the primary's change (its zone write, reload, NOTIFY).
    serial = fleet.primary.set_record(ORIGIN, "during-takeover", "TXT", '"no leader"')
    seen: dict[str, float] = {}

    def everywhere() -> bool:
        for pod, address in addresses.items():
            if pod not in seen and soa_serial(ORIGIN, address, timeout=0.5) == serial:
                seen[pod] = time.monotonic() - bumped
        return len(seen) == len(addresses)

    wait_for("every replica at the new serial", everywhere, timeout=30, every=0.05)
    no_leader = standby.metric("secondarydns_leader") == 0
    print(
        f"\nNOTIFY to every replica while the leader was being replaced: "
        f"{max(seen.values()):.2f}s from the primary's change (its reload included) "
        f"({', '.join(f'{p}={s:.2f}s' for p, s in sorted(seen.items()))}); "
        f"{time.monotonic() - killed:.1f}s after the leader was killed, no leader yet: {no_leader}"
    )
    # Only the relay can have done it: no operator led (so no repair NOTIFY),
    # and the replicas' SOA refresh is a day.
    assert no_leader
    relayed = sum(r.metric("secondarydns_notify_relayed_total") for r in fleet.installation.relays)
    assert relayed - relayed_before >= 3

    wait_for("the standby to lead", lambda: standby.metric("secondarydns_leader") == 1, timeout=60)
    status: dict[str, Any] = wait_for(
        "the Zone's status at the new serial",
        lambda: (
            s
            if (s := zone_status(fleet.cluster, fleet.namespace, ZONE_OBJECT)).get("servedSerial")
            == serial
            else None
        ),
        timeout=60,
    )
    print(f"Zone status at the new serial {time.monotonic() - bumped:.1f}s after the change")
    assert status["replicasInSync"] == 3

    # The relays follow the Lease: the new leader is the one they wake now.
    wakeups = standby.metric("secondarydns_monitor_wakeups_total")
    bumped = time.monotonic()
    serial = fleet.primary.set_record(ORIGIN, "after-takeover", "TXT", '"new leader"')
    wait_for(
        "the relay to wake the new leader",
        lambda: standby.metric("secondarydns_monitor_wakeups_total") > wakeups,
        timeout=30,
    )
    wait_for(
        "the Zone's status at the next serial",
        lambda: (
            zone_status(fleet.cluster, fleet.namespace, ZONE_OBJECT).get("servedSerial") == serial
        ),
        timeout=30,
        every=0.1,
    )
    print(f"with a leader again: Zone status at the new serial {time.monotonic() - bumped:.2f}s")


def test_a_leader_stopped_cleanly_hands_over_at_once(fleet: Fleet) -> None:
    leader, standby = fleet.leader_and_standby()
    stopped = time.monotonic()
    leader.stop()  # SIGTERM: a rolling update or a drain; the Lease is released
    wait_for(
        "the standby to lead",
        lambda: standby.metric("secondarydns_leader") == 1,
        timeout=60,
        every=0.1,
    )
    print(f"\nhandover after SIGTERM of the leader: {time.monotonic() - stopped:.1f}s")
    assert "released the lease" in leader.log_text()
