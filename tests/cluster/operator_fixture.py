"""The real operator (`secondary-dns operator`) as a process against the test cluster.

The tests start it exactly as the demo and the benchmark do (localcluster.scenario);
only the resync is shorter, so that "a resync writes nothing" is seen quickly.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from localcluster import scenario
from localcluster.cluster import LocalCluster
from localcluster.scenario import OperatorProcess, apply, condition

__all__ = ["OperatorProcess", "apply", "condition", "get_json", "run_operator"]


def run_operator(
    cluster: LocalCluster, log: Path, resync_seconds: float = 3
) -> AbstractContextManager[OperatorProcess]:
    return scenario.run_operator(cluster, log, resync_seconds=resync_seconds)


def get_json(cluster: LocalCluster, *args: str) -> Any:
    return scenario.kubectl_json(cluster, "get", *args)
