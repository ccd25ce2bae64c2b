"""Many small zones on one replica: BIND 9 and Knot DNS side by side (issue 15).

For each engine: one secondary rendered by `secondary-dns render` from a
SecondaryServer and N Zone manifests (as the operator renders a pod's
configuration), transferring N small zones (SOA, NS, 2 A records) over TSIG from
one real BIND primary; printed: the time until every zone is served (first
transfers), the engine's RSS once it serves them all, and the time from a
restart (the engine stopped and started on its data volume, as a crashed
container is restarted) until every zone is served again. Both engines run in
the same run, one after the other, against the same primary.

Runs in a network namespace of its own (198.18.0.0/15 test addresses on its
loopback); nothing leaves it. Resolution: "served" is one SOA query per zone,
answered authoritatively at the primary's serial, in passes that take about
N x 0.2 ms; times are wall clock from the start of the pass-loop (so a figure
can be late by up to one pass); RSS is VmRSS from /proc.

    PYTHONPATH=.:hack:operator .venv/bin/python bench/many_zones.py --zones 10000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
from tests.dataplane.rendered import (
    primary_entry,
    secret_manifest,
    server_manifest,
    start_rendered_secondary,
    zone_manifest,
)

from localcluster import netns
from localcluster.named import NamedFleet, NamedProcess, TsigCredentials, make_zone
from secondary_dns.api import agent_contract

NETNS = "sdns-bench-zones"
ENGINES = (agent_contract.ENGINE_BIND9, agent_contract.ENGINE_KNOT)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def missing(zones: list[str], address: str, serial: int) -> list[str]:
    """The zones `address` does not yet answer authoritatively at `serial`."""
    left = []
    for zone in zones:
        query = dns.message.make_query(zone, dns.rdatatype.SOA)
        try:
            answer = dns.query.udp(query, address, timeout=0.5)
        except Exception:  # noqa: BLE001 - any failure means "not served yet"
            left.append(zone)
            continue
        rrsets = [r for r in answer.answer if r.rdtype == dns.rdatatype.SOA]
        if not rrsets or rrsets[0][0].serial != serial:
            left.append(zone)
    return left


def until_served(zones: list[str], address: str, serial: int, timeout: float) -> float:
    start = time.monotonic()
    left = zones
    while left:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{len(left)} of {len(zones)} zones not served after {timeout} s")
        left = missing(left, address, serial)
        if left:
            time.sleep(0.05)
    return time.monotonic() - start


def pid_of(process: NamedProcess) -> int:
    running = process._process  # noqa: SLF001 - the harness keeps the Popen there
    assert running is not None
    return running.pid


def measure(
    fleet: NamedFleet,
    workdir: Path,
    engine: str,
    zones: list[str],
    primary_manifests: list[dict[str, Any]],
) -> dict[str, float]:
    manifests = [server_manifest(engine=engine), *primary_manifests]
    started = time.monotonic()
    secondary = start_rendered_secondary(fleet, workdir / engine, manifests)
    first = until_served(zones, secondary.process.address, 1, timeout=1800)
    first_total = time.monotonic() - started
    time.sleep(2)  # let the last zone files and journals reach the disk
    rss = rss_mib(pid_of(secondary.process))
    secondary.process.stop()
    restarted = time.monotonic()
    secondary.process.start(wait=False)
    until_served(zones, secondary.process.address, 1, timeout=1800)
    restart = time.monotonic() - restarted
    rss_after = rss_mib(pid_of(secondary.process))
    secondary.process.stop()
    return {
        "first": first,
        "first_total": first_total,
        "rss": rss,
        "restart": restart,
        "rss_after": rss_after,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zones", type=int, default=10_000)
    parser.add_argument("--engines", default=",".join(ENGINES))
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    netns.create(NETNS)
    netns.enter(NETNS)
    zones = [f"z{i:05d}.bench.test." for i in range(args.zones)]
    key = TsigCredentials.generate("transfer-key")
    with tempfile.TemporaryDirectory(prefix="sdns-many-zones-") as tmp:
        workdir = Path(tmp)
        with NamedFleet(workdir, NETNS) as fleet:
            primary = fleet.start_primary([make_zone(z) for z in zones], key)
            entry = primary_entry(primary)
            manifests = [secret_manifest(key)] + [
                zone_manifest(f"z{i:05d}", zone, [entry]) for i, zone in enumerate(zones)
            ]
            results = {e: measure(fleet, workdir, e, zones, manifests) for e in engines}
    netns.delete(NETNS)
    load = os.getloadavg()[0]
    print(f"\n{args.zones} small zones on one replica (load average {load:.1f})")
    print(
        f"  {'engine':8} {'every zone served':>18} {'RSS':>10} "
        f"{'restart to every zone served':>30} {'RSS after restart':>18}"
    )
    for engine, figures in results.items():
        print(
            f"  {engine:8} {figures['first_total']:>16.1f} s {figures['rss']:>6.1f} MiB "
            f"{figures['restart']:>28.1f} s {figures['rss_after']:>14.1f} MiB"
        )
    print(
        "  (served: one SOA per zone at the primary's serial, passes of ~N x 0.2 ms; "
        "RSS: VmRSS; first transfers counted from the engine's start)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
