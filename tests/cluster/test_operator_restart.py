"""An operator restart causes no churn: children and status keep their resourceVersions."""

from __future__ import annotations

import time
from pathlib import Path

from crdutil import install_crds
from localcluster.cluster import LocalCluster
from localcluster.waiting import wait_for
from tests.cluster.operator_fixture import (
    apply,
    condition,
    get_json,
    run_operator,
    settled_objects,
    written_objects,
)
from tests.cluster.test_operator import server, tsig_secret, zone


def test_restart_writes_nothing(cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    install_crds(cluster)
    with run_operator(cluster, tmp_path / "first.log") as first:
        apply(
            cluster,
            namespace,
            tsig_secret("transfer"),
            server("keep", replicas=3),
            zone("example", "example.com", ["keep"], secret="transfer"),
        )
        wait_for(
            "the Zone's ConfigValid",
            lambda: condition(get_json(cluster, "zone", "-n", namespace, "example"), "ConfigValid"),
        )
        # Running, not Ready: the zone's primary does not exist, and a replica is
        # Ready only once it has loaded every zone.
        wait_for(
            "3 running replicas",
            lambda: (
                sum(
                    1
                    for p in get_json(cluster, "pods", "-n", namespace)["items"]
                    if p["status"].get("phase") == "Running"
                )
                == 3
            ),
            timeout=90,
        )
        before = settled_objects(cluster, namespace)
        zone_before = get_json(cluster, "zone", "-n", namespace, "example")["status"]
        assert first.alive()

    with run_operator(cluster, tmp_path / "second.log") as second:
        # The new process has handled every object (events on startup and a resync).
        wait_for(
            "the restarted operator to reconcile",
            lambda: second.metric("secondarydns_reconciles_total") >= 2,
            timeout=60,
        )
        time.sleep(5)
        after = written_objects(cluster, namespace)
    changed = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    zone_after = get_json(cluster, "zone", "-n", namespace, "example")["status"]
    assert not changed, (
        f"objects written by the restarted operator: {changed}; "
        f"zone status before {zone_before}, after {zone_after}"
    )
    assert set(after) == set(before)
