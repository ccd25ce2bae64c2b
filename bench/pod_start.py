"""Pod start benchmark: a DNS pod from scheduled to running containers to Ready.

Runs on the local cluster: the real operator makes a SecondaryServer's
StatefulSet (no zones, so readiness is the agent's first configuration and
named answering), the pod runner runs the pods; the benchmark watches the Pods
through the API and notes, per pod, when it was bound to a node, when every
container was running (the pod runner's own part: network, volumes, a root
filesystem per container from the image, runc) and when it turned Ready (the
agent's start, its first configuration, named's start, the readiness probe).
Each round deletes every pod, so the StatefulSet makes new ones.

    make bench-pods BENCH_ARGS="--rounds 5"
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

from localcluster import netns
from localcluster.cluster import LocalCluster
from localcluster.scenario import (
    apply,
    build_pod_image,
    ensure_namespace,
    install_crds,
    percentile,
    run_operator,
    server_manifest,
)

SERVER = "podstart"


@dataclass
class PodTimes:
    """Seconds since the watch saw the pod bound to a node."""

    name: str
    bound: float
    running: float | None = None
    ready: float | None = None


@dataclass
class PodWatcher:
    """Notes when each pod (by UID) was bound, had every container running, turned Ready."""

    namespace: str
    pods: dict[str, PodTimes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def observe(self, pod: dict[str, Any]) -> None:
        now = time.monotonic()
        uid = pod["metadata"]["uid"]
        with self.lock:
            times = self.pods.get(uid)
            if times is None:
                if not (pod.get("spec") or {}).get("nodeName"):
                    return
                times = self.pods[uid] = PodTimes(pod["metadata"]["name"], now)
            status = pod.get("status") or {}
            statuses = status.get("containerStatuses") or []
            all_running = bool(statuses) and all("running" in s["state"] for s in statuses)
            if times.running is None and all_running:
                times.running = now - times.bound
            conditions = status.get("conditions") or []
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            if times.ready is None and ready:
                times.ready = now - times.bound

    def run(self, core: Any) -> None:
        while not self.stop.is_set():
            watch: Any = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in watch.stream(
                    core.list_namespaced_pod, self.namespace, timeout_seconds=300
                ):
                    if self.stop.is_set():
                        watch.stop()
                        return
                    self.observe(event["raw_object"])
            except Exception:  # noqa: BLE001 - a watch cut by the server: watch again
                time.sleep(0.2)


def _ready_count(watcher: PodWatcher, uids: set[str]) -> int:
    with watcher.lock:
        return sum(1 for uid, t in watcher.pods.items() if uid not in uids and t.ready is not None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cluster", default="sdns-bench")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="pods recreated this many times")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args(argv)

    cluster = LocalCluster(args.cluster)
    was_running = cluster.control_plane_healthy()
    cluster.up()
    build_pod_image()  # before the namespace: a build needs the package registries
    workdir = Path(f"/tmp/sdns-bench-pods-{uuid.uuid4().hex[:6]}")
    workdir.mkdir()
    try:
        netns.enter(cluster.netns)
        install_crds(cluster)
        namespace = f"bench-pods-{uuid.uuid4().hex[:4]}"
        ensure_namespace(cluster, namespace)
        config = kubernetes.client.Configuration()
        loader: Any = kubernetes.config
        loader.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=config)
        core: Any = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
        watcher = PodWatcher(namespace)
        threading.Thread(target=watcher.run, args=(core,), daemon=True).start()
        # A process without the relay (no chart value for that): it times the DNS pods only.
        with run_operator(cluster, workdir / "operator.log", relay=False, operators=1, pods=False):
            apply(cluster, namespace, server_manifest(SERVER, replicas=args.replicas))
            seen: set[str] = set()
            for round_ in range(args.rounds + 1):
                deadline = time.monotonic() + 300
                while _ready_count(watcher, seen) < args.replicas:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"round {round_}: pods not Ready in 300 s")
                    time.sleep(0.1)
                with watcher.lock:
                    seen |= set(watcher.pods)
                if round_ < args.rounds:
                    cluster.kubectl("delete", "pods", "-n", namespace, "--all", "--wait=false")
        watcher.stop.set()
        running = [t.running for t in watcher.pods.values() if t.running is not None]
        ready = [t.ready for t in watcher.pods.values() if t.ready is not None]
        print(f"\n{len(ready)} pods ({args.replicas} replicas, {args.rounds + 1} rounds)")
        print("seconds from bound to a node:   p50     max")
        print(f"  every container running     {percentile(running, 0.5):5.2f}  {max(running):6.2f}")
        print(f"  Ready                       {percentile(ready, 0.5):5.2f}  {max(ready):6.2f}")
        print(json.dumps({"running": sorted(running), "ready": sorted(ready)}))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not was_running and not args.keep:
            cluster.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
