"""The pod runner: SecondaryServer pods really serve DNS at their own pod IPs and Services.

A real operator builds the StatefulSet and Services; the pod runner
(hack/localcluster/podrunner.py) runs each pod's agent and engine from this
tree's image with runc, in a network namespace of its own; kube-proxy routes
the Services' ClusterIPs to them; a real BIND primary on a 10.x address of the
cluster namespace serves the zone with a TSIG key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import pytest

from crdutil import install_crds
from localcluster import kubeproxy, netns
from localcluster.cluster import LocalCluster
from localcluster.constants import API_URL_FOR_PODS, SERVICE_CIDR, SERVICE_ROUTE_DEVICE
from localcluster.kubelet import network
from localcluster.named import NamedFleet, PrimaryServer, TsigCredentials, make_zone, soa_serial
from localcluster.podstate import host_veth_name, pod_netns_name
from localcluster.waiting import wait_for
from secondary_dns import __version__
from secondary_dns.render.children import RUN_AS_USER, TOKEN_MOUNT_PATH
from tests.cluster.operator_fixture import (
    OperatorProcess,
    apply,
    condition,
    get_json,
    run_operator,
)
from tests.cluster.pods import container_pid, exec_in, proc_status, running_ids

API = "secondarydns.io/v1alpha1"
ZONE = "podrunner.example."
SERIAL = 2024010101
PRIMARY_ADDRESS = "10.253.9.1"
SERVER = "dns"


@pytest.fixture(scope="module")
def operator(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with run_operator(cluster, log) as running:
        yield running
        print(f"operator log (the leading pod's): {running.log}")


@pytest.fixture
def primary_address(cluster: LocalCluster) -> Iterator[str]:
    """A primary address on the cluster namespace's loopback: pods reach it, nothing else does."""
    netns.add_address(cluster.netns, PRIMARY_ADDRESS)
    try:
        yield PRIMARY_ADDRESS
    finally:
        netns.remove_address(cluster.netns, PRIMARY_ADDRESS)


def _pods(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    found = get_json(cluster, "pods", "-n", namespace, "-l", f"secondarydns.io/server={SERVER}")
    return list((found or {}).get("items") or [])


def _container_pids(cluster: LocalCluster, pod: dict[str, Any]) -> dict[str, int]:
    """{container: pid of its process} of the pod's running containers (runc's state)."""
    pids = {}
    for name, container_id in running_ids(pod).items():
        pid = container_pid(cluster, container_id)
        if pid is not None:
            pids[name] = pid
    return pids


def _running(cluster: LocalCluster, namespace: str, count: int) -> list[dict[str, Any]] | None:
    pods = _pods(cluster, namespace)
    live = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and (p.get("status") or {}).get("podIP")
        and set(running_ids(p)) == {"engine", "agent"}
    ]
    return live if len(live) == count and len(pods) == count else None


def _ready(cluster: LocalCluster, namespace: str, count: int) -> list[dict[str, Any]] | None:
    pods = _running(cluster, namespace, count)
    return pods if pods and all(_is_ready(p) for p in pods) else None


def _readyz(ip: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{ip}:8081/readyz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def _is_ready(pod: dict[str, Any]) -> bool:
    ready = condition(pod, "Ready")
    return ready is not None and ready["status"] == "True"


def _serial(ip: str) -> int | None:
    return soa_serial(ZONE, ip, timeout=1)


def _notify(ip: str, source: str) -> None:
    """NOTIFY (RFC 1996) from the primary's address, as the primary itself would send it."""
    request = dns.message.make_query(ZONE, "SOA")
    request.flags = dns.flags.AA
    request.set_opcode(dns.opcode.NOTIFY)
    try:
        dns.query.udp(request, ip, timeout=1, source=source)
    except (dns.exception.Timeout, OSError):
        pass


def _eth0_addresses(pod_ns: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-4", "-n", pod_ns, "-j", "addr", "show", "dev", "eth0"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])]


def _server(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "SecondaryServer",
        "metadata": {"name": SERVER},
        "spec": {"replicas": replicas},
    }


def _manifests(key: TsigCredentials, primary: str, namespace: str) -> list[dict[str, Any]]:
    return [
        key.secret_manifest("transfer-key", namespace),
        _server(3),
        {
            "apiVersion": API,
            "kind": "Zone",
            "metadata": {"name": "podrunner"},
            "spec": {
                "zone": ZONE.rstrip("."),
                "primaries": [{"address": primary, "tsigKeySecretRef": {"name": "transfer-key"}}],
                "servers": [SERVER],
            },
        },
    ]


def test_pods_serve_the_zone_at_their_own_ips_and_come_back_after_deletion(
    cluster: LocalCluster,
    namespace: str,
    operator: OperatorProcess,
    primary_address: str,
    tmp_path: Path,
) -> None:
    key = TsigCredentials.generate("transfer-key")
    created = time.monotonic()
    # The Zone first points at a primary that is not running yet: the agents
    # have a zone to wait for, so readiness is observably not a formality.
    apply(cluster, namespace, *_manifests(key, primary_address, namespace))
    pods = wait_for("3 pods running both containers", lambda: _running(cluster, namespace, 3), 120)

    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
    assert len(set(ips.values())) == 3, ips
    for pod in pods:
        ip = pod["status"]["podIP"]
        pod_ns = pod_netns_name(cluster.name, pod["metadata"]["uid"])
        # Its own network namespace, with its IP on eth0, and its processes in it.
        assert netns.exists(pod_ns), pod_ns
        assert _eth0_addresses(pod_ns) == [ip]
        in_pod = set(netns.pids(pod_ns))
        pids = _container_pids(cluster, pod)
        assert set(pids.values()) <= in_pod, (pids, in_pod)

    # The agent talks to the API as its service account (a token bound to its
    # pod, projected as kubelet projects it), so the agent's Role is what it may
    # do: its keys Secret, not others.
    pod = pods[0]
    token = exec_in(cluster, pod, "agent", "cat", f"{TOKEN_MOUNT_PATH}/token").stdout.strip()
    ca = exec_in(cluster, pod, "agent", "cat", f"{TOKEN_MOUNT_PATH}/ca.crt").stdout
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(ca)

    def as_pod(*args: str) -> subprocess.CompletedProcess[str]:
        return cluster.run_inside(
            [
                "kubectl",
                "--kubeconfig=/dev/null",
                f"--server={API_URL_FOR_PODS}",
                f"--certificate-authority={ca_file}",
                f"--token={token}",
                "-n",
                namespace,
                *args,
            ],
            check=False,
        )

    assert as_pod("get", "secret", f"{SERVER}-keys").returncode == 0
    assert "forbidden" in as_pod("get", "secrets").stderr.lower()
    assert "forbidden" in as_pod("delete", "configmap", "--all", "--dry-run=server").stderr.lower()

    # Not ready while the zone has never loaded: Ready follows the agent's /readyz.
    wait_for(
        "every agent's /readyz to answer (503: zone not loaded)",
        lambda: all(_readyz(ip) == 503 for ip in ips.values()),
        timeout=60,
    )
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        for pod in _pods(cluster, namespace):
            assert not _is_ready(pod), f"{pod['metadata']['name']} Ready before its zone loaded"
            assert _readyz(pod["status"]["podIP"]) == 503
        time.sleep(1)

    with NamedFleet(tmp_path, cluster.netns) as fleet:
        primary = fleet.start_primary(
            [make_zone(ZONE, serial=SERIAL)], key, address=primary_address
        )
        assert isinstance(primary, PrimaryServer)

        def all_serving() -> bool:
            missing = [ip for ip in ips.values() if _serial(ip) != SERIAL]
            for ip in missing:
                _notify(ip, primary_address)
            return not missing

        wait_for("every pod to serve the primary's serial", all_serving, timeout=90, every=1)
        serving = time.monotonic()
        ready_pods = wait_for(
            "3 Ready pods",
            lambda: (ps := _pods(cluster, namespace)) and all(_is_ready(p) for p in ps) and ps,
            timeout=30,
        )
        print(f"\nSecondaryServer applied -> 3 pods serving serial {SERIAL}: "
              f"{serving - created:.1f}s (primary started after the pods)")  # fmt: skip
        assert all(_readyz(p["status"]["podIP"]) == 200 for p in ready_pods)
        _assert_host_namespace_clean(cluster)

        # Deleting a pod stops its processes and removes its namespace; the
        # StatefulSet's replacement serves again.
        victim = next(p for p in ready_pods if p["metadata"]["name"] == f"{SERVER}-1")
        victim_ns = pod_netns_name(cluster.name, victim["metadata"]["uid"])
        victim_pids = set(_container_pids(cluster, victim).values())
        deleted = time.monotonic()
        cluster.kubectl("delete", "pod", "-n", namespace, f"{SERVER}-1", "--wait=false")
        # It leaves its Services before its engine stops (docs/agent.md, "Shutdown"):
        # unready, so no longer a serving endpoint whose UDP flows kube-proxy keeps,
        # while it still answers.
        victim_ip = victim["status"]["podIP"]

        def unready_and_answering() -> bool:
            uid = victim["metadata"]["uid"]
            found = [p for p in _pods(cluster, namespace) if p["metadata"]["uid"] == uid]
            return (
                bool(found)
                and not _is_ready(found[0])
                and _readyz(victim_ip) == 503  # draining
                and _serial(victim_ip) == SERIAL
            )

        wait_for("the deleted pod unready while it answers", unready_and_answering, 30, 0.5)
        unready = time.monotonic() - deleted
        print(f"pod deleted -> unready while its engine answers: {unready:.1f}s")
        wait_for(
            "the deleted pod's processes and namespace to go",
            lambda: (
                not netns.exists(victim_ns)
                and not any(Path(f"/proc/{pid}").exists() for pid in victim_pids)
            ),
            timeout=45,
        )
        veth = host_veth_name(victim["metadata"]["uid"])
        links = subprocess.run(
            ["ip", "-n", cluster.netns, "link", "show", "dev", veth], capture_output=True
        )
        assert links.returncode != 0, f"{veth} is still there"

        def replacement() -> dict[str, Any] | None:
            for pod in _pods(cluster, namespace):
                if pod["metadata"]["name"] == f"{SERVER}-1" and (
                    pod["metadata"]["uid"] != victim["metadata"]["uid"]
                    and _is_ready(pod)
                    and _serial(pod["status"]["podIP"]) == SERIAL
                ):
                    return pod
            return None

        back = wait_for("the replacement to serve", replacement, timeout=90)
        print(f"pod deleted -> replacement Ready and serving: {time.monotonic() - deleted:.1f}s")
        new_ns = pod_netns_name(cluster.name, back["metadata"]["uid"])
        assert netns.exists(new_ns) and _eth0_addresses(new_ns) == [back["status"]["podIP"]]


def test_restarted_pod_runner_adopts_running_pods(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, namespace, _server(3))
    wait_for("3 Ready pods", lambda: _ready(cluster, namespace, 3), timeout=120)
    before = {p["metadata"]["uid"]: running_ids(p) for p in _pods(cluster, namespace)}
    pids = {p["metadata"]["uid"]: _container_pids(cluster, p) for p in _pods(cluster, namespace)}
    runner = cluster.component_pid("pod-runner")
    assert runner is not None
    subprocess.run(["kill", str(runner)], check=True)
    wait_for("the pod runner to exit", lambda: cluster.component_pid("pod-runner") is None, 20)
    cluster.up()  # repairs: starts the pod runner again, keeps the control plane
    assert cluster.component_pid("pod-runner") not in (None, runner)
    time.sleep(3)  # a few passes of the new runner's pod workers and probes
    after = {p["metadata"]["uid"]: running_ids(p) for p in _pods(cluster, namespace)}
    # Same pods, same containers, same processes: adopted, not restarted.
    assert after == before
    assert {
        p["metadata"]["uid"]: _container_pids(cluster, p) for p in _pods(cluster, namespace)
    } == pids
    assert all(_is_ready(p) for p in _pods(cluster, namespace))


def test_each_container_runs_as_the_pod_spec_says(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    """From inside each running container of a DNS pod: its user, root, capabilities, token."""
    apply(cluster, namespace, _server(1))
    (pod,) = wait_for("a Ready pod", lambda: _ready(cluster, namespace, 1), timeout=120)
    for container in ("engine", "agent"):
        status = proc_status(cluster, pod, container)
        # The spec's runAsUser and runAsGroup (65532), never root.
        assert status["Uid"].split() == [str(RUN_AS_USER)] * 4, container
        assert status["Gid"].split() == [str(RUN_AS_USER)] * 4, container
        # capabilities: drop [ALL], nothing added: no capability at all.
        for capability_set in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
            assert int(status[capability_set], 16) == 0, (container, capability_set)
        assert status["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false
        assert status["Seccomp"] == "2"  # RuntimeDefault: a filter
        # readOnlyRootFilesystem: the root cannot be written, the volumes can.
        write = exec_in(cluster, pod, container, "touch", "/written")
        assert write.returncode != 0 and "Read-only file system" in write.stderr
        assert exec_in(cluster, pod, container, "touch", "/tmp/written").returncode == 0
        version = exec_in(cluster, pod, container, "secondary-dns", "--version")
        assert version.stdout.strip() == f"secondary-dns {__version__}"
    # Only the agent holds an API token; the engine, which parses untrusted
    # packets, has none (and no service-account directory at all).
    has_token = exec_in(cluster, pod, "agent", "test", "-s", f"{TOKEN_MOUNT_PATH}/token")
    assert has_token.returncode == 0
    no_token = exec_in(cluster, pod, "engine", "ls", TOKEN_MOUNT_PATH)
    assert no_token.returncode != 0 and "No such file or directory" in no_token.stderr
    # The sysctl that lets named bind 53 without a capability, in the pod's namespace.
    port_start = exec_in(
        cluster, pod, "engine", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"
    )
    assert port_start.stdout.strip() == "53"
    # The agent reaches the API through the `kubernetes` Service, as in-cluster clients do.
    env = exec_in(cluster, pod, "agent", "env").stdout.splitlines()
    assert "KUBERNETES_SERVICE_HOST=10.96.0.1" in env and "KUBERNETES_SERVICE_PORT=443" in env
    assert not any(line.startswith("KUBECONFIG=") for line in env)


def _cluster_ip(cluster: LocalCluster, namespace: str, selector: dict[str, str]) -> str | None:
    """The ClusterIP of the Service whose selector includes `selector` (not a headless one)."""
    services = get_json(cluster, "services", "-n", namespace) or {}
    for service in services.get("items") or []:
        spec = service.get("spec") or {}
        selects = selector.items() <= (spec.get("selector") or {}).items()
        if selects and spec.get("clusterIP") not in (None, "None"):
            return str(spec["clusterIP"])
    return None


def _single_pod_service(pod: str) -> dict[str, Any]:
    """A Service in front of one pod only: from that pod, every query to it is hairpin."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{pod}-only"},
        "spec": {
            "selector": {"statefulset.kubernetes.io/pod-name": pod},
            "ports": [
                {"name": "dns-udp", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        },
    }


def _answers(address: str, tcp: bool) -> bool:
    return soa_serial(ZONE, address, timeout=1, tcp=tcp) == SERIAL


def _dig_soa_serial(pod_ns: str, address: str, transport: str) -> int | None:
    """`dig` run inside a pod's network namespace, as a process of that pod would."""
    result = subprocess.run(
        ["ip", "netns", "exec", pod_ns, "dig", "+short", "+norecurse", "+time=2", "+tries=1",
         transport, f"@{address}", ZONE, "SOA"],
        capture_output=True, text=True,
    )  # fmt: skip
    fields = result.stdout.split()
    return int(fields[2]) if result.returncode == 0 and len(fields) == 7 else None


@pytest.fixture
def primary(cluster: LocalCluster, primary_address: str, tmp_path: Path) -> Iterator[PrimaryServer]:
    """A running primary of ZONE at SERIAL, on `primary_address`."""
    key = TsigCredentials.generate("transfer-key")
    with NamedFleet(tmp_path, cluster.netns) as fleet:
        yield fleet.start_primary([make_zone(ZONE, serial=SERIAL)], key, address=primary_address)


def test_the_server_s_service_answers_at_its_cluster_ip_over_udp_and_tcp(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess, primary: PrimaryServer
) -> None:
    applied = time.monotonic()
    apply(cluster, namespace, *_manifests(primary.key, primary.address, namespace))
    pods = wait_for("3 Ready pods", lambda: _ready(cluster, namespace, 3), timeout=120)
    # The client Service the operator made (selector: the server's pods).
    address = wait_for(
        "the server's Service",
        lambda: _cluster_ip(cluster, namespace, {"secondarydns.io/server": SERVER}),
    )
    assert ipaddress.ip_address(address) in ipaddress.ip_network(SERVICE_CIDR)
    assert address not in {p["status"]["podIP"] for p in pods}

    # From the cluster namespace (this process; where a primary outside the pods is).
    # kube-proxy programs the Service once its EndpointSlice lists Ready pods.
    for tcp in (False, True):
        wait_for(f"{address} over {'TCP' if tcp else 'UDP'}", lambda t=tcp: _answers(address, t))
    print(f"\nSecondaryServer applied -> its Service answers at {address} over UDP and TCP: "
          f"{time.monotonic() - applied:.1f}s")  # fmt: skip
    # Every answer, not the first one: several connections, several endpoints.
    for tcp in (False, True) * 5:
        assert soa_serial(ZONE, address, timeout=2, tcp=tcp) == SERIAL

    # From inside each pod: its default route leads to the cluster namespace,
    # where the ClusterIP is translated to one of the pods, itself included.
    names = [p["metadata"]["name"] for p in pods]
    apply(cluster, namespace, *(_single_pod_service(name) for name in names))
    for pod in pods:
        name, pod_ns = pod["metadata"]["name"], pod_netns_name(cluster.name, pod["metadata"]["uid"])
        for transport in ("+notcp", "+tcp") * 3:
            assert _dig_soa_serial(pod_ns, address, transport) == SERIAL, (name, transport)
        # Through a Service of its own, always to itself (hairpin), whatever
        # node it runs on: the one kube-proxy here is the node kwok-zone-a-1's.
        only = wait_for(
            f"{name}'s own Service",
            lambda n=name: _cluster_ip(
                cluster, namespace, {"statefulset.kubernetes.io/pod-name": n}
            ),
        )
        wait_for(f"{only} from the cluster namespace", lambda a=only: _answers(a, False))
        for transport in ("+notcp", "+tcp") * 3:
            assert _dig_soa_serial(pod_ns, only, transport) == SERIAL, (name, transport)

    # Nothing of it reached the host: no rules, addresses, routes or devices.
    _assert_host_namespace_clean(cluster)


def _assert_host_namespace_clean(cluster: LocalCluster) -> None:
    """Pod and Service addresses, routes, veths and kube-proxy's rules exist only in namespaces
    the local cluster created."""
    # kube-proxy runs in the cluster's namespace and its rules are there.
    proxy = cluster.component_pid("kube-proxy")
    assert proxy is not None and netns.holds(cluster.netns, proxy)
    assert kubeproxy.programmed(cluster.netns)
    # The test process entered the cluster's namespace; the process that started
    # it did not (unless it ran inside `hack/local-cluster exec`: then skip this).
    host_ns = f"/proc/{os.getppid()}/ns/net"
    if os.stat(host_ns).st_ino == os.stat("/proc/thread-self/ns/net").st_ino:
        return

    def in_host(*argv: str) -> str:
        return subprocess.run(
            ["nsenter", f"--net={host_ns}", *argv],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    addresses = in_host("ip", "-4", "-o", "addr") + in_host("ip", "-4", "route")
    for cluster_range in ("10.244.", "10.96.", "10.250."):
        assert cluster_range not in addresses
    links = in_host("ip", "-o", "link")
    assert not re.search(r": sp[0-9a-f]{8}[@:]", links)
    assert f": {SERVICE_ROUTE_DEVICE}:" not in links
    tables = in_host("nft", "list", "tables")
    assert not any(f"table {family} {name}" in tables for family, name in kubeproxy.TABLES)
    assert f"table ip {network.NFT_TABLE}" not in tables
