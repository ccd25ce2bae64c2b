"""kube-proxy in the cluster's network namespace: real ClusterIP Services.

One real kube-proxy (built from the same k8s.io/kubernetes as the control
plane) programs the cluster namespace in nftables mode, so a ClusterIP
Service (UDP 53 included) reaches the pods the pod runner runs, from the
cluster namespace and from inside every pod (their default route leads there).
Its nftables tables live in the cluster namespace and go with it.

On a real cluster every node runs one; here a single one stands in for all of
them, as the node `NODE` (a kwok node): what depends on the node it runs on
(`internalTrafficPolicy`/`externalTrafficPolicy: Local`, topology-aware
routing) is decided as if every client ran on that node.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from localcluster.constants import (
    CONTROL_PLANE_ADDRESS,
    KUBE_PROXY_HEALTHZ_ADDRESS,
    KUBE_PROXY_METRICS_ADDRESS,
    SERVICE_CIDR,
    SERVICE_ROUTE_DEVICE,
)

MODE = "nftables"
# What the API server's bootstrap RBAC grants (ClusterRoleBinding
# system:node-proxier): kube-proxy's permissions on a kubeadm cluster.
USER = "system:kube-proxy"
# The nftables tables kube-proxy owns in this mode (pkg/proxy/nftables).
TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))


def _ip(namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "-n", namespace, *args], capture_output=True, text=True)


def prepare_service_route(cluster_ns: str) -> None:
    """The route a connect() to a ClusterIP needs in the cluster namespace (idempotent).

    kube-proxy's DNAT happens in the output hook, after the kernel has looked
    up a route for the ClusterIP; a node finds its default route there, this
    namespace has none. An empty bridge (no ports: what is sent to it goes
    nowhere) carries SERVICE_CIDR, with the control plane's address as the
    source, which the pods can answer (their default route leads here).
    """
    if _ip(cluster_ns, "link", "show", "dev", SERVICE_ROUTE_DEVICE).returncode != 0:
        created = _ip(cluster_ns, "link", "add", SERVICE_ROUTE_DEVICE, "type", "bridge")
        if created.returncode != 0:
            raise RuntimeError(f"cannot add {SERVICE_ROUTE_DEVICE}: {created.stderr.strip()}")
    for argv in (
        ("link", "set", SERVICE_ROUTE_DEVICE, "up"),
        ("route", "replace", SERVICE_CIDR, "dev", SERVICE_ROUTE_DEVICE,
         "src", CONTROL_PLANE_ADDRESS),
    ):  # fmt: skip
        result = _ip(cluster_ns, *argv)
        if result.returncode != 0:
            raise RuntimeError(f"ip {' '.join(argv)}: {result.stderr.strip()}")


def argv(binary: Path, kubeconfig: Path, node: str) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--proxy-mode={MODE}",
        f"--hostname-override={node}",
        # No --cluster-cidr: kube-proxy then masquerades no off-cluster traffic to
        # a Service, so a primary's NOTIFY reaches the relay from the primary's
        # own address, as through a LoadBalancer with externalTrafficPolicy:
        # Local (docs/local-cluster.md). Hairpin traffic (a pod to a Service
        # that picks itself) is masqueraded all the same, by the pod runner.
        # Health and metrics on the cluster namespace's loopback only.
        f"--healthz-bind-address={KUBE_PROXY_HEALTHZ_ADDRESS}",
        f"--metrics-bind-address={KUBE_PROXY_METRICS_ADDRESS}",
        # Leave the kernel's conntrack settings alone: nf_conntrack_max and its
        # hash size are the whole machine's, not the namespace's.
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0",
        # Its default (-999) would make it the last process the OOM killer picks
        # on a developer's machine.
        "--oom-score-adj=0",
        "--v=0",
    ]


def programmed(cluster_ns: str) -> bool:
    """True once kube-proxy has written its rules (its first sync) into the namespace."""
    family, table = TABLES[0]
    result = subprocess.run(
        ["ip", "netns", "exec", cluster_ns, "nft", "list", "table", family, table],
        capture_output=True,
    )
    return result.returncode == 0
