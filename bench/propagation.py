"""Propagation benchmark: primary serial bump -> every replica, and -> the Zone's status.

Runs on the local cluster (real control plane, real named pods via the pod runner,
a real BIND primary, the real operator) and prints p50/p95 over N bumps for:

- relay:   the primary NOTIFYs the operator's relay, which fans out to every replica;
- refresh: no relay and no repair NOTIFY: replicas find the change on their SOA
           refresh timer alone (the zone's SOA refresh is --refresh seconds, and the
           Zone's timers floor is lowered to allow it);

each for a small zone and for a zone of --large-records A records with a
one-record change (IXFR). The clock starts before the primary writes and reloads
its zone file, so `replicas` includes the primary's own reload; `primary` shows
that part alone. `status` is until the Zone's status shows the new serial for
every replica (the operator's serial monitor; with the relay it probes fast after
a NOTIFY, otherwise every 10 s).

    make bench BENCH_ARGS="--bumps 20"
"""

from __future__ import annotations

import argparse
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import dns.name

from localcluster import netns
from localcluster.cluster import LocalCluster
from localcluster.scenario import (
    Propagation,
    apply,
    bump_and_measure,
    demo_zone,
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

ORIGIN = dns.name.from_text("bench.example.")
SERVER = "bench"
ZONE_OBJECT = "bench"


def run_case(
    cluster: LocalCluster, workdir: Path, mode: str, records: int, bumps: int, refresh: int
) -> list[Propagation]:
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
            apply(
                cluster,
                namespace,
                primary.key.secret_manifest("transfer", namespace),
                server_manifest(SERVER, replicas=3),
                zone_manifest(ZONE_OBJECT, ORIGIN.to_text(), SERVER, "transfer", timers=timers),
            )
            wait_synced(cluster, namespace, ZONE_OBJECT, timeout=600)
            addresses = replica_addresses(cluster, namespace, SERVER)
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
                print(
                    f"  {mode:<8} {records:>7} bump {bump:>2}: "
                    f"primary {result.primary_seconds:6.2f}s  "
                    f"replicas {result.replicas_seconds:6.2f}s  "
                    f"status {result.status_seconds:6.2f}s",
                    flush=True,
                )
                time.sleep(0.5)
            return results
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
    parser.add_argument("--cluster", default="sdns-bench")
    parser.add_argument("--keep-cluster", action="store_true")
    args = parser.parse_args(argv)

    cluster = LocalCluster(args.cluster)
    cluster.up()
    netns.enter(cluster.netns)
    install_crds(cluster)
    workdir = cluster.state_dir / "bench"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    sizes = {"small": 2, "large": args.large_records}
    rows = []
    try:
        for mode in args.modes.split(","):
            for size in args.sizes.split(","):
                records = sizes[size]
                print(f"{mode} / {records} records, {args.bumps} bumps", flush=True)
                results = run_case(cluster, workdir, mode, records, args.bumps, args.refresh)
                rows.append((mode, records, results))
    finally:
        if not args.keep_cluster:
            cluster.down()

    print()
    print("propagation of one serial bump, 3 replicas over 3 failure zones (seconds)")
    header = (
        f"{'mode':<8} {'records':>8} {'n':>3}  {'primary p50':>11}  "
        f"{'replicas p50':>12} {'p95':>6}  {'status p50':>10} {'p95':>6}"
    )
    print(header)
    for mode, records, results in rows:
        replicas = [r.replicas_seconds for r in results]
        status = [r.status_seconds for r in results]
        primary = [r.primary_seconds for r in results]
        print(
            f"{mode:<8} {records:>8} {len(results):>3}  {percentile(primary, 0.5):>11.2f}  "
            f"{percentile(replicas, 0.5):>12.2f} {percentile(replicas, 0.95):>6.2f}  "
            f"{percentile(status, 0.5):>10.2f} {percentile(status, 0.95):>6.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
