"""The local control plane is real: the scheduler spreads, CRDs and watches work, down is clean."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes
import pytest

import image
from localcluster import kubeproxy, netns
from localcluster.cluster import LocalCluster
from localcluster.kubelet import images
from localcluster.podstate import pod_netns_name
from localcluster.processes import pid_alive
from localcluster.scenario import tree_image
from localcluster.waiting import wait_for
from tests.cluster.pods import pod_manifest


def _statefulset(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "DoNotSchedule",
                            "labelSelector": {"matchLabels": labels},
                        }
                    ],
                    # kwok never pulls or runs it; any image name will do.
                    "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }


def _running_pods_by_zone(cluster: LocalCluster, namespace: str, app: str) -> Counter[str]:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    zone_of = {
        n["metadata"]["name"]: n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes
    }
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json").stdout
    )["items"]
    return Counter(
        zone_of[p["spec"]["nodeName"]]
        for p in pods
        if p["status"].get("phase") == "Running" and p["spec"].get("nodeName")
    )


def test_nodes_carry_failure_zones_and_pod_cidrs(cluster: LocalCluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    zones = Counter(n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes)
    assert zones == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    cidrs = {n["spec"]["podCIDR"] for n in nodes}
    assert len(cidrs) == 6 and all(c.startswith("10.244.") for c in cidrs)


def test_scheduler_spreads_statefulset_across_failure_zones(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_statefulset("web", 3)))
    placed = wait_for(
        "3 running pods",
        lambda: (c := _running_pods_by_zone(cluster, namespace, "web")).total() == 3 and c,
        timeout=90,
    )
    assert placed == {"zone-a": 1, "zone-b": 1, "zone-c": 1}

    cluster.kubectl("scale", "statefulset/web", "-n", namespace, "--replicas=6")
    placed = wait_for(
        "6 running pods",
        lambda: (c := _running_pods_by_zone(cluster, namespace, "web")).total() == 6 and c,
        timeout=90,
    )
    assert placed == {"zone-a": 2, "zone-b": 2, "zone-c": 2}

    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json").stdout
    )["items"]
    # kwok hands out pod IPs from each node's podCIDR; they exist only in the namespace.
    assert all(p["status"]["podIP"].startswith("10.244.") for p in pods)


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.harness.secondarydns.io"},
    "spec": {
        "group": "harness.secondarydns.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer"}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_custom_resource_create_update_seen_by_watch(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.harness.secondarydns.io")
    api_client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    custom = kubernetes.client.CustomObjectsApi(api_client)
    seen: list[tuple[str, int]] = []
    # Watch from the list's resourceVersion, as a controller does: every write
    # after it is delivered, however late the watch request reaches the server.
    listed = custom.list_namespaced_custom_object(
        "harness.secondarydns.io", "v1", namespace, "widgets"
    )
    since = listed["metadata"]["resourceVersion"]

    def watch() -> None:
        w = kubernetes.watch.Watch()
        for event in w.stream(
            custom.list_namespaced_custom_object,
            "harness.secondarydns.io",
            "v1",
            namespace,
            "widgets",
            resource_version=since,
            timeout_seconds=30,
        ):
            seen.append((event["type"], event["object"]["spec"]["size"]))
            if len(seen) == 2:
                w.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    body = {
        "apiVersion": "harness.secondarydns.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 1},
    }
    custom.create_namespaced_custom_object(
        "harness.secondarydns.io", "v1", namespace, "widgets", body
    )
    custom.patch_namespaced_custom_object(
        "harness.secondarydns.io", "v1", namespace, "widgets", "w1", {"spec": {"size": 2}}
    )
    watcher.join(30)
    assert seen == [("ADDED", 1), ("MODIFIED", 2)]


def _runs(pid: int, program: bytes) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == program
    except OSError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_down_leaves_no_process_and_no_namespace(test_netns: str) -> None:
    throwaway = LocalCluster(f"{test_netns}-down")
    pod_ns = ""
    try:
        throwaway.up()
        pids = [pid for pid in throwaway.running_components().values() if pid]
        assert len(pids) == 7  # the control plane, kube-proxy and the pod runner
        assert netns.pids(throwaway.netns)
        # kube-proxy's rules live in the namespace (and go with it).
        assert kubeproxy.programmed(throwaway.netns)
        # A pod the pod runner runs for real: its own namespace and container.
        pod = pod_manifest(
            "runner",
            {
                "containers": [
                    {
                        "name": "c",
                        "image": tree_image(),
                        "command": ["sleep", "600"],
                    }
                ]
            },
        )
        throwaway.kubectl("apply", "-n", "default", "-f", "-", input=json.dumps(pod))
        uid = wait_for(
            "the pod to run",
            lambda: (
                (p := json.loads(throwaway.kubectl("get", "pod", "runner", "-o", "json").stdout))
                .get("status", {})
                .get("podIP")
                and p["metadata"]["uid"]
            ),
            timeout=90,
        )
        pod_ns = pod_netns_name(throwaway.name, uid)
        # The container's own process, once it runs `sleep`.
        pod_pids = wait_for(
            "the pod's process",
            lambda: [p for p in netns.pids(pod_ns) if _runs(p, b"sleep")],
            timeout=90,
        )
        pids += pod_pids
    finally:
        throwaway.down()
    assert not netns.exists(throwaway.netns)
    assert pod_ns and not netns.exists(pod_ns)
    assert not any(pid_alive(pid) for pid in pids)
    # Nor a root filesystem in podman's store, nor a mount under the cluster's state.
    rootfs = image.podman(
        "ps", "--all", "--quiet", "--filter", f"label={images.CLUSTER_LABEL}={throwaway.name}"
    )
    assert rootfs.stdout.strip() == ""
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(throwaway.state_dir) not in mounts
    throwaway.down()  # twice is harmless
