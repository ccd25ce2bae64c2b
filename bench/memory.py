"""Where the operator's memory goes with N Zones, without a cluster (issue 16).

The real controller (watch caches, work queue, render, applies, statuses) runs
against the in-memory API server of the unit tests, as bench/reconcile.py does
(one SecondaryServer of 3 replicas, N Zones sharing one TSIG key), every answer
decoded from its own JSON as over HTTP (`Wire`); then the
real serial monitor plays report rounds over them: each replica's `GET /zones`
document (N zone states, as the agent encodes it) and the SOA answers are
canned here, in place of the network (the agents, named and the primary are
not in this process), so what is measured is the monitor's own per-zone state
after it has read those answers, evaluated every zone and written its status.

It prints, once converged and after ROUNDS report rounds:

- the deep size (`sys.getsizeof` of every object reachable, each object counted
  once, in the order listed, so a structure shared with one listed earlier is not
  counted again; modules, classes and functions not followed) of each of the
  operator's structures: each watch cache, the
  published server states, the monitor's per-zone tables;
- tracemalloc's largest allocation sites still alive (the operator's code, and
  the in-memory API server's apart: it is not part of the operator);
- the CPU time (`time.process_time`) of each of the 6 report rounds of a minute in
  which nothing changes (every zone in sync, every report as before; the
  monitor's clock moved 10 s a round): the serial monitor's steady work apart
  from the primaries' budget probes;
- the process's VmRSS and VmHWM (/proc/self/status), which include the
  in-memory API server's copies of every object, and tracemalloc's own overhead.

    PYTHONPATH=.:hack:operator .venv/bin/python bench/memory.py --zones 10000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Iterable, Iterator, Sequence
from types import FunctionType, MappingProxyType, ModuleType
from typing import Any

from bench.reconcile import declared
from prometheus_client import REGISTRY
from tests.fake_cluster import run_statefulset
from tests.handlers_harness import NS, start_operator

import secondary_dns.handlers.monitor as monitor_module
from secondary_dns.api import ObjectRef
from secondary_dns.api.agent_contract import ZonesDocument, ZoneState
from secondary_dns.api.soa import ProbeResult, SoaAnswer
from secondary_dns.dns.probe import ProbeRequest

SERIAL = 5
ROUNDS = 2
# Frames kept per allocation: enough to find the operator's line under copy/json/dataclasses.
FRAMES = 12


def deep_size(root: object, seen: set[int]) -> int:
    """Bytes of every object reachable from `root` not already in `seen`."""
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | ModuleType | FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.append(vars(obj))
        try:
            for klass in type(obj).__mro__:
                for slot in getattr(klass, "__slots__", ()):
                    if isinstance(slot, str) and hasattr(obj, slot):
                        stack.append(getattr(obj, slot))
            if isinstance(obj, MappingProxyType):
                stack.extend(v for pair in obj.items() for v in pair)
        except Exception:  # an object of a library that refuses to be looked into
            pass
    return total


class Wire:
    """The in-memory API server as the operator sees it over HTTP: every answer and
    watch event decoded from its own JSON (the real client's objects share no
    string with each other, nor with the server's); everything else passed on."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return json.loads(json.dumps(self.api.request(*args, **kwargs)))

    def watch(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for event in self.api.watch(*args, **kwargs):
            yield json.loads(json.dumps(event))


def vm(field: str) -> str:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                kib = int(line.split()[1])
                return f"{kib / 1024:.1f} MiB"
    return "?"


def canned_network(zones: Iterable[Any]) -> None:
    """The agents' /zones documents and the SOA answers, as the real ones would be."""
    names = [zone.name for zone in zones]
    expires = time.time() + 86400
    document = ZonesDocument(
        "hash", {name: ZoneState(SERIAL, expires, time.time()) for name in names}
    ).encode()

    async def fetch_raw(addresses: Iterable[str], *_: Any, **__: Any) -> dict[str, bytes]:
        return dict.fromkeys(addresses, document)

    async def fetch_zones(addresses: Iterable[str], *_: Any, **__: Any) -> dict[str, Any]:
        # The tree before the monitor read raw reports: parsed anew each round.
        return {address: ZonesDocument.parse(document) for address in addresses}

    async def probe_all(requests: Sequence[ProbeRequest], **_: Any) -> list[ProbeResult]:
        soa = SoaAnswer(SERIAL, 3600, 600, 86400, 60)
        return [ProbeResult(request[1], soa, None, 0.001, responded=True) for request in requests]

    canned: dict[str, object] = {
        "fetch_raw": fetch_raw, "fetch_zones": fetch_zones, "probe_all": probe_all
    }  # fmt: skip
    for name, function in canned.items():
        if hasattr(monitor_module, name):
            setattr(monitor_module, name, function)


def quiet_minute(monitor: Any) -> None:
    """The report rounds of a minute in which nothing changes: CPU of each (the
    monitor's clock moved 10 s a round; every zone in sync, every report the same)."""
    start = monitor.clock()
    cpu: list[float] = []
    for index in range(1, 7):
        monitor.clock = lambda at=start + 10.0 * index: at
        gc.collect()
        before = time.process_time()
        asyncio.run(monitor.observe(set(), set(), True))
        cpu.append((time.process_time() - before) * 1000)
    rounds = ", ".join(f"{ms:.0f}" for ms in cpu)
    print(f"  quiet minute, 6 report rounds: {rounds} ms CPU; {sum(cpu):.0f} ms in all")


def top_sites(snapshot: tracemalloc.Snapshot, limit: int) -> None:
    """Allocations still alive, by the innermost frame of the operator's code (or the
    innermost frame at all when none is the operator's); the API server's apart."""
    stats = snapshot.statistics("traceback")
    fake = [s for s in stats if any("fake_cluster" in f.filename for f in s.traceback)]
    mine = [s for s in stats if s not in fake]
    print(f"  in-memory API server: {sum(s.size for s in fake) / 2**20:.1f} MiB (not the operator)")
    print(f"  everything else: {sum(s.size for s in mine) / 2**20:.1f} MiB; largest sites:")
    sites: dict[tuple[str, int], list[int]] = {}
    for stat in mine:
        frames = list(stat.traceback)
        frame = next((f for f in reversed(frames) if "secondary_dns" in f.filename), frames[-1])
        site = sites.setdefault((frame.filename, frame.lineno), [0, 0])
        site[0] += stat.size
        site[1] += stat.count
    for (filename, lineno), (size, count) in sorted(sites.items(), key=lambda s: -s[1][0])[:limit]:
        where = filename.split("/operator/")[-1].split("/site-packages/")[-1]
        print(f"    {size / 2**20:7.2f} MiB {count:8d} blocks  {where}:{lineno}")


def measure(zones: int, top: int, trace: bool) -> None:
    if trace:
        tracemalloc.start(FRAMES)
    started = time.perf_counter()
    api = declared(zones)
    operator = start_operator(Wire(api))  # type: ignore[arg-type]
    operator.catch_up()
    run_statefulset(api, NS, "edge")
    operator.catch_up()
    print(f"N={zones}: converged in memory in {time.perf_counter() - started:.1f} s")
    monitor = operator.monitor
    canned_network(monitor.targets())
    started = time.perf_counter()
    for _ in range(ROUNDS):
        asyncio.run(monitor.round())
    print(f"  {ROUNDS} monitor rounds in {time.perf_counter() - started:.1f} s")
    quiet_minute(monitor)
    operator.catch_up()
    gc.collect()
    if trace:
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
    seen: set[int] = set()
    print(f"  deep sizes (N={zones}; each object counted once, in this order):")
    # First, so that the operator's references to it (its transport) are not counted
    # as the operator's; over the Wire they share no object with the operator.
    print(f"    {deep_size(api, seen) / 2**20:8.2f} MiB  in-memory API server (not the operator)")
    informers = {f"watch cache {i.resource.kind}": i for i in operator.informers}
    structures: list[tuple[str, object]] = [
        *[(name, informer._by_namespace) for name, informer in informers.items()],
        ("published server states", operator.controller.states.all()),
        ("monitored zones (targets)", monitor.targets()),
        ("monitor: histories", monitor.histories),
        ("monitor: agents' reports", monitor._reports),
        ("monitor: replica results", monitor._replica_results),
        ("monitor: primary results", monitor._primary_results),
        ("monitor: SOAs by serial", monitor._soa),
        ("monitor: last evaluations", monitor._evaluated),
        ("monitor: schedule", monitor.schedule),
        ("monitor: spot-check candidates", monitor._reported),
        ("zone status writer", operator.controller.zone_status),
        ("controller (everything else)", operator.controller),
        ("prometheus metrics (per-zone series)", REGISTRY),
    ]
    for name, structure in structures:
        print(f"    {deep_size(structure, seen) / 2**20:8.2f} MiB  {name}")
    if trace:
        top_sites(snapshot, top)
    print(f"  process VmRSS {vm('VmRSS')}, VmHWM {vm('VmHWM')} (API server and tracing included)")
    assert len(monitor.histories) == zones, (len(monitor.histories), zones)
    assert ObjectRef(NS, "edge") in operator.controller.states.all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--zones", type=int, default=10000)
    parser.add_argument("--top", type=int, default=20, help="allocation sites printed")
    parser.add_argument(
        "--no-trace", action="store_true", help="no tracemalloc (VmRSS without its overhead)"
    )
    args = parser.parse_args(argv)
    measure(args.zones, args.top, not args.no_trace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
