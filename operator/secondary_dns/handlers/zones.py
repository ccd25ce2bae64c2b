"""A Zone's configuration half: what every SecondaryServer that selects it made of it.

Zones have no children of their own: the servers that select them render and
serve them. What a Zone's status says about its configuration is read from the
servers' published states (handlers/state.py) and written with the serial
half by the ZoneStatusWriter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from secondary_dns.api import ObjectRef, SpecError, ZoneSpec, parse_zone
from secondary_dns.handlers.state import ServerStates
from secondary_dns.handlers.zone_status import ZoneStatusWriter
from secondary_dns.k8s.api import Cluster
from secondary_dns.status.zone import ZoneConfig, open_transfer_entries, verdict_for


class ZoneObserver:
    def __init__(
        self,
        cluster: Cluster,
        states: ServerStates,
        status: ZoneStatusWriter,
        notify_address: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.states = states
        self.status = status
        self.notify_address = notify_address

    def servers_of(self, ref: ObjectRef, zones: Iterable[Mapping[str, Any]]) -> set[ObjectRef]:
        """The servers a Zone was on (by their last reconcile) or selects in any of
        `zones` (its copies before and after a change)."""
        servers = {server for server, state in self.states.all().items() if ref in state.zones}
        specs = [spec for spec in (_parsed(zone) for zone in zones) if spec is not None]
        if specs:
            for server in self.cluster.list_servers(ref.namespace):
                if any(
                    spec.serves_on(server["metadata"]["name"], _labels(server)) for spec in specs
                ):
                    servers.add(ObjectRef.of(server))
        return servers

    def refresh(self, namespace: str, name: str) -> None:
        """Observe the Zone's configuration across its servers and write its status."""
        zone = self.cluster.get_zone(namespace, name)
        if zone is None:
            self.status.forget(ObjectRef(namespace, name))
            return
        self.status.write_config(zone, self.observe(zone))

    def observe(self, zone: Mapping[str, Any]) -> ZoneConfig:
        ref = ObjectRef.of(zone)
        generation = int(zone["metadata"].get("generation", 0))
        try:
            spec = parse_zone(zone)
        except SpecError as error:
            return ZoneConfig(generation, None, spec_error=error)
        servers = self.cluster.list_servers(ref.namespace)
        names = {server["metadata"]["name"] for server in servers}
        verdicts = []
        pending = []
        for server in sorted(servers, key=lambda s: s["metadata"]["name"]):
            server_ref = ObjectRef.of(server)
            if not spec.serves_on(server_ref.name, _labels(server)):
                continue
            state = self.states.get(server_ref)
            if state is None:
                # Not reconciled yet; its reconcile refreshes this zone.
                pending.append(server_ref.name)
                continue
            verdicts.append(
                verdict_for(ref, server_ref.name, state.rendered, state.pods, state.replicas)
            )
        return ZoneConfig(
            generation,
            spec.zone.to_text(),
            missing_servers=tuple(sorted(set(spec.servers or ()) - names)),
            verdicts=tuple(verdicts),
            pending_servers=tuple(pending),
            notify_address=self.notify_address,
            retransfer_request=spec.retransfer_request,
            open_transfer=open_transfer_entries(spec),
        )


def _parsed(zone: Mapping[str, Any]) -> ZoneSpec | None:
    try:
        return parse_zone(zone)
    except SpecError:
        return None


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"].get("labels") or {})
