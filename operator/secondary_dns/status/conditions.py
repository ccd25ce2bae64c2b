"""The one way a condition is set (metav1.Condition, kstatus conventions).

As in cert-manager's SetCertificateCondition: lastTransitionTime moves to `now`
only when the status changes, so "Ready for 3d" stays true across reconciles,
while observedGeneration, reason and message always take the new values. Order
is kept and a new type is appended, so an unchanged status patches to nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from secondary_dns.api.conditions import STATUSES, TRUE
from secondary_dns.api.limits import (
    MAX_CONDITION_MESSAGE,
    MAX_CONDITION_REASON,
    MAX_CONDITION_TYPE,
)

# metav1.Condition validation: the API server rejects a status patch that breaks it.
_REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")


@dataclass(frozen=True)
class Condition:
    """A verdict: what a status rule decided, before it is set with a time and a generation."""

    type: str
    status: str
    reason: str
    message: str

    @property
    def is_true(self) -> bool:
        return self.status == TRUE


def find_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def read_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Condition | None:
    """A stored condition as the verdict it records; None when it is not there."""
    found = find_condition(conditions, type_)
    if found is None:
        return None
    return Condition(
        type_,
        str(found.get("status", "")),
        str(found.get("reason", "")),
        str(found.get("message", "")),
    )


def set_condition(
    conditions: Sequence[Mapping[str, Any]], new: Condition, generation: int, now: str
) -> list[dict[str, Any]]:
    """The conditions with `new` set: a new list, the input is left alone.

    observedGeneration is required, not defaulted: without it a reader cannot
    tell a fresh verdict from one about an older spec (kstatus).
    """
    if not new.type or len(new.type) > MAX_CONDITION_TYPE:
        raise ValueError("a condition needs a type, e.g. Ready")
    if new.status not in STATUSES:
        raise ValueError(
            f"condition {new.type}: status must be True, False or Unknown, not {new.status!r}"
        )
    if len(new.reason) > MAX_CONDITION_REASON or _REASON.fullmatch(new.reason) is None:
        raise ValueError(
            f"condition {new.type}: reason must be CamelCase, e.g. Rendered: {new.reason!r}"
        )
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise ValueError(
            f"condition {new.type}: observedGeneration must be the object's metadata.generation"
        )
    message = new.message
    if len(message) > MAX_CONDITION_MESSAGE:
        message = message[: MAX_CONDITION_MESSAGE - 3] + "..."

    result: list[dict[str, Any]] = []
    replaced = False
    for condition in conditions:
        if condition.get("type") != new.type:
            result.append(dict(condition))
            continue
        previous = condition.get("lastTransitionTime")
        transition = previous if condition.get("status") == new.status and previous else now
        result.append(_stored(new, message, generation, transition))
        replaced = True
    if not replaced:
        result.append(_stored(new, message, generation, now))
    return result


def set_conditions(
    conditions: Sequence[Mapping[str, Any]], new: Iterable[Condition], generation: int, now: str
) -> list[dict[str, Any]]:
    result = [dict(condition) for condition in conditions]
    for condition in new:
        result = set_condition(result, condition, generation, now)
    return result


def _stored(new: Condition, message: str, generation: int, transition: str) -> dict[str, Any]:
    return {
        "type": new.type,
        "status": new.status,
        "observedGeneration": generation,
        "lastTransitionTime": transition,
        "reason": new.reason,
        "message": message,
    }
