"""Condition types and reasons of both resources, and the one way to set a condition.

Types follow the kstatus conventions (Ready, Reconciling, Stalled) so Argo CD and
Flux read health without custom scripts; reasons are CamelCase constants so that
alerts and tests match on a name, never on a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from secondary_dns.api.limits import (
    MAX_CONDITION_MESSAGE,
    MAX_CONDITION_REASON,
    MAX_CONDITION_TYPE,
)

# Types
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONFIG_VALID = "ConfigValid"
SYNCED = "Synced"
STALE = "Stale"
EXPIRING = "Expiring"
SERIAL_REGRESSED = "SerialRegressed"
PRIMARY_UNREACHABLE = "PrimaryUnreachable"
SPREAD = "Spread"

CONDITION_TYPES = (
    READY,
    RECONCILING,
    STALLED,
    CONFIG_VALID,
    SYNCED,
    STALE,
    EXPIRING,
    SERIAL_REGRESSED,
    PRIMARY_UNREACHABLE,
    SPREAD,
)

# Statuses (metav1.ConditionStatus)
TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"
STATUSES = (TRUE, FALSE, UNKNOWN)

# Reasons: configuration
INVALID_SPEC = "InvalidSpec"
SECRET_NOT_FOUND = "SecretNotFound"
INVALID_TSIG_KEY = "InvalidTsigKey"
SERVER_NOT_FOUND = "ServerNotFound"
NO_SERVERS_SELECTED = "NoServersSelected"
ZONE_CONFLICT = "ZoneConflict"
RENDERED = "Rendered"
CONFIG_REJECTED = "ConfigRejected"
# Reasons: rollout and serving
PROGRESSING = "Progressing"
REPLICAS_NOT_READY = "ReplicasNotReady"
ALL_REPLICAS_READY = "AllReplicasReady"
APPLY_FAILED = "ApplyFailed"
SPREAD_SATISFIED = "SpreadSatisfied"
TOO_FEW_FAILURE_DOMAINS = "TooFewFailureDomains"
TOO_FEW_REPLICAS = "TooFewReplicas"
# Reasons: serial monitoring (RFC 1982 comparisons)
IN_SYNC = "InSync"
REPLICAS_BEHIND = "ReplicasBehind"
NOT_TRANSFERRED = "NotTransferred"
TRANSFER_FAILED = "TransferFailed"
REFRESH_OVERDUE = "RefreshOverdue"
EXPIRY_APPROACHING = "ExpiryApproaching"
EXPIRED = "Expired"
SERIAL_WENT_BACKWARDS = "SerialWentBackwards"
SERIAL_ADVANCING = "SerialAdvancing"
PRIMARIES_DISAGREE = "PrimariesDisagree"
PRIMARY_REACHABLE = "PrimaryReachable"
PRIMARY_TIMEOUT = "PrimaryTimeout"
PRIMARY_REFUSED = "PrimaryRefused"
RETRANSFER_REQUESTED = "RetransferRequested"
# Configured everywhere; serial status not known yet.
AWAITING_SERIALS = "AwaitingSerials"

# metav1.Condition validation: the API server rejects a status patch that breaks it.
_REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")


def find_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def set_condition(
    conditions: Sequence[Mapping[str, Any]], new: Mapping[str, Any], now: str
) -> list[dict[str, Any]]:
    """The conditions with `new` set: a new list, the input is left alone.

    `new` has type, status, reason, message and observedGeneration. As in
    cert-manager's SetCertificateCondition, lastTransitionTime moves to `now` only
    when the status changes, so "Ready for 3d" stays true across reconciles, while
    observedGeneration, reason and message always take the new values. Order is
    kept and a new type is appended, so an unchanged status patches to nothing.
    """
    type_ = new.get("type")
    status = new.get("status")
    reason = new.get("reason", "")
    message = new.get("message", "")
    if not isinstance(type_, str) or not type_ or len(type_) > MAX_CONDITION_TYPE:
        raise ValueError("a condition needs a type, e.g. Ready")
    if status not in STATUSES:
        raise ValueError(
            f"condition {type_}: status must be True, False or Unknown, not {status!r}"
        )
    if (
        not isinstance(reason, str)
        or len(reason) > MAX_CONDITION_REASON
        or _REASON.fullmatch(reason) is None
    ):
        raise ValueError(f"condition {type_}: reason must be CamelCase, e.g. Rendered: {reason!r}")
    if not isinstance(message, str):
        raise ValueError(f"condition {type_}: message must be a string")
    if len(message) > MAX_CONDITION_MESSAGE:
        message = message[: MAX_CONDITION_MESSAGE - 3] + "..."
    # Without observedGeneration a reader cannot tell a fresh verdict from one about
    # an older spec (kstatus), so it is required, not defaulted.
    generation = new.get("observedGeneration")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise ValueError(
            f"condition {type_}: observedGeneration must be the object's metadata.generation"
        )

    result: list[dict[str, Any]] = []
    replaced = False
    for condition in conditions:
        if condition.get("type") != type_:
            result.append(dict(condition))
            continue
        previous = condition.get("lastTransitionTime")
        transition = previous if condition.get("status") == status and previous else now
        result.append(_condition(type_, status, reason, message, generation, transition))
        replaced = True
    if not replaced:
        result.append(_condition(type_, status, reason, message, generation, now))
    return result


def _condition(
    type_: str, status: str, reason: str, message: str, generation: int, transition: str
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }
