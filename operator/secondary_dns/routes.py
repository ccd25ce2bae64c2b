"""Zones, their primaries and replicas, and the NOTIFY routes made of them (pure).

One `MonitoredZone` per Zone object that some server serves: its primaries and
their keys, who may notify it, and every replica of every server that serves
it with that server's relay key. The operator makes them from its servers'
published states (handlers/targets.py, for the serial monitor); the relay
Deployment from the relay plans the operator publishes and its own watch of
the replicas' Pods (`zones_from_relay_plans`). Both turn them into routes with
the same functions here, so the relay routes exactly what the operator would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import dns.name

from secondary_dns.api import IPNetwork, ObjectRef, TsigKey
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.relay import RelayRoute
from secondary_dns.render.relay import RelayPlan
from secondary_dns.status.serial import ReplicaTarget


@dataclass(frozen=True, slots=True)
class MonitoredZone:
    ref: ObjectRef
    name: dns.name.Name
    primaries: tuple[ProbeTarget, ...]
    primary_keys: tuple[TsigKey, ...] = field(repr=False)
    # Where a NOTIFY for this zone may come from: its primaries and notify.allowFrom.
    notify_sources: tuple[IPNetwork, ...]
    # Every replica of every server that serves the zone, with that server's relay key.
    replicas: tuple[tuple[ReplicaTarget, TsigKey], ...] = field(repr=False)


def add_zone(zones: dict[ObjectRef, MonitoredZone], zone: MonitoredZone) -> None:
    """Put one server's view of `zone` in `zones`: a Zone that another server serves
    too is one entry, with the replicas of both."""
    known = zones.get(zone.ref)
    zones[zone.ref] = (
        zone if known is None else replace(known, replicas=known.replicas + zone.replicas)
    )


def zones_from_relay_plans(
    plans: Iterable[RelayPlan], pods: Mapping[ObjectRef, Sequence[tuple[str, str]]]
) -> list[MonitoredZone]:
    """The zones of the relay plans, with the replicas `pods` names per server.

    `pods`: server -> (pod name, address). The relay probes nothing, so the
    primaries are left empty; who may notify comes from the plan.
    """
    zones: dict[ObjectRef, MonitoredZone] = {}
    for plan in sorted(plans, key=lambda p: p.server):
        replicas = tuple(
            (
                ReplicaTarget(
                    pod=name, server=plan.server.name, failure_domain=None, address=address,
                    port=plan.port,
                ),
                plan.relay_key,
            )
            for name, address in pods.get(plan.server, ())
        )  # fmt: skip
        for zone in plan.zones:
            add_zone(
                zones,
                MonitoredZone(
                    ref=zone.ref,
                    name=zone.zone,
                    primaries=(),
                    primary_keys=zone.primary_keys,
                    notify_sources=zone.notify_sources,
                    replicas=replicas,
                ),
            )
    return [zones[ref] for ref in sorted(zones)]


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


def wakeup_routes(zones: Iterable[MonitoredZone]) -> list[RelayRoute]:
    """What the leader's NOTIFY listener accepts: a zone it monitors, signed with a
    relay key of one of the zone's servers (the relay forwards with one; dns/wakeup.py)."""
    return [
        RelayRoute(
            ref=zone.ref,
            zone=zone.name,
            allowed_sources=(),
            allowed_keys=tuple({key.secret: key for _, key in zone.replicas}.values()),
            targets=(),
        )
        for zone in zones
    ]
