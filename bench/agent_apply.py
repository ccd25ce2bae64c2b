"""The agent's apply of a one-zone change among N zones, BIND 9 and Knot DNS (issue 16).

For each engine and each N: one DNS pod as the dataplane tests run it (the real
agent, `secondary-dns engine` become named or knotd, tests/dataplane/agent_harness.py)
serving N small zones transferred over TSIG from one real BIND primary. Once
every zone is served, per round (--rounds, 3): one zone added (in a shard that
exists), then that zone moved to a second primary, which serves it at a higher
serial; at the end the last one is deleted. Each configuration is published as
the operator writes it (a root and its 256 shards), rendered before the clock
starts (rendering 10,000 zones in this process takes seconds and is the
operator's work, not the agent's). Printed:

- the agent's apply, by step (its own `time.monotonic()` around each):
  check = the engine's checker (named-checkconf, knotc conf-check) on what it
  must read, write = the new version directory swapped in, reload = rndc
  reconfig / knotc reload until the engine answers it, zones = named told a
  change of zone statements only by rndc addzone/modzone/delzone instead;
- how many of the configuration's shards the checker read;
- added / changed zone served after publish: from publishing until the engine
  answers the zone's SOA at the serial of its (new) primary, polled every 0.1 s
  (to 0.1 s; the engine's rate limit allows no faster polling), per round and p50;
- after each change, the refresh the agent asked for (the zones of the changed
  shard, the moved zone among them) and how long rndc / knotc took;
- the engine's RSS (VmRSS from /proc) once it serves the N zones.

Runs in a network namespace of its own (198.18.0.0/15 test addresses on its
loopback); nothing leaves it.

    PYTHONPATH=.:hack:operator .venv/bin/python bench/agent_apply.py --zones 1000,10000
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.name
from tests.agent_configs import Bundle, PrimaryZone
from tests.dataplane.agent_harness import AgentPod

from localcluster import netns
from localcluster.named import NamedFleet, TsigCredentials, make_zone
from localcluster.waiting import wait_for
from secondary_dns.agent.files import ApplyOutcome
from secondary_dns.api import agent_contract
from secondary_dns.render.shards import shard_of

NETNS = "sdns-bench-apply"
ENGINES = (agent_contract.ENGINE_BIND9, agent_contract.ENGINE_KNOT)
# The primary serves these extra zones; the benchmark adds some of them.
ADDED_CANDIDATES = 64
# How long a zone added or changed may take to be served before it counts as not served.
SERVED_TIMEOUT_SECONDS = 60.0


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
    return publish_and_wait(pod, pod.bundle(zones), timeout)


def publish_and_wait(pod: AgentPod, bundle: Bundle, timeout: float) -> ApplyOutcome:
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


def added_zones(base: list[PrimaryZone], count: int) -> list[str]:
    """New zone names in shards the configuration already has (the common case at
    1,000 zones and more; a new shard changes the zones include, so everything is checked)."""
    used = {shard_of(dns.name.from_text(zone.zone)) for zone in base}
    names = [
        name
        for name in (f"added-{index}.bench.test." for index in range(ADDED_CANDIDATES))
        if shard_of(dns.name.from_text(name)) in used
    ]
    return names[:count]


def served_after_publish(
    pod: AgentPod, zones: list[PrimaryZone], zone: str, serial: int
) -> tuple[ApplyOutcome, float | None]:
    """Publish `zones` (rendered first: the operator's work is not the agent's); the
    apply's outcome and the seconds from publishing until the engine serves `zone` at
    `serial` (to 0.1 s), None when not within SERVED_TIMEOUT_SECONDS."""
    bundle = pod.bundle(zones)
    published = time.monotonic()
    outcome = publish_and_wait(pod, bundle, 120)
    try:
        pod.wait_until_serving(zone, serial, SERVED_TIMEOUT_SECONDS)
    except TimeoutError:
        return outcome, None
    return outcome, time.monotonic() - published


def measure(
    workdir: Path,
    fleet: NamedFleet,
    key: TsigCredentials,
    engine: str,
    base: list[PrimaryZone],
    moved_to: str,
    rounds: int,
) -> dict[str, Any]:
    """Per round: a zone added (served at serial 1 by the first primary), then moved to
    the second primary (which serves it at serial 2); then the last one deleted."""
    figures: dict[str, Any] = {"added": [], "changed": [], "refresh": []}
    with AgentPod(workdir, fleet.address(), key, engine) as pod:
        started = time.monotonic()
        figures["first apply"] = apply_and_wait(pod, base, 600)
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
        zones = list(base)
        for name in added_zones(base, rounds):
            extra = replace(base[-1], zone=name)
            zones.append(extra)
            figures["added"].append(served_after_publish(pod, zones, name, 1))
            zones[-1] = replace(extra, address=moved_to)
            pod.agent.last_refresh = None
            figures["changed"].append(served_after_publish(pod, zones, name, 2))
            # The agent records the refresh just after rndc / knotc returns; the engine
            # may serve the new serial before that line runs.
            with contextlib.suppress(TimeoutError):
                wait_for("the refresh recorded", lambda: every.last_refresh is not None, 5, 0.05)
            figures["refresh"].append(pod.agent.last_refresh)
            print(
                f"  {engine} {len(base)}: {name} served "
                + ", ".join(
                    f"{change} {seconds(figures[change][-1][1])}" for change in ("added", "changed")
                )
                + f" after publishing (load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        figures["deleted"] = apply_and_wait(pod, zones[:-1], 120)
    return figures


def seconds(value: float | None) -> str:
    return f"> {SERVED_TIMEOUT_SECONDS:.0f} s" if value is None else f"{value:.1f} s"


def steps(outcome: object) -> str:
    assert isinstance(outcome, ApplyOutcome)
    parts = "  ".join(f"{step} {value * 1000:7.1f} ms" for step, value in outcome.seconds.items())
    return f"{parts}  ({outcome.shards_checked}/{outcome.shards} shards checked)"


def median_served(measured: list[tuple[ApplyOutcome, float | None]]) -> str:
    """The median, a zone never served counting as slowest; and every value."""
    values = sorted(measured, key=lambda item: math.inf if item[1] is None else item[1])
    middle = values[len(values) // 2][1] if values else None
    return f"p50 {seconds(middle)} ({', '.join(seconds(value) for _, value in measured)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zones", default="1000,10000", help="comma-separated counts")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--rounds", type=int, default=3, help="zones added then changed, per N")
    args = parser.parse_args()
    sizes = [int(size) for size in args.zones.split(",")]
    engines = [engine for engine in args.engines.split(",") if engine]
    netns.create(NETNS)
    netns.enter(NETNS)
    names = [f"z{i:05d}.bench.test." for i in range(max(sizes))]
    key = TsigCredentials.generate("transfer-key")
    results: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="sdns-agent-apply-") as tmp:
            workdir = Path(tmp)
            with NamedFleet(workdir, NETNS) as fleet:
                added = [f"added-{index}.bench.test." for index in range(ADDED_CANDIDATES)]
                primary = fleet.start_primary([make_zone(zone) for zone in [*names, *added]], key)
                # The primary a changed zone moves to: it serves the added zones at serial 2.
                second = fleet.start_primary([make_zone(zone, 2) for zone in added], key)
                for engine in engines:
                    for size in sizes:
                        zones = [PrimaryZone(zone, primary.address) for zone in names[:size]]
                        results[engine, size] = measure(
                            workdir / f"{engine}-{size}",
                            fleet,
                            key,
                            engine,
                            zones,
                            second.address,
                            args.rounds,
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
        for change in ("added", "changed"):
            for outcome, _ in figures[change]:
                print(f"  one zone {change:8} {steps(outcome)}")
        print(f"  one zone deleted  {steps(figures['deleted'])}")
        for refresh in figures["refresh"]:
            print(
                "  refresh after the change: "
                + ("none" if refresh is None else f"{refresh[0]} zones, {refresh[1] * 1000:.1f} ms")
            )
        for change in ("added", "changed"):
            print(f"  {change} zone served after publish: {median_served(figures[change])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
