"""Status of a SecondaryServer, computed from what was observed (pure).

The reconciler observes the Pods, their nodes' failure-domain labels, the
StatefulSet and what each agent reports on its Pod, and renders; this turns
that into the status the API stores. `now` is passed in, and conditions keep
their lastTransitionTime when their status did not change, so an unchanged
world computes an identical status and nothing is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from secondary_dns.api import SpecError, conditions
from secondary_dns.api.agent_contract import (
    ANNOTATION_APPLIED_CONFIG_HASH,
    ANNOTATION_CONFIG_ERROR,
)
from secondary_dns.api.conditions import FALSE, TRUE
from secondary_dns.status.conditions import Condition, set_conditions

# RFC 2182 §5: at least three servers, in more than one place.
RECOMMENDED_REPLICAS = 3
RECOMMENDED_FAILURE_DOMAINS = 2


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
    # spec.engine.type, and what that engine does instead of a field it cannot
    # express exactly (RenderedConfig.server_limitations).
    engine: str = ""
    limitations: tuple[str, ...] = ()


def spread_condition(replicas: int, failure_domains: Mapping[str, int]) -> Condition:
    """`Spread`: RFC 2182 §5 asks for 3+ servers, §3.1 for no single point of failure."""
    domains = sorted(d for d, ready in failure_domains.items() if ready > 0)
    where = ", ".join(f"{d}={failure_domains[d]}" for d in domains) or "none"
    if replicas < RECOMMENDED_REPLICAS:
        return Condition(
            conditions.SPREAD,
            FALSE,
            conditions.TOO_FEW_REPLICAS,
            f"{replicas} replica(s) requested; RFC 2182 §5 recommends at least "
            f"{RECOMMENDED_REPLICAS} name servers for a zone so that one outage never leaves "
            f"it with a single server: set spec.replicas to {RECOMMENDED_REPLICAS} or more "
            f"(ready per domain: {where})",
        )
    if len(domains) < RECOMMENDED_FAILURE_DOMAINS:
        return Condition(
            conditions.SPREAD,
            FALSE,
            conditions.TOO_FEW_FAILURE_DOMAINS,
            f"ready replicas sit in {len(domains)} failure domain(s) ({where}); RFC 2182 §3.1 "
            f"asks that secondaries not share a single point of failure: make nodes in at "
            f"least {RECOMMENDED_FAILURE_DOMAINS} domains available to the pods",
        )
    return Condition(
        conditions.SPREAD,
        TRUE,
        conditions.SPREAD_SATISFIED,
        f"ready replicas in {len(domains)} failure domains: {where}",
    )


def server_status(
    observed: ServerObservation,
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    previous_conditions = list(previous.get("conditions") or [])
    if observed.spec_error is not None:
        message = (
            f"{observed.spec_error}; fix the SecondaryServer and apply it again "
            f"(nothing was changed in the cluster)"
        )
        verdicts = [
            Condition(type_, status, conditions.INVALID_SPEC, message)
            for type_, status in (
                (conditions.STALLED, TRUE),
                (conditions.READY, FALSE),
                (conditions.RECONCILING, FALSE),
            )
        ]
        return {
            **_kept(previous),
            "conditions": set_conditions(previous_conditions, verdicts, observed.generation, now),
            "observedGeneration": observed.generation,
        }

    ready_pods = [p for p in observed.pods if p.ready]
    domains = Counter(p.failure_domain or "unknown" for p in ready_pods)
    failure_domains = {d: domains[d] for d in sorted(domains)}
    current = [p for p in ready_pods if p.applied_config_hash == observed.config_hash]
    rejected = sorted((p for p in observed.pods if p.config_error), key=lambda p: p.name)
    ready_count = len(ready_pods)
    config = str(observed.config_hash)[:12]

    if observed.apply_error is not None:
        stalled = Condition(conditions.STALLED, TRUE, conditions.APPLY_FAILED, observed.apply_error)
    else:
        stalled = Condition(conditions.STALLED, FALSE, conditions.RENDERED, "configuration applied")
    if rejected:
        first = rejected[0]
        config_valid = Condition(
            conditions.CONFIG_VALID,
            FALSE,
            conditions.CONFIG_REJECTED,
            f"pod {first.name} kept its last good configuration: {first.config_error}",
        )
    else:
        config_valid = Condition(
            conditions.CONFIG_VALID,
            TRUE,
            conditions.ENGINE_LIMITATIONS if observed.limitations else conditions.RENDERED,
            "; ".join(
                [
                    f"configuration {config} serves {observed.zones} zone(s)",
                    *(f"{observed.engine}: {note}" for note in observed.limitations),
                ]
            ),
        )
    progress = (
        f"{ready_count}/{observed.replicas} replicas ready, "
        f"{len(current)}/{observed.replicas} serving configuration {config}"
    )
    done = (
        observed.rollout_complete
        and ready_count == observed.replicas
        and len(current) == observed.replicas
        and observed.apply_error is None
    )
    if done:
        rollout = [
            Condition(conditions.RECONCILING, FALSE, conditions.ALL_REPLICAS_READY, progress),
            Condition(conditions.READY, TRUE, conditions.ALL_REPLICAS_READY, progress),
        ]
    else:
        rollout = [
            Condition(conditions.RECONCILING, TRUE, conditions.PROGRESSING, progress),
            Condition(conditions.READY, FALSE, conditions.REPLICAS_NOT_READY, progress),
        ]
    verdicts = [
        stalled,
        config_valid,
        *rollout,
        spread_condition(observed.replicas, failure_domains),
    ]
    result: dict[str, Any] = {
        "observedGeneration": observed.generation,
        "conditions": set_conditions(previous_conditions, verdicts, observed.generation, now),
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
