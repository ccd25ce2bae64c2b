"""Two operator replicas, one leader (a Lease), and a NOTIFY relay that does not need one.

The chart's Deployments as users get them: 2 operator and 2 relay pods of this
tree's image, run by the pod runner with runc, with in-cluster credentials
(localcluster/release.py, running_pods), the relay pods behind the relay
Service. The leader's container is SIGKILLed through the pod runner's record
of it (as when its node dies: no clean-up, no Lease released) and the standby
pod takes over once the Lease runs out; nothing is written twice and no Zone
status flaps. While no operator leads, a NOTIFY from the primary to the relay
Service still reaches every replica (their SOA refresh is a day: only the
NOTIFY explains it). A leader pod deleted (`kubectl delete pod`: SIGTERM, the
Lease released) hands over at once. The figures are printed (pytest -s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.name
import pytest

from localcluster import release
from localcluster.cluster import LocalCluster
from localcluster.named import PrimaryServer, soa_serial
from localcluster.release import PodInstallation, ReleasePod
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
    installation: PodInstallation

    def leader_and_standby(self) -> tuple[ReleasePod, ReleasePod]:
        """Two Ready operator pods, one of them leading (a killed one restarted first)."""

        def found() -> tuple[ReleasePod, ReleasePod] | None:
            pods = self.installation.operators
            holder = self.lease_holder().rpartition("_")[0]
            if len(pods) != 2 or holder not in {p.name for p in pods}:
                return None
            leader = next(p for p in pods if p.name == holder)
            standby = next(p for p in pods if p is not leader)
            try:
                leading = (
                    leader.metric("secondarydns_leader"),
                    standby.metric("secondarydns_leader"),
                )
            except OSError:
                return None
            return (leader, standby) if leading == (1, 0) else None

        pair: tuple[ReleasePod, ReleasePod] = wait_for(
            "two operator pods Ready, one leading", found, timeout=180
        )
        return pair

    def lease_holder(self) -> str:
        lease = kubectl_json(
            self.cluster, "get", "lease", "-n", release.NAMESPACE, release.OPERATOR
        )
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def relayed(self) -> float:
        return sum(r.metric("secondarydns_notify_relayed_total") for r in self.installation.relays)


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
            assert isinstance(installation, PodInstallation)
            apply(
                cluster,
                namespace,
                primary.key.secret_manifest("transfer", namespace),
                server_manifest(SERVER, replicas=3),
                zone_manifest(ZONE_OBJECT, ORIGIN.to_text(), SERVER, "transfer"),
            )
            wait_synced(cluster, namespace, ZONE_OBJECT, timeout=240)
            yield Fleet(cluster, namespace, workdir, primary, installation)
    finally:
        primary.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_killed_leader_is_replaced_without_writing_twice(fleet: Fleet) -> None:
    leader, standby = fleet.leader_and_standby()
    assert fleet.lease_holder().startswith(f"{leader.identity}_")
    before = settled_objects(fleet.cluster, fleet.namespace)
    zone_before = zone_status(fleet.cluster, fleet.namespace, ZONE_OBJECT)
    server_before = kubectl_json(fleet.cluster, "get", "sdns", "-n", fleet.namespace, SERVER)
    writes_before = standby.metric("secondarydns_api_writes_total")

    old_holder = fleet.lease_holder()
    killed = time.monotonic()
    leader.kill()
    # Whoever sees the Lease unrenewed for a whole lease duration first takes it: the
    # standby (it saw the last renewal) or, when the pod runner restarts the killed
    # container within about a retry period, that container's new process (a new
    # identity). Either is a correct takeover; a node that really died leaves only
    # the standby, which the deletion test below shows.
    wait_for(
        "another operator process to lead",
        lambda: (
            fleet.lease_holder() not in ("", old_holder)
            and fleet.lease_holder().rpartition("_")[0] in {leader.name, standby.name}
        ),
        timeout=60,
        every=0.1,
    )
    takeover = time.monotonic() - killed
    holder = fleet.lease_holder()
    successor = standby if holder.startswith(f"{standby.identity}_") else leader
    wait_for(
        "the new holder to report leading",
        lambda: successor.metric("secondarydns_leader") == 1,
        timeout=60,
    )
    print(
        f"\ntakeover after SIGKILL of the leader pod's container: {takeover:.1f}s "
        f"(Lease held by {holder}, before by {old_holder}; "
        f"{'the standby pod' if successor is standby else 'the killed pod, restarted'})"
    )

    # The new leader reconciles everything once and then resyncs (every 10 s):
    # nothing may change, and no one else may have written.
    time.sleep(15)
    after = written_objects(fleet.cluster, fleet.namespace)
    changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    # A restarted process counts from 0; the standby from what it had written before.
    writes = successor.metric("secondarydns_api_writes_total") - (
        writes_before if successor is standby else 0
    )
    print(f"API writes by the new leader (server-side applies that change nothing): {writes:.0f}")
    server_after = kubectl_json(fleet.cluster, "get", "sdns", "-n", fleet.namespace, SERVER)
    assert changed == {}, (changed, server_before["status"], server_after["status"])
    assert writes == 0
    # No Zone status flapping: the very same status, not a rewritten one.
    assert zone_status(fleet.cluster, fleet.namespace, ZONE_OBJECT) == zone_before
    # The other pod waits as the standby and has written nothing.
    new_leader, waiting = fleet.leader_and_standby()
    assert new_leader.name == successor.name
    if waiting.name == leader.name:  # the killed container, restarted: a new process
        assert waiting.metric("secondarydns_api_writes_total") == 0
    else:
        assert waiting.metric("secondarydns_api_writes_total") == writes_before


def test_notify_reaches_every_replica_while_no_operator_leads(fleet: Fleet) -> None:
    leader, standby = fleet.leader_and_standby()
    addresses = replica_addresses(fleet.cluster, fleet.namespace, SERVER)
    assert len(addresses) == 3
    relayed_before = fleet.relayed()

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
    assert len(fleet.installation.relays) == 2
    assert fleet.relayed() - relayed_before >= 3

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


def test_a_leader_pod_deleted_hands_over_at_once(fleet: Fleet) -> None:
    leader, standby = fleet.leader_and_standby()
    old_holder = fleet.lease_holder()
    released_before = leader.log_text().count("released the lease")
    stopped = time.monotonic()
    # kubectl delete pod: SIGTERM (a rolling update, a drain); the Lease is released,
    # so whoever asks first takes it at once: the standby, or the Deployment's
    # replacement pod if it is up first (a released Lease needs no waiting).
    fleet.cluster.kubectl("delete", "pod", leader.name, "-n", release.NAMESPACE, "--wait=false")
    holder: str = wait_for(
        "another operator pod to hold the Lease",
        lambda: (h := fleet.lease_holder()) and h != old_holder and h,
        timeout=60,
        every=0.1,
    )
    handover = time.monotonic() - stopped
    taker = "the standby" if holder.startswith(f"{standby.identity}_") else "the replacement pod"
    print(f"\nhandover after deleting the leader pod: {handover:.1f}s (to {taker}, {holder})")
    assert not holder.startswith(f"{leader.identity}_")
    wait_for(
        "the deleted leader's log to say it released the Lease",
        lambda: leader.log_text().count("released the lease") > released_before,
        timeout=60,
    )
    # The Deployment's replacement makes two again, one leading.
    new_leader, new_standby = fleet.leader_and_standby()
    assert leader.name not in {new_leader.name, new_standby.name}
