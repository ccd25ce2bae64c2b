"""Propagation benchmark: primary serial bump -> every replica, and -> the Zone's status.

Runs on the local cluster (real control plane, real named and knotd pods via the
pod runner, a real BIND primary, the real operator). Each case serves the zone
from one SecondaryServer per engine of --engines (default BIND 9 and Knot DNS, 3
replicas each, all at once: the same primary, the same bumps, the same machine),
and prints per engine p50/p95/p99 over N bumps for:

- relay:   the primary NOTIFYs the operator's relay, which fans out to every replica;
- refresh: no relay and no repair NOTIFY: replicas find the change on their SOA
           refresh timer alone (the zone's SOA refresh is --refresh seconds, and the
           Zone's timers floor is lowered to allow it);

each for a small zone and for a zone of --large-records A records with a
one-record change (IXFR). The clock starts before the primary writes and reloads
its zone file, so `replicas` includes the primary's own reload; `primary` shows
that part alone. `status` is until the Zone's status shows the new serial for
every replica of every engine (the operator's serial monitor; with the relay it
probes fast after a NOTIFY, otherwise every 10 s).

After the bumps, per engine: the resident memory of each replica's engine process
(VmRSS, with the zone loaded), and the time a replica takes to serve the zone again
after its engine is killed (SIGKILL; the pod runner restarts the container): from
the new process's start (the `secondary-dns engine` wrapper, which execs the
engine) until it answers the current serial, loaded from its data directory.

    make bench BENCH_ARGS="--bumps 20"
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.name

from localcluster import netns
from localcluster.cluster import LocalCluster
from localcluster.named import soa_serial
from localcluster.scenario import (
    Propagation,
    apply,
    build_pod_image,
    bump_and_measure,
    demo_zone,
    engine_pids,
    ensure_namespace,
    install_crds,
    percentile,
    replica_addresses,
    run_operator,
    server_manifest,
    start_primary,
    wait_synced,
    zone_manifest,
)
from localcluster.waiting import wait_for

ORIGIN = dns.name.from_text("bench.example.")
ZONE_OBJECT = "bench"
REPLICAS = 3


def server_name(engine: str) -> str:
    return f"bench-{engine}"


@dataclass
class EngineFigures:
    """One engine's replicas in one case."""

    # Per bump: until every replica of this engine served the new serial.
    replicas_seconds: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)


@dataclass
class Case:
    mode: str
    records: int
    results: list[Propagation]
    engines: dict[str, EngineFigures]


def rss_mib(pid: int) -> float:
    """VmRSS of a process in MiB (resident memory, file-backed pages included)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def process_started_at(pid: int) -> float:
    """Wall-clock start of a process: boot time plus its start in clock ticks (proc(5))."""
    boot = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    stat = Path(f"/proc/{pid}/stat").read_text()
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


def restart_seconds(
    cluster: LocalCluster, namespace: str, server: str, pod: str, address: str, serial: int
) -> float:
    """Kill one replica's engine; seconds from the new process's start to serving `serial`."""
    old = engine_pids(cluster, namespace, server)[pod]
    os.kill(old, signal.SIGKILL)

    def new_pid() -> int | None:
        pid = engine_pids(cluster, namespace, server).get(pod)
        return pid if pid is not None and pid != old and Path(f"/proc/{pid}").exists() else None

    pid = wait_for(f"{pod}'s engine restarted", new_pid, timeout=60, every=0.05)
    started = process_started_at(pid)
    wait_for(
        f"{pod} serving {serial} again",
        lambda: soa_serial(ORIGIN, address, timeout=0.2) == serial,
        timeout=300,
        every=0.05,
    )
    return time.time() - started


def run_case(
    cluster: LocalCluster,
    workdir: Path,
    mode: str,
    records: int,
    bumps: int,
    refresh: int,
    engines: Sequence[str],
) -> Case:
    relay = mode == "relay"
    namespace = f"bench-{mode}-{records}-{uuid.uuid4().hex[:4]}"
    case_dir = workdir / namespace
    case_dir.mkdir(parents=True)
    zone = demo_zone(ORIGIN.to_text(), hosts=records, refresh=refresh if not relay else 86400)
    primary = start_primary(cluster, case_dir / "primary", zone, notify_relay=relay)
    try:
        with run_operator(
            cluster, case_dir / "operator.log", relay=relay, repair=relay, probe_seconds=10
        ):
            ensure_namespace(cluster, namespace)
            timers = None if relay else {"minRefreshSeconds": refresh, "minRetrySeconds": refresh}
            servers = {engine: server_name(engine) for engine in engines}
            apply(
                cluster,
                namespace,
                primary.key.secret_manifest("transfer", namespace),
                *(
                    server_manifest(server, replicas=REPLICAS, engine=engine)
                    for engine, server in servers.items()
                ),
                zone_manifest(
                    ZONE_OBJECT, ORIGIN.to_text(), list(servers.values()), "transfer", timers=timers
                ),
            )
            wait_synced(cluster, namespace, ZONE_OBJECT, timeout=900)
            by_engine = {
                engine: replica_addresses(cluster, namespace, server)
                for engine, server in servers.items()
            }
            addresses = {pod: a for pods in by_engine.values() for pod, a in pods.items()}
            figures = {engine: EngineFigures() for engine in engines}
            results = []
            for bump in range(1, bumps + 1):
                result = bump_and_measure(
                    cluster,
                    primary,
                    ORIGIN,
                    addresses,
                    namespace,
                    ZONE_OBJECT,
                    f"bump {bump}",
                    timeout=max(120, 4 * refresh),
                )
                results.append(result)
                per_engine = {
                    engine: max(result.per_replica[pod] for pod in pods)
                    for engine, pods in by_engine.items()
                }
                for engine, seconds in per_engine.items():
                    figures[engine].replicas_seconds.append(seconds)
                print(
                    f"  {mode:<8} {records:>7} bump {bump:>2}: "
                    f"primary {result.primary_seconds:6.2f}s  "
                    + "  ".join(f"{e} {s:6.2f}s" for e, s in per_engine.items())
                    + f"  status {result.status_seconds:6.2f}s",
                    flush=True,
                )
                time.sleep(0.5)
            serial = results[-1].serial if results else primary.serial(ORIGIN) or 0
            for engine, server in servers.items():
                pids = engine_pids(cluster, namespace, server)
                figures[engine].rss_mib = [rss_mib(pid) for pid in pids.values()]
                for pod, address in sorted(by_engine[engine].items()):
                    seconds = restart_seconds(cluster, namespace, server, pod, address, serial)
                    figures[engine].restart_seconds.append(seconds)
                    print(f"  {engine} {pod}: serving again {seconds:.2f}s after start", flush=True)
            return Case(mode, records, results, figures)
    finally:
        primary.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--bumps", type=int, default=20)
    parser.add_argument("--modes", default="relay,refresh")
    parser.add_argument("--large-records", type=int, default=100_000)
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--refresh", type=int, default=20, help="SOA refresh in refresh mode")
    parser.add_argument(
        "--engines", default="bind9,knot", help="one SecondaryServer per engine, side by side"
    )
    parser.add_argument("--cluster", default="sdns-bench")
    parser.add_argument("--keep-cluster", action="store_true")
    args = parser.parse_args(argv)

    cluster = LocalCluster(args.cluster)
    cluster.up()
    build_pod_image()  # before the namespace: a build needs the package registries
    netns.enter(cluster.netns)
    install_crds(cluster)
    workdir = cluster.state_dir / "bench"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    sizes = {"small": 2, "large": args.large_records}
    engines = args.engines.split(",")
    cases = []
    try:
        for mode in args.modes.split(","):
            for size in args.sizes.split(","):
                records = sizes[size]
                print(f"{mode} / {records} records, {args.bumps} bumps", flush=True)
                cases.append(
                    run_case(cluster, workdir, mode, records, args.bumps, args.refresh, engines)
                )
    finally:
        if not args.keep_cluster:
            cluster.down()
    print_table(cases, engines)
    return 0


def print_table(cases: Sequence[Case], engines: Sequence[str]) -> None:
    print()
    print(
        f"one serial bump to {REPLICAS} replicas per engine over 3 failure zones (seconds); "
        "memory: VmRSS of each replica's engine; restart: new process to serving again"
    )
    print(
        f"{'mode':<8} {'records':>8} {'engine':<6} {'n':>3}  {'primary p50':>11}  "
        f"{'replicas p50':>12} {'p95':>6} {'p99':>6}  {'status p50':>10} {'p99':>6}  "
        f"{'RSS MiB':>8}  {'restart p50':>11} {'max':>6}"
    )
    for case in cases:
        status = [r.status_seconds for r in case.results]
        primary = [r.primary_seconds for r in case.results]
        for engine in engines:
            figures = case.engines[engine]
            replicas = figures.replicas_seconds
            rss = statistics.median(figures.rss_mib) if figures.rss_mib else float("nan")
            restart = figures.restart_seconds or [float("nan")]
            print(
                f"{case.mode:<8} {case.records:>8} {engine:<6} {len(replicas):>3}  "
                f"{percentile(primary, 0.5):>11.2f}  "
                f"{percentile(replicas, 0.5):>12.2f} {percentile(replicas, 0.95):>6.2f} "
                f"{percentile(replicas, 0.99):>6.2f}  "
                f"{percentile(status, 0.5):>10.2f} {percentile(status, 0.99):>6.2f}  "
                f"{rss:>8.1f}  {statistics.median(restart):>11.2f} {max(restart):>6.2f}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
