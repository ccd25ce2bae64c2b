"""Status of SecondaryServers and Zones, computed from what was observed (pure).

The reconciler observes (pods, nodes, the StatefulSet, what each agent reports)
and renders; these functions turn that into the status the API stores. They
never read the clock: `now` is passed in, and conditions keep their
lastTransitionTime when their status did not change (api.conditions), so an
unchanged world computes an identical status and nothing is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from secondary_dns.api import ObjectRef, SpecError, conditions
from secondary_dns.api.agent_contract import (
    ANNOTATION_APPLIED_CONFIG_HASH,
    ANNOTATION_CONFIG_ERROR,
)
from secondary_dns.api.conditions import FALSE, TRUE, UNKNOWN, find_condition, set_condition
from secondary_dns.render.engine import RenderedConfig, ZoneRejection

# Ready reasons the configuration path sets; any other reason on Ready comes from
# the serial monitor, which the configuration path then leaves alone.
CONFIG_REASONS = frozenset(
    {
        conditions.PROGRESSING,
        conditions.AWAITING_SERIALS,
        conditions.INVALID_SPEC,
        conditions.SECRET_NOT_FOUND,
        conditions.INVALID_TSIG_KEY,
        conditions.SERVER_NOT_FOUND,
        conditions.NO_SERVERS_SELECTED,
        conditions.ZONE_CONFLICT,
        conditions.CONFIG_REJECTED,
        conditions.RENDERED,
    }
)

# RFC 2182 §5: at least three servers, in more than one place.
MIN_REPLICAS = 3
MIN_FAILURE_DOMAINS = 2


@dataclass(frozen=True)
class ObservedPod:
    name: str
    ready: bool
    address: str | None
    failure_domain: str | None
    applied_config_hash: str | None
    config_error: str | None

    @staticmethod
    def from_object(
        pod: Mapping[str, Any], node_labels: Mapping[str, str], key: str
    ) -> ObservedPod:
        status = pod.get("status") or {}
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        ready = status.get("phase") == "Running" and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        return ObservedPod(
            name=pod["metadata"]["name"],
            ready=ready and not pod["metadata"].get("deletionTimestamp"),
            address=status.get("podIP"),
            failure_domain=node_labels.get(key),
            applied_config_hash=annotations.get(ANNOTATION_APPLIED_CONFIG_HASH) or None,
            config_error=annotations.get(ANNOTATION_CONFIG_ERROR) or None,
        )


@dataclass(frozen=True)
class ServerObservation:
    generation: int
    replicas: int
    topology_key: str
    pods: Sequence[ObservedPod]
    config_hash: str | None
    zones: int
    # The StatefulSet has caught up with its own spec (rollout finished).
    rollout_complete: bool
    notify_address: str | None = None
    spec_error: SpecError | None = None
    apply_error: str | None = None


def _set(
    conds: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    return set_condition(
        conds,
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
        },
        now,
    )


def spread_condition(replicas: int, failure_domains: Mapping[str, int]) -> tuple[str, str, str]:
    """(status, reason, message) of `Spread`: RFC 2182 §5 asks for 3+ servers in 2+ places."""
    domains = sorted(d for d, ready in failure_domains.items() if ready > 0)
    where = ", ".join(f"{d}={failure_domains[d]}" for d in domains) or "none"
    if replicas < MIN_REPLICAS:
        return (
            FALSE,
            conditions.TOO_FEW_REPLICAS,
            f"{replicas} replica(s) requested; RFC 2182 §5 recommends at least {MIN_REPLICAS} "
            f"name servers for a zone so that one outage never leaves it with a single "
            f"server: set spec.replicas to {MIN_REPLICAS} or more (ready per domain: {where})",
        )
    if len(domains) < MIN_FAILURE_DOMAINS:
        return (
            FALSE,
            conditions.TOO_FEW_FAILURE_DOMAINS,
            f"ready replicas sit in {len(domains)} failure domain(s) ({where}); RFC 2182 §3.1 "
            f"asks that secondaries not share a single point of failure: make nodes in at "
            f"least {MIN_FAILURE_DOMAINS} domains available to the pods",
        )
    return (
        TRUE,
        conditions.SPREAD_SATISFIED,
        f"ready replicas in {len(domains)} failure domains: {where}",
    )


def server_status(
    observed: ServerObservation,
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    gen = observed.generation
    conds: list[dict[str, Any]] = [dict(c) for c in previous.get("conditions") or []]
    if observed.spec_error is not None:
        message = (
            f"{observed.spec_error}; fix the SecondaryServer and apply it again "
            f"(nothing was changed in the cluster)"
        )
        conds = _set(conds, conditions.STALLED, TRUE, conditions.INVALID_SPEC, message, gen, now)
        conds = _set(conds, conditions.READY, FALSE, conditions.INVALID_SPEC, message, gen, now)
        conds = _set(
            conds, conditions.RECONCILING, FALSE, conditions.INVALID_SPEC, message, gen, now
        )
        return {**_kept(previous), "conditions": conds, "observedGeneration": gen}

    ready_pods = [p for p in observed.pods if p.ready]
    domains = Counter(p.failure_domain or "unknown" for p in ready_pods)
    failure_domains = {d: domains[d] for d in sorted(domains)}
    current = [p for p in ready_pods if p.applied_config_hash == observed.config_hash]
    rejected = sorted((p for p in observed.pods if p.config_error), key=lambda p: p.name)
    ready_count = len(ready_pods)

    if observed.apply_error is not None:
        conds = _set(
            conds, conditions.STALLED, TRUE, conditions.APPLY_FAILED, observed.apply_error, gen, now
        )
    else:
        conds = _set(
            conds, conditions.STALLED, FALSE, conditions.RENDERED, "configuration applied", gen, now
        )

    if rejected:
        first = rejected[0]
        conds = _set(
            conds,
            conditions.CONFIG_VALID,
            FALSE,
            conditions.CONFIG_REJECTED,
            f"pod {first.name} kept its last good configuration: {first.config_error}",
            gen,
            now,
        )
    else:
        conds = _set(
            conds,
            conditions.CONFIG_VALID,
            TRUE,
            conditions.RENDERED,
            f"configuration {str(observed.config_hash)[:12]} serves {observed.zones} zone(s)",
            gen,
            now,
        )

    progress = (
        f"{ready_count}/{observed.replicas} replicas ready, "
        f"{len(current)}/{observed.replicas} serving configuration {str(observed.config_hash)[:12]}"
    )
    done = (
        observed.rollout_complete
        and ready_count == observed.replicas
        and len(current) == observed.replicas
        and observed.apply_error is None
    )
    if done:
        conds = _set(
            conds, conditions.RECONCILING, FALSE, conditions.ALL_REPLICAS_READY, progress, gen, now
        )
        conds = _set(
            conds, conditions.READY, TRUE, conditions.ALL_REPLICAS_READY, progress, gen, now
        )
    else:
        conds = _set(
            conds, conditions.RECONCILING, TRUE, conditions.PROGRESSING, progress, gen, now
        )
        conds = _set(
            conds, conditions.READY, FALSE, conditions.REPLICAS_NOT_READY, progress, gen, now
        )

    status, reason, message = spread_condition(observed.replicas, failure_domains)
    conds = _set(conds, conditions.SPREAD, status, reason, message, gen, now)

    result: dict[str, Any] = {
        "observedGeneration": gen,
        "conditions": conds,
        "replicas": observed.replicas,
        "readyReplicas": ready_count,
        "failureDomains": failure_domains,
        "domains": len(failure_domains),
        "zones": observed.zones,
        "transferSourceAddresses": sorted(p.address for p in ready_pods if p.address),
    }
    if observed.notify_address:
        result["notifyAddress"] = observed.notify_address
    elif previous.get("notifyAddress"):
        result["notifyAddress"] = previous["notifyAddress"]
    return result


def _kept(previous: Mapping[str, Any]) -> dict[str, Any]:
    """What an invalid spec leaves alone: the last observation of the running fleet."""
    keep = ("replicas", "readyReplicas", "failureDomains", "domains", "zones",
            "transferSourceAddresses", "notifyAddress")  # fmt: skip
    return {k: previous[k] for k in keep if k in previous}


@dataclass(frozen=True)
class ServerVerdict:
    """What one SecondaryServer made of one Zone."""

    server: str
    config_hash: str
    served: bool
    rejection: ZoneRejection | None
    replicas: int
    replicas_current: int
    pod_errors: tuple[str, ...] = ()
    # The zone's spec.retransferRequest in this server's rendered configuration.
    retransfer_request: str | None = None


def verdict_for(
    zone_ref: ObjectRef,
    server: str,
    rendered: RenderedConfig,
    pods: Iterable[ObservedPod],
    replicas: int,
) -> ServerVerdict:
    pods = list(pods)
    planned = rendered.plan.zone(zone_ref)
    current = [p for p in pods if p.ready and p.applied_config_hash == rendered.config_hash]
    errors = tuple(
        f"pod {p.name}: {p.config_error}"
        for p in sorted(pods, key=lambda p: p.name)
        if p.config_error and rendered.config_hash in p.config_error
    )
    return ServerVerdict(
        server=server,
        config_hash=rendered.config_hash,
        served=planned is not None,
        rejection=rendered.rejected.get(zone_ref),
        replicas=replicas,
        replicas_current=len(current),
        pod_errors=errors,
        retransfer_request=planned.retransfer_request if planned is not None else None,
    )


@dataclass(frozen=True)
class ZoneObservation:
    generation: int
    zone_name: str | None
    spec_error: SpecError | None = None
    # Named in spec.servers but not found in the namespace.
    missing_servers: tuple[str, ...] = ()
    verdicts: tuple[ServerVerdict, ...] = field(default_factory=tuple)
    # Where the zone's primaries send NOTIFY (the operator's relay), when known.
    notify_address: str | None = None
    # spec.retransferRequest of the Zone as read now.
    retransfer_request: str | None = None


def zone_status(observed: ZoneObservation, previous: Mapping[str, Any], now: str) -> dict[str, Any]:
    gen = observed.generation
    conds: list[dict[str, Any]] = [dict(c) for c in previous.get("conditions") or []]
    result: dict[str, Any] = {
        k: v
        for k, v in previous.items()
        # Serial monitoring owns these; configuration status leaves them alone.
        if k not in ("conditions", "observedGeneration", "zone")
    }
    if observed.zone_name:
        result["zone"] = observed.zone_name
    if observed.notify_address:
        result["notifyAddress"] = observed.notify_address

    def finish(status: str, reason: str, message: str, ready: str) -> dict[str, Any]:
        nonlocal conds
        conds = _set(conds, conditions.CONFIG_VALID, status, reason, message, gen, now)
        current_ready = find_condition(conds, conditions.READY)
        if status == FALSE:
            conds = _set(conds, conditions.READY, FALSE, reason, message, gen, now)
        elif current_ready is None or current_ready.get("reason") in CONFIG_REASONS:
            # With a valid configuration, Ready is the serial monitor's to say
            # (every replica serves the primary's serial); until its first probe
            # the rollout is all that is known.
            conds = _set(conds, conditions.READY, ready, reason_ready, message_ready, gen, now)
        stalled = TRUE if reason == conditions.INVALID_SPEC else FALSE
        conds = _set(
            conds,
            conditions.STALLED,
            stalled,
            reason if stalled == TRUE else conditions.RENDERED,
            message if stalled == TRUE else "the operator can act on this Zone",
            gen,
            now,
        )
        return {**result, "conditions": conds, "observedGeneration": gen}

    reason_ready, message_ready = conditions.PROGRESSING, ""
    if observed.spec_error is not None:
        return finish(
            FALSE,
            conditions.INVALID_SPEC,
            f"{observed.spec_error}; fix the Zone and apply it again "
            f"(no server serves it meanwhile)",
            FALSE,
        )
    if observed.missing_servers:
        names = ", ".join(observed.missing_servers)
        return finish(
            FALSE,
            conditions.SERVER_NOT_FOUND,
            f"spec.servers names {names}, but no SecondaryServer of that name exists in this "
            f"namespace: create it or correct spec.servers",
            FALSE,
        )
    if not observed.verdicts:
        return finish(
            FALSE,
            conditions.NO_SERVERS_SELECTED,
            "no SecondaryServer in this namespace matches spec.serverSelector: "
            "label a SecondaryServer to match it or change the selector",
            FALSE,
        )
    for verdict in observed.verdicts:
        if verdict.rejection is not None:
            return finish(
                FALSE,
                verdict.rejection.reason,
                f"SecondaryServer {verdict.server}: {verdict.rejection.message}",
                FALSE,
            )
    for verdict in observed.verdicts:
        if verdict.pod_errors:
            return finish(
                FALSE,
                conditions.CONFIG_REJECTED,
                f"SecondaryServer {verdict.server}: the engine rejected the configuration and "
                f"keeps its last good one; {verdict.pod_errors[0]}",
                FALSE,
            )
    servers = ", ".join(v.server for v in observed.verdicts)
    lagging = [v for v in observed.verdicts if v.replicas_current < v.replicas]
    if lagging:
        reason_ready = conditions.PROGRESSING
        message_ready = "; ".join(
            f"SecondaryServer {v.server}: {v.replicas_current}/{v.replicas} replicas serve "
            f"the configuration with this zone"
            for v in lagging
        )
        ready = FALSE
    else:
        request = observed.retransfer_request
        if request and all(v.retransfer_request == request for v in observed.verdicts):
            # Every replica applied the configuration that carries the request,
            # and the agent tells named to retransfer before it reports that.
            result["retransferRequest"] = request
        reason_ready = conditions.AWAITING_SERIALS
        message_ready = (
            f"every replica of {servers} has the configuration with this zone; "
            f"waiting for the serial monitor to see them serve the primary's serial"
        )
        ready = UNKNOWN
    return finish(TRUE, conditions.RENDERED, f"rendered for {servers}", ready)
