"""set_condition: lastTransitionTime moves only when the status does, observedGeneration always."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from secondary_dns.api import conditions
from secondary_dns.api.conditions import CONDITION_TYPES, FALSE, READY, SYNCED, TRUE
from secondary_dns.api.limits import MAX_CONDITION_MESSAGE
from secondary_dns.status.conditions import (
    Condition,
    find_condition,
    read_condition,
    set_condition,
)

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T10:05:00Z"
T2 = "2024-05-01T10:10:00Z"


def ready(status: str, reason: str = "AllReplicasReady") -> Condition:
    return Condition(READY, status, reason, f"ready is {status}")


def test_new_condition_is_appended_with_now() -> None:
    result = set_condition([], ready(TRUE), 1, T0)
    assert result == [
        {
            "type": READY,
            "status": TRUE,
            "observedGeneration": 1,
            "lastTransitionTime": T0,
            "reason": "AllReplicasReady",
            "message": "ready is True",
        }
    ]
    assert read_condition(result, READY) == ready(TRUE)


def test_same_status_keeps_transition_time_but_updates_the_rest() -> None:
    first = set_condition([], ready(TRUE), 1, T0)
    second = set_condition(first, ready(TRUE, reason="InSync"), 2, T1)
    assert second[0]["lastTransitionTime"] == T0
    assert second[0]["observedGeneration"] == 2
    assert second[0]["reason"] == "InSync"


def test_changed_status_moves_transition_time() -> None:
    first = set_condition([], ready(TRUE), 1, T0)
    second = set_condition(first, ready(FALSE, reason="ReplicasNotReady"), 1, T1)
    third = set_condition(second, ready(FALSE, reason="ReplicasNotReady"), 1, T2)
    assert second[0]["lastTransitionTime"] == T1
    assert third[0]["lastTransitionTime"] == T1


def test_identical_input_gives_identical_output() -> None:
    # What makes "patch status only when it changed" work: no churn on a no-op.
    first = set_condition([], ready(TRUE), 1, T0)
    assert set_condition(first, ready(TRUE), 1, T1) == first


def test_other_conditions_and_order_are_kept_and_input_is_not_changed() -> None:
    synced = Condition(SYNCED, FALSE, "ReplicasBehind", "1 of 3 replicas behind")
    start = set_condition(set_condition([], synced, 1, T0), ready(TRUE), 1, T0)
    before = copy.deepcopy(start)
    result = set_condition(start, ready(FALSE, reason="ReplicasNotReady"), 1, T1)
    assert start == before
    assert [c["type"] for c in result] == [SYNCED, READY]
    assert result[0] == start[0]
    found = find_condition(result, READY)
    assert found is not None and found["status"] == FALSE
    assert find_condition(result, "Stalled") is None


def test_missing_transition_time_is_filled_in() -> None:
    stored = [{"type": READY, "status": TRUE, "reason": "X", "message": ""}]
    assert set_condition(stored, ready(TRUE), 1, T1)[0]["lastTransitionTime"] == T1


@pytest.mark.parametrize(
    "change",
    [
        {"type": ""},
        {"type": "T" * 317},
        {"status": "true"},
        {"reason": ""},
        {"reason": "not camel case"},
        {"reason": "A" * 1025},
    ],
)
def test_conditions_the_api_server_would_refuse_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        set_condition([], dataclasses.replace(ready(TRUE), **change), 1, T0)


@pytest.mark.parametrize("generation", [None, -1, True])
def test_observed_generation_is_required(generation: Any) -> None:
    with pytest.raises(ValueError):
        set_condition([], ready(TRUE), generation, T0)


def test_long_messages_are_cut_to_what_the_api_server_stores() -> None:
    long = dataclasses.replace(ready(TRUE), message="x" * 40000)
    result = set_condition([], long, 1, T0)
    assert len(result[0]["message"]) == MAX_CONDITION_MESSAGE


def test_types_and_reasons_are_camel_case_constants() -> None:
    names = [value for key, value in vars(conditions).items() if key.isupper()]
    strings = [value for value in names if isinstance(value, str) and value[:1].isupper()]
    assert {"Ready", "Reconciling", "Stalled", "ConfigValid", "Synced", "Stale"} <= set(
        CONDITION_TYPES
    )
    for value in strings:
        assert " " not in value and value[0].isupper(), value
    for reason in ("InvalidSpec", "SecretNotFound", "InvalidTsigKey", "ServerNotFound", "Rendered"):
        assert reason in strings
