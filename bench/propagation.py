"""Propagation benchmark: primary serves a new serial -> every replica, -> the Zone's status.

Runs on the local cluster (real control plane, real named and knotd pods via the
pod runner, a real BIND primary, the real operator). Each case serves the zone
from one SecondaryServer per engine of --engines (default BIND 9 and Knot DNS, 3
replicas each, all at once: the same primary, the same bumps, the same machine),
and prints per engine p50/p99 over N bumps. Modes:

- relay:   the primary NOTIFYs the relay Service (the chart's relay, here as a
           process; only it), which fans out to every replica and wakes the
           operator's leader;
- primary: the primary NOTIFYs every replica's pod IP itself (`also-notify`,
           `notify-delay 0`), the relay hears nothing: BIND's own fan-out;
- fanout:  relay and primary bumps in turn in one case (the same pods, the same
           zone), with the operator's own NOTIFYs off (repairs, and those to
           replicas behind a change no NOTIFY announced), so that the two fan-outs
           are compared alone, in one run;
- silent:  the primary's NOTIFY is lost (sent to a port where nothing listens):
           the operator's budgeted probe of the primary sees the change and
           NOTIFYs the replicas itself;
- refresh: no NOTIFY at all and no repair: replicas find the change on their SOA
           refresh timer alone (the zone's SOA refresh is --refresh seconds, and the
           Zone's timers floor is lowered to allow it);

each for a small zone and for a zone of --large-records A records with a
one-record change (IXFR), made by rewriting the primary's file (`--change file`) or
by a TSIG-signed dynamic update (`--change update`).

**Resolution.** The primary and every replica are polled concurrently, each with
an SOA query every --poll-ms (5 ms) on its own grid, from before the primary
reloads until each serves the new serial (localcluster/serial_watch.py: one
connected socket per server, a query built once, the serial read off the
answer's wire, so that 1,400 queries a second cost little of the CPU the
measured servers share). Every
figure is measured from the moment the primary was first seen serving the
serial, so both ends carry the same poll bias: a difference is exact to within
one poll interval plus the answer's round trip (the largest round trip is
printed). `status` is from the last replica's first answer of the serial to the
arrival of the Zone version showing every replica in sync, from a `kubectl get
-w` watch (no API polling in the loop).

After the bumps, per engine: the resident memory of each replica's engine process
(VmRSS, with the zone loaded), and the time a replica takes to serve the zone again
after its engine is killed (SIGKILL; the pod runner restarts the container): from
the new process's start (the `secondary-dns engine` wrapper, which execs the
engine) until it answers the current serial, loaded from its data directory
(--restarts to include it).

    make bench BENCH_ARGS="--bumps 20 --modes fanout --sizes small"
"""

from __future__ import annotations

import argparse
import asyncio
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

from localcluster import build, netns, release
from localcluster.cluster import LocalCluster
from localcluster.named import PrimaryServer, soa_serial
from localcluster.scenario import (
    apply,
    build_pod_image,
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
from localcluster.serial_watch import POLL_INTERVAL, StatusWatch, poll_serials
from localcluster.waiting import wait_for

ORIGIN = dns.name.from_text("bench.example.")
PRIMARY = "primary"
ZONE_OBJECT = "bench"
REPLICAS = 3


def server_name(engine: str) -> str:
    return f"bench-{engine}"


@dataclass
class EngineFigures:
    """One engine's replicas in one case and fan-out."""

    # Per bump: from the primary serving the serial until every replica of this engine did.
    replicas_seconds: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)


@dataclass
class Bump:
    serial: int
    # Until the primary served the new serial, from before its zone file was written.
    primary_reload_seconds: float
    # From the primary serving it, by pod.
    per_replica: dict[str, float]
    # From the last replica serving it to the Zone status showing every replica in sync
    # (the watch event's arrival).
    status_seconds: float
    max_rtt: float


@dataclass
class Case:
    mode: str
    records: int
    # by fan-out (relay, primary, refresh): the bumps and each engine's figures
    bumps: dict[str, list[Bump]]
    engines: dict[str, dict[str, EngineFigures]]
    restarts: dict[str, EngineFigures] = field(default_factory=dict)


def measure_bump(
    primary: PrimaryServer,
    replicas: dict[str, str],
    watch: StatusWatch,
    value: str,
    timeout: float,
    poll: float,
    update: bool = False,
) -> Bump:
    """Change one record at the primary; poll it and every replica, read the status watch.

    `update`: by a TSIG-signed dynamic update, else by rewriting its file and `rndc reload`.
    """
    serial = primary.serial(ORIGIN) or 0
    wanted = (serial + 1) % 2**32
    servers = {PRIMARY: primary.address, **replicas}

    async def run() -> tuple[float, dict[str, float], float]:
        start = time.monotonic()
        polling = asyncio.create_task(
            poll_serials(ORIGIN, servers, wanted, start + timeout, interval=poll)
        )
        change = primary.update_record if update else primary.set_record
        written = await asyncio.to_thread(change, ORIGIN, "demo", "TXT", f'"{value}"')
        assert written == wanted, (written, wanted)
        seen = await polling
        missing = sorted(set(servers) - set(seen.at))
        if missing:
            raise TimeoutError(f"serial {wanted} not served by {missing} after {timeout:.0f}s")
        return start, seen.at, seen.max_rtt

    start, seen_at, max_rtt = asyncio.run(run())
    served = seen_at.pop(PRIMARY)
    last = max(seen_at.values())
    # Since the start: under load the operator may see the serial before these polls do.
    status_at = watch.synced_at(wanted, since=start, timeout=timeout)
    if status_at is None:
        shown = {k: v for k, v in watch.last().items() if k != "conditions"}
        raise TimeoutError(
            f"the Zone status never showed serial {wanted} on every replica; last seen: {shown}"
            f"; watch errors: {watch.errors[-3:]}"
        )
    return Bump(
        serial=wanted,
        primary_reload_seconds=served - start,
        per_replica={pod: at - served for pod, at in seen_at.items()},
        # Negative when the watch delivered before the polls saw the last replica
        # (within the resolution).
        status_seconds=status_at - last,
        max_rtt=max_rtt,
    )


def set_fan_out(
    primary: PrimaryServer, fan_out: str, replicas: dict[str, str], relay: tuple[str, int] | None
) -> None:
    """Who the primary NOTIFYs: the relay, every replica's pod IP, or nobody (refresh)."""
    targets = {
        "relay": [relay] if relay else [],
        "primary": [(address, 53) for address in sorted(replicas.values())],
        # A NOTIFY to a port where nothing listens: lost. (`notify no` would not do:
        # BIND holds back the next NOTIFY across a reconfig from `notify no`.)
        "silent": [("127.0.0.1", 9)],
        "refresh": [],
    }[fan_out]
    if list(primary.also_notify) == targets:
        return
    primary.also_notify = tuple(targets)
    primary.write_config()
    primary.rndc("reconfig")


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
    poll: float,
    restarts: bool,
    gap: float,
    update: bool,
) -> Case:
    notify = mode != "refresh"
    fan_outs = {
        "fanout": ["relay", "primary"],
        "relay": ["relay"],
        "primary": ["primary"],
        "silent": ["silent"],
    }.get(mode, ["refresh"])
    # fanout compares the two fan-outs alone: the operator's own NOTIFYs (repairs, and
    # to replicas behind a change no NOTIFY announced) would overtake BIND's.
    repair = mode not in ("refresh", "fanout")
    namespace = f"bench-{mode}-{records}-{uuid.uuid4().hex[:4]}"
    case_dir = workdir / namespace
    case_dir.mkdir(parents=True)
    zone = demo_zone(ORIGIN.to_text(), hosts=records, refresh=refresh if not notify else 86400)
    primary = start_primary(
        cluster, case_dir / "primary", zone, notify_relay=notify, allow_update=update
    )
    try:
        # Processes (the chart's containers with its tokens): the cases without the relay
        # or without repair have no chart value, and every case runs alike to compare.
        with run_operator(
            cluster,
            case_dir / "operator.log",
            relay=notify,
            repair=repair,
            probe_seconds=10,
            operators=1,
            relays=1,
            pods=False,
        ):
            ensure_namespace(cluster, namespace)
            timers = None if notify else {"minRefreshSeconds": refresh, "minRetrySeconds": refresh}
            servers = {engine: server_name(engine) for engine in engines}
            apply(
                cluster,
                namespace,
                primary.key.secret_manifest("transfer", namespace),
                *(
                    server_manifest(
                        server,
                        replicas=REPLICAS,
                        engine=engine,
                        # Its 5 ms polls are 200 identical queries a second from one
                        # address per replica: the default response rate limit (20)
                        # would drop them. The figures are of propagation, not RRL.
                        responses_per_second=0,
                    )
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
            relay_target = release.relay_notify_target(cluster) if notify else None
            figures = {f: {engine: EngineFigures() for engine in engines} for f in fan_outs}
            results: dict[str, list[Bump]] = {f: [] for f in fan_outs}
            kubectl = [
                *("ip", "netns", "exec", cluster.netns),
                *(str(build.binaries().kubectl), "--kubeconfig", str(cluster.kubeconfig)),
                *("get", "zone", "-n", namespace, ZONE_OBJECT),
            ]
            with StatusWatch(kubectl, cluster.environment()) as watch:
                for bump in range(1, bumps + 1):
                    # Alternate fan-outs bump by bump: both see the same drift.
                    fan_out = fan_outs[(bump - 1) % len(fan_outs)]
                    set_fan_out(primary, fan_out, addresses, relay_target)
                    result = measure_bump(
                        primary,
                        addresses,
                        watch,
                        f"bump {bump}",
                        timeout=max(120, 4 * refresh),
                        poll=poll,
                        update=update,
                    )
                    results[fan_out].append(result)
                    per_engine = {
                        engine: max(result.per_replica[pod] for pod in pods)
                        for engine, pods in by_engine.items()
                    }
                    for engine, seconds in per_engine.items():
                        figures[fan_out][engine].replicas_seconds.append(seconds)
                    print(
                        f"  {fan_out:<8} {records:>7} bump {bump:>2}: "
                        f"primary reload {result.primary_reload_seconds * 1000:7.1f} ms  "
                        + "  ".join(f"{e} {s * 1000:7.1f} ms" for e, s in per_engine.items())
                        + f"  status {result.status_seconds * 1000:7.1f} ms"
                        + f"  (max rtt {result.max_rtt * 1000:.1f} ms)",
                        flush=True,
                    )
                    # --gap after every replica served it: 2 s measures one change at
                    # a time; BIND paces NOTIFYs and refreshes of one zone (~0.5 s), so a
                    # short gap (0.2 s) shows what several changes a second get.
                    time.sleep(gap)
            case = Case(mode, records, results, figures)
            if restarts:
                serial = primary.serial(ORIGIN) or 0
                for engine, server in servers.items():
                    engine_figures = case.restarts.setdefault(engine, EngineFigures())
                    pids = engine_pids(cluster, namespace, server)
                    engine_figures.rss_mib = [rss_mib(pid) for pid in pids.values()]
                    for pod, address in sorted(by_engine[engine].items()):
                        seconds = restart_seconds(cluster, namespace, server, pod, address, serial)
                        engine_figures.restart_seconds.append(seconds)
                        print(
                            f"  {engine} {pod}: serving again {seconds:.2f}s after start",
                            flush=True,
                        )
            return case
    finally:
        primary.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--bumps", type=int, default=20)
    parser.add_argument(
        "--modes",
        default="fanout,silent",
        help="fanout (relay and primary in turn), relay, primary, silent, refresh",
    )
    parser.add_argument("--poll-ms", type=float, default=POLL_INTERVAL * 1000)
    parser.add_argument("--restarts", action="store_true", help="also RSS and restart times")
    parser.add_argument(
        "--change",
        choices=("file", "update"),
        default="file",
        help="how the primary changes: its zone file and rndc reload, or TSIG-signed "
        "dynamic updates (RFC 2136)",
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=2.0,
        help="seconds from every replica serving one change to the next change",
    )
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
                    run_case(
                        cluster,
                        workdir,
                        mode,
                        records,
                        args.bumps,
                        args.refresh,
                        engines,
                        args.poll_ms / 1000,
                        args.restarts,
                        args.gap,
                        args.change == "update",
                    )
                )
    finally:
        if not args.keep_cluster:
            cluster.down()
    print_table(cases, engines, args.poll_ms, args.gap)
    return 0


def print_table(cases: Sequence[Case], engines: Sequence[str], poll_ms: float, gap: float) -> None:
    print()
    rtt = max((b.max_rtt for c in cases for bs in c.bumps.values() for b in bs), default=0.0)
    print(
        f"one serial change at a time, {gap:g} s apart, to {REPLICAS} replicas per engine "
        f"(milliseconds from the primary serving it); resolution: each server polled every "
        f"{poll_ms:g} ms, so each figure is "
        f"exact to {poll_ms:g} ms + the answer's round trip (largest seen {rtt * 1000:.1f} ms); "
        "status: from the last replica to the watch event showing every replica in sync"
    )
    print(
        f"{'mode':<8} {'records':>8} {'fan-out':<8} {'engine':<6} {'n':>3}  "
        f"{'every replica p50':>17} {'p99':>8}  {'status p50':>10} {'p99':>8}  "
        f"{'primary reload p50':>18}"
    )
    for case in cases:
        for fan_out, bumps in case.bumps.items():
            status = [b.status_seconds * 1000 for b in bumps]
            reload = [b.primary_reload_seconds * 1000 for b in bumps]
            for engine in engines:
                replicas = [s * 1000 for s in case.engines[fan_out][engine].replicas_seconds]
                print(
                    f"{case.mode:<8} {case.records:>8} {fan_out:<8} {engine:<6} "
                    f"{len(replicas):>3}  "
                    f"{percentile(replicas, 0.5):>17.1f} {percentile(replicas, 0.99):>8.1f}  "
                    f"{percentile(status, 0.5):>10.1f} {percentile(status, 0.99):>8.1f}  "
                    f"{percentile(reload, 0.5):>18.1f}"
                )
        for engine, figures in case.restarts.items():
            rss = statistics.median(figures.rss_mib) if figures.rss_mib else float("nan")
            restart = figures.restart_seconds or [float("nan")]
            print(
                f"  {engine}: RSS {rss:.1f} MiB per replica, restart to serving "
                f"p50 {statistics.median(restart):.2f} s (max {max(restart):.2f} s)"
            )


if __name__ == "__main__":
    raise SystemExit(main())
