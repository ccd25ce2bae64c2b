"""Pure parts of the local cluster: version pinning, the node layout, kube-proxy, pod state."""

from __future__ import annotations

import ast
import itertools
from collections import Counter
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from localcluster import build, constants, kubeproxy, podrunner, podstate
from localcluster.cluster import node_manifest, nodes
from localcluster.constants import POD_CIDR, SERVICE_CIDR
from localcluster.kubelet import network, podworker
from localcluster.waiting import poll, wait_for

UPSTREAM_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/utils v0.0.0-20260210185600-b8788abfbbc2
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/kube-scheduler => ./staging/src/k8s.io/kube-scheduler
\tk8s.io/streaming => ./staging/src/k8s.io/streaming
)
"""


def test_staging_modules_are_derived_from_upstream_go_mod() -> None:
    assert build.staging_replacements(UPSTREAM_GO_MOD, "1.36.3") == {
        "k8s.io/api": "v0.36.3",
        "k8s.io/kube-scheduler": "v0.36.3",
        "k8s.io/streaming": "v0.36.3",
    }


def test_cache_is_keyed_by_version(tmp_path: Path) -> None:
    bins = build.binaries(tmp_path)
    kubernetes = tmp_path / f"kubernetes-v{build.KUBERNETES_VERSION}"
    assert bins.kube_apiserver == kubernetes / "kube-apiserver"
    # kube-proxy from the same k8s.io/kubernetes as the control plane, beside it.
    assert bins.kube_proxy.parent == bins.kube_apiserver.parent
    assert f"etcd-v{build.ETCD_VERSION}" in str(bins.etcd)
    assert f"kwok-v{build.KWOK_VERSION}" in str(bins.kwok)
    assert bins.helm == tmp_path / f"helm-v{build.HELM_VERSION}/helm"
    assert bins.kubeconform == tmp_path / f"kubeconform-v{build.KUBECONFORM_VERSION}/kubeconform"
    assert bins.promtool == tmp_path / f"promtool-v{build.PROMETHEUS_VERSION}/promtool"
    assert len(set(bins.all())) == 11
    # kubectl's directory first on PATH, each directory once.
    dirs = bins.path_dirs()
    assert dirs[0] == str(bins.kubectl.parent) and len(dirs) == len(set(dirs)) == 6


def test_helm_is_stamped_with_the_kubernetes_version_of_its_client_go() -> None:
    go_mod = "module helm.sh/helm/v3\n\nrequire (\n\tk8s.io/client-go v0.37.2\n)\n"
    assert build.helm_kubernetes_version(go_mod) == ("1", "37")
    with pytest.raises(RuntimeError, match="client-go"):
        build.helm_kubernetes_version("module x\n")


def test_kube_proxy_serves_the_cluster_namespace_only() -> None:
    argv = kubeproxy.argv(Path("/bin/kube-proxy"), Path("/k"), "kwok-zone-a-1")
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in argv[1:])
    assert flags["proxy-mode"] == "nftables"
    # Off-cluster sources (a primary) keep their address through a Service.
    assert "cluster-cidr" not in flags
    assert flags["hostname-override"] == "kwok-zone-a-1"
    assert flags["healthz-bind-address"].startswith("127.0.0.1:")
    assert flags["metrics-bind-address"].startswith("127.0.0.1:")
    # Machine-wide conntrack settings stay as they are.
    assert flags["conntrack-max-per-core"] == "0"
    assert ip_network(SERVICE_CIDR).prefixlen == 16


def _imported_modules(module: str) -> set[str]:
    """Every module `localcluster.<module>` imports, at the top or inside a function."""
    tree = ast.parse(Path(build.__file__).with_name(f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_the_cluster_and_the_pod_runner_do_not_import_each_other() -> None:
    # cluster.py starts the pod runner as a process and reads its state through
    # podstate.py; what both need is in constants.py.
    assert "localcluster.podrunner" not in _imported_modules("cluster")
    assert not {"localcluster.cluster", "localcluster.scenario"} & _imported_modules("podrunner")
    assert "localcluster.cluster" not in _imported_modules("podstate")


def test_wait_for_returns_the_first_true_value_or_names_what_it_waited_for() -> None:
    counter = itertools.count()
    assert wait_for("the third call", lambda: next(counter) >= 2 and "done", 5, every=0) == "done"
    with pytest.raises(TimeoutError, match=r"waiting for nothing; last: 0"):
        wait_for("nothing", lambda: 0, timeout=0, every=0)
    # poll: the last false value at the deadline, after at least one call.
    calls = itertools.count()
    assert poll(lambda: next(calls) > 5, timeout=0) is False
    assert next(calls) == 1


def test_six_nodes_two_per_failure_zone_with_distinct_pod_cidrs() -> None:
    layout = nodes()
    assert Counter(n.zone for n in layout) == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    cidrs = [ip_network(n.pod_cidr) for n in layout]
    assert len(set(cidrs)) == 6
    assert all(c.prefixlen == 24 and c.subnet_of(ip_network(POD_CIDR)) for c in cidrs)  # type: ignore[arg-type]
    manifest = node_manifest(layout[0])
    labels = manifest["metadata"]["labels"]  # type: ignore[index]
    assert labels["topology.kubernetes.io/zone"] == "zone-a"
    assert labels["kubernetes.io/hostname"] == layout[0].name


# ---- the pod runner's pure parts ------------------------------------------------

UID = "4d945fbe-2f44-4423-852f-e991a886b66a"


def test_pod_names_are_short_and_derived_from_the_uid() -> None:
    assert podstate.pod_netns_name("sdns-test", UID) == "sdns-test-pod-4d945fbe"
    veth = podstate.host_veth_name(UID)
    assert veth == "sp4d945fbe" and len(veth) <= 15  # IFNAMSIZ - 1


def test_pod_state_survives_a_restart_of_the_runner(tmp_path: Path) -> None:
    directory = podstate.pods_dir(tmp_path) / UID
    (directory / podstate.CONTAINERS_DIR).mkdir(parents=True)
    record = podstate.PodRecord(
        UID, "dns", "edge-0", "kwok-zone-a-1", "10.244.1.254", "c-pod-4d945fbe", "sp4d945fbe"
    )
    record.save(directory)
    engine = podstate.ContainerRecord(
        id="4d945fbe-engine-3",
        restarts=3,
        last_exit={"exitCode": 1, "reason": "Error"},
        cgroups=["/sys/fs/cgroup/cpu/c/kubepods/podx/4d945fbe-engine-3"],
    )
    engine.save(directory / podstate.CONTAINERS_DIR / "engine.json")
    (podstate.pods_dir(tmp_path) / "broken").mkdir()
    (podstate.pods_dir(tmp_path) / "broken" / podstate.POD_FILE).write_text("{")

    assert list(podstate.pod_records(tmp_path)) == [(directory, record)]
    assert list(podstate.container_records(directory)) == [
        ("engine", directory / podstate.CONTAINERS_DIR / "engine.json", engine)
    ]
    assert podstate.describe_pods(tmp_path) == [
        "dns/edge-0 10.244.1.254 netns c-pod-4d945fbe node kwok-zone-a-1 [engine=down]"
    ]


def test_container_ids_and_root_filesystems_are_named_per_run_and_cluster() -> None:
    assert podstate.container_id(UID, "agent", 0) == "4d945fbe-agent-0"
    assert podstate.container_id(UID, "agent", 12) == "4d945fbe-agent-12"
    # One podman store for every checkout on the machine: the cluster's name is in it.
    assert podstate.rootfs_name("sdns-test", "4d945fbe-agent-0") == "sdns-test-4d945fbe-agent-0"


def test_only_the_project_s_pods_are_run() -> None:
    labels = {"app.kubernetes.io/part-of": "secondary-dns"}
    assert podrunner.is_runner_pod({"metadata": {"labels": labels}})
    assert not podrunner.is_runner_pod({"metadata": {"labels": {"secondarydns.io/server": "x"}}})
    assert not podrunner.is_runner_pod({"metadata": {}})


def test_what_the_pod_runner_cannot_run_is_refused_with_the_field_named() -> None:
    def pod(**spec: Any) -> dict[str, Any]:
        return {"spec": {"containers": [{"name": "c", "image": "i"}], **spec}}

    assert podworker.unsupported(pod()) is None
    assert "spec.hostNetwork" in str(podworker.unsupported(pod(hostNetwork=True)))
    privileged = pod(containers=[{"name": "c", "securityContext": {"privileged": True}}])
    assert "privileged" in str(podworker.unsupported(privileged))


def test_pod_ips_come_from_the_top_of_the_node_cidr_and_skip_used_ones() -> None:
    # kwok allocates from the bottom; the pod runner from the top.
    assert network.allocate_pod_ip("10.244.3.0/24", []) == "10.244.3.254"
    used = ["10.244.3.254", "10.244.3.253", "10.244.3.1"]
    assert network.allocate_pod_ip("10.244.3.0/24", used) == "10.244.3.252"
    full = [f"10.244.3.{n}" for n in range(1, 255)]
    with pytest.raises(RuntimeError, match="no free address"):
        network.allocate_pod_ip("10.244.3.0/24", full)


def test_the_kwok_selector_is_the_label_every_project_pod_carries() -> None:
    from localcluster import cluster
    from secondary_dns.api import agent_contract

    assert constants.RUNNER_POD_LABEL == agent_contract.LABEL_PART_OF
    assert constants.RUNNER_POD_LABEL_VALUE == agent_contract.PART_OF
    assert cluster.KWOK_DISREGARD_FLAG.endswith("=app.kubernetes.io/part-of=secondary-dns")
