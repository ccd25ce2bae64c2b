"""A Zone served by a BIND 9 and a Knot DNS SecondaryServer at once (issue 15).

One real primary, the real operator, two SecondaryServers of two replicas each
(`bind9` and `knot`) whose pods the pod runner runs with real named and knotd.
Then every knotd is killed, again each time it comes back, as a crash bug
triggered by traffic would do: the zone stays served, at the new serial, by the
BIND replicas, the status says which engine still answers, and after the bug
is gone the Knot replicas catch up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dns.name
import pytest

from localcluster.cluster import LocalCluster
from localcluster.kubelet.backoff import MAX_SECONDS as BACKOFF_MAX_SECONDS
from localcluster.named import PrimaryServer, soa_serial
from localcluster.scenario import (
    OperatorProcess,
    condition,
    engine_pids,
    replica_addresses,
    served_zone,
)
from localcluster.waiting import wait_for

ORIGIN = dns.name.from_text("mixed.example.")
ZONE_OBJECT = "mixed"
SERVERS = {"bind": "bind9", "knot": "knot"}
REPLICAS = 2


@dataclass
class Fleet:
    cluster: LocalCluster
    namespace: str
    primary: PrimaryServer
    operator: OperatorProcess

    def zone(self) -> dict[str, Any]:
        result = self.cluster.kubectl(
            "get", "zone", "-n", self.namespace, ZONE_OBJECT, "-o", "json"
        )
        found: dict[str, Any] = json.loads(result.stdout)
        return found

    def addresses(self, server: str) -> dict[str, str]:
        return replica_addresses(self.cluster, self.namespace, server)

    def replicas_by_engine(self, zone: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for replica in (zone.get("status") or {}).get("replicas") or []:
            grouped.setdefault(replica.get("engine", ""), []).append(replica)
        return grouped


def _all_synced(fleet: Fleet, serial: int) -> dict[str, Any] | None:
    zone = fleet.zone()
    status = zone.get("status") or {}
    synced = condition(zone, "Synced")
    if (
        status.get("replicasInSync") == REPLICAS * len(SERVERS)
        and status.get("servedSerial") == serial
        and synced is not None
        and synced["status"] == "True"
    ):
        return zone
    return None


@pytest.fixture(scope="module")
def fleet(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("mixed")
    servers = {name: (engine, REPLICAS) for name, engine in SERVERS.items()}
    with served_zone(
        cluster, workdir, ORIGIN.to_text(), ZONE_OBJECT, servers, prefix="mixed"
    ) as served:
        fleet = Fleet(cluster, served.namespace, served.primary, served.operator)
        wait_for(
            "the zone Synced on every replica of both engines",
            lambda: _all_synced(fleet, served.primary.serial(ORIGIN) or 0),
            timeout=240,
        )
        yield fleet


def test_status_lists_each_replicas_engine_and_says_the_zone_is_engine_diverse(
    fleet: Fleet,
) -> None:
    serial = fleet.primary.set_record(ORIGIN, "www", "A", "192.0.2.80")
    zone = wait_for("both engines at the new serial", lambda: _all_synced(fleet, serial), 60)
    by_engine = fleet.replicas_by_engine(zone)
    assert sorted(by_engine) == ["bind9", "knot"]
    for engine, server in (("bind9", "bind"), ("knot", "knot")):
        assert {r["pod"] for r in by_engine[engine]} == set(fleet.addresses(server))
        assert all(r["server"] == server and r["inSync"] for r in by_engine[engine])
    diverse = condition(zone, "EngineDiverse")
    assert diverse is not None and diverse["status"] == "True", diverse
    assert diverse["reason"] == "MultipleEngines"
    assert "bind9 2/2, knot 2/2" in diverse["message"] and "RFC 2182" in diverse["message"]
    ready = condition(zone, "Ready")
    assert ready is not None and ready["status"] == "True", ready
    # Both engines' replicas really answer the new serial at their pod IPs.
    for server in SERVERS:
        for address in fleet.addresses(server).values():
            assert soa_serial(ORIGIN, address) == serial
    # Metrics carry each replica's engine.
    assert 'engine="knot"' in fleet.operator.metrics_text()


class EngineKiller:
    """SIGKILL the engine container of some pods, and again whenever it comes back.

    What a crash on a crafted NOTIFY or transfer does to every replica of one
    engine: the kubelet (here the pod runner) restarts the container, and the
    next packet kills it again.
    """

    def __init__(self, cluster: LocalCluster, namespace: str, server: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.server = server
        self.kills = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in engine_pids(self.cluster, self.namespace, self.server).values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    self.kills += 1
            self._stop.wait(0.2)

    def __enter__(self) -> EngineKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_every_knot_replica_killed_the_zone_stays_served_and_synced_on_bind(
    fleet: Fleet,
) -> None:
    knot_addresses = fleet.addresses("knot")
    bind_addresses = fleet.addresses("bind")
    with EngineKiller(fleet.cluster, fleet.namespace, "knot") as killer:
        wait_for(
            "every knotd down",
            lambda: all(soa_serial(ORIGIN, a) is None for a in knot_addresses.values()),
            timeout=30,
        )
        serial = fleet.primary.set_record(ORIGIN, "www", "A", "192.0.2.81")

        def served_by_bind_alone() -> dict[str, Any] | None:
            zone = fleet.zone()
            by_engine = fleet.replicas_by_engine(zone)
            diverse = condition(zone, "EngineDiverse")
            if (
                all(r.get("inSync") and r.get("serial") == serial for r in by_engine["bind9"])
                and not any(r.get("inSync") for r in by_engine["knot"])
                and diverse is not None
                and diverse["reason"] == "EnginesNotAnswering"
            ):
                return zone
            return None

        zone = wait_for("the BIND replicas Synced, the Knot ones down", served_by_bind_alone, 60)
        # Served: every BIND replica answers the new serial, the whole outage long.
        for address in bind_addresses.values():
            assert soa_serial(ORIGIN, address) == serial
        assert zone["status"]["servedSerial"] == serial
        diverse = condition(zone, "EngineDiverse")
        assert diverse is not None and diverse["status"] == "False"
        assert "only bind9 replicas answer" in diverse["message"], diverse
        assert "knot 0/2" in diverse["message"], diverse
        assert killer.kills >= REPLICAS

    # The bug is gone: the Knot replicas come back and catch up (the operator
    # NOTIFYs a replica it sees behind), and the zone is diverse again. The
    # kubelet (the pod runner, as kubelet does) holds each crashed container in
    # CrashLoopBackOff first, doubling from 10 s to at most 5 minutes, so knotd
    # answers again only after the back-off its crashes earned.
    wait_for(
        "every knotd answering again after its crash-loop back-off",
        lambda: all(soa_serial(ORIGIN, a) is not None for a in knot_addresses.values()),
        timeout=BACKOFF_MAX_SECONDS + 30,
    )
    zone = wait_for("both engines Synced again", lambda: _all_synced(fleet, serial), 120)
    diverse = condition(zone, "EngineDiverse")
    assert diverse is not None and diverse["reason"] == "MultipleEngines"
    for address in knot_addresses.values():
        assert soa_serial(ORIGIN, address) == serial
