"""Looking at the pods the pod runner runs: their status, and commands inside their containers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

from localcluster.cluster import LocalCluster
from localcluster.constants import RUNNER_POD_LABEL, RUNNER_POD_LABEL_VALUE
from localcluster.podstate import runc_root
from localcluster.waiting import wait_for

RUNC_PREFIX = "runc://"
PROJECT_LABELS = {RUNNER_POD_LABEL: RUNNER_POD_LABEL_VALUE}


def pod_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A bare Pod of the project (the label the pod runner selects), for runtime tests."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(PROJECT_LABELS)},
        "spec": spec,
    }


def get_pod(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def wait_pod(
    cluster: LocalCluster,
    namespace: str,
    name: str,
    what: str,
    ready: Callable[[dict[str, Any]], bool],
    timeout: float = 90,
) -> dict[str, Any]:
    """The Pod, once `ready(pod)` holds."""

    def check() -> dict[str, Any] | None:
        pod = get_pod(cluster, namespace, name)
        return pod if pod is not None and ready(pod) else None

    found: dict[str, Any] = wait_for(f"{name}: {what}", check, timeout)
    return found


def container_status(pod: dict[str, Any] | None, container: str) -> dict[str, Any]:
    for entry in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if entry["name"] == container:
            return dict(entry)
    return {}


def waiting_reason(pod: dict[str, Any] | None, container: str) -> str | None:
    waiting = (container_status(pod, container).get("state") or {}).get("waiting") or {}
    return waiting.get("reason")


def running_ids(pod: dict[str, Any]) -> dict[str, str]:
    """{container: runc ID} of the running containers, from the Pod's status."""
    ids = {}
    for entry in (pod.get("status") or {}).get("containerStatuses") or []:
        container_id = entry.get("containerID") or ""
        if "running" in (entry.get("state") or {}) and container_id.startswith(RUNC_PREFIX):
            ids[entry["name"]] = container_id.removeprefix(RUNC_PREFIX)
    return ids


def runc(
    cluster: LocalCluster, *args: str, check: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runc", "--root", str(runc_root(cluster.state_dir)), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def exec_in(
    cluster: LocalCluster, pod: dict[str, Any], container: str, *argv: str
) -> subprocess.CompletedProcess[str]:
    """`argv` inside a running container, as `kubectl exec` would run it (its user and caps)."""
    return runc(cluster, "exec", running_ids(pod)[container], *argv)


def container_pid(cluster: LocalCluster, container_id: str) -> int | None:
    state = runc(cluster, "state", container_id)
    if state.returncode != 0:
        return None
    document = json.loads(state.stdout)
    return int(document["pid"]) if document.get("status") == "running" else None


def proc_status(cluster: LocalCluster, pod: dict[str, Any], container: str) -> dict[str, str]:
    """/proc/self/status of a process run in the container: its ids, capabilities, flags."""
    result = exec_in(cluster, pod, container, "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    fields = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields
