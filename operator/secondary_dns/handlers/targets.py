"""What the serial monitor probes and the NOTIFY relay routes, from the published plans.

Everything here is derived from the servers' `ServerState`s, that is from the
same ZonePlan that produced their configuration and NetworkPolicy: a Zone the
planner left out is neither probed nor relayed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import dns.name

from secondary_dns.api import IPNetwork, ObjectRef, TsigKey
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.relay import RelayRoute
from secondary_dns.handlers.state import ServerState
from secondary_dns.status.serial import ReplicaTarget


@dataclass(frozen=True)
class MonitoredZone:
    ref: ObjectRef
    name: dns.name.Name
    primaries: tuple[ProbeTarget, ...]
    primary_keys: tuple[TsigKey, ...] = field(repr=False)
    # Where a NOTIFY for this zone may come from: its primaries and notify.allowFrom.
    notify_sources: tuple[IPNetwork, ...]
    # Every replica of every server that serves the zone, with that server's relay key.
    replicas: tuple[tuple[ReplicaTarget, TsigKey], ...] = field(repr=False)


def monitored_zones(states: Mapping[ObjectRef, ServerState]) -> list[MonitoredZone]:
    """Every zone some server serves, with the replicas of all its servers."""
    zones: dict[ObjectRef, MonitoredZone] = {}
    for server_ref, state in sorted(states.items()):
        replicas = _replicas(server_ref, state)
        plan = state.rendered.plan
        for planned in plan.zones:
            known = zones.get(planned.ref)
            if known is not None:
                zones[planned.ref] = replace(known, replicas=known.replicas + replicas)
                continue
            zones[planned.ref] = MonitoredZone(
                ref=planned.ref,
                name=planned.zone,
                primaries=tuple(ProbeTarget(str(p.address), p.port) for p in planned.primaries),
                primary_keys=tuple(plan.key(p.key_name) for p in planned.primaries if p.key_name),
                notify_sources=planned.notify_sources,
                replicas=replicas,
            )
    return [zones[ref] for ref in sorted(zones)]


def _replicas(
    server_ref: ObjectRef, state: ServerState
) -> tuple[tuple[ReplicaTarget, TsigKey], ...]:
    by_name = {pod.name: pod for pod in state.pods}
    return tuple(
        (
            ReplicaTarget(
                pod=name,
                server=server_ref.name,
                failure_domain=by_name[name].failure_domain if name in by_name else None,
                address=by_name[name].address if name in by_name else None,
                engine=state.rendered.engine,
            ),
            state.relay_key,
        )
        for name in state.replica_names()
    )


def relay_routes(zones: Iterable[MonitoredZone]) -> list[RelayRoute]:
    """One route per Zone object: two tenants serving one zone name never share one."""
    return [
        RelayRoute(
            ref=zone.ref,
            zone=zone.name,
            allowed_sources=zone.notify_sources,
            allowed_keys=zone.primary_keys,
            targets=tuple(
                (ProbeTarget(target.address, target.port), key)
                for target, key in zone.replicas
                if target.address
            ),
        )
        for zone in zones
    ]
