"""The operator's handlers on an in-memory API server, driven as kopf would drive them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from secondary_dns.handlers.reconcile import MonitoredZone, Reconciler
from secondary_dns.k8s.api import Cluster
from tests.fake_cluster import FakeApiServer

NS = "dns"
NOW = "2026-01-01T00:00:00Z"
NOTIFY_ADDRESS = "10.96.0.53"


@dataclass
class Operator:
    """One operator process: what kopf's handlers would call, and the Events it posted."""

    reconciler: Reconciler
    # (kind, name, type, reason) of every Event posted
    events: list[tuple[str, str, str, str]] = field(default_factory=list)

    def reconcile_server(self, name: str) -> None:
        self.reconciler.reconcile_server(NS, name)

    def pods_changed(self, server: str) -> None:
        self.reconciler.refresh_server_status(NS, server)

    def zone_changed(self, name: str) -> None:
        self.reconciler.zone_changed(NS, name)

    def secret_changed(self, name: str) -> None:
        self.reconciler.secret_changed(NS, name)

    def uses_secret(self, name: str) -> bool:
        return self.reconciler.uses_secret(NS, name)

    def monitored_zones(self) -> dict[str, MonitoredZone]:
        """What the serial monitor would probe and the relay route, by zone name."""
        return {zone.name.to_text(): zone for zone in self.reconciler.monitored_zones()}


def start_operator(api: FakeApiServer) -> Operator:
    events: list[tuple[str, str, str, str]] = []

    def post_event(obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        events.append((str(obj["kind"]), obj["metadata"]["name"], event_type, reason))

    reconciler = Reconciler(
        Cluster(api), post_event, now=lambda: NOW, notify_address=NOTIFY_ADDRESS
    )
    return Operator(reconciler, events)
