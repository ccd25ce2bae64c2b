"""The pod's network, as a CNI plugin (Calico's layout) would make it.

Each pod gets a network namespace of its own, joined to the cluster's
namespace by a veth pair, with the pod IP (/32, from its node's
`spec.podCIDR`) on `eth0` and a default route through a link-local next hop.
The cluster namespace has a /32 route to each pod IP, and masquerades a pod's
Service traffic that comes back to the pod itself (hairpin: the one
kube-proxy does so only for its own node's pods). Nothing of this exists
outside namespaces the local cluster created: the cluster namespace has no
route out, and no pod address or route is ever added to the host's namespace.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterable

from localcluster import netns
from localcluster.constants import POD_GATEWAY

POD_INTERFACE = "eth0"
# The pod runner's own nftables table in the cluster namespace (hairpin NAT).
NFT_TABLE = "pod-runner"


def allocate_pod_ip(pod_cidr: str, in_use: Iterable[str]) -> str:
    """The highest free address of the node's pod CIDR.

    kwok hands out addresses from the bottom of the same CIDR (index 1, 2, ...)
    and keeps its pool in memory only, so taking them from the top keeps both
    allocators apart for as long as a node holds fewer than half a /24 of pods
    (kwok nodes here allow 110).
    """
    network = ipaddress.ip_network(pod_cidr)
    used = {ipaddress.ip_address(ip) for ip in in_use}
    for address in reversed(list(network.hosts())):
        if address not in used:
            return str(address)
    raise RuntimeError(f"no free address left in {pod_cidr}")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _sysctl(namespace: str, setting: str) -> None:
    # /proc/sys/net belongs to the reader's network namespace: set it from inside.
    subprocess.run(
        ["ip", "netns", "exec", namespace, "sysctl", "-qw", setting],
        check=True,
        capture_output=True,
    )


def _link_exists(namespace: str, link: str) -> bool:
    return _ip("-n", namespace, "link", "show", "dev", link, check=False).returncode == 0


def _nft(namespace: str, script: str, check: bool = True) -> None:
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"nft in {namespace}: {result.stderr.strip()}\n{script}")


def hairpin_rules() -> str:
    """nft script (idempotent): masquerade a pod's Service traffic that lands back on itself.

    A pod that reaches a Service which picks that same pod needs its source
    rewritten, or it answers itself directly and drops the answer. kube-proxy
    does this only for the endpoints of its own node, and the one kube-proxy
    here stands in for every node; so this CNI stand-in does it for every pod
    (`hairpin` holds `pod IP . pod IP`), as kube-proxy does for its own.
    """
    return "\n".join(
        [
            f"add table ip {NFT_TABLE}",
            f"add set ip {NFT_TABLE} hairpin {{ type ipv4_addr . ipv4_addr; }}",
            f"add chain ip {NFT_TABLE} postrouting "
            "{ type nat hook postrouting priority srcnat; policy accept; }",
            f"flush chain ip {NFT_TABLE} postrouting",
            f"add rule ip {NFT_TABLE} postrouting ct status dnat "
            "ip saddr . ip daddr @hairpin masquerade",
            "",
        ]
    )


def prepare_cluster_network(cluster_ns: str) -> None:
    """Once per cluster namespace: the pods' gateway address, forwarding and hairpin NAT."""
    netns.add_address(cluster_ns, POD_GATEWAY)
    # Pod to pod goes through the cluster namespace; it has no route out, so
    # forwarding cannot take a packet anywhere else.
    _sysctl(cluster_ns, "net.ipv4.ip_forward=1")
    _nft(cluster_ns, hairpin_rules())


def setup_pod_network(cluster_ns: str, pod_ns: str, veth: str, pod_ip: str) -> None:
    """Idempotent: after it, `pod_ip` in `pod_ns` is reachable from `cluster_ns` and back."""
    address = ipaddress.ip_address(pod_ip)
    if not address.is_private or address.version != 4:
        raise ValueError(f"refusing pod address {pod_ip}: expected a private IPv4 address")
    for name in (cluster_ns, pod_ns):
        # The host's namespace has no name under /run/netns; `-n` with a name
        # therefore always means a namespace the local cluster created.
        if not name:
            raise ValueError("a network namespace name is required")
    netns.create(pod_ns)
    if _link_exists(cluster_ns, veth) and not _link_exists(pod_ns, POD_INTERFACE):
        _ip("-n", cluster_ns, "link", "del", veth)  # half of a pair from a crash
    if not _link_exists(cluster_ns, veth):
        if _link_exists(pod_ns, POD_INTERFACE):
            _ip("-n", pod_ns, "link", "del", POD_INTERFACE)
        _ip(
            "-n", cluster_ns, "link", "add", veth, "type", "veth",
            "peer", "name", POD_INTERFACE, "netns", pod_ns,
        )  # fmt: skip
    # proxy_arp: the host side answers ARP for whatever it can route (pods
    # that resolve a neighbour on-link instead of using the gateway).
    _sysctl(cluster_ns, f"net.ipv4.conf.{veth}.proxy_arp=1")
    _ip("-n", cluster_ns, "link", "set", veth, "up")
    _ip("-n", pod_ns, "link", "set", POD_INTERFACE, "up")
    _ip("-n", pod_ns, "addr", "replace", f"{pod_ip}/32", "dev", POD_INTERFACE)
    _ip("-n", pod_ns, "route", "replace", POD_GATEWAY, "dev", POD_INTERFACE, "scope", "link")
    _ip("-n", pod_ns, "route", "replace", "default", "via", POD_GATEWAY, "dev", POD_INTERFACE)
    _ip("-n", cluster_ns, "route", "replace", f"{pod_ip}/32", "dev", veth)
    _nft(cluster_ns, f"add element ip {NFT_TABLE} hairpin {{ {pod_ip} . {pod_ip} }}\n")


def forget_pod_address(cluster_ns: str, pod_ip: str) -> None:
    """The cluster namespace's own state about a pod that goes: its hairpin element."""
    element = f"delete element ip {NFT_TABLE} hairpin {{ {pod_ip} . {pod_ip} }}\n"
    _nft(cluster_ns, element, check=False)  # absent already: nothing to do
