"""A Zone's status from both halves, and the one Ready rule (status/zone.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from secondary_dns.api import Limits, ObjectRef, SpecError, conditions, parse_zone
from secondary_dns.api.conditions import FALSE, TRUE, UNKNOWN
from secondary_dns.render import render_bind9, render_knot
from secondary_dns.render.engine import ZoneRejection
from secondary_dns.status.conditions import Condition, set_conditions
from secondary_dns.status.serial import SerialStatus
from secondary_dns.status.zone import (
    READY_RULES,
    ReadyInputs,
    ServerVerdict,
    ZoneConfig,
    open_transfer_entries,
    ready,
    verdict_for,
    zone_status,
)
from tests.unit.render_cases import minimal_request

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T01:00:00Z"


def _verdict(**overrides: Any) -> ServerVerdict:
    values: dict[str, Any] = {
        "server": "edge",
        "config_hash": "h1",
        "served": True,
        "rejection": None,
        "replicas": 3,
        "replicas_current": 3,
    }
    values.update(overrides)
    return ServerVerdict(**values)


def _config(**overrides: Any) -> ZoneConfig:
    values: dict[str, Any] = {
        "generation": 1,
        "zone_name": "example.com.",
        "verdicts": (_verdict(),),
    }
    values.update(overrides)
    return ZoneConfig(**values)


def _serial(**faults: tuple[str, str]) -> SerialStatus:
    """The monitor's five conditions: all well, except `faults` (type -> (status, reason))."""
    healthy = {
        conditions.SYNCED: (TRUE, conditions.IN_SYNC),
        conditions.STALE: (FALSE, conditions.IN_SYNC),
        conditions.PRIMARY_UNREACHABLE: (FALSE, conditions.PRIMARY_REACHABLE),
        conditions.EXPIRING: (FALSE, conditions.IN_SYNC),
        conditions.SERIAL_REGRESSED: (FALSE, conditions.SERIAL_ADVANCING),
    }
    healthy.update(faults)
    stored = set_conditions(
        [],
        (Condition(t, s, r, f"{t} is {s}: {r}") for t, (s, r) in healthy.items()),
        1,
        NOW,
    )
    part = SerialStatus.from_status({"primarySerial": 5, "synced": "3/3", "conditions": stored})
    assert part is not None
    return part


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


# ---------------------------------------------------------------- the Ready chain, rule by rule

# (rule, config, serial, status, reason): each case fails exactly at its rule.
CHAIN: list[tuple[str, ZoneConfig, SerialStatus | None, str, str]] = [
    (
        "spec_invalid",
        _config(zone_name=None, verdicts=(), spec_error=SpecError("spec.zone", "bad")),
        _serial(),
        FALSE,
        conditions.INVALID_SPEC,
    ),
    (
        "server_not_found",
        _config(missing_servers=("nosuch",)),
        _serial(),
        FALSE,
        conditions.SERVER_NOT_FOUND,
    ),
    ("no_servers_selected", _config(verdicts=()), _serial(), FALSE, conditions.NO_SERVERS_SELECTED),
    (
        "rejected_by_a_server",
        _config(
            verdicts=(
                _verdict(
                    served=False,
                    rejection=ZoneRejection(conditions.SECRET_NOT_FOUND, "Secret tsig not found"),
                ),
            )
        ),
        _serial(),
        FALSE,
        conditions.SECRET_NOT_FOUND,
    ),
    (
        "engine_rejected_config",
        _config(verdicts=(_verdict(pod_errors=("pod edge-0: h1: bad",)),)),
        _serial(),
        FALSE,
        conditions.CONFIG_REJECTED,
    ),
    (
        "servers_pending",
        _config(verdicts=(_verdict(replicas_current=1),), pending_servers=("new",)),
        None,
        UNKNOWN,
        conditions.SERVER_NOT_RECONCILED,
    ),
    (
        "rollout_in_progress",
        _config(verdicts=(_verdict(replicas_current=1),)),
        None,
        FALSE,
        conditions.PROGRESSING,
    ),
    (
        "serial_regressed",
        _config(),
        _serial(
            SerialRegressed=(TRUE, conditions.SERIAL_WENT_BACKWARDS),
            Synced=(FALSE, conditions.SERIAL_WENT_BACKWARDS),
        ),
        FALSE,
        conditions.SERIAL_WENT_BACKWARDS,
    ),
    (
        "primary_unreachable",
        _config(),
        _serial(
            PrimaryUnreachable=(TRUE, conditions.PRIMARY_REFUSED),
            Stale=(TRUE, conditions.REPLICAS_BEHIND),
        ),
        FALSE,
        conditions.PRIMARY_REFUSED,
    ),
    (
        "stale",
        _config(),
        _serial(
            Stale=(TRUE, conditions.REFRESH_OVERDUE),
            Expiring=(TRUE, conditions.EXPIRY_APPROACHING),
        ),
        FALSE,
        conditions.REFRESH_OVERDUE,
    ),
    (
        "expiring",
        _config(),
        # Every replica in sync, and yet it will stop answering: not Ready.
        _serial(Expiring=(TRUE, conditions.EXPIRY_APPROACHING)),
        FALSE,
        conditions.EXPIRY_APPROACHING,
    ),
    (
        "not_synced",
        _config(),
        _serial(Synced=(FALSE, conditions.PRIMARIES_DISAGREE)),
        FALSE,
        conditions.PRIMARIES_DISAGREE,
    ),
    ("awaiting_serials", _config(), None, UNKNOWN, conditions.AWAITING_SERIALS),
]


def test_the_table_covers_every_rule_in_order() -> None:
    assert [case[0] for case in CHAIN] == [rule.__name__ for rule in READY_RULES]


@pytest.mark.parametrize(
    ("rule", "config", "serial", "status", "reason"), CHAIN, ids=[case[0] for case in CHAIN]
)
def test_the_first_failing_rule_decides_ready(
    rule: str, config: ZoneConfig, serial: SerialStatus | None, status: str, reason: str
) -> None:
    verdict = ready(ReadyInputs(config, serial))
    assert (verdict.type, verdict.status, verdict.reason) == (conditions.READY, status, reason)
    assert verdict.message


# The rules whose failure passes by itself (work under way): Reconciling=True.
PROGRESS = {"servers_pending", "rollout_in_progress", "not_synced", "awaiting_serials"}
CONFIG = {
    "spec_invalid",
    "server_not_found",
    "no_servers_selected",
    "rejected_by_a_server",
    "engine_rejected_config",
}


@pytest.mark.parametrize(
    ("rule", "config", "serial", "status", "reason"), CHAIN, ids=[case[0] for case in CHAIN]
)
def test_stalled_and_reconciling_follow_kstatus_conventions(
    rule: str, config: ZoneConfig, serial: SerialStatus | None, status: str, reason: str
) -> None:
    """Every configuration fault is Stalled (kstatus Failed) with Ready's reason and
    message; work under way is Reconciling (InProgress); faults outside the
    configuration (the primary, the serials) are neither: Ready=False says it."""
    result = zone_status({}, config, serial, NOW)
    stalled, reconciling, ready_ = (
        _cond(result, "Stalled"),
        _cond(result, "Reconciling"),
        _cond(result, "Ready"),
    )
    assert (stalled["status"] == TRUE) == (rule in CONFIG)
    assert (reconciling["status"] == TRUE) == (rule in PROGRESS)
    if rule in CONFIG:
        assert (stalled["reason"], stalled["message"]) == (ready_["reason"], ready_["message"])
    if rule in PROGRESS:
        assert (reconciling["reason"], reconciling["message"]) == (
            ready_["reason"],
            ready_["message"],
        )
    # Every reason is one of ours, never a generic one.
    assert reconciling["reason"] == ready_["reason"]


def test_a_ready_zone_is_neither_stalled_nor_reconciling() -> None:
    result = zone_status({}, _config(), _serial(), NOW)
    assert [_cond(result, t)["status"] for t in ("Ready", "Stalled", "Reconciling")] == [
        TRUE,
        FALSE,
        FALSE,
    ]


def test_ready_when_every_rule_passes_with_synced_s_message() -> None:
    verdict = ready(ReadyInputs(_config(), _serial()))
    assert (verdict.status, verdict.reason) == (TRUE, conditions.IN_SYNC)
    assert verdict.message == "Synced is True: InSync"


def test_a_rollout_does_not_unready_a_zone_the_monitor_has_seen_in_sync() -> None:
    # Any change on a server rolls a new configuration to all its zones; what the
    # replicas serve, not the rollout, then says whether each zone is fine.
    rolling = _config(verdicts=(_verdict(replicas_current=1),))
    assert ready(ReadyInputs(rolling, _serial())).is_true


# ---------------------------------------------------------------- the whole status


def test_zone_conditions_explain_themselves() -> None:
    ok = zone_status({}, _config(), None, NOW)
    assert _cond(ok, "ConfigValid")["status"] == "True"
    assert _cond(ok, "ConfigValid")["message"] == "rendered for edge"
    assert _cond(ok, "Stalled")["status"] == "False"
    assert (_cond(ok, "Ready")["status"], _cond(ok, "Ready")["reason"]) == (
        "Unknown",
        "AwaitingSerials",
    )
    assert ok["zone"] == "example.com." and ok["observedGeneration"] == 1

    lagging = zone_status({}, _config(verdicts=(_verdict(replicas_current=1),)), None, NOW)
    assert _cond(lagging, "Ready")["status"] == "False"
    assert "1/3 replicas" in _cond(lagging, "Ready")["message"]

    missing = zone_status({}, _config(missing_servers=("nosuch",)), None, NOW)
    assert _cond(missing, "ConfigValid")["reason"] == "ServerNotFound"
    assert "nosuch" in _cond(missing, "ConfigValid")["message"]
    # Stalled too: it needs someone to act (kstatus: Failed, so Flux fails at once).
    assert (_cond(missing, "Stalled")["status"], _cond(missing, "Stalled")["reason"]) == (
        "True",
        "ServerNotFound",
    )
    assert _cond(missing, "Stalled")["message"] == _cond(missing, "ConfigValid")["message"]

    error = SpecError("spec.zone", "bad: use a.example")
    invalid = zone_status({"zone": "old."}, _config(zone_name=None, spec_error=error), None, NOW)
    assert _cond(invalid, "Stalled")["status"] == "True"
    assert "spec.zone" in _cond(invalid, "Stalled")["message"]
    assert "zone" not in invalid

    none = zone_status({}, _config(verdicts=()), None, NOW)
    assert _cond(none, "ConfigValid")["reason"] == "NoServersSelected"

    # Selected by a server not reconciled yet (applied together with the Zone): no
    # fault, work under way; kstatus keeps waiting instead of failing.
    pending = zone_status({}, _config(verdicts=(), pending_servers=("edge",)), None, NOW)
    for type_, status in (("ConfigValid", "Unknown"), ("Stalled", "False"), ("Ready", "Unknown")):
        assert (_cond(pending, type_)["status"], _cond(pending, type_)["reason"]) == (
            status,
            "ServerNotReconciled",
        )
    assert _cond(pending, "Reconciling")["status"] == "True"
    assert "SecondaryServer edge" in _cond(pending, "Ready")["message"]


def test_either_writer_computes_the_same_status_and_an_unchanged_world_writes_nothing() -> None:
    serial = _serial()
    # The configuration path wrote first, the monitor then adds its half.
    first = zone_status(zone_status({}, _config(), None, NOW), _config(), serial, NOW)
    assert _cond(first, "Ready")["status"] == "True"
    # An hour later, the configuration path (with the monitor's half from memory)
    # and the monitor (with the configuration path's half) both change nothing.
    assert zone_status(first, _config(), serial, LATER) == first
    # After an operator restart the monitor's half is read back from the status.
    recovered = SerialStatus.from_status(first)
    assert recovered is not None
    assert zone_status(first, _config(), recovered, LATER) == first


def test_the_halves_keep_each_others_fields() -> None:
    # The configuration path does not touch the monitor's fields, nor it the zone name.
    kept = zone_status({"primarySerial": 7, "conditions": []}, _config(), None, NOW)
    assert kept["primarySerial"] == 7
    with_serial = zone_status({"notifyAddress": "10.96.0.53"}, _config(), _serial(), NOW)
    assert with_serial["primarySerial"] == 5 and with_serial["notifyAddress"] == "10.96.0.53"
    # A field the monitor can no longer fill disappears with its new half.
    gone = dataclasses.replace(_serial(), fields={"synced": "0/3"})
    assert "primarySerial" not in zone_status(with_serial, _config(), gone, NOW)


def test_a_stored_status_without_the_monitor_s_half_recovers_none() -> None:
    assert SerialStatus.from_status({}) is None
    assert SerialStatus.from_status(zone_status({}, _config(), None, NOW)) is None


def test_status_shows_a_retransfer_request_once_every_replica_applied_it() -> None:
    def config(*verdicts: ServerVerdict) -> ZoneConfig:
        return _config(verdicts=verdicts, retransfer_request="t2")

    previous = {"retransferRequest": "t1"}
    # One server still rolls the configuration out: the last request stays shown.
    rolling = zone_status(
        previous,
        config(_verdict(retransfer_request="t2"), _verdict(server="b", replicas_current=2)),
        None,
        NOW,
    )
    assert rolling["retransferRequest"] == "t1"
    # Every replica current, but one server's configuration still has the old request.
    stale = zone_status(
        previous,
        config(_verdict(retransfer_request="t2"), _verdict(server="b", retransfer_request="t1")),
        None,
        NOW,
    )
    assert stale["retransferRequest"] == "t1"
    done = zone_status(
        previous,
        config(_verdict(retransfer_request="t2"), _verdict(server="b", retransfer_request="t2")),
        None,
        NOW,
    )
    assert done["retransferRequest"] == "t2"


def test_verdict_reads_the_zones_request_from_the_rendered_configuration() -> None:
    request = minimal_request()
    ref, spec = request.zones[0]
    with_request = dataclasses.replace(spec, retransfer_request="ticket-9")
    rendered = render_bind9(dataclasses.replace(request, zones=[(ref, with_request)]))
    assert verdict_for(ref, "edge", rendered, (), 3).retransfer_request == "ticket-9"
    assert verdict_for(ref, "edge", render_bind9(request), (), 3).retransfer_request is None
    assert not verdict_for(ObjectRef("dns", "other"), "edge", rendered, (), 3).served


# ---------------------------------------------------------------- TransferOpen (issue 13, item 9)


def test_a_zone_open_to_any_address_for_transfer_says_so_without_failing() -> None:
    spec = parse_zone(
        {
            "apiVersion": "secondarydns.io/v1alpha1",
            "kind": "Zone",
            "metadata": {"name": "example-com", "namespace": "dns"},
            "spec": {
                "zone": "example.com",
                "primaries": [{"address": "192.0.2.1"}],
                "servers": ["edge"],
                "allowTransfer": [
                    {"cidr": "198.51.100.0/24"},
                    {"cidr": "0.0.0.0/0", "tsigKeySecretRef": {"name": "partner"}},
                    {"cidr": "::/0"},
                ],
            },
        }
    )
    assert open_transfer_entries(spec) == ("spec.allowTransfer[2] (::/0)",)
    status = zone_status({}, _config(open_transfer=open_transfer_entries(spec)), _serial(), NOW)
    found = _cond(status, conditions.TRANSFER_OPEN)
    assert (found["status"], found["reason"]) == (TRUE, conditions.OPEN_TO_ANY_ADDRESS)
    assert "spec.allowTransfer[2] (::/0)" in found["message"]
    assert "tsigKeySecretRef" in found["message"]
    # A warning, not a failure: the zone is Ready and its configuration valid.
    assert _cond(status, conditions.READY)["status"] == TRUE
    assert _cond(status, conditions.CONFIG_VALID)["status"] == TRUE

    restricted = zone_status({}, _config(open_transfer=()), _serial(), NOW)
    found = _cond(restricted, conditions.TRANSFER_OPEN)
    assert (found["status"], found["reason"]) == (FALSE, conditions.TRANSFER_RESTRICTED)
    # Unknown while the spec cannot be read: no verdict on it.
    unread = zone_status({}, _config(), None, NOW)
    assert all(c["type"] != conditions.TRANSFER_OPEN for c in unread["conditions"])


def test_what_an_engine_cannot_express_is_in_config_valid_and_the_zone_is_served() -> None:
    request = minimal_request()
    limited = dataclasses.replace(
        request, server=dataclasses.replace(request.server, limits=Limits(max_records=10))
    )
    ref = request.zones[0][0]
    bind = verdict_for(ref, "bind-a", render_bind9(limited), [], 3)
    knot = verdict_for(ref, "knot-a", render_knot(limited), [], 3)
    assert (bind.engine, bind.limitations) == ("bind9", ())
    assert knot.engine == "knot" and "maxRecords is 10" in knot.limitations[0]
    status = zone_status({}, _config(verdicts=(bind, knot)), _serial(), NOW)
    config_valid = _cond(status, conditions.CONFIG_VALID)
    assert config_valid["status"] == TRUE
    assert config_valid["reason"] == conditions.ENGINE_LIMITATIONS
    assert config_valid["message"].startswith("rendered for bind-a, knot-a; ")
    assert "SecondaryServer knot-a (knot): spec.limits.maxRecords is 10" in config_valid["message"]
    # Served exactly as asked elsewhere: no limitation, the usual reason.
    status = zone_status({}, _config(verdicts=(bind,)), _serial(), NOW)
    assert _cond(status, conditions.CONFIG_VALID)["reason"] == conditions.RENDERED
