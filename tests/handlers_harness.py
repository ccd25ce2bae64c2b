"""The operator's handlers on an in-memory API server, driven as kopf would drive them."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from secondary_dns.api import ObjectRef
from secondary_dns.api.soa import ProbeResult, ProbeTarget, SoaAnswer
from secondary_dns.handlers.controller import Controller
from secondary_dns.handlers.monitor import SerialMonitor
from secondary_dns.handlers.queue import ServerWork
from secondary_dns.handlers.watches import add_watches
from secondary_dns.k8s.api import Cluster
from secondary_dns.k8s.informer import Informer
from secondary_dns.routes import MonitoredZone
from secondary_dns.status.serial import ReplicaTarget
from tests.fake_cluster import FakeApiServer, custom_resource

NS = "dns"
NOW = "2026-01-01T00:00:00Z"
NOTIFY_ADDRESS = "10.96.0.53"
API = "secondarydns.io/v1alpha1"
TSIG_SECRET = base64.b64encode(b"k" * 32).decode()


def server_manifest(name: str = "edge", **spec: Any) -> dict[str, Any]:
    return custom_resource("SecondaryServer", NS, name, {"replicas": 3, **spec})


def zone_manifest(
    name: str = "example-com", zone: str = "example.com", **spec: Any
) -> dict[str, Any]:
    return custom_resource(
        "Zone",
        NS,
        name,
        {"zone": zone, "primaries": [{"address": "192.0.2.1"}], "servers": ["edge"], **spec},
    )


def tsig_secret(name: str = "tsig") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "stringData": {"secret": TSIG_SECRET, "algorithm": "hmac-sha256"},
    }


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    assert obj is not None
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found["type"] == type_:
            return dict(found)
    raise AssertionError(f"no {type_} in {obj.get('status')}")


def declared_namespace() -> FakeApiServer:
    """An API server where a user applied the SecondaryServer edge and one Zone on it."""
    server = FakeApiServer()
    server.apply(server_manifest())
    server.apply(zone_manifest())
    return server


def _answer(target: ProbeTarget, serial: int | None, error: str) -> ProbeResult:
    if serial is None:
        return ProbeResult(target, None, error, 2.0)
    soa = SoaAnswer(serial=serial, refresh=3600, retry=600, expire=86400, minimum=60)
    return ProbeResult(target, soa, None, 0.001, responded=True)


@dataclass
class Operator:
    """One operator process: its watch caches stepped by the test, its queue drained,
    the serial monitor's rounds played, and the Events it posted."""

    controller: Controller
    monitor: SerialMonitor
    informers: list[Informer]
    # (kind, name, type, reason) of every Event posted
    events: list[tuple[str, str, str, str]] = field(default_factory=list)

    def sync_caches(self) -> None:
        """The watch caches take in every change the API server has (the work waits)."""
        for informer in self.informers:
            informer.watch_once()

    def catch_up(self) -> None:
        """Every change the API server has: through the watches, then all the work it makes."""
        self.sync_caches()
        self.controller.drain()
        # The operator's own writes (status) come back as events that must be no work.
        for informer in self.informers:
            informer.watch_once()
        self.controller.drain()

    def reconcile_server(self, name: str) -> None:
        """What the resync timer does for one server (after catching up with events)."""
        self.catch_up()
        self.controller.queue.add(ObjectRef(NS, name), ServerWork(resync=True))
        self.controller.drain()

    def pods_changed(self, server: str) -> None:
        self.catch_up()

    def zone_changed(self, name: str) -> None:
        self.catch_up()

    def resync(self) -> None:
        self.catch_up()
        self.controller.resync()
        self.controller.drain()

    def secret_retry(self) -> None:
        """The operator's short resync: servers with a Zone waiting for a Secret."""
        self.catch_up()
        self.controller.resync(full=False)
        self.controller.drain()

    def probe(self, zone: str, primary: int | None, replicas: list[int | None], now: float) -> None:
        """One round of the serial monitor for `zone`: the primary and each replica answer
        these serials (None: a timeout), as SOA probes would have seen them."""
        self._probe(self.monitored_zones()[zone], primary, replicas, now)

    def probe_all(self, serial: int, now: float) -> None:
        """One round of the serial monitor in which every replica of every zone is in sync."""
        for target in self.controller.monitored_zones():
            self._probe(target, serial, [serial] * len(target.replicas), now)

    def _probe(
        self, target: MonitoredZone, primary: int | None, replicas: list[int | None], now: float
    ) -> None:
        primaries = [
            _answer(p, primary, "timeout after 2 attempts of 2s") for p in target.primaries
        ]
        results: list[tuple[ReplicaTarget, ProbeResult | None]] = [
            (replica, _answer(ProbeTarget(str(replica.address)), serial, "timeout after 2s"))
            for (replica, _), serial in zip(target.replicas, replicas, strict=True)
        ]
        self.monitor.record(target, primaries, results, now)

    def monitor_round_ends(self) -> None:
        """The end of a monitor round: zones served nowhere now are forgotten."""
        self.monitor.forget_unmonitored({zone.ref for zone in self.monitored_zones().values()})

    def monitored_zones(self) -> dict[str, MonitoredZone]:
        """What the serial monitor would probe, by zone name."""
        return {zone.name.to_text(): zone for zone in self.controller.monitored_zones()}


def start_operator(
    api: FakeApiServer,
    refused_primary_networks: tuple[str, ...] = (),
    *,
    progress_window: float = 0.0,
    clock: Callable[[], float] | None = None,
    relay_plans_namespace: str | None = None,
) -> Operator:
    """The controller and monitor on `api`. Zone statuses in progress are written at
    once unless `progress_window` is given (handlers/zone_status.py holds them)."""
    events: list[tuple[str, str, str, str]] = []

    def post_event(obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        events.append((str(obj["kind"]), obj["metadata"]["name"], event_type, reason))

    controller = Controller(
        Cluster(api),
        post_event,
        now=lambda: NOW,
        notify_address=NOTIFY_ADDRESS,
        refused_primary_networks=tuple(ipaddress.ip_network(n) for n in refused_primary_networks),
        progress_window=progress_window,
        relay_plans_namespace=relay_plans_namespace,
    )
    if clock is not None:
        controller.zone_status.clock = clock
        controller.zone_status.run_timer = False  # the test hands held statuses out
    informers = add_watches(api, controller)
    monitor = SerialMonitor(controller.monitored_zones, controller.zone_status, None)
    return Operator(controller, monitor, informers, events)
