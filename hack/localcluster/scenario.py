"""An end-to-end setup on the local cluster: a real primary, the operator, a server, a zone.

Shared by the demo (`make demo`), the end-to-end tests (tests/cluster/test_e2e.py)
and the propagation benchmark (bench/propagation.py), so all three exercise the
same thing. Everything runs inside the cluster's network namespace: the caller
must have entered it (`netns.enter`), which every function here checks before it
touches a 10.x address.

Measurements are taken independently of the operator: replicas are asked for
their SOA directly at their pod IPs, and the Zone's status is read from the API.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.name
import dns.zone

import image
from localcluster import netns, podstate, release
from localcluster.cluster import LocalCluster
from localcluster.constants import PRIMARY_ADDRESS
from localcluster.named import (
    PrimaryServer,
    TsigCredentials,
    make_zone,
    soa_serial,
    zone_serial,
)
from localcluster.release import Installation, ProcessInstallation
from localcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
API = "secondarydns.io/v1alpha1"


# ---- the operator ------------------------------------------------------------

# The operator as the tests, the demo and the benchmark run it: the chart's.
OperatorProcess = Installation


@contextmanager
def run_operator(
    cluster: LocalCluster,
    log: Path,
    *,
    resync_seconds: float = 60,
    relay: bool = True,
    relays: int = 2,
    operators: int = 2,
    repair: bool = True,
    probe_seconds: float = 10,
    extra_env: Mapping[str, str] | None = None,
    pod_image: str | None = None,
    pods: bool = True,
) -> Iterator[Installation]:
    """The chart installed, its operator and relay replicas running; stopped at the end.

    As users get it (`pods`, the default): the chart's Deployments as pods of
    `pod_image` (by default this tree's image, its content tag, which `make
    image` builds: every checkout on the machine shares one image store, and the
    version tag points at whichever checkout built last), run by the pod runner,
    with in-cluster credentials and the relay pods behind the relay Service
    (`release.running_pods`; `log` is unused: the pods' logs are the pod runner's).
    Zones publish that Service's address as their NOTIFY target.

    `pods=False` runs the same containers as processes here instead, with
    tokens of the chart's ServiceAccounts (never the admin's): only for what a
    pod cannot give, said at each caller (docs/local-cluster.md), and for
    settings the chart has no value for (`relay=False`, `repair=False`, `extra_env`).
    """
    netns.require_inside(cluster.netns)
    pod_image = pod_image or tree_image()
    if not image.image_exists(pod_image):
        raise RuntimeError(
            f"{pod_image}, the image of this tree, is not built; its pods could only show "
            "ImagePullBackOff: run `make image` (or scenario.build_pod_image() before "
            "entering the cluster's namespace)"
        )
    if pods:
        if not relay or not repair or extra_env:
            raise ValueError("relay=False, repair=False and extra_env need pods=False")
        values = release.pod_values(
            pod_image,
            operators=operators,
            relays=relays,
            probe_seconds=probe_seconds,
            resync_seconds=resync_seconds,
        )
        with release.running_pods(cluster, values) as installation:
            yield installation
        return
    release.install(cluster, release.PROCESS_MODE)
    workdir = log.parent
    started: list[release.ReleaseProcess] = []
    try:
        relay_processes = release.start_relays(cluster, workdir, relays) if relay else []
        started += relay_processes
        operator_processes = []
        for index in range(operators):
            name = log if index == 0 else log.with_name(f"{log.stem}-{index}{log.suffix}")
            operator = release.start_operator(
                cluster,
                name,
                identity=f"operator-{index}",
                resync_seconds=resync_seconds,
                probe_seconds=probe_seconds,
                repair=repair,
                pod_image=pod_image,
                extra_env=extra_env,
            )
            started.append(operator)
            operator_processes.append(operator)
        running = ProcessInstallation(operator_processes, relay_processes)
        for operator in operator_processes:
            wait_for("the operator's metrics endpoint", operator.ready, timeout=60)
        yield running
    finally:
        for process in reversed(started):
            process.stop()


# ---- the primary -------------------------------------------------------------


def start_primary(
    cluster: LocalCluster,
    workdir: Path,
    zone: dns.zone.Zone,
    *,
    notify_relay: bool = True,
    allow_update: bool = False,
) -> PrimaryServer:
    """A real BIND primary on PRIMARY_ADDRESS that NOTIFYs the relay Service (and only it).

    The chart is installed first (process mode) when it is not, for the Service's address.
    `allow_update`: its zones change by TSIG-signed dynamic updates (`update_record`).
    """
    netns.require_inside(cluster.netns)
    netns.add_address(cluster.netns, PRIMARY_ADDRESS)
    also_notify = [release.relay_notify_target(cluster)] if notify_relay else []
    primary = PrimaryServer(
        workdir,
        [zone],
        TsigCredentials.generate("transfer-key"),
        address=PRIMARY_ADDRESS,
        also_notify=also_notify,
        allow_update=allow_update,
    )
    primary.start()
    return primary


# ---- objects ---------------------------------------------------------------


def build_pod_image() -> str:
    """This tree's image, built unless it is in local storage; its content tag.

    Call it before entering the cluster's network namespace: that namespace has
    no route to the package registries a build needs. The tag is kept in
    SDNS_IMAGE for the rest of the process (`tree_image`), so an edit of the
    tree while it runs does not make its pods name an image nobody built.
    """
    tag = image.ensure_image().content_tag
    os.environ["SDNS_IMAGE"] = tag
    return tag


def tree_image() -> str:
    """The image the project's pods run: the one built for this process, else this tree's."""
    return os.environ.get("SDNS_IMAGE") or image.image_ref().content_tag


def kubectl_json(cluster: LocalCluster, *args: str) -> Any:
    result = cluster.kubectl(*args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def apply(cluster: LocalCluster, namespace: str, *objects: Mapping[str, Any]) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def ensure_namespace(cluster: LocalCluster, namespace: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def install_crds(cluster: LocalCluster) -> None:
    """The CRDs, and the cluster-wide policy the agents run under, through the chart
    (`helm install`, as users get them; the release as it is when installed)."""
    release.ensure_installed(cluster)
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/zones.secondarydns.io",
        "crd/secondaryservers.secondarydns.io",
    )


def server_manifest(
    name: str, replicas: int = 3, engine: str = "bind9", responses_per_second: int | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "engine": {"type": engine},
        "spread": {"minDomains": 3},
    }
    if responses_per_second is not None:
        spec["limits"] = {"responsesPerSecond": responses_per_second}
    return {"apiVersion": API, "kind": "SecondaryServer", "metadata": {"name": name}, "spec": spec}


def zone_manifest(
    name: str,
    zone: str,
    server: str | Sequence[str],
    secret: str,
    *,
    timers: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "zone": zone,
        "primaries": [{"address": PRIMARY_ADDRESS, "tsigKeySecretRef": {"name": secret}}],
        # One SecondaryServer, or several (of different engines, say) at once.
        "servers": [server] if isinstance(server, str) else list(server),
    }
    if timers:
        spec["timers"] = dict(timers)
    return {"apiVersion": API, "kind": "Zone", "metadata": {"name": name}, "spec": spec}


def condition(obj: Any, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def wait_synced(cluster: LocalCluster, namespace: str, zone_object: str, timeout: float) -> None:
    """Until the Zone's Synced condition is True (every replica at the primary's serial)."""
    wait_for(
        f"Zone {namespace}/{zone_object} in sync on every replica",
        lambda: (
            (
                c := condition(
                    kubectl_json(cluster, "get", "zone", "-n", namespace, zone_object), "Synced"
                )
            )
            and c["status"] == "True"
        ),
        timeout=timeout,
        every=1,
    )


# ---- measuring ---------------------------------------------------------------


def replica_addresses(cluster: LocalCluster, namespace: str, server: str) -> dict[str, str]:
    pods = kubectl_json(
        cluster, "get", "pods", "-n", namespace, "-l", f"secondarydns.io/server={server}"
    )
    return {
        p["metadata"]["name"]: p["status"]["podIP"]
        for p in (pods or {}).get("items", [])
        if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
    }


@dataclass(frozen=True)
class ServedZone:
    """A Zone served by SecondaryServers in a namespace of its own, its primary, the operator."""

    namespace: str
    primary: PrimaryServer
    operator: OperatorProcess


@contextmanager
def served_zone(
    cluster: LocalCluster,
    workdir: Path,
    origin: str,
    zone_object: str,
    servers: Mapping[str, tuple[str, int]],
    *,
    prefix: str,
    probe_seconds: float = 2,
) -> Iterator[ServedZone]:
    """A real primary for `origin`, the operator, and a Zone served by `servers`.

    `servers` maps each SecondaryServer's name to its (engine, replicas); the
    primary NOTIFYs the relay and its SOA refresh is a day, so replicas move on by
    NOTIFY. Everything is stopped and the namespace deleted at the end.
    """
    namespace = f"{prefix}-{os.urandom(3).hex()[:5]}"
    install_crds(cluster)
    ensure_namespace(cluster, namespace)
    primary = start_primary(cluster, workdir / "primary", demo_zone(origin, refresh=86400))
    try:
        with run_operator(cluster, workdir / "operator.log", probe_seconds=probe_seconds) as op:
            apply(
                cluster,
                namespace,
                primary.key.secret_manifest("transfer", namespace),
                *(
                    server_manifest(name, replicas=replicas, engine=engine)
                    for name, (engine, replicas) in servers.items()
                ),
                zone_manifest(zone_object, origin, list(servers), "transfer"),
            )
            yield ServedZone(namespace, primary, op)
            print(f"operator log: {op.log}")
    finally:
        primary.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def engine_pids(cluster: LocalCluster, namespace: str, server: str) -> dict[str, int]:
    """The engine container's process of each pod of `server` (pod -> pid), running or not.

    As the pod runner records it (hack/localcluster/podstate.py): the `engine`
    container's process, which execs named or knotd and so is the engine itself.
    """
    pods = kubectl_json(
        cluster, "get", "pods", "-n", namespace, "-l", f"secondarydns.io/server={server}"
    )
    pids: dict[str, int] = {}
    for pod in (pods or {}).get("items", []):
        directory = podstate.pods_dir(cluster.state_dir) / pod["metadata"]["uid"]
        for name, _, record in podstate.container_records(directory):
            if name == "engine" and record.pid is not None:
                pids[pod["metadata"]["name"]] = record.pid
    return pids


@dataclass
class Propagation:
    serial: int
    replicas_seconds: float
    status_seconds: float
    per_replica: dict[str, float] = field(default_factory=dict)
    # Until the primary itself served the new serial (its file write and reload).
    primary_seconds: float = 0.0


def zone_status(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    obj = kubectl_json(cluster, "get", "zone", "-n", namespace, name) or {}
    return dict(obj.get("status") or {})


def bump_and_measure(
    cluster: LocalCluster,
    primary: PrimaryServer,
    origin: dns.name.Name,
    addresses: Mapping[str, str],
    namespace: str,
    zone_object: str,
    value: str,
    timeout: float = 120,
) -> Propagation:
    """Change one record at the primary; time until every replica and the status show it.

    The clock starts before the primary reloads, so the figures include the
    primary's own reload and NOTIFY.
    """
    start = time.monotonic()
    serial = primary.set_record(origin, "demo", "TXT", f'"{value}"')
    primary_seconds = time.monotonic() - start
    pending = dict(addresses)
    per_replica: dict[str, float] = {}
    status_seconds: float | None = None
    deadline = start + timeout
    while (pending or status_seconds is None) and time.monotonic() < deadline:
        for pod, address in list(pending.items()):
            if soa_serial(origin, address, timeout=0.5) == serial:
                per_replica[pod] = time.monotonic() - start
                del pending[pod]
        if status_seconds is None:
            status = zone_status(cluster, namespace, zone_object)
            if status.get("servedSerial") == serial and status.get("primarySerial") == serial:
                status_seconds = time.monotonic() - start
        time.sleep(0.02)
    if pending or status_seconds is None:
        raise TimeoutError(
            f"serial {serial} not everywhere after {timeout:.0f}s: replicas missing "
            f"{sorted(pending)}, status {'ok' if status_seconds is not None else 'behind'}"
        )
    return Propagation(
        serial, max(per_replica.values()), status_seconds, per_replica, primary_seconds
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def demo_zone(origin: str, hosts: int = 2, refresh: int = 3600, retry: int = 600) -> dns.zone.Zone:
    return make_zone(origin, serial=2026112201, hosts=hosts, refresh=refresh, retry=retry)


def served_serial(zone: dns.zone.Zone) -> int:
    return zone_serial(zone)
