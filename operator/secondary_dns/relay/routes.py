"""The relay's routes from the operator's relay plans and the replicas' Pods (pure).

The routes themselves are made by `secondary_dns/routes.py`, the functions the
operator's own tests and benchmarks route with.

The plans say, per SecondaryServer, which zones it serves, who may notify them
and which key signs the relay's NOTIFYs (render/relay.py, derived by the
operator from the render plan); the Pods say where the replicas are now. The
relay watches both, so a replica that moves is followed even while no operator
leads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from secondary_dns import routes
from secondary_dns.api import ObjectRef
from secondary_dns.api.agent_contract import LABEL_SERVER
from secondary_dns.dns.relay import RelayRoute
from secondary_dns.render.relay import RelayPlan


@dataclass(frozen=True, order=True)
class ReplicaPod:
    server: ObjectRef
    name: str
    address: str


def replica_pods(pods: Iterable[Mapping[str, Any]]) -> list[ReplicaPod]:
    """The replicas that can hear a NOTIFY: an address, not going away, not finished."""
    found = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        status = pod.get("status") or {}
        server = (metadata.get("labels") or {}).get(LABEL_SERVER)
        address = status.get("podIP")
        if (
            not server
            or not address
            or metadata.get("deletionTimestamp")
            or status.get("phase") in ("Succeeded", "Failed")
        ):
            continue
        found.append(
            ReplicaPod(ObjectRef(metadata.get("namespace", ""), server), metadata["name"], address)
        )
    return sorted(found)


def relay_routes(plans: Iterable[RelayPlan], pods: Iterable[ReplicaPod]) -> list[RelayRoute]:
    """One route per Zone object, with the replicas of every server that serves it."""
    by_server: dict[ObjectRef, list[tuple[str, str]]] = {}
    for pod in sorted(pods):
        by_server.setdefault(pod.server, []).append((pod.name, pod.address))
    return routes.relay_routes(routes.zones_from_relay_plans(plans, by_server))
