"""What the serial monitor probes, from the servers' published states.

Everything here is derived from the servers' `ServerState`s, that is from the
same ZonePlan that produced their configuration and NetworkPolicy: a Zone the
planner left out is neither probed nor relayed. The routes made of these
zones (the relay's, the wakeup listener's) are in `secondary_dns/routes.py`,
which the relay Deployment shares.
"""

from __future__ import annotations

from collections.abc import Mapping

from secondary_dns.api import ObjectRef, TsigKey
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.handlers.state import ServerState
from secondary_dns.routes import MonitoredZone, add_zone
from secondary_dns.status.serial import ReplicaTarget


def monitored_zones(states: Mapping[ObjectRef, ServerState]) -> list[MonitoredZone]:
    """Every zone some server serves, with the replicas of all its servers."""
    zones: dict[ObjectRef, MonitoredZone] = {}
    for server_ref, state in sorted(states.items()):
        replicas = _replicas(server_ref, state)
        plan = state.rendered.plan
        for planned in plan.zones:
            add_zone(
                zones,
                MonitoredZone(
                    ref=planned.ref,
                    name=planned.zone,
                    primaries=tuple(ProbeTarget(str(p.address), p.port) for p in planned.primaries),
                    primary_keys=tuple(
                        plan.key(p.key_name) for p in planned.primaries if p.key_name
                    ),
                    notify_sources=planned.notify_sources,
                    replicas=replicas,
                ),
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
