"""Scale benchmark: N Zones on one SecondaryServer of 3 real replicas (issue 16).

Runs on the local cluster (real control plane, real named pods via the pod
runner, a real BIND primary serving N + 1 small zones, the real operator).
Zones are created 8 at a time (8 concurrent creates, then the next 8), all on
one SecondaryServer of 3 replicas over 3 failure zones, and the benchmark
prints, each with how finely it is measured:

- converged: seconds from the last Zone's creation until every Zone is
  converged (`Synced` True at 3/3, `ConfigValid` True, `status.observedGeneration`
  current), seen through a watch of the Zones (milliseconds after the write);
- operator RSS (VmRSS, and its peak VmHWM) once converged;
- operator CPU, % of one core, over a quiet minute right after convergence
  (utime + stime from /proc, clock ticks of 10 ms over 60 s): everything the
  operator process does, the serial monitor's probing included;
- API writes in that quiet minute, and while creating and converging (the
  operator's `secondarydns_api_writes_total`, by resource: `zones/status`,
  `events`, `configmaps`, `secrets`, `secondaryservers/status`, ...);
- one Zone added, changed and deleted among the N, --one-zone-rounds times (3; a
  new Zone each round; p50, slowest and every value): seconds until every replica
  serves the change (replicas polled every 10 ms at their pod IPs: added = it
  answers the zone's SOA authoritatively; changed = its allowTransfer now admits
  this host, so an AXFR succeeds; deleted = it no longer answers for the zone),
  and the operator's reconcile time for it (`secondarydns_reconcile_duration_seconds`:
  sum and count of the reconciles in that window, exact), and every status write of
  that Zone as the watch saw it (what its status converged time is made of);
- the shape of convergence: every 10 s from the first create, the Zones at each
  stage (no status, ConfigValid only, converged) and the zones each replica's agent
  serves (its `/zones` as last looked at), so a slow part shows as itself;
- with --allocators: the operator's allocators read from inside it
  (`localcluster.allocators`: pymalloc, glibc malloc, VmRSS after malloc_trim)
  once converged and at the end, and whenever its VmHWM rose by 10 MiB while it
  converged; its VmRSS is sampled every 0.5 s from the first create and the
  highest of each 10 s printed beside the progress lines (what builds the peak);
- with --profile FILE: py-spy samples of the operator from the first create until
  every Zone converged (FILE with .converge before its suffix) and in the quiet
  minute (FILE), each printed as the functions most often on the stack.

    make bench-scale N=1000
    PYTHONPATH=hack:operator .venv/bin/python bench/scale.py --zones 1000 --cluster sdns-bench

The operator runs with its defaults (serial probes every 10 s, resync every 60 s).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import kubernetes
from kubernetes.client.exceptions import ApiException

from localcluster import allocators, netns, release
from localcluster.cluster import LocalCluster
from localcluster.constants import PRIMARY_ADDRESS
from localcluster.named import PrimaryServer, TsigCredentials, make_zone
from localcluster.release import ProcessInstallation
from localcluster.scenario import (
    API,
    OperatorProcess,
    apply,
    build_pod_image,
    ensure_namespace,
    install_crds,
    replica_addresses,
    run_operator,
    server_manifest,
    zone_manifest,
)
from localcluster.waiting import wait_for
from secondary_dns.api.agent_contract import AGENT_PORT

GROUP, VERSION = API.split("/")
SERVER = "scale"
REPLICAS = 3
SECRET = "transfer"
BATCH = 8
POLL_SECONDS = 0.01
# The primary's startup-notify-rate (see primary_for).
STARTUP_NOTIFY_RATE = 5000
# Untyped parts of the client, used through Any so strict mypy accepts the calls.
_watch_module: Any = kubernetes.watch


def zone_name(index: int) -> str:
    return f"z{index:05d}.scale.example."


def zone_object(index: int) -> str:
    return f"z-{index:05d}"


# ---- the operator process ------------------------------------------------------


def _proc_status(pid: int, field_name: str) -> float:
    """A VmRSS-style line of /proc/PID/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field_name} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds (proc(5))."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ReconcileTally:
    count: float
    seconds: float

    @classmethod
    def read(cls, operator: OperatorProcess) -> ReconcileTally:
        return cls(
            operator.metric("secondarydns_reconcile_duration_seconds_count"),
            operator.metric("secondarydns_reconcile_duration_seconds_sum"),
        )

    def since(self, before: ReconcileTally) -> ReconcileTally:
        return ReconcileTally(self.count - before.count, self.seconds - before.seconds)

    def text(self) -> str:
        if not self.count:
            return "no reconcile"
        return f"{self.seconds * 1000:.1f} ms in {self.count:.0f} reconcile(s)"


def api_writes(operator: OperatorProcess) -> dict[str, float]:
    """The operator's API writes so far, by resource (`zones/status`, `configmaps`, ...)."""
    name = "secondarydns_api_writes_total"
    writes: dict[str, float] = {}
    for line in operator.metrics_text().splitlines():
        if not line.startswith(name + "{"):
            continue
        labels, _, value = line[len(name) + 1 :].rpartition("} ")
        fields = dict(part.split("=", 1) for part in labels.split(",") if "=" in part)
        resource = fields.get("resource", '""').strip('"')
        writes[resource] = writes.get(resource, 0.0) + float(value)
    return writes


def writes_since(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    changed = {key: value - before.get(key, 0.0) for key, value in after.items()}
    return {key: value for key, value in changed.items() if value}


def breakdown(writes: Mapping[str, float]) -> str:
    if not writes:
        return "none"
    ranked = sorted(writes.items(), key=lambda item: -item[1])
    return ", ".join(f"{resource} {count:.0f}" for resource, count in ranked)


# ---- watching the Zones ----------------------------------------------------------


def stage(zone: Mapping[str, Any], replicas: int) -> str:
    """How far a Zone's status is: "none" (no status yet), "config" (ConfigValid True),
    "synced" (Synced at replicas/replicas too, Ready or not), "converged"."""
    if converged(zone, replicas):
        return "converged"
    status = zone.get("status") or {}
    if not status.get("conditions"):
        return "none"
    if status.get("synced") == f"{replicas}/{replicas}":
        return "synced"
    valid = [c for c in status["conditions"] if c.get("type") == "ConfigValid"]
    return "config" if valid and valid[0].get("status") == "True" else "other"


def summary(zone: Mapping[str, Any]) -> str:
    """One status write of a Zone, as the watch sees it (the timeline of one Zone)."""
    status = zone.get("status") or {}
    found = {c.get("type"): c for c in status.get("conditions") or []}
    parts = [f"gen {status.get('observedGeneration')}/{zone['metadata'].get('generation')}"]
    parts.append(f"synced {status.get('synced')}")
    for kind in ("ConfigValid", "Synced", "Ready", "Reconciling"):
        if kind in found:
            parts.append(f"{kind}={found[kind].get('status')}({found[kind].get('reason')})")
    return " ".join(parts)


def converged(zone: Mapping[str, Any], replicas: int) -> bool:
    status = zone.get("status") or {}
    generation = (zone.get("metadata") or {}).get("generation")
    if status.get("observedGeneration") != generation:
        return False
    if status.get("synced") != f"{replicas}/{replicas}":
        return False
    wanted = {"Synced", "ConfigValid"}
    for condition in status.get("conditions") or []:
        if condition.get("type") in wanted:
            if condition.get("status") != "True":
                return False
            if condition.get("observedGeneration") not in (None, generation):
                return False
            wanted.discard(condition["type"])
    return not wanted


class ZoneWatch:
    """Which Zones of a namespace are converged, kept current by a watch in a thread."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str, replicas: int) -> None:
        self.api = kubernetes.client.CustomObjectsApi(client)
        self.namespace = namespace
        self.replicas = replicas
        self.state: dict[str, bool] = {}
        # Each Zone's stage (see `stage`), for the progress lines.
        self.stages: dict[str, str] = {}
        # The Zone whose every event is kept (monotonic time, summary), and its events.
        self.followed: str | None = None
        self.timeline: list[tuple[float, str]] = []
        # When each Zone last became converged (monotonic; the watch event's arrival).
        self.converged_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="zone-watch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _list(self) -> str:
        listed: Any = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "zones"
        )
        with self.changed:
            items = listed.get("items") or []
            self.state = {
                item["metadata"]["name"]: converged(item, self.replicas) for item in items
            }
            self.stages = {item["metadata"]["name"]: stage(item, self.replicas) for item in items}
            self.changed.notify_all()
        return str(listed["metadata"]["resourceVersion"])

    def _run(self) -> None:
        resource_version = ""
        while not self.stopping.is_set():
            try:
                if not resource_version:
                    resource_version = self._list()
                watch = _watch_module.Watch()
                for event in watch.stream(
                    self.api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    "zones",
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=120,
                ):
                    obj = event["object"]
                    resource_version = str(obj["metadata"]["resourceVersion"])
                    if event["type"] == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    with self.changed:
                        if name == self.followed:
                            self.timeline.append((time.monotonic(), summary(obj)))
                        if event["type"] == "DELETED":
                            self.state.pop(name, None)
                            self.stages.pop(name, None)
                        else:
                            self.stages[name] = stage(obj, self.replicas)
                            now_converged = converged(obj, self.replicas)
                            if now_converged and not self.state.get(name):
                                self.converged_at[name] = time.monotonic()
                            self.state[name] = now_converged
                        self.changed.notify_all()
                    if self.stopping.is_set():
                        return
            except ApiException as error:
                if error.status != 410:
                    print(f"  zone watch: {error.status} {error.reason}; listing again")
                resource_version = ""
            except Exception as error:  # the API server is busy: list again
                print(f"  zone watch: {error}; listing again")
                resource_version = ""
                time.sleep(0.5)

    def wait_converged_after(self, name: str, start: float, timeout: float = 60) -> float | None:
        """When the Zone became converged after `start` (None: not within `timeout`)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.converged_at.get(name, 0.0) <= start:
                if time.monotonic() > deadline:
                    return None
                self.changed.wait(0.1)
            return self.converged_at[name]

    def progress(self) -> dict[str, int]:
        """How many Zones are at each stage (under the lock)."""
        counts = {"zones": len(self.stages)}
        for value in self.stages.values():
            counts[value] = counts.get(value, 0) + 1
        return counts

    def wait_all_converged(
        self, expected: int, timeout: float, since: float, every: float = 10.0
    ) -> tuple[float, list[tuple[float, dict[str, int]]]]:
        """Until `expected` Zones exist and all are converged: the monotonic time it
        happened, and the Zones at each stage every `every` seconds from `since`
        (printed as they come: the shape of convergence)."""
        deadline = time.monotonic() + timeout
        curve: list[tuple[float, dict[str, int]]] = []
        next_report = since
        with self.changed:
            while True:
                done = sum(self.state.values())
                if len(self.state) >= expected and done == len(self.state):
                    curve.append((time.monotonic() - since, self.progress()))
                    return time.monotonic(), curve
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"{done}/{expected} Zones converged after {timeout:.0f} s")
                if now >= next_report:
                    counts = self.progress()
                    curve.append((now - since, counts))
                    print(f"  {now - since:6.1f} s  {progress_text(counts)}", flush=True)
                    next_report += every
                self.changed.wait(max(0.01, min(1.0, deadline - now, next_report - now)))


def progress_text(counts: Mapping[str, int]) -> str:
    return (
        f"{counts.get('zones', 0)} Zones: {counts.get('converged', 0)} converged, "
        f"{counts.get('synced', 0)} synced not converged, {counts.get('config', 0)} "
        f"ConfigValid only, {counts.get('other', 0)} other, {counts.get('none', 0)} no status"
    )


# ---- the replicas ------------------------------------------------------------------


def served_counts(addresses: Mapping[str, str]) -> dict[str, int | None]:
    """How many zones each replica's agent reports with a serial (its GET /zones, as
    last looked at: no fresh look asked of the engine); None when it did not answer."""
    counts: dict[str, int | None] = {}
    for pod, address in sorted(addresses.items()):
        try:
            url = f"http://{address}:{AGENT_PORT}/zones"
            with urllib.request.urlopen(url, timeout=5) as answer:
                zones = json.load(answer).get("zones") or {}
            counts[pod] = sum(1 for state in zones.values() if state.get("serial") is not None)
        except (OSError, ValueError):
            counts[pod] = None
    return counts


def print_served(
    addresses: Mapping[str, str], since: float, stop: threading.Event, every: float = 10.0
) -> None:
    """Every `every` seconds until `stop`: the zones each replica serves (a thread's body)."""
    next_at = since + every / 2
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        counts = served_counts(addresses)
        shown = ", ".join(f"{pod} {count}" for pod, count in counts.items())
        print(f"  {time.monotonic() - since:6.1f} s  replicas serve: {shown}", flush=True)
        next_at += every


def answers_for(zone: str, address: str) -> bool:
    """The replica answers the zone's SOA authoritatively.

    Over TCP: a poll every 10 ms over UDP is 5 times the replicas' response rate
    limit (20 a second per client /24 and answer, RRL), which the serial monitor's
    own SOA probes of the zone, from the same /24 here, then shared: they went
    unanswered for about 2 s after the zone was served. RRL does not apply to TCP.
    """
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    try:
        response = dns.query.tcp(query, address, timeout=0.2)
    except (dns.exception.DNSException, OSError, EOFError):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.flags & dns.flags.AA)


def transfers_to_us(zone: str, address: str) -> bool:
    """The replica's allowTransfer admits this host: an AXFR of the zone succeeds."""
    query = dns.message.make_query(zone, dns.rdatatype.AXFR)
    try:
        response = dns.query.tcp(query, address, timeout=0.5)
    except (dns.exception.DNSException, OSError, EOFError):
        return False
    return response.rcode() == dns.rcode.NOERROR and any(
        rrset.rdtype == dns.rdatatype.SOA for rrset in response.answer
    )


def time_until_every_replica(
    addresses: Mapping[str, str], served: Callable[[str], bool], start: float, timeout: float = 300
) -> dict[str, float]:
    """Seconds from `start` until `served(address)` holds for each replica (polled concurrently)."""

    def one(address: str) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if served(address):
                return time.monotonic() - start
            time.sleep(POLL_SECONDS)
        raise TimeoutError(f"{address} did not serve the change within {timeout:.0f} s")

    with concurrent.futures.ThreadPoolExecutor(len(addresses)) as pool:
        futures = {pod: pool.submit(one, address) for pod, address in addresses.items()}
        return {pod: future.result() for pod, future in futures.items()}


# ---- the benchmark ----------------------------------------------------------------


@dataclass
class OneZone:
    what: str
    every_replica: float
    per_replica: dict[str, float]
    reconcile: ReconcileTally
    # Seconds from the change until the Zone's status showed it converged (None: not
    # measured, a deletion; or not within a minute).
    status: float | None = None
    # The Zone's status as each watch event showed it: seconds after the change, summary.
    timeline: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Figures:
    zones: int
    created_seconds: float = 0.0
    converged_seconds: float = 0.0
    rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    # --allocators: what the operator's allocators held once converged, at the end
    # (after the quiet minute and the one-Zone changes), and after malloc_trim then.
    allocators_converged: list[str] = field(default_factory=list)
    allocators_end: list[str] = field(default_factory=list)
    cpu_percent: float = 0.0
    quiet_seconds: float = 0.0
    quiet_writes: dict[str, float] = field(default_factory=dict)
    creation_writes: dict[str, float] = field(default_factory=dict)
    one_zone: list[OneZone] = field(default_factory=list)
    # The machine's 1-minute load average at the end of the quiet minute (other
    # sessions share its cores: the CPU figure is read beside it).
    quiet_load: float = 0.0
    # The same when every Zone had converged (the convergence figure is read beside it).
    converged_load: float = 0.0
    # The operator's functions by share of the quiet minute's samples (--profile).
    profile: list[tuple[float, str]] = field(default_factory=list)
    # The same from the first create until every Zone converged (--profile), and the
    # operator's CPU over that window (% of a core).
    converge_profile: list[tuple[float, str]] = field(default_factory=list)
    converge_cpu_percent: float = 0.0
    # Seconds after the first create -> the Zones at each stage (every ~10 s).
    curve: list[tuple[float, dict[str, int]]] = field(default_factory=list)


class MemoryWatch:
    """The operator's VmRSS every 0.5 s (a thread): the highest of each 10 s printed;
    with a hook (`localcluster.allocators`), its allocators read whenever VmHWM
    rose by `step` MiB since the last read (at most one read every 5 s)."""

    def __init__(self, pid: int, since: float, hook: Path | None, step: float = 10.0) -> None:
        self.pid, self.since, self.hook, self.step = pid, since, hook, step
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        highest, window_end = 0.0, self.since + 10
        read_at_hwm, last_read = _proc_status(self.pid, "VmHWM"), 0.0
        while not self.stop.wait(0.5):
            try:
                rss, hwm = _proc_status(self.pid, "VmRSS"), _proc_status(self.pid, "VmHWM")
            except (OSError, ValueError):
                return
            highest = max(highest, rss)
            now = time.monotonic()
            if now >= window_end:
                print(
                    f"  {now - self.since:6.1f} s  operator VmRSS up to {highest:.0f} MiB "
                    f"in the last 10 s (VmHWM {hwm:.0f})",
                    flush=True,
                )
                highest, window_end = 0.0, window_end + 10
            if self.hook and hwm >= read_at_hwm + self.step and now - last_read >= 5:
                read_at_hwm, last_read = hwm, now
                lines = allocators.describe(allocators.read_allocators(self.pid, self.hook))
                for line in lines:
                    print(f"  {now - self.since:6.1f} s  allocators: {line}", flush=True)


def create_zones(api: Any, namespace: str, indices: Sequence[int]) -> None:
    """Create the Zones 8 at a time: 8 concurrent creates, then the next 8."""
    with concurrent.futures.ThreadPoolExecutor(BATCH) as pool:
        for first in range(0, len(indices), BATCH):
            batch = indices[first : first + BATCH]
            list(
                pool.map(
                    lambda i: api.create_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        namespace,
                        "zones",
                        zone_manifest(zone_object(i), zone_name(i), SERVER, SECRET),
                    ),
                    batch,
                )
            )


@contextmanager
def primary_for(cluster: LocalCluster, workdir: Path, zones: int) -> Iterator[PrimaryServer]:
    netns.add_address(cluster.netns, PRIMARY_ADDRESS)
    primary = PrimaryServer(
        workdir,
        [make_zone(zone_name(i), serial=2026120101, hosts=1, refresh=86400) for i in range(zones)],
        TsigCredentials.generate("transfer-key"),
        address=PRIMARY_ADDRESS,
        also_notify=[release.relay_notify_target(cluster)],
        # named notifies every zone when it starts, 20 a second by default: at
        # 10,000 zones that went on for 500 s, through convergence and the quiet
        # minute (each NOTIFY relayed to every replica and to the operator's
        # monitor, which probes the zone), so "nothing changes" did not hold.
        # At this rate they are over before the first Zone is created.
        startup_notify_rate=STARTUP_NOTIFY_RATE,
    )
    started = time.monotonic()
    primary.start()
    print(f"primary serves {zones} zones ({time.monotonic() - started:.1f} s to start)", flush=True)
    try:
        yield primary
    finally:
        primary.stop()


def profile_quiet(pid: int, seconds: float | None, output: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the operator while it holds the GIL (its CPU, not its waits),
    for `seconds` (None: until `stop_profile`)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed (pip install py-spy): no profile", flush=True)
        return None
    argv = [py_spy, "record", "--gil", "-r", "100", "-f", "raw", "-p", str(pid)]
    if seconds is not None:
        argv += ["-d", str(int(seconds))]
    else:
        # Over the create+converge window the operator's latency is measured: py-spy
        # would otherwise stop the process 100 times a second to read its stacks.
        argv += ["--nonblocking"]
    argv += ["-o", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(spy: subprocess.Popen[bytes]) -> None:
    """py-spy writes what it sampled when interrupted, as after Ctrl-C."""
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=120)


def read_profile(path: Path, top: int = 25) -> list[tuple[float, str]]:
    """The functions most often on the stack (inclusive), as shares of every sample."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        for frame in set(stack.split(";")):
            if "secondary_dns/" in frame:
                inclusive[frame] = inclusive.get(frame, 0) + count
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return [(count / max(total, 1), frame) for frame, count in ranked]


def run(
    cluster: LocalCluster,
    workdir: Path,
    zones: int,
    quiet_seconds: float,
    profile: Path | None = None,
    rounds: int = 1,
    hook: Path | None = None,
    census: bool = False,
) -> Figures:
    namespace = f"scale-{zones}-{uuid.uuid4().hex[:4]}"
    figures = Figures(zones)
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig)
    )
    client.configuration.connection_pool_maxsize = BATCH * 2
    custom = kubernetes.client.CustomObjectsApi(client)
    # Served by the primary from the start; their Zones come later, one a round.
    extras = list(range(zones, zones + rounds))
    with (
        primary_for(cluster, workdir / "primary", zones + rounds) as primary,
        # A process: its RSS and CPU are read from /proc of operator.process.
        run_operator(
            cluster,
            workdir / "operator.log",
            operators=1,
            relays=1,
            pods=False,
            extra_env=allocators.hook_environment(hook, os.environ) if hook else None,
        ) as operator,
    ):
        ensure_namespace(cluster, namespace)
        apply(
            cluster,
            namespace,
            primary.key.secret_manifest(SECRET, namespace),
            server_manifest(SERVER, replicas=REPLICAS),
        )
        wait_for(
            f"{REPLICAS} replicas with addresses",
            lambda: len(replica_addresses(cluster, namespace, SERVER)) == REPLICAS or None,
            timeout=300,
            every=1,
        )
        addresses = replica_addresses(cluster, namespace, SERVER)
        watch = ZoneWatch(client, namespace, REPLICAS)
        watch.start()
        assert isinstance(operator, ProcessInstallation)
        pid = operator.process.pid
        try:
            writes_before = api_writes(operator)
            converge_profile = (
                profile.with_suffix(".converge" + profile.suffix) if profile else None
            )
            spy = profile_quiet(pid, None, converge_profile) if converge_profile else None
            cpu_before = cpu_seconds(pid)
            started = time.monotonic()
            # Waited for in a thread from the first create: its progress lines cover
            # the creation too.
            served_stop = threading.Event()
            with (
                concurrent.futures.ThreadPoolExecutor(2) as waiter,
                MemoryWatch(pid, started, hook),
            ):
                waited = waiter.submit(
                    watch.wait_all_converged, zones, max(1800.0, zones * 0.5), started
                )
                waiter.submit(print_served, addresses, started, served_stop)
                create_zones(custom, namespace, list(range(zones)))
                last_created = time.monotonic()
                figures.created_seconds = last_created - started
                print(
                    f"created {zones} Zones in {figures.created_seconds:.1f} s, 8 at a time",
                    flush=True,
                )
                try:
                    done, figures.curve = waited.result()
                finally:
                    served_stop.set()
            figures.converged_seconds = done - last_created
            figures.converged_load = os.getloadavg()[0]
            figures.converge_cpu_percent = (
                100 * (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
            )
            if spy is not None and converge_profile is not None:
                stop_profile(spy)
                figures.converge_profile = read_profile(converge_profile)
            figures.creation_writes = writes_since(api_writes(operator), writes_before)
            print(f"every Zone converged {figures.converged_seconds:.1f} s after the last one")
            print(f"  API writes meanwhile: {breakdown(figures.creation_writes)}", flush=True)
            figures.rss_mib = _proc_status(pid, "VmRSS")
            figures.peak_rss_mib = _proc_status(pid, "VmHWM")
            if hook:
                figures.allocators_converged = allocators.describe(
                    allocators.read_allocators(pid, hook)
                )
                for line in figures.allocators_converged:
                    print(f"  allocators once converged: {line}", flush=True)
            time.sleep(5)
            writes_before = api_writes(operator)
            cpu_before = cpu_seconds(pid)
            quiet_started = time.monotonic()
            spy = profile_quiet(pid, quiet_seconds, profile) if profile else None
            time.sleep(quiet_seconds)
            elapsed = time.monotonic() - quiet_started
            figures.quiet_load = os.getloadavg()[0]
            if spy is not None and profile is not None:
                spy.wait(timeout=60)
                figures.profile = read_profile(profile)
            figures.quiet_seconds = elapsed
            figures.cpu_percent = 100 * (cpu_seconds(pid) - cpu_before) / elapsed
            figures.quiet_writes = writes_since(api_writes(operator), writes_before)
            print(
                f"quiet {elapsed:.0f} s: CPU {figures.cpu_percent:.1f} % of a core "
                f"(load average {figures.quiet_load:.1f}), API writes: "
                f"{breakdown(figures.quiet_writes)}",
                flush=True,
            )
            for extra in extras:
                figures.one_zone += one_zone_changes(
                    operator, custom, namespace, addresses, extra, watch
                )
            if hook:
                figures.allocators_end = allocators.describe(
                    allocators.read_allocators(pid, hook, trim=True, census=census)
                )
        finally:
            watch.stop()
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return figures


def one_zone_changes(
    operator: OperatorProcess,
    api: Any,
    namespace: str,
    addresses: Mapping[str, str],
    index: int,
    watch: ZoneWatch,
) -> list[OneZone]:
    name, origin = zone_object(index), zone_name(index)
    results = []
    with watch.changed:
        watch.followed = name

    def measure(
        what: str, change: Callable[[], None], served: Callable[[str], bool], status: bool = True
    ) -> None:
        before = ReconcileTally.read(operator)
        with watch.changed:
            watch.timeline = []
        start = time.monotonic()
        change()
        per_replica = time_until_every_replica(addresses, served, start)
        # The reconcile has ended when every replica serves it; its metric follows at once.
        time.sleep(0.5)
        tally = ReconcileTally.read(operator).since(before)
        result = OneZone(what, max(per_replica.values()), per_replica, tally)
        if status:
            at = watch.wait_converged_after(name, start)
            result.status = None if at is None else at - start
        with watch.changed:
            result.timeline = [(at - start, text) for at, text in watch.timeline]
        shown = "" if result.status is None else f"; status converged {result.status * 1000:.0f} ms"
        print(
            f"one Zone {what}: every replica {result.every_replica * 1000:.0f} ms{shown}; "
            f"operator {tally.text()}",
            flush=True,
        )
        per_pod = ", ".join(
            f"{pod} {seconds * 1000:.0f}" for pod, seconds in sorted(per_replica.items())
        )
        print(f"  replicas (ms): {per_pod}")
        for at, text in result.timeline:
            print(f"  status at {at * 1000:7.0f} ms: {text}", flush=True)
        results.append(result)
        time.sleep(2)

    measure(
        "added",
        lambda: api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "zones", zone_manifest(name, origin, SERVER, SECRET)
        ),
        lambda address: answers_for(origin, address),
    )
    measure(
        "changed",
        lambda: api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "zones",
            name,
            {"spec": {"allowTransfer": [{"cidr": "0.0.0.0/0"}]}},
        ),
        lambda address: transfers_to_us(origin, address),
    )
    measure(
        "deleted",
        lambda: api.delete_namespaced_custom_object(GROUP, VERSION, namespace, "zones", name),
        lambda address: not answers_for(origin, address),
        status=False,
    )
    return results


def spread(seconds: list[float]) -> str:
    """One figure as is; several as their median, slowest and every value (ms)."""
    values = [value * 1000 for value in seconds]
    if len(values) == 1:
        return f"{values[0]:.0f} ms"
    listed = ", ".join(f"{value:.0f}" for value in values)
    return f"p50 {statistics.median(values):.0f} ms, max {max(values):.0f} ({listed})"


def print_figures(figures: Figures) -> None:
    print()
    print(f"scale: {figures.zones} Zones on one SecondaryServer of {REPLICAS} replicas")
    creation = sum(figures.creation_writes.values())
    rows = [
        (
            "Zones created (8 at a time)",
            f"{figures.created_seconds:.1f} s",
            "wall clock",
        ),
        (
            "every Zone converged after the last was created",
            f"{figures.converged_seconds:.1f} s",
            f"watch events, ms; load average {figures.converged_load:.1f}",
        ),
        (
            "operator CPU from the first create until converged",
            f"{figures.converge_cpu_percent:.0f} % of a core",
            "clock ticks, 10 ms",
        ),
        (
            "operator RSS once converged (peak)",
            f"{figures.rss_mib:.0f} MiB ({figures.peak_rss_mib:.0f})",
            "VmRSS / VmHWM",
        ),
        (
            f"operator CPU, quiet {figures.quiet_seconds:.0f} s",
            f"{figures.cpu_percent:.1f} % of a core",
            f"clock ticks, 10 ms over {figures.quiet_seconds:.0f} s; "
            f"load average {figures.quiet_load:.1f}",
        ),
        (
            f"API writes, quiet {figures.quiet_seconds:.0f} s",
            f"{sum(figures.quiet_writes.values()):.0f}",
            "counter, exact",
        ),
        (
            "API writes while creating and converging",
            f"{creation:.0f} ({creation / figures.zones:.1f}/Zone)",
            "counter, exact",
        ),
    ]
    for resource, count in sorted(figures.creation_writes.items(), key=lambda item: -item[1]):
        rows.append(
            (
                f"  of which {resource}",
                f"{count:.0f} ({count / figures.zones:.2f}/Zone)",
                "counter, exact",
            )
        )
    for what in dict.fromkeys(change.what for change in figures.one_zone):
        changes = [change for change in figures.one_zone if change.what == what]
        rows.append(
            (
                f"one Zone {what}: every replica serves it",
                spread([change.every_replica for change in changes]),
                f"replicas polled every {POLL_SECONDS * 1000:.0f} ms",
            )
        )
        statuses = [change.status for change in changes if change.status is not None]
        if statuses:
            rows.append(
                (
                    f"one Zone {what}: its status converged",
                    spread(statuses),
                    "watch events, ms (the serial monitor sees the last replica, then writes)",
                )
            )
        for change in changes:
            rows.append(
                (
                    f"one Zone {what}: operator reconcile",
                    change.reconcile.text(),
                    "histogram sum, exact",
                )
            )
    width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    for label, value, resolution in rows:
        print(f"  {label:<{width}}  {value:>{value_width}}  ({resolution})")
    if figures.curve:
        print(
            "\nconvergence, seconds after the first create (created in "
            f"{figures.created_seconds:.1f} s):"
        )
        for at, counts in figures.curve:
            print(f"  {at:6.1f} s  {progress_text(counts)}")
    for when, lines in (
        ("once converged", figures.allocators_converged),
        ("at the end (after the quiet minute and the one-Zone changes)", figures.allocators_end),
    ):
        if lines:
            print(f"\noperator's allocators {when}, MiB:")
            for line in lines:
                print(f"  {line}")
    if figures.converge_profile:
        print(
            "\nfirst create until converged, operator functions by share of GIL-holding "
            "samples (py-spy):"
        )
        for share, frame in figures.converge_profile:
            print(f"  {share * 100:5.1f} %  {frame}")
    if figures.profile:
        print("\nquiet minute, operator functions by share of GIL-holding samples (py-spy):")
        for share, frame in figures.profile:
            print(f"  {share * 100:5.1f} %  {frame}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--zones", type=int, default=1000)
    parser.add_argument("--quiet-seconds", type=float, default=60)
    parser.add_argument("--cluster", default=os.environ.get("SDNS_CLUSTER", "sdns-bench"))
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument(
        "--one-zone-rounds",
        type=int,
        default=3,
        help="how often one Zone is added, changed and deleted once every Zone converged",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="sample the operator with py-spy from the first create until every Zone "
        "converged (raw stacks to FILE with .converge before its suffix) and in the "
        "quiet minute (raw stacks to FILE); top functions of each are printed",
    )
    parser.add_argument(
        "--allocators",
        action="store_true",
        help="read the operator's allocators from inside it (pymalloc, glibc malloc) "
        "once converged, at the end (and what malloc_trim hands back then), and "
        "whenever its peak rose by 10 MiB while converging",
    )
    parser.add_argument(
        "--census",
        action="store_true",
        help="with --allocators: at the end, the operator's objects by type (number, bytes)",
    )
    args = parser.parse_args(argv)

    cluster = LocalCluster(args.cluster)
    cluster.up()
    build_pod_image()  # before the namespace: a build needs the package registries
    netns.enter(cluster.netns)
    install_crds(cluster)
    workdir = cluster.state_dir / "bench-scale"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        hook = workdir / "allocators" if args.allocators else None
        figures = run(
            cluster,
            workdir,
            args.zones,
            args.quiet_seconds,
            args.profile,
            args.one_zone_rounds,
            hook,
            args.census,
        )
    finally:
        if not args.keep_cluster:
            cluster.down()
    print_figures(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
