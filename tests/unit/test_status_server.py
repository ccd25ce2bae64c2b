"""A SecondaryServer's status from its pods and rollout (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from secondary_dns.api import SpecError
from secondary_dns.status import server as s


@pytest.mark.parametrize(
    ("replicas", "domains", "status", "reason"),
    [
        (3, {"a": 1, "b": 1, "c": 1}, "True", "SpreadSatisfied"),
        (6, {"a": 2, "b": 2, "c": 2}, "True", "SpreadSatisfied"),
        (3, {"a": 2, "b": 1}, "True", "SpreadSatisfied"),
        (3, {"a": 3}, "False", "TooFewFailureDomains"),
        (3, {}, "False", "TooFewFailureDomains"),
        (2, {"a": 1, "b": 1}, "False", "TooFewReplicas"),
        (1, {"a": 1}, "False", "TooFewReplicas"),
    ],
)
def test_spread_condition_follows_rfc_2182(
    replicas: int, domains: dict[str, int], status: str, reason: str
) -> None:
    spread = s.spread_condition(replicas, domains)
    assert (spread.type, spread.status, spread.reason) == ("Spread", status, reason)
    if status == "False":
        assert "RFC 2182" in spread.message


def _pod(name: str, domain: str, ready: bool = True, applied: str | None = "h1") -> s.ObservedPod:
    return s.ObservedPod(name, ready, f"10.244.0.{name[-1]}", domain, applied, None)


def _observation(**overrides: Any) -> s.ServerObservation:
    values: dict[str, Any] = {
        "generation": 2,
        "replicas": 3,
        "topology_key": "topology.kubernetes.io/zone",
        "pods": (_pod("edge-0", "a"), _pod("edge-1", "b"), _pod("edge-2", "c")),
        "config_hash": "h1",
        "zones": 4,
        "rollout_complete": True,
    }
    values.update(overrides)
    return s.ServerObservation(**values)


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_server_ready_and_unchanged_world_computes_identical_status() -> None:
    first = s.server_status(_observation(), {}, "2026-01-01T00:00:00Z")
    assert _cond(first, "Ready")["status"] == "True"
    assert _cond(first, "Reconciling")["status"] == "False"
    assert first["failureDomains"] == {"a": 1, "b": 1, "c": 1}
    assert first["readyReplicas"] == 3 and first["zones"] == 4 and first["domains"] == 3
    # An hour later nothing changed: byte for byte the same status, so no write.
    assert s.server_status(_observation(), first, "2026-01-01T01:00:00Z") == first


def test_server_reconciling_until_every_replica_serves_the_new_config() -> None:
    pods = (
        _pod("edge-0", "a"),
        _pod("edge-1", "b", applied="h0"),
        _pod("edge-2", "c", ready=False),
    )
    status = s.server_status(_observation(pods=pods), {}, "now")
    assert _cond(status, "Ready")["status"] == "False"
    reconciling = _cond(status, "Reconciling")
    assert reconciling["status"] == "True" and "2/3 replicas ready" in reconciling["message"]
    assert "1/3 serving" in reconciling["message"]


def test_invalid_server_spec_stalls_with_the_field() -> None:
    error = SpecError("spec.replicas", "must be at least 1: set 1 or more")
    status = s.server_status(_observation(spec_error=error), {"readyReplicas": 3}, "now")
    stalled = _cond(status, "Stalled")
    assert stalled["status"] == "True" and "spec.replicas" in stalled["message"]
    assert status["readyReplicas"] == 3  # the last observation of the fleet is kept


def test_what_the_engine_cannot_express_is_in_config_valid() -> None:
    note = "spec.limits.maxRecords is 10, but Knot DNS limits a zone by its size"
    status = s.server_status(
        _observation(engine="knot", limitations=(note,)), {}, "2026-01-01T00:00:00Z"
    )
    config_valid = _cond(status, "ConfigValid")
    assert (config_valid["status"], config_valid["reason"]) == ("True", "EngineLimitations")
    assert config_valid["message"].endswith(f"; knot: {note}")
    assert _cond(status, "Ready")["status"] == "True"
