"""What one Zone status write costs the real API server, by the status's shape (issue 16).

Once the replicas serve every zone, how fast 10,000 Zones converge is how fast their
statuses are written: one `zones/status` merge patch each. On a 2-core machine
that rate is bounded by CPU, and the API server is the largest user of it. This
benchmark writes N Zones' statuses once each, the way the operator writes them
(`Cluster.update_status`: a merge patch carrying the resourceVersion, under the
operator's field manager, with the operator's API client, from `--writers`
threads), with one watch of the Zones open (the operator's informer), and prints
for each status shape:

- writes a second (wall clock; depends on what else the machine runs);
- CPU milliseconds per write of kube-apiserver and etcd (utime + stime from
  /proc, clock ticks of 10 ms over N writes) and of this process (the client);
- the status's size and its number of conditions.

The shapes, each a status the operator computes for a converged Zone
(`status.serial.evaluate`, then `status.zone.zone_status`, of one primary and 3
replicas in sync on one bind9 SecondaryServer):

- `converged`: as written today;
- `no-messages`: the same with every condition's message empty (what bytes alone cost);
- `kstatus-5`: only Ready, Reconciling, Stalled, Synced and ConfigValid;
- `observed-only`: only observedGeneration and zone (the floor of a status write).

Shapes run one after the other, `--rounds` times, in fresh namespaces of N Zones
(Zones with no status yet, as the operator's first write finds them).

    PYTHONPATH=hack:operator .venv/bin/python bench/status_writes.py --zones 400 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from localcluster import netns
from localcluster.cluster import LocalCluster
from localcluster.scenario import API, install_crds, zone_manifest
from secondary_dns.api.soa import ProbeResult, ProbeTarget, SoaAnswer
from secondary_dns.handlers.monitor import STATUS_WRITERS
from secondary_dns.k8s.api import Cluster, KubernetesTransport, new_api_client
from secondary_dns.status.serial import ReplicaTarget, evaluate, history_from_status
from secondary_dns.status.zone import ServerVerdict, ZoneConfig, zone_status

ZONES_PATH = f"/apis/{API}/namespaces"
TICK = os.sysconf("SC_CLK_TCK")
KSTATUS_5 = {"Ready", "Reconciling", "Stalled", "Synced", "ConfigValid"}


def converged_status(zone: str) -> dict[str, Any]:
    """The status the operator writes for a Zone in sync on 3 bind9 replicas."""
    soa = SoaAnswer(2026120101, 3600, 600, 86400, 60)
    primary = ProbeResult(ProbeTarget("10.250.0.10", 53), soa, None, 0.001)
    replicas = [
        (
            ReplicaTarget(
                f"scale-{i}", "scale", f"zone-{'abc'[i]}", f"10.244.{i}.254", engine="bind9"
            ),
            ProbeResult(ProbeTarget(f"10.244.{i}.254", 53), soa, None, 0.001),
        )
        for i in range(3)
    ]
    serial = evaluate(
        generation=1,
        primaries=[primary],
        replicas=replicas,
        history=history_from_status({}),
        previous_status={},
        now=time.time(),
    ).serial_status
    verdict = ServerVerdict("scale", "hash", True, None, 3, 3, engine="bind9")
    config = ZoneConfig(1, zone, verdicts=(verdict,), notify_address="10.96.0.53", open_transfer=())
    return zone_status({}, config, serial, "2026-12-03T22:21:54Z")


def without_messages(status: Mapping[str, Any]) -> dict[str, Any]:
    conditions = [dict(condition, message="") for condition in status["conditions"]]
    return {**status, "conditions": conditions}


def kstatus_5(status: Mapping[str, Any]) -> dict[str, Any]:
    conditions = [c for c in status["conditions"] if c["type"] in KSTATUS_5]
    return {**status, "conditions": conditions}


def observed_only(status: Mapping[str, Any]) -> dict[str, Any]:
    return {"observedGeneration": status["observedGeneration"], "zone": status["zone"]}


SHAPES: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "converged": dict,
    "no-messages": without_messages,
    "kstatus-5": kstatus_5,
    "observed-only": observed_only,
}


def process_pid(executable: str, cluster: str) -> int:
    """The pid of this cluster's `executable` (its command line names the cluster's state)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(argv[0].decode()).name == executable and any(cluster.encode() in a for a in argv):
            return int(entry.name)
    raise LookupError(f"no {executable} of cluster {cluster}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def trial(cluster: Cluster, pids: Mapping[str, int], shape: str, zones: int, writers: int) -> str:
    transport = cluster.transport
    namespace = f"status-writes-{uuid.uuid4().hex[:6]}"
    transport.request(
        "POST",
        "/api/v1/namespaces",
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    names = [f"z-{index:05d}" for index in range(zones)]
    created: dict[str, Mapping[str, Any]] = {}

    def create(name: str) -> None:
        manifest = zone_manifest(name, f"{name}.status.example.", "scale", "transfer")
        created[name] = transport.request("POST", f"{ZONES_PATH}/{namespace}/zones", body=manifest)

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(create, names))
    stop = threading.Event()

    def watch() -> None:
        query = [("resourceVersion", "0")]
        for _ in transport.watch(
            f"{ZONES_PATH}/{namespace}/zones", query=query, timeout_seconds=600
        ):
            if stop.is_set():
                return

    threading.Thread(target=watch, daemon=True).start()
    time.sleep(1)
    template = SHAPES[shape](converged_status("z.status.example."))

    def write(name: str) -> None:
        status = {**template, "zone": f"{name}.status.example."}
        assert cluster.update_status(
            "zones", namespace, name, lambda _: status, cached=created[name]
        )

    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_before, started = time.process_time(), time.monotonic()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, names))
    elapsed = time.monotonic() - started
    client = time.process_time() - client_before
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    stop.set()
    transport.request("DELETE", f"/api/v1/namespaces/{namespace}")
    size = len(json.dumps(template, separators=(",", ":")))
    apiserver, etcd = (1000 * used[name] / zones for name in ("apiserver", "etcd"))
    return (
        f"{shape:<14} {zones / elapsed:7.1f} writes/s  kube-apiserver {apiserver:5.2f}"
        f"  etcd {etcd:4.2f}  client {1000 * client / zones:4.2f} ms/write"
        f"  ({size} B, {len(template.get('conditions', []))} conditions; "
        f"load average {os.getloadavg()[0]:.1f})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--zones", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--writers", type=int, default=STATUS_WRITERS)
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help="comma-separated, of: " + ", ".join(SHAPES)
    )
    parser.add_argument("--cluster", default=os.environ.get("SDNS_CLUSTER", "sdns-bench"))
    args = parser.parse_args(argv)
    local = LocalCluster(args.cluster)
    local.up()
    netns.enter(local.netns)
    install_crds(local)
    pids = {
        "apiserver": process_pid("kube-apiserver", args.cluster),
        "etcd": process_pid("etcd", args.cluster),
    }
    cluster = Cluster(KubernetesTransport(new_api_client(str(local.kubeconfig))))
    print(f"{args.zones} Zone statuses written once each, {args.writers} writers, per shape:")
    for _ in range(args.rounds):
        for shape in args.shapes.split(","):
            print(trial(cluster, pids, shape, args.zones, args.writers), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
