"""The real operator against the test cluster: the chart's pods of this tree's image.

The tests start it exactly as the demo does (localcluster.scenario.run_operator:
`helm install`, 2 operator and 2 relay pods run by the pod runner); only the
resync is shorter, so that "a resync writes nothing" is seen quickly.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from localcluster import scenario
from localcluster.cluster import LocalCluster
from localcluster.scenario import OperatorProcess, apply, condition
from localcluster.waiting import wait_for

__all__ = [
    "OperatorProcess",
    "apply",
    "condition",
    "get_json",
    "run_operator",
    "Written",
    "written_objects",
    "settled_objects",
]

# Every kind the operator writes in a server's namespace.
WRITTEN_KINDS = (
    "secondaryservers",
    "zones",
    "configmaps",
    "secrets",
    "statefulsets",
    "services",
    "poddisruptionbudgets",
    "networkpolicies",
    "roles",
    "rolebindings",
    "serviceaccounts",
)
# kind/name -> (resourceVersion, field managers): a write that changes anything moves one.
Written = dict[str, tuple[str, tuple[str, ...]]]


def run_operator(
    cluster: LocalCluster, log: Path, resync_seconds: float = 3
) -> AbstractContextManager[OperatorProcess]:
    return scenario.run_operator(cluster, log, resync_seconds=resync_seconds)


def get_json(cluster: LocalCluster, *args: str) -> Any:
    return scenario.kubectl_json(cluster, "get", *args)


def written_objects(cluster: LocalCluster, namespace: str) -> Written:
    found: Written = {}
    for kind in WRITTEN_KINDS:
        listed = get_json(cluster, kind, "-n", namespace, "--show-managed-fields")
        for item in (listed or {"items": []})["items"]:
            metadata = item["metadata"]
            managers = tuple(sorted({m["manager"] for m in metadata.get("managedFields") or []}))
            found[f"{kind}/{metadata['name']}"] = (metadata["resourceVersion"], managers)
    return found


def settled_objects(cluster: LocalCluster, namespace: str, quiet: float = 4) -> Written:
    """written_objects once nothing has changed for `quiet` seconds (rollouts, first probes)."""

    def settled() -> Written | None:
        before = written_objects(cluster, namespace)
        time.sleep(quiet)
        after = written_objects(cluster, namespace)
        return after if after == before else None

    found: Written = wait_for("objects to settle", settled, timeout=120, every=0)
    return found
