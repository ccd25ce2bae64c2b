"""The pod runner: a minimal kubelet and CNI for the DNS pods of the local cluster.

It exists only because the machines this project is developed on have no
container runtime. kwok simulates every other pod (Running, an IP, nothing
behind it); the pods of SecondaryServers (label `secondarydns.io/server`) must
really answer DNS, so this process runs them the way a kubelet would:

- network: each pod gets a network namespace of its own, joined to the
  cluster's namespace by a veth pair, with the pod IP (/32, from its node's
  `spec.podCIDR`) on `eth0` and a default route through a link-local next hop
  (the Calico layout). The cluster namespace has a /32 route to each pod IP,
  and masquerades a pod's Service traffic that comes back to the pod itself
  (hairpin: the one kube-proxy does so only for its own node's pods).
  Nothing of this exists outside namespaces the local cluster created: the
  cluster namespace has no route out, and no pod address or route is ever
  added to the host's namespace;
- files: each container runs in a private mount namespace in which the pod's
  volumes (per-pod directories under the cluster's state directory) are bind
  mounted at the paths of the pod spec, so named.conf's fixed absolute paths
  (/run/secondary-dns, /var/lib/secondary-dns) work for every pod at once;
- processes: the containers' own command, args and env from the Pod object,
  with the `secondary-dns` executable replaced by this interpreter's
  `-m secondary_dns.cli`; exited containers are restarted with a backoff;
- status: kwok is told to leave these pods alone
  (`--disregard-status-with-label-selector`), so this process writes their
  status: phase, pod IP, container states, and `Ready` from the real
  readiness probe (the agent's /readyz on the pod IP). When a pod is deleted it
  stops the containers (SIGTERM, SIGKILL after the grace period), removes the
  network, and deletes the Pod object with grace period 0, as a kubelet does.

State lives under `<cluster state>/pods/<pod uid>/` (podstate.py: `pod.json`,
one `<container>.json` per container, the volumes), so a restarted pod runner
adopts the pods that are still running; `hack/local-cluster down` removes
every pod namespace whatever the pod runner's state (`podstate.remove_all_pods`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import kubernetes

from localcluster import netns
from localcluster.constants import (
    API_PORT,
    API_URL_FOR_PODS,
    CONTROL_PLANE_ADDRESS,
    POD_GATEWAY,
    RUNNER_POD_LABEL,
)
from localcluster.podstate import (
    CONTAINERS_DIR,
    ContainerRecord,
    PodRecord,
    container_records,
    host_veth_name,
    pod_netns_name,
    pod_records,
    pods_dir,
    teardown_pod_network,
    write_json,
)
from localcluster.processes import pid_alive

log = logging.getLogger("pod-runner")

POD_INTERFACE = "eth0"
# The pod runner's own nftables table in the cluster namespace (hairpin NAT).
NFT_TABLE = "pod-runner"
# Where a pod finds its API credentials (the service-account mount path); the
# pod runner puts a kubeconfig there instead of a token.
CREDENTIALS_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KUBECONFIG_IN_POD = f"{CREDENTIALS_DIR}/kubeconfig"
EXECUTABLE = "secondary-dns"
LOOP_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 1.0
# kubelet backs off from 10 s to 5 min; shorter here so a crash-looping test
# pod recovers within a test's patience.
BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 20.0
BACKOFF_RESET_AFTER_SECONDS = 60.0
WATCH_TIMEOUT_SECONDS = 300
REQUEST_TIMEOUT_SECONDS = 30.0
REPO = Path(__file__).resolve().parents[2]
# Lifetime of the pods' service-account tokens: longer than any local session
# (the runner does not rotate them as kubelet would).
TOKEN_SECONDS = 24 * 3600


# ---- pure decisions ----------------------------------------------------------


def is_runner_pod(pod: Mapping[str, Any]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return RUNNER_POD_LABEL in labels


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


def container_argv(container: Mapping[str, Any], python: str) -> list[str]:
    """The container's command and args, the image's entry point run from this checkout."""
    command = [str(part) for part in container.get("command") or []]
    args = [str(part) for part in container.get("args") or []]
    if not command:
        raise ValueError(
            f"container {container.get('name')!r} has no command: the pod runner has no "
            "image to take an entry point from"
        )
    if command[0] == EXECUTABLE:
        command = [python, "-m", "secondary_dns.cli", *command[1:]]
    return command + args


def _field_value(pod: Mapping[str, Any], field_path: str) -> str | None:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if field_path in simple:
        value = simple[field_path]
        return None if value is None else str(value)
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if field_path.startswith(prefix + "['") and field_path.endswith("']"):
            key = field_path[len(prefix) + 2 : -2]
            value = (metadata.get(source) or {}).get(key)
            return None if value is None else str(value)
    return None


def container_env(
    container: Mapping[str, Any], pod: Mapping[str, Any], pod_ip: str, base: Mapping[str, str]
) -> dict[str, str]:
    """`base`, then the container's env with downward-API fields resolved from the Pod.

    Values from ConfigMaps or Secrets are not supported (the DNS pods use none);
    such a variable is left out and logged rather than set to something wrong.
    """
    resolved = {**pod, "status": {**(pod.get("status") or {}), "podIP": pod_ip}}
    env = dict(base)
    for entry in container.get("env") or []:
        name = str(entry["name"])
        if "value" in entry:
            env[name] = str(entry["value"])
            continue
        field_ref = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        value = _field_value(resolved, str(field_ref)) if field_ref else None
        if value is None:
            log.warning("container %s: env %s is not supported; left out", container["name"], name)
            continue
        env[name] = value
    return env


def volume_mounts(container: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(volume name, mount path) of the container, in the pod spec's order."""
    return [(str(m["name"]), str(m["mountPath"])) for m in container.get("volumeMounts") or []]


def pod_mounts(mounts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(directory relative to the pod's, mount path) for each of the container's mounts.

    The service-account volume that admission adds to every pod
    (`kube-api-access-*` at CREDENTIALS_DIR) becomes the pod's `credentials`
    directory, where the runner puts a kubeconfig instead of a token; a pod
    without one gets the directory mounted there all the same.
    """
    result = [
        ("credentials" if target == CREDENTIALS_DIR else f"volumes/{volume}", target)
        for volume, target in mounts
    ]
    if all(target != CREDENTIALS_DIR for _, target in result):
        result.insert(0, ("credentials", CREDENTIALS_DIR))
    return result


def service_account_kubeconfig(
    base: Mapping[str, Any], account: str, token: str | None
) -> dict[str, Any]:
    """`base` (server and CA) with the pod's own identity instead of the admin's.

    kubelet gives a pod a token of its service account, nothing else; so does
    the runner, so the agent's Role is what stands between it and the API. No
    token (automountServiceAccountToken: false) means no credentials at all.
    """
    config = json.loads(json.dumps(base))
    user: dict[str, Any] = {"token": token} if token else {}
    config["users"] = [{"name": account, "user": user}]
    for context in config.get("contexts") or []:
        context["context"]["user"] = account
    return dict(config)


def unhidden_mounts(
    mounts: Sequence[tuple[str, str]], protected: Sequence[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(mounts to make, mounts left out): a mount that would hide a protected path is left out.

    The containers run this checkout's code with the runner's interpreter; a
    volume mounted over a directory holding either (a checkout or a virtualenv
    under /tmp, which the pods' `tmp` volume covers) would leave the container
    with nothing to run. A real pod has its own root filesystem and no such
    problem; here the mount is skipped (for /tmp, TMPDIR points at the volume).
    """
    kept: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for source, target in mounts:
        hides = any(Path(path).is_relative_to(target) for path in protected)
        (skipped if hides else kept).append((source, target))
    return kept, skipped


def mount_script(pod_dir: Path, mounts: Sequence[tuple[str, str]]) -> str:
    """Shell that bind-mounts the pod's directories, then execs the container's argv ("$@").

    Sources are relative to the pod directory, which is the working directory:
    mounting over /run/secondary-dns hides the cluster's state directory (it
    lives there), but not a working directory that is already inside it.
    """
    lines = ["set -e", f"cd {shlex.quote(str(pod_dir))}"]
    for source, target in mounts:
        lines.append(f"mount --bind {shlex.quote(source)} {shlex.quote(target)}")
    lines += ["cd /", 'exec "$@"']
    return "\n".join(lines)


def readiness_target(container: Mapping[str, Any]) -> tuple[str, int] | None:
    """(path, port) of an httpGet readiness probe, the port resolved by name."""
    probe = container.get("readinessProbe") or {}
    http = probe.get("httpGet")
    if not http:
        return None
    port = http.get("port")
    if isinstance(port, str) and not port.isdigit():
        named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        port = named.get(port)
    if port is None:
        return None
    return str(http.get("path") or "/"), int(port)


def _container_path(path: str) -> str:
    """The caller's PATH, plus the sbin directories where named and its tools live."""
    parts = [p for p in path.split(":") if p]
    for directory in ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        if directory not in parts:
            parts.append(directory)
    return ":".join(parts)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ContainerView:
    """What the status needs to know about one container."""

    name: str
    image: str
    running: bool
    started_at: str | None
    restarts: int
    ready: bool
    waiting_reason: str | None = None
    last_exit_code: int | None = None
    pid: int | None = None


def _condition(
    type_: str, ok: bool, previous: Mapping[str, Mapping[str, Any]], now: str
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(type_) or {}
    # lastTransitionTime moves only when the status does (what kubelet does).
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    condition: dict[str, Any] = {
        "type": type_,
        "status": status,
        "lastTransitionTime": since or now,
    }
    if not ok and type_ in ("Ready", "ContainersReady"):
        condition["reason"] = "ContainersNotReady"
    return condition


def pod_status(
    pod: Mapping[str, Any],
    pod_ip: str,
    host_ip: str | None,
    containers: Sequence[ContainerView],
    now: str,
) -> dict[str, Any]:
    """The Pod's status as a kubelet would report it; timestamps kept while unchanged."""
    current = pod.get("status") or {}
    previous = {c.get("type"): c for c in current.get("conditions") or []}
    ready = bool(containers) and all(c.ready for c in containers)
    statuses = []
    for view in containers:
        state: dict[str, Any]
        if view.running:
            state = {"running": {"startedAt": view.started_at}}
        else:
            state = {"waiting": {"reason": view.waiting_reason or "ContainerCreating"}}
        entry: dict[str, Any] = {
            "name": view.name,
            "image": view.image,
            "imageID": "",
            "ready": view.ready,
            "restartCount": view.restarts,
            "started": view.running,
            "state": state,
        }
        if view.pid is not None:
            entry["containerID"] = f"podrunner://{view.pid}"
        if view.last_exit_code is not None:
            entry["lastState"] = {"terminated": {"exitCode": view.last_exit_code}}
        statuses.append(entry)
    status: dict[str, Any] = {
        "phase": "Running",
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": current.get("startTime") or now,
        "conditions": [
            _condition("PodScheduled", True, previous, now),
            _condition("Initialized", True, previous, now),
            _condition("ContainersReady", ready, previous, now),
            _condition("Ready", ready, previous, now),
        ],
        "containerStatuses": statuses,
    }
    if host_ip:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    return status


def status_differs(desired: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """True when a field the pod runner owns differs from what the Pod shows."""
    return any(current.get(key) != value for key, value in desired.items())


# ---- the network of one pod ----------------------------------------------------


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


# ---- processes -------------------------------------------------------------------


@dataclass
class Container:
    """One container's process, started by this runner or adopted from a previous one."""

    name: str
    state_file: Path
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    started_monotonic: float = 0.0
    restarts: int = 0
    last_exit_code: int | None = None
    backoff: float = BACKOFF_INITIAL_SECONDS
    next_start: float = 0.0
    error: str | None = None

    def alive(self) -> bool:
        if self.process is not None:
            if self.process.poll() is None:
                return True
            self.last_exit_code = self.process.returncode
            self.process = None
            return False
        return self.pid is not None and pid_alive(self.pid)

    def save(self) -> None:
        record = ContainerRecord(self.pid, self.started_at, self.restarts, self.last_exit_code)
        record.save(self.state_file)

    def signal(self, signum: signal.Signals) -> None:
        if self.pid is None:
            return
        # Its own session from the start: the group holds the container's
        # children too (named-checkconf, rndc), as a container's cgroup would.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


@dataclass
class Sandbox(PodRecord):
    """A pod the runner runs: its record, directory, containers and what it last did."""

    directory: Path = Path()
    containers: dict[str, Container] = field(default_factory=dict)
    network_ready: bool = False
    terminating_since: float | None = None
    last_status: dict[str, Any] | None = None


# ---- the runner ------------------------------------------------------------------


class PodWatch:
    """The runner's pods by UID, kept current by list + watch in a thread."""

    def __init__(self, core: Any, changed: threading.Event, stop: threading.Event) -> None:
        self.core = core
        self.changed = changed
        self.stop = stop
        self.pods: dict[str, dict[str, Any]] = {}
        self.synced = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return dict(self.pods)

    def _run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                response = self.core.list_pod_for_all_namespaces(
                    label_selector=RUNNER_POD_LABEL,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
                document = json.loads(response.data)
                with self.lock:
                    self.pods = {p["metadata"]["uid"]: p for p in document.get("items") or []}
                    self.synced = True
                self.changed.set()
                version = str(document["metadata"].get("resourceVersion", ""))
                watch_module: Any = kubernetes.watch
                watch = watch_module.Watch()
                for event in watch.stream(
                    self.core.list_pod_for_all_namespaces,
                    label_selector=RUNNER_POD_LABEL,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                    _request_timeout=WATCH_TIMEOUT_SECONDS + REQUEST_TIMEOUT_SECONDS,
                ):
                    if self.stop.is_set():
                        return
                    kind, obj = event["type"], event["raw_object"]
                    if kind == "BOOKMARK":
                        continue
                    if kind == "ERROR":  # 410 Gone: list again
                        break
                    with self.lock:
                        if kind == "DELETED":
                            self.pods.pop(obj["metadata"]["uid"], None)
                        else:
                            self.pods[obj["metadata"]["uid"]] = obj
                    self.changed.set()
                backoff = 0.5
            except Exception as error:  # noqa: BLE001 - an API server restart is not fatal
                log.warning("pod watch failed (%s); listing again in %.1fs", error, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)


class PodRunner:
    """The pods of one cluster, given where its state, kubeconfig and logs are."""

    def __init__(
        self,
        cluster: str,
        state_dir: Path,
        kubeconfig: Path,
        logs: Path,
        python: str = sys.executable,
    ) -> None:
        # The cluster's name is its network namespace's.
        self.cluster = cluster
        self.state_dir = state_dir
        self.kubeconfig = kubeconfig
        self.logs = logs
        self.python = python
        config = kubernetes.client.Configuration()
        loader: Any = kubernetes.config
        loader.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
        self.core: Any = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
        self.stop = threading.Event()
        self.changed = threading.Event()
        self.watch = PodWatch(self.core, self.changed, self.stop)
        self.sandboxes: dict[str, Sandbox] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        # Readiness probes bypass any proxy the environment names: pod IPs
        # exist only in this namespace.
        self.http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- lifecycle

    def run(self) -> None:
        netns.require_inside(self.cluster)
        prepare_cluster_network(self.cluster)
        self._write_pod_kubeconfig()
        self._adopt()
        self.watch.thread.start()
        log.info("pod runner for %s: running pods labelled %s", self.cluster, RUNNER_POD_LABEL)
        while not self.stop.is_set():
            self.changed.wait(LOOP_SECONDS)
            self.changed.clear()
            if self.stop.is_set():
                break
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - one bad pass must not stop every pod
                log.exception("reconcile failed; trying again")
        log.info("pod runner stopping; pods keep running (down removes them)")

    def reconcile(self) -> None:
        if not self.watch.synced:
            return
        pods = self.watch.snapshot()
        for uid, pod in pods.items():
            try:
                self._sync(uid, pod)
            except Exception:  # noqa: BLE001 - keep the other pods going
                log.exception("pod %s/%s", pod["metadata"]["namespace"], pod["metadata"]["name"])
        # Pods gone from the API (deleted while the runner was down, or by force).
        for uid in [uid for uid in self.sandboxes if uid not in pods]:
            self._destroy(self.sandboxes[uid])

    # -- kubeconfig and nodes

    @property
    def pod_kubeconfig_dir(self) -> Path:
        return self.state_dir / "pod-credentials"

    def _write_pod_kubeconfig(self) -> None:
        """The cluster's kubeconfig, pointed at the API server's address on the cluster's lo.

        A pod cannot reach 127.0.0.1 of the cluster namespace (its loopback is
        its own); 10.250.0.1 is on the server certificate.
        """
        config = json.loads(self.kubeconfig.read_text())
        for entry in config["clusters"]:
            entry["cluster"]["server"] = API_URL_FOR_PODS
        self.pod_kubeconfig_dir.mkdir(parents=True, exist_ok=True)
        target = self.pod_kubeconfig_dir / "kubeconfig"
        write_json(target, config)
        target.chmod(0o600)

    def _pod_kubeconfig(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        """A kubeconfig with a token of the pod's service account, bound to the pod."""
        spec = pod.get("spec") or {}
        account = str(spec.get("serviceAccountName") or "default")
        base = json.loads((self.pod_kubeconfig_dir / "kubeconfig").read_text())
        if spec.get("automountServiceAccountToken") is False:
            return service_account_kubeconfig(base, account, None)
        metadata = pod["metadata"]
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": TOKEN_SECONDS,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                },
            },
        }
        response = self.core.create_namespaced_service_account_token(
            account, metadata["namespace"], request, _preload_content=False
        )
        token = json.loads(response.data)["status"]["token"]
        return service_account_kubeconfig(base, account, str(token))

    def _node(self, name: str) -> dict[str, Any]:
        if name not in self.nodes:
            response = self.core.read_node(name, _preload_content=False)
            self.nodes[name] = json.loads(response.data)
        return self.nodes[name]

    def _host_ip(self, node: str) -> str | None:
        addresses = (self._node(node).get("status") or {}).get("addresses") or []
        for address in addresses:
            if address.get("type") == "InternalIP":
                return str(address["address"])
        return None

    def _pod_ip(self, pod: Mapping[str, Any], node: str) -> str:
        cidr = (self._node(node).get("spec") or {}).get("podCIDR")
        if not cidr:
            raise RuntimeError(f"node {node} has no spec.podCIDR")
        response = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node}", _preload_content=False
        )
        uid = pod["metadata"]["uid"]
        in_use = {
            p["status"]["podIP"]
            for p in json.loads(response.data).get("items") or []
            if p["metadata"]["uid"] != uid and (p.get("status") or {}).get("podIP")
        }
        in_use |= {s.ip for s in self.sandboxes.values() if s.uid != uid}
        current = (pod.get("status") or {}).get("podIP")
        if (
            current
            and current not in in_use
            and ipaddress.ip_address(current) in ipaddress.ip_network(cidr)
        ):
            return str(current)
        return allocate_pod_ip(cidr, in_use)

    # -- adoption

    def _adopt(self) -> None:
        """Take over the pods a previous runner started: same network, same processes."""
        for directory, record in pod_records(self.state_dir):
            sandbox = Sandbox(**vars(record), directory=directory)
            for name, state_file, state in container_records(directory):
                container = Container(name, state_file, restarts=state.restarts)
                container.last_exit_code = state.last_exit_code
                if state.running() and state.pid and netns.holds(sandbox.netns, state.pid):
                    container.pid = state.pid
                    container.started_at = state.started_at
                    container.started_monotonic = time.monotonic()
                sandbox.containers[container.name] = container
            self.sandboxes[sandbox.uid] = sandbox
            running = sum(1 for c in sandbox.containers.values() if c.pid is not None)
            log.info(
                "adopted pod %s/%s (%s, %d running containers)",
                sandbox.namespace,
                sandbox.name,
                sandbox.ip,
                running,
            )

    # -- one pod

    def _sync(self, uid: str, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        node = (pod.get("spec") or {}).get("nodeName")
        sandbox = self.sandboxes.get(uid)
        if metadata.get("deletionTimestamp"):
            self._terminate(pod, sandbox)
            return
        if not node:
            return  # not scheduled yet
        if sandbox is None:
            sandbox = self._create(pod, node)
        if not sandbox.network_ready:
            setup_pod_network(self.cluster, sandbox.netns, sandbox.veth, sandbox.ip)
            sandbox.network_ready = True
        views = [self._run_container(sandbox, pod, spec) for spec in pod["spec"]["containers"]]
        desired = pod_status(pod, sandbox.ip, self._host_ip(node), views, _now())
        current = pod.get("status") or {}
        # Compare without the timestamps that only say when we looked.
        if status_differs(desired, current) and desired != sandbox.last_status:
            self.core.patch_namespaced_pod_status(
                metadata["name"],
                metadata["namespace"],
                {"status": desired},
                _content_type="application/merge-patch+json",
            )
            sandbox.last_status = desired
            log.info(
                "pod %s/%s: %s, ready=%s",
                sandbox.namespace,
                sandbox.name,
                sandbox.ip,
                all(v.ready for v in views),
            )

    def _create(self, pod: Mapping[str, Any], node: str) -> Sandbox:
        metadata = pod["metadata"]
        uid = str(metadata["uid"])
        ip = self._pod_ip(pod, node)
        directory = pods_dir(self.state_dir) / uid
        (directory / CONTAINERS_DIR).mkdir(parents=True, exist_ok=True)
        sandbox = Sandbox(
            uid=uid,
            namespace=str(metadata["namespace"]),
            name=str(metadata["name"]),
            node=node,
            ip=ip,
            netns=pod_netns_name(self.cluster, uid),
            veth=host_veth_name(uid),
            directory=directory,
        )
        sandbox.save(directory)
        self.sandboxes[uid] = sandbox
        log.info("pod %s/%s on %s: address %s", sandbox.namespace, sandbox.name, node, ip)
        return sandbox

    def _run_container(
        self, sandbox: Sandbox, pod: Mapping[str, Any], spec: Mapping[str, Any]
    ) -> ContainerView:
        name = str(spec["name"])
        container = sandbox.containers.get(name)
        if container is None:
            container = Container(name, sandbox.directory / CONTAINERS_DIR / f"{name}.json")
            sandbox.containers[name] = container
        now = time.monotonic()
        if not container.alive():
            if container.pid is not None:
                ran = now - container.started_monotonic
                log.warning(
                    "pod %s/%s: container %s exited (%s) after %.0fs",
                    sandbox.namespace,
                    sandbox.name,
                    name,
                    container.last_exit_code,
                    ran,
                )
                if ran >= BACKOFF_RESET_AFTER_SECONDS:
                    container.backoff = BACKOFF_INITIAL_SECONDS
                container.next_start = now + container.backoff
                container.backoff = min(container.backoff * 2, BACKOFF_MAX_SECONDS)
                container.pid = None
                container.started_at = None
                container.restarts += 1
                container.save()
            if now >= container.next_start:
                self._start_container(sandbox, pod, spec, container)
        running = container.alive()
        ready = running
        target = readiness_target(spec)
        if running and target is not None:
            ready = self._probe(sandbox.ip, *target)
        waiting = None
        if not running:
            waiting = container.error or ("CrashLoopBackOff" if container.restarts else None)
        return ContainerView(
            name=name,
            image=str(spec.get("image") or ""),
            running=running,
            started_at=container.started_at,
            restarts=container.restarts,
            ready=ready,
            waiting_reason=waiting,
            last_exit_code=container.last_exit_code,
            pid=container.pid if running else None,
        )

    def _probe(self, ip: str, path: str, port: int) -> bool:
        try:
            with self.http.open(f"http://{ip}:{port}{path}", timeout=PROBE_TIMEOUT_SECONDS) as r:
                return 200 <= int(r.status) < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _start_container(
        self,
        sandbox: Sandbox,
        pod: Mapping[str, Any],
        spec: Mapping[str, Any],
        container: Container,
    ) -> None:
        try:
            argv = container_argv(spec, self.python)
        except ValueError as error:
            container.error = "CreateContainerError"
            container.next_start = time.monotonic() + BACKOFF_MAX_SECONDS
            log.error("pod %s/%s: %s", sandbox.namespace, sandbox.name, error)
            return
        credentials = sandbox.directory / "credentials"
        credentials.mkdir(exist_ok=True)
        kubeconfig_file = credentials / "kubeconfig"
        # One token per pod (the directory is the pod's, by UID), shared by its
        # containers and their restarts, as kubelet's projected volume is.
        if not kubeconfig_file.exists():
            try:
                kubeconfig = self._pod_kubeconfig(pod)
            except (kubernetes.client.exceptions.ApiException, KeyError, ValueError) as error:
                # The ServiceAccount may not exist yet: retried like a failed start.
                container.error = "CreateContainerConfigError"
                container.next_start = time.monotonic() + BACKOFF_INITIAL_SECONDS
                log.warning(
                    "pod %s/%s: no service-account token: %s",
                    sandbox.namespace,
                    sandbox.name,
                    error,
                )
                return
            write_json(kubeconfig_file, kubeconfig)
            kubeconfig_file.chmod(0o600)
        mounts, skipped = unhidden_mounts(
            pod_mounts(volume_mounts(spec)),
            [str(REPO), sys.prefix, sys.base_prefix, str(Path(self.python).resolve().parent)],
        )
        for source, _ in [*mounts, *skipped]:
            (sandbox.directory / source).mkdir(parents=True, exist_ok=True)
        for _, target in mounts:
            # Mount points must exist; on the host they stay empty directories.
            Path(target).mkdir(parents=True, exist_ok=True)
        base = {
            "PATH": _container_path(os.environ.get("PATH", "")),
            "PYTHONPATH": str(REPO / "operator"),
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
            "HOME": "/tmp",
            "HOSTNAME": sandbox.name,
            # What kubelet injects for the `kubernetes` Service.
            "KUBERNETES_SERVICE_HOST": CONTROL_PLANE_ADDRESS,
            "KUBERNETES_SERVICE_PORT": str(API_PORT),
            "KUBECONFIG": KUBECONFIG_IN_POD,
        }
        for source, target in skipped:
            if target == "/tmp":
                base["TMPDIR"] = base["HOME"] = str(sandbox.directory / source)
        env = container_env(spec, pod, sandbox.ip, base)
        logs = self.logs / "pods"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{sandbox.namespace}_{sandbox.name}_{container.name}.log"
        script = mount_script(sandbox.directory, mounts)
        command = [
            "ip", "netns", "exec", sandbox.netns,
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script, "sh", *argv,
        ]  # fmt: skip
        with open(log_path, "ab") as out:
            out.write(f"---- {_now()} start {' '.join(argv)}\n".encode())
            out.flush()
            container.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                start_new_session=True,
            )
        container.pid = container.process.pid
        container.started_at = _now()
        container.started_monotonic = time.monotonic()
        container.error = None
        container.save()
        log.info(
            "pod %s/%s: started %s (pid %d, log %s)",
            sandbox.namespace,
            sandbox.name,
            container.name,
            container.pid,
            log_path,
        )

    # -- termination

    def _terminate(self, pod: Mapping[str, Any], sandbox: Sandbox | None) -> None:
        """Graceful stop, then the Pod object goes (grace period 0): the kubelet's last word."""
        metadata = pod["metadata"]
        if sandbox is not None:
            now = time.monotonic()
            if sandbox.terminating_since is None:
                sandbox.terminating_since = now
                for container in sandbox.containers.values():
                    container.signal(signal.SIGTERM)
                log.info("pod %s/%s: terminating", sandbox.namespace, sandbox.name)
            grace = metadata.get("deletionGracePeriodSeconds")
            grace = 30 if grace is None else int(grace)
            alive = [c for c in sandbox.containers.values() if c.alive()]
            if alive and now - sandbox.terminating_since < grace:
                return  # asked again on the next pass
            for container in alive:
                container.signal(signal.SIGKILL)
            self._destroy(sandbox)
        try:
            self.core.delete_namespaced_pod(
                metadata["name"],
                metadata["namespace"],
                grace_period_seconds=0,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": metadata["uid"]}},
            )
        except kubernetes.client.exceptions.ApiException as error:
            if error.status not in (404, 409):
                raise

    def _destroy(self, sandbox: Sandbox) -> None:
        for container in sandbox.containers.values():
            container.signal(signal.SIGKILL)
            if container.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    container.process.wait(5)
        teardown_pod_network(sandbox.netns)
        forget_pod_address(self.cluster, sandbox.ip)
        shutil.rmtree(sandbox.directory, ignore_errors=True)
        self.sandboxes.pop(sandbox.uid, None)
        log.info("pod %s/%s: stopped and removed", sandbox.namespace, sandbox.name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcluster.podrunner",
        description="Run the DNS pods of a local cluster (started by `hack/local-cluster up`).",
    )
    parser.add_argument("--cluster", required=True, help="the cluster (and its namespace) name")
    parser.add_argument("--state-dir", required=True, type=Path, help="the cluster's state")
    parser.add_argument("--kubeconfig", required=True, type=Path, help="the admin kubeconfig")
    parser.add_argument("--logs", required=True, type=Path, help="where the pods' logs go")
    args = parser.parse_args(argv)
    # Before any thread exists: threads and processes started later inherit it.
    netns.enter(args.cluster)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    runner = PodRunner(args.cluster, args.state_dir, args.kubeconfig, args.logs)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        runner.stop.set()
        runner.changed.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
