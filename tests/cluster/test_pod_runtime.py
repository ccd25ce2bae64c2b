"""The pod runner behaves as kubelet with containerd: images, security context, lifecycle.

Bare Pods of the project's image (and of the base image, which runs as root),
labelled as the project's pods are, so the pod runner runs them with runc; what
each test asserts is what a user of a real cluster would see in the Pod's
status, its events, or from inside the container.
"""

from __future__ import annotations

from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.scenario import apply, kubectl_json, tree_image
from localcluster.waiting import wait_for
from tests.cluster.pods import (
    container_status,
    exec_in,
    get_pod,
    pod_manifest,
    proc_status,
    wait_pod,
    waiting_reason,
)

# The image's own base: Debian as Docker Hub ships it, whose user is root.
ROOT_IMAGE = "docker.io/library/debian:bookworm-slim"
SLEEP = ["python3", "-c", "import time; time.sleep(3600)"]


@pytest.fixture(scope="module")
def project_image() -> str:
    return tree_image()


def _events(cluster: LocalCluster, namespace: str, pod: str) -> list[dict[str, Any]]:
    found = kubectl_json(
        cluster, "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={pod}"
    )
    return list((found or {}).get("items") or [])


def _messages(cluster: LocalCluster, namespace: str, pod: str) -> list[tuple[str, str]]:
    return [(e["reason"], e["message"]) for e in _events(cluster, namespace, pod)]


def _running(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any] | None:
    pod = get_pod(cluster, namespace, name)
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return pod if statuses and all("running" in s["state"] for s in statuses) else None


def test_a_missing_image_shows_err_image_pull_then_image_pull_back_off(
    cluster: LocalCluster, namespace: str
) -> None:
    missing = "ghcr.io/secondary-dns-operator/secondary-dns:0.0.0-missing"
    apply(
        cluster,
        namespace,
        pod_manifest("missing", {"containers": [{"name": "c", "image": missing}]}),
    )
    pod = wait_pod(
        cluster, namespace, "missing", "ImagePullBackOff",
        lambda p: waiting_reason(p, "c") == "ImagePullBackOff", timeout=60,
    )  # fmt: skip
    waiting = container_status(pod, "c")["state"]["waiting"]
    assert waiting["message"] == f'Back-off pulling image "{missing}"'
    assert pod["status"]["phase"] == "Pending"
    # Before the back-off, the pull failed: kubelet's events say so, and why.
    messages = _messages(cluster, namespace, "missing")
    assert ("Failed", "Error: ErrImagePull") in messages
    failed = [m for r, m in messages if r == "Failed" and m.startswith("Failed to pull image")]
    assert failed and "no registry here" in failed[0]


def test_image_pull_policy_never_does_not_look_further_than_local_storage(
    cluster: LocalCluster, namespace: str
) -> None:
    missing = "ghcr.io/secondary-dns-operator/secondary-dns:0.0.0-never"
    container = {"name": "c", "image": missing, "imagePullPolicy": "Never"}
    apply(cluster, namespace, pod_manifest("never", {"containers": [container]}))
    pod = wait_pod(
        cluster, namespace, "never", "ErrImageNeverPull",
        lambda p: waiting_reason(p, "c") == "ErrImageNeverPull", timeout=60,
    )  # fmt: skip
    assert container_status(pod, "c")["state"]["waiting"]["message"] == (
        f'Container image "{missing}" is not present with pull policy of Never'
    )


def test_a_root_image_with_run_as_non_root_is_refused(
    cluster: LocalCluster, namespace: str
) -> None:
    spec = {
        "securityContext": {"runAsNonRoot": True},
        "containers": [{"name": "c", "image": ROOT_IMAGE, "command": ["sleep", "600"]}],
    }
    apply(cluster, namespace, pod_manifest("rooted", spec))
    pod = wait_pod(
        cluster, namespace, "rooted", "CreateContainerConfigError",
        lambda p: waiting_reason(p, "c") == "CreateContainerConfigError", timeout=60,
    )  # fmt: skip
    uid = pod["metadata"]["uid"]
    assert container_status(pod, "c")["state"]["waiting"]["message"] == (
        f'container has runAsNonRoot and image will run as root (pod: "rooted_{namespace}({uid})", '
        "container: c)"
    )
    assert "containerID" not in container_status(pod, "c")  # nothing was created


def test_capabilities_user_memory_and_sysctls_are_the_pod_s(
    cluster: LocalCluster, namespace: str, project_image: str
) -> None:
    def container(name: str, user: int, add: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "image": project_image,
            "command": SLEEP,
            "securityContext": {
                "runAsUser": user,
                "runAsGroup": user,
                "capabilities": {"drop": ["ALL"], "add": add},
            },
            "resources": {"limits": {"memory": "48Mi"}},
        }

    spec = {
        "securityContext": {
            "supplementalGroups": [4000],
            "fsGroup": 3000,
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "1024"}],
        },
        "containers": [
            container("user", 1000, ["NET_BIND_SERVICE", "NET_RAW"]),
            container("root", 0, ["NET_BIND_SERVICE"]),
        ],
    }
    apply(cluster, namespace, pod_manifest("caps", spec))
    pod = wait_for("both containers running", lambda: _running(cluster, namespace, "caps"), 90)
    user, root = proc_status(cluster, pod, "user"), proc_status(cluster, pod, "root")
    # containerd puts an added capability in the bounding, effective and
    # permitted sets, never the ambient one: a non-root process has none left
    # after execve (kubernetes/kubernetes#56374); root keeps it.
    net_bind, net_raw = 1 << 10, 1 << 13
    assert int(user["CapBnd"], 16) == net_bind | net_raw
    assert int(user["CapEff"], 16) == int(user["CapPrm"], 16) == int(user["CapAmb"], 16) == 0
    assert int(root["CapEff"], 16) == int(root["CapBnd"], 16) == net_bind
    assert user["Uid"].split() == ["1000"] * 4 and user["Gid"].split() == ["1000"] * 4
    assert sorted(int(g) for g in user["Groups"].split()) == [1000, 3000, 4000]
    # The memory limit is the container's cgroup's (cgroup v1 here).
    limit = exec_in(cluster, pod, "user", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert int(limit.stdout) == 48 * 2**20
    # The pod's sysctl, in the pod's network namespace.
    sysctl = exec_in(cluster, pod, "user", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start")
    assert sysctl.stdout.strip() == "1024"


def test_a_container_over_its_memory_limit_is_oom_killed(
    cluster: LocalCluster, namespace: str, project_image: str
) -> None:
    spec = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "c",
                "image": project_image,
                "command": ["python3", "-c", "chunks = [bytearray(2**20) for _ in range(256)]"],
                "resources": {"limits": {"memory": "32Mi"}},
            }
        ],
    }
    apply(cluster, namespace, pod_manifest("hungry", spec))
    pod = wait_pod(
        cluster, namespace, "hungry", "the container to end",
        lambda p: "terminated" in (container_status(p, "c").get("state") or {}), timeout=90,
    )  # fmt: skip
    terminated = container_status(pod, "c")["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    assert pod["status"]["phase"] == "Failed"


def test_an_unsafe_sysctl_fails_the_pod(
    cluster: LocalCluster, namespace: str, project_image: str
) -> None:
    spec = {
        "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]},
        "containers": [{"name": "c", "image": project_image, "command": SLEEP}],
    }
    apply(cluster, namespace, pod_manifest("unsafe", spec))
    pod = wait_pod(
        cluster, namespace, "unsafe", "the pod to fail",
        lambda p: (p.get("status") or {}).get("phase") == "Failed", timeout=60,
    )  # fmt: skip
    assert pod["status"]["reason"] == "SysctlForbidden"
    assert (
        pod["status"]["message"]
        == 'Pod was rejected: forbidden sysctl: "kernel.msgmax" not allowlisted'
    )


def test_liveness_failure_restarts_the_container_with_kubelet_s_backoff(
    cluster: LocalCluster, namespace: str, project_image: str
) -> None:
    spec = {
        "terminationGracePeriodSeconds": 2,
        "containers": [
            {
                "name": "c",
                "image": project_image,
                "command": SLEEP,
                "livenessProbe": {
                    "exec": {"command": ["false"]},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            }
        ],
    }
    apply(cluster, namespace, pod_manifest("liveness", spec))
    seen: list[tuple[int, str | None, str]] = []

    def observe(wanted: str) -> bool:
        pod = get_pod(cluster, namespace, "liveness")
        status = container_status(pod, "c")
        state = status.get("state") or {}
        message = (state.get("waiting") or {}).get("message", "")
        seen.append((int(status.get("restartCount") or 0), waiting_reason(pod, "c"), message))
        return message.startswith(wanted)

    wait_for("a 10 s back-off", lambda: observe("back-off 10s restarting failed container=c"), 120)
    wait_for("a 20 s back-off", lambda: observe("back-off 20s restarting failed container=c"), 120)
    restarts = [count for count, reason, _ in seen if reason == "CrashLoopBackOff"]
    # The first failure restarts at once, the second waits 10 s, the third 20 s.
    assert restarts[0] == 1 and restarts[-1] == 2
    pod = get_pod(cluster, namespace, "liveness")
    uid = pod["metadata"]["uid"] if pod else ""
    assert seen[-1][2].endswith(f"pod=liveness_{namespace}({uid})")
    last = container_status(pod, "c")["lastState"]["terminated"]
    # Killed: SIGTERM went unanswered (no handler in pid 1), SIGKILL after the grace period.
    assert (last["exitCode"], last["reason"]) == (137, "Error")
    assert last["containerID"].startswith("runc://")
    reasons = [r for r, _ in _messages(cluster, namespace, "liveness")]
    assert {"Unhealthy", "Killing", "BackOff"} <= set(reasons)


PRESTOP_MAIN = """
import signal, sys, time
def stop(signum, frame):
    print("SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("started", flush=True)
time.sleep(3600)
"""


def test_pre_stop_runs_before_sigterm_and_the_pod_is_removed(
    cluster: LocalCluster, namespace: str, project_image: str
) -> None:
    spec = {
        "terminationGracePeriodSeconds": 20,
        "containers": [
            {
                "name": "c",
                "image": project_image,
                "command": ["python3", "-c", PRESTOP_MAIN],
                # Written to the container's own stdout, which the log file keeps.
                "lifecycle": {
                    "preStop": {"exec": {"command": ["sh", "-c", "echo preStop >> /proc/1/fd/1"]}}
                },
            }
        ],
    }
    apply(cluster, namespace, pod_manifest("prestop", spec))
    log = cluster.logs / "pods" / f"{namespace}_prestop_c.log"
    wait_for("the container to start", lambda: log.exists() and "started" in log.read_text(), 90)
    cluster.kubectl("delete", "pod", "-n", namespace, "prestop", "--wait=false")
    wait_for("the pod to go", lambda: get_pod(cluster, namespace, "prestop") is None, 60)
    lines = [line for line in log.read_text().splitlines() if not line.startswith("----")]
    assert lines[-3:] == ["started", "preStop", "SIGTERM"]


def test_a_disk_empty_dir_over_its_size_limit_gets_the_pod_evicted(
    cluster: LocalCluster, namespace: str, project_image: str
) -> None:
    fill = "open('/scratch/fill', 'wb').write(b'x' * 3 * 2**20); import time; time.sleep(3600)"
    spec = {
        "containers": [
            {
                "name": "c",
                "image": project_image,
                "command": ["python3", "-c", fill],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}],
    }
    apply(cluster, namespace, pod_manifest("evicted", spec))
    pod = wait_pod(
        cluster, namespace, "evicted", "the eviction",
        lambda p: (p.get("status") or {}).get("reason") == "Evicted", timeout=90,
    )  # fmt: skip
    assert pod["status"]["phase"] == "Failed"
    assert (
        pod["status"]["message"] == 'Usage of EmptyDir volume "scratch" exceeds the limit "1Mi". '
    )
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conditions["DisruptionTarget"]["reason"] == "TerminationByKubelet"
    assert "terminated" in container_status(pod, "c")["state"]
    # A memory-backed emptyDir's sizeLimit is its tmpfs's size.
    memory = {
        "containers": [
            {
                "name": "c",
                "image": project_image,
                "command": SLEEP,
                "volumeMounts": [{"name": "ram", "mountPath": "/ram"}],
            }
        ],
        "volumes": [{"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "2Mi"}}],
    }
    apply(cluster, namespace, pod_manifest("ram", memory))
    running = wait_for("the tmpfs pod", lambda: _running(cluster, namespace, "ram"), 90)
    df = exec_in(
        cluster,
        running,
        "c",
        "python3",
        "-c",
        "import os; s=os.statvfs('/ram'); print(s.f_blocks*s.f_frsize)",
    )
    assert int(df.stdout) == 2 * 2**20
    write = exec_in(
        cluster, running, "c", "python3", "-c", "open('/ram/x','wb').write(b'x'*3*2**20)"
    )
    assert write.returncode != 0 and "No space left on device" in write.stdout + write.stderr


def test_a_running_container_reports_its_image_and_kubelet_s_events(
    cluster: LocalCluster, namespace: str, project_image: str
) -> None:
    apply(
        cluster,
        namespace,
        pod_manifest(
            "plain", {"containers": [{"name": "c", "image": project_image, "command": SLEEP}]}
        ),
    )
    pod = wait_for("the pod running", lambda: _running(cluster, namespace, "plain"), 90)
    status = container_status(pod, "c")
    assert status["image"] == project_image
    assert status["imageID"].startswith("ghcr.io/secondary-dns-operator/secondary-dns@sha256:")
    assert status["started"] is True and status["ready"] is True
    assert pod["status"]["phase"] == "Running"
    reasons = [r for r, _ in _messages(cluster, namespace, "plain")]
    assert {"Pulled", "Created", "Started"} <= set(reasons)
