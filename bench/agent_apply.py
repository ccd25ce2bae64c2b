"""The agent's apply of a one-zone change among N zones, BIND 9 and Knot DNS (issue 16).

For each engine and each N: one DNS pod as the dataplane tests run it (the real
agent, `secondary-dns engine` become named or knotd, tests/dataplane/agent_harness.py)
serving N small zones transferred over TSIG from one real BIND primary. Once
every zone is served, three configurations are published one after the other,
as the operator writes them (a root and its 256 shards): one zone added, then
that zone changed (its primary's port), then deleted. Printed per change:

- the agent's apply, by step (its own `time.monotonic()` around each):
  check = the engine's checker (named-checkconf, knotc conf-check) on what it
  must read, write = the new version directory swapped in, reload = rndc
  reconfig / knotc reload until the engine answers it;
- how many of the configuration's shards the checker read;
- for the added zone, published -> served (SOA at the primary's serial, polled
  every 0.1 s, so to 0.1 s);
- the engine's RSS (VmRSS from /proc) once it serves the N zones.

Runs in a network namespace of its own (198.18.0.0/15 test addresses on its
loopback); nothing leaves it.

    PYTHONPATH=.:hack:operator .venv/bin/python bench/agent_apply.py --zones 1000,10000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import dns.name
from tests.agent_configs import PrimaryZone
from tests.dataplane.agent_harness import AgentPod

from localcluster import netns
from localcluster.named import NamedFleet, TsigCredentials, make_zone
from localcluster.waiting import wait_for
from secondary_dns.agent.files import ApplyOutcome
from secondary_dns.api import agent_contract
from secondary_dns.render.shards import shard_of

NETNS = "sdns-bench-apply"
ENGINES = (agent_contract.ENGINE_BIND9, agent_contract.ENGINE_KNOT)
# The primary serves these extra zones; the benchmark adds one of them.
ADDED_CANDIDATES = 64


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def engine_pid(pod: AgentPod) -> int:
    pid = pod.engine.engine_pid()
    assert pid is not None, "the engine wrote no pid file"
    return pid


def apply_and_wait(pod: AgentPod, zones: list[PrimaryZone], timeout: float) -> ApplyOutcome:
    """Publish the configuration of `zones`; the agent's outcome once it applied it."""
    bundle = pod.bundle(zones)
    pod.publish(bundle)
    wait_for(
        f"configuration {bundle.config_hash[:12]} applied",
        lambda: (
            pod.agent.applied is not None and pod.agent.applied.config_hash == bundle.config_hash
        ),
        timeout,
        every=0.01,
    )
    outcome = pod.agent.last_apply
    assert outcome is not None
    return outcome


def added_zone(base: list[PrimaryZone]) -> str:
    """A new zone name in a shard the configuration already has (the common case at
    1,000 zones and more; a new shard changes the zones include, so everything is checked)."""
    used = {shard_of(dns.name.from_text(zone.zone)) for zone in base}
    return next(
        name
        for name in (f"added-{index}.bench.test." for index in range(ADDED_CANDIDATES))
        if shard_of(dns.name.from_text(name)) in used
    )


def measure(
    workdir: Path, fleet: NamedFleet, key: TsigCredentials, engine: str, base: list[PrimaryZone]
) -> dict[str, object]:
    extra = replace(base[-1], zone=added_zone(base))
    figures: dict[str, object] = {}
    with AgentPod(workdir, fleet.address(), key, engine) as pod:
        started = time.monotonic()
        first = apply_and_wait(pod, base, 600)
        figures["first apply"] = first
        every = pod.agent
        wait_for(
            f"{len(base)} zones served",
            lambda: every.zones_loaded == len(base),
            3600,
            every=0.5,
        )
        figures["first served"] = time.monotonic() - started
        time.sleep(2)
        figures["rss"] = rss_mib(engine_pid(pod))
        published = time.monotonic()
        figures["added"] = apply_and_wait(pod, [*base, extra], 120)
        pod.wait_until_serving(extra.zone, 1, 120)
        figures["added served"] = time.monotonic() - published
        figures["changed"] = apply_and_wait(pod, [*base, replace(extra, port=extra.port + 1)], 120)
        figures["deleted"] = apply_and_wait(pod, base, 120)
    return figures


def steps(outcome: object) -> str:
    assert isinstance(outcome, ApplyOutcome)
    parts = "  ".join(f"{step} {value * 1000:7.1f} ms" for step, value in outcome.seconds.items())
    return f"{parts}  ({outcome.shards_checked}/{outcome.shards} shards checked)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zones", default="1000,10000", help="comma-separated counts")
    parser.add_argument("--engines", default=",".join(ENGINES))
    args = parser.parse_args()
    sizes = [int(size) for size in args.zones.split(",")]
    engines = [engine for engine in args.engines.split(",") if engine]
    netns.create(NETNS)
    netns.enter(NETNS)
    names = [f"z{i:05d}.bench.test." for i in range(max(sizes))]
    key = TsigCredentials.generate("transfer-key")
    results: dict[tuple[str, int], dict[str, object]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="sdns-agent-apply-") as tmp:
            workdir = Path(tmp)
            with NamedFleet(workdir, NETNS) as fleet:
                added = [f"added-{index}.bench.test." for index in range(ADDED_CANDIDATES)]
                primary = fleet.start_primary([make_zone(zone) for zone in [*names, *added]], key)
                for engine in engines:
                    for size in sizes:
                        zones = [PrimaryZone(zone, primary.address) for zone in names[:size]]
                        results[engine, size] = measure(
                            workdir / f"{engine}-{size}", fleet, key, engine, zones
                        )
                        print(f"{engine} {size}: done (load average {os.getloadavg()[0]:.1f})")
    finally:
        netns.delete(NETNS)
    print(f"\nOne-zone change among N, the agent's apply (load average {os.getloadavg()[0]:.1f})")
    for (engine, size), figures in results.items():
        print(
            f"\n{engine}, {size} zones: every zone served {figures['first served']:.1f} s "
            f"after the first configuration; engine RSS {figures['rss']:.1f} MiB"
        )
        print(f"  first configuration: {steps(figures['first apply'])}")
        for change in ("added", "changed", "deleted"):
            print(f"  one zone {change:8} {steps(figures[change])}")
        served_ms = float(str(figures["added served"])) * 1000
        print(f"  added zone served {served_ms:.0f} ms after publishing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
