"""A replica cut off from its primary is seen before its copy expires.

The blind spot of SOA probes: when the zone does not change, a replica that can
no longer refresh still answers the primary's serial. Here the primary refuses
one replica's queries while it answers the operator; only that replica's named
knows its refreshes fail (its expire time stops moving), and the agent's /zones
brings that to the Zone's status.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import dns.name
import pytest

from localcluster.cluster import LocalCluster
from localcluster.named import PrimaryServer, make_zone
from localcluster.scenario import (
    apply,
    condition,
    ensure_namespace,
    install_crds,
    replica_addresses,
    run_operator,
    server_manifest,
    start_primary,
    zone_manifest,
)
from localcluster.waiting import wait_for

ORIGIN = dns.name.from_text("cutoff.test.")
SERVER = "edge"
ZONE_OBJECT = "cutoff"
# Refresh every 2 s; expire after 40 s without a successful refresh, so the
# warning (half of expire) comes 20 s after the last one.
EXPIRE = 40


@pytest.fixture(scope="module")
def running(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, PrimaryServer]]:
    workdir = tmp_path_factory.mktemp("expiry")
    namespace = f"expiry-{uuid.uuid4().hex[:5]}"
    install_crds(cluster)
    ensure_namespace(cluster, namespace)
    zone = make_zone(ORIGIN, serial=7, refresh=2, retry=2, expire=EXPIRE)
    primary = start_primary(cluster, workdir / "primary", zone)
    try:
        with run_operator(cluster, workdir / "operator.log", probe_seconds=2):
            apply(
                cluster,
                namespace,
                primary.key.secret_manifest("transfer", namespace),
                server_manifest(SERVER, replicas=3),
                zone_manifest(
                    ZONE_OBJECT,
                    ORIGIN.to_text(),
                    SERVER,
                    "transfer",
                    timers={"minRefreshSeconds": 1, "minRetrySeconds": 1},
                ),
            )
            yield namespace, primary
    finally:
        primary.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_replica_that_cannot_refresh_is_reported_before_it_expires(
    cluster: LocalCluster, running: tuple[str, PrimaryServer]
) -> None:
    namespace, primary = running

    def zone() -> Any:
        import json

        result = cluster.kubectl("get", "zone", "-n", namespace, ZONE_OBJECT, "-o", "json")
        return json.loads(result.stdout)

    def state(type_: str) -> tuple[str, str, str]:
        found = condition(zone(), type_) or {}
        return found.get("status", ""), found.get("reason", ""), found.get("message", "")

    wait_for(
        "every replica in sync",
        lambda: state("Synced")[0] == "True" and state("Expiring")[0] == "False",
        timeout=180,
    )
    cut_off = "edge-0"
    primary.refuse(replica_addresses(cluster, namespace, SERVER)[cut_off])
    started = time.monotonic()
    expiring = wait_for(
        "Expiring to name the cut-off replica",
        lambda: (s := state("Expiring"))[0] == "True" and s,
        timeout=EXPIRE + 30,
    )
    print(f"\nrefresh refused -> Expiring True after {time.monotonic() - started:.1f}s")
    status, reason, message = expiring
    assert reason == "ExpiryApproaching"
    assert cut_off in message and "edge-1" not in message and "edge-2" not in message
    # Its answers are still right: probes alone would see nothing wrong.
    assert state("Synced")[0] == "True"
    ready = state("Ready")
    assert ready[0] == "False" and ready[1] == "ExpiryApproaching", ready

    primary.refuse()
    wait_for(
        "Expiring to clear once refreshes get through",
        lambda: state("Expiring")[0] == "False" and state("Ready")[0] == "True",
        timeout=30,
    )
