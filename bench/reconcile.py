"""The operator's own work for one Zone among N, without a cluster (issue 16).

The real controller (watch caches, work queue, incremental render, applies, Zone
and server status) runs against the in-memory API server of the unit tests
(tests/fake_cluster.py: server-side apply, status subresource, watches), so what
is timed is the operator's code alone: no network, no serial monitor or relay
sharing the process, no other load of the machine in the figure but the CPU's.

For each N it declares one SecondaryServer and N Zones (one TSIG key shared by
all, as bench/scale.py does), lets the operator converge, then, R times each,
adds one Zone, changes one (its allowTransfer) and deletes one, and times the
work that change makes: the queue drained after the watch caches took the
event in (`time.perf_counter`, sub-microsecond clock; and `time.process_time`,
CPU of the process). It prints the median and the largest of the R, and the API
requests each change sent (exact).

    PYTHONPATH=.:hack:operator .venv/bin/python bench/reconcile.py --zones 1,1000,10000
"""

from __future__ import annotations

import argparse
import base64
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from tests.fake_cluster import FakeApiServer, run_statefulset
from tests.handlers_harness import NS, Operator, server_manifest, start_operator, zone_manifest

from secondary_dns.api import ObjectRef

SECRET = "transfer"


@dataclass(frozen=True)
class Timing:
    wall_ms: list[float]
    cpu_ms: list[float]
    requests: list[int]

    def line(self, what: str) -> str:
        wall, cpu = statistics.median(self.wall_ms), statistics.median(self.cpu_ms)
        return (
            f"  {what:<10} median {wall:8.2f} ms wall, {cpu:8.2f} ms CPU; "
            f"largest {max(self.wall_ms):8.2f} ms; "
            f"{statistics.median(self.requests):.0f} API requests (writes and reads)"
        )


def keyed_zone(name: str, zone: str, transfer_from: str = "192.0.2.0/24") -> dict[str, Any]:
    return zone_manifest(
        name,
        zone,
        primaries=[{"address": "192.0.2.1", "tsigKeySecretRef": {"name": SECRET}}],
        allowTransfer=[{"cidr": transfer_from}],
    )


def declared(zones: int) -> FakeApiServer:
    api = FakeApiServer()
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NS},
            "stringData": {
                "secret": base64.b64encode(b"k" * 32).decode(),
                "algorithm": "hmac-sha256",
                "name": "transfer-key",
            },
        }
    )
    api.apply(server_manifest())
    for index in range(zones):
        api.apply(keyed_zone(f"z{index}", f"z{index}.scale.example"))
    return api


def timed(
    api: FakeApiServer, operator: Operator, change: Callable[[], object]
) -> tuple[float, float, int]:
    """One change: the caches take it in (untimed), then the work it makes (timed)."""
    change()
    operator.sync_caches()
    requests = len(api.requests)
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    operator.controller.drain()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sent = len(api.requests) - requests
    operator.catch_up()  # the operator's own writes come back as (no-work) events
    return wall * 1000, cpu * 1000, sent


def measure(zones: int, repeat: int) -> dict[str, Timing]:
    api = declared(zones)
    # The relay's plan Secret too, as the chart's operator writes it (--operator-namespace).
    operator = start_operator(api, relay_plans_namespace="secondary-dns-system")
    started = time.perf_counter()
    operator.catch_up()
    run_statefulset(api, NS, "edge")
    operator.catch_up()
    # The serial monitor's round: every zone in sync (as in the cluster once converged).
    operator.probe_all(5, time.time())
    print(f"N={zones}: converged in memory in {time.perf_counter() - started:.1f} s")
    results: dict[str, list[tuple[float, float, int]]] = {"added": [], "changed": [], "deleted": []}
    for rep in range(repeat):
        added = keyed_zone(f"new-{rep}", f"new-{rep}.scale.example")
        changed = keyed_zone(f"new-{rep}", f"new-{rep}.scale.example", "198.51.100.0/24")
        results["added"].append(timed(api, operator, partial(api.apply, added)))
        # The serial monitor sees the new zone in sync (as it would within seconds).
        operator.probe(f"new-{rep}.scale.example.", 5, [5, 5, 5], time.time())
        results["changed"].append(timed(api, operator, partial(api.apply, changed)))
        deleted = partial(api.delete, *ZONE_KIND, NS, f"new-{rep}")
        results["deleted"].append(timed(api, operator, deleted))
    served = operator.controller.states.get(ObjectRef(NS, "edge"))
    assert served is not None and len(served.rendered.plan) == zones, "not every zone served"
    return {
        what: Timing([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        for what, rows in results.items()
    }


ZONE_KIND = ("secondarydns.io/v1alpha1", "Zone")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--zones", default="1,1000,10000", help="comma-separated N")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    table = {}
    for zones in (int(n) for n in args.zones.split(",")):
        table[zones] = measure(zones, args.repeat)
    print(f"\none Zone among N: the operator's work (median of {args.repeat}; perf_counter)")
    for zones, timings in table.items():
        print(f"N={zones}")
        for what, timing in timings.items():
            print(timing.line(what))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
