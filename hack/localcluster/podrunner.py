"""The pod runner: kubelet, containerd and CNI for the project's pods in the local cluster.

It exists only because the machines this project is developed on have no
container runtime. kwok simulates every other pod (Running, an IP, nothing
behind it); every pod of the project (label `app.kubernetes.io/part-of:
secondary-dns`: the operator's DNS StatefulSets now, the chart's operator
and relay Deployments later) runs for real, from its image, as a kubelet
with containerd would run it: each container's OCI runtime spec generated as
containerd's CRI plugin generates it, run with runc (kubelet/, one module per
concern; kubelet/podworker.py drives one pod).

This module is the node: it watches the Pods, gives each one a worker thread,
adopts the pods a previous runner left, and holds what the workers share (the
API client, the image store, runc, back-offs, the node's resources). kwok is
told to leave these pods alone (`--disregard-status-with-label-selector`).

State lives under `<cluster state>/pods/<pod uid>/` (podstate.py), so a
restarted pod runner adopts the containers that still run; `hack/local-cluster
down` removes every pod whatever the pod runner's state
(`podstate.remove_all_pods`).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import kubernetes

from localcluster import netns
from localcluster.constants import RUNNER_POD_SELECTOR
from localcluster.kubelet import images, network, quantity, seccomp, security, volumes
from localcluster.kubelet.backoff import Backoff
from localcluster.kubelet.events import EventRecorder
from localcluster.kubelet.podworker import SYNC_SECONDS, PodWorker
from localcluster.kubelet.runc import Runc, become_subreaper
from localcluster.podstate import PodRecord, pod_records, runc_root

log = logging.getLogger("pod-runner")

WATCH_TIMEOUT_SECONDS = 300
REQUEST_TIMEOUT_SECONDS = 30.0


def is_runner_pod(pod: Mapping[str, Any]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    key, _, value = RUNNER_POD_SELECTOR.partition("=")
    return labels.get(key) == value


# ---- the watch --------------------------------------------------------------------


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
                    label_selector=RUNNER_POD_SELECTOR,
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
                    label_selector=RUNNER_POD_SELECTOR,
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


# ---- the runner ---------------------------------------------------------------------


class PodRunner:
    """The pods of one cluster, given where its state, kubeconfig and logs are."""

    def __init__(self, cluster: str, state_dir: Path, kubeconfig: Path, logs: Path) -> None:
        # The cluster's name is its network namespace's.
        self.cluster = cluster
        self.state_dir = state_dir
        self.logs = logs
        config = kubernetes.client.Configuration()
        loader: Any = kubernetes.config
        loader.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
        # Enough connections for every pod worker and probe at once.
        config.connection_pool_maxsize = 32
        self.core: Any = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
        self.stop = threading.Event()
        self.changed = threading.Event()
        self.watch = PodWatch(self.core, self.changed, self.stop)
        self.workers: dict[str, PodWorker] = {}
        # Pods whose worker removed them; the watch may still list them briefly.
        self.finished: set[str] = set()
        self.nodes: dict[str, dict[str, Any]] = {}
        self.nodes_lock = threading.Lock()
        self.ip_lock = threading.Lock()
        self.events = EventRecorder(self.core)
        self.images = images.ImageStore()
        self.runc = Runc(runc_root(state_dir))
        self.crash_backoff = Backoff(time.monotonic)
        self.image_backoff = Backoff(time.monotonic)
        self.all_capabilities = security.all_capabilities()
        self.seccomp_default = seccomp.load_default_profile()
        own_memory = _own_cgroup("memory")
        self.swap_accounting = (own_memory / "memory.memsw.limit_in_bytes").exists()
        self.node_allocatable: dict[str, str] = {}
        self.memory_capacity = 256 * 2**30

    # -- lifecycle

    def run(self) -> None:
        netns.require_inside(self.cluster)
        become_subreaper()
        self.runc.root.mkdir(parents=True, exist_ok=True)
        network.prepare_cluster_network(self.cluster)
        self._load_node_resources()
        self._adopt()
        self.watch.thread.start()
        log.info("pod runner for %s: running pods %s", self.cluster, RUNNER_POD_SELECTOR)
        while not self.stop.is_set():
            self.changed.wait(SYNC_SECONDS)
            self.changed.clear()
            if self.stop.is_set():
                break
            try:
                self.dispatch()
            except Exception:  # noqa: BLE001 - one bad pass must not stop every pod
                log.exception("dispatch failed; trying again")
        log.info("pod runner stopping; pods keep running (down removes them)")
        for worker in self.workers.values():
            worker.wake.set()

    def dispatch(self) -> None:
        """Hand each pod to its worker; start workers for new pods, end those of gone ones."""
        if not self.watch.synced:
            return
        pods = self.watch.snapshot()
        for uid, pod in pods.items():
            if uid in self.finished:
                continue
            worker = self.workers.get(uid)
            if worker is None:
                worker = self.workers[uid] = PodWorker(self, uid, pod)
                worker.thread.start()
            else:
                worker.update(pod)
        for uid, worker in list(self.workers.items()):
            if uid not in pods:
                worker.forget()
            if worker.done.is_set():
                del self.workers[uid]
                self.finished.add(uid)
        self.finished &= set(pods)

    def _adopt(self) -> None:
        """Workers for the pods a previous runner left; gone ones are removed on the first pass."""
        for _, record in pod_records(self.state_dir):
            pod = self._read_pod(record)
            worker = PodWorker(self, record.uid, pod or _placeholder(record))
            worker.adopt(record)
            if pod is None:
                worker.forget()
            self.workers[record.uid] = worker
            worker.thread.start()

    def _read_pod(self, record: PodRecord) -> dict[str, Any] | None:
        try:
            response = self.core.read_namespaced_pod(
                record.name, record.namespace, _preload_content=False
            )
        except kubernetes.client.exceptions.ApiException as error:
            if error.status == 404:
                return None
            raise
        pod: dict[str, Any] = json.loads(response.data)
        return pod if pod["metadata"]["uid"] == record.uid else None

    # -- what pod workers ask the API

    def _node(self, name: str) -> dict[str, Any]:
        with self.nodes_lock:
            if name not in self.nodes:
                response = self.core.read_node(name, _preload_content=False)
                self.nodes[name] = json.loads(response.data)
            return self.nodes[name]

    def _load_node_resources(self) -> None:
        response = self.core.list_node(_preload_content=False)
        items = json.loads(response.data).get("items") or []
        if items:
            status = items[0].get("status") or {}
            self.node_allocatable = dict(status.get("allocatable") or {})
            capacity = (status.get("capacity") or {}).get("memory")
            if capacity:
                self.memory_capacity = quantity.to_bytes(capacity)

    def host_ip(self, node: str) -> str | None:
        addresses = (self._node(node).get("status") or {}).get("addresses") or []
        for address in addresses:
            if address.get("type") == "InternalIP":
                return str(address["address"])
        return None

    def pod_ip(self, pod: Mapping[str, Any], node: str) -> str:
        cidr = (self._node(node).get("spec") or {}).get("podCIDR")
        if not cidr:
            raise RuntimeError(f"node {node} has no spec.podCIDR")
        with self.ip_lock:
            response = self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}", _preload_content=False
            )
            uid = pod["metadata"]["uid"]
            in_use = {
                p["status"]["podIP"]
                for p in json.loads(response.data).get("items") or []
                if p["metadata"]["uid"] != uid and (p.get("status") or {}).get("podIP")
            }
            in_use |= {w.record.ip for w in self.workers.values() if w.record and w.uid != uid}
            current = (pod.get("status") or {}).get("podIP")
            if (
                current
                and current not in in_use
                and ipaddress.ip_address(current) in ipaddress.ip_network(cidr)
            ):
                return str(current)
            return network.allocate_pod_ip(cidr, in_use)

    def object_bytes(self, kind: str, namespace: str, name: str) -> dict[str, bytes] | None:
        read = (
            self.core.read_namespaced_config_map
            if kind == "ConfigMap"
            else self.core.read_namespaced_secret
        )
        try:
            response = read(name, namespace, _preload_content=False)
        except kubernetes.client.exceptions.ApiException as error:
            if error.status == 404:
                return None
            raise
        return volumes.decode_object(kind, json.loads(response.data))

    def object_strings(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        data = self.object_bytes(kind, namespace, name)
        if data is None:
            return None
        return {key: value.decode(errors="replace") for key, value in data.items()}

    def services(self, namespace: str, links: bool) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for ns in {"default", *([namespace] if links else [])}:
            response = self.core.list_namespaced_service(ns, _preload_content=False)
            found += json.loads(response.data).get("items") or []
        return found

    def log_path(self, namespace: str, pod: str, container: str) -> Path:
        directory = self.logs / "pods"
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{namespace}_{pod}_{container}.log"


def _placeholder(record: PodRecord) -> dict[str, Any]:
    """A stand-in Pod for a record whose Pod is gone: enough to stop and remove it."""
    return {
        "metadata": {"name": record.name, "namespace": record.namespace, "uid": record.uid},
        "spec": {"containers": [], "nodeName": record.node},
    }


def _own_cgroup(controller: str) -> Path:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    return Path("/sys/fs/cgroup") / controller


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcluster.podrunner",
        description="Run the project's pods of a local cluster (`hack/local-cluster up` does).",
    )
    parser.add_argument("--cluster", required=True, help="the cluster (and its namespace) name")
    parser.add_argument("--state-dir", required=True, type=Path, help="the cluster's state")
    parser.add_argument("--kubeconfig", required=True, type=Path, help="the admin kubeconfig")
    parser.add_argument("--logs", required=True, type=Path, help="where the pods' logs go")
    args = parser.parse_args(argv)
    if shutil.which("runc") is None or not images.podman_available():
        print("the pod runner needs runc and podman: make system-packages", file=sys.stderr)
        return 1
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
    os.umask(0o022)
    raise SystemExit(main())
