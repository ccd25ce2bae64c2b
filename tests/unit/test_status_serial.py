"""The serial monitor's decisions: probe results + history -> Zone status (pure).

Whether the zone is Ready is the Ready chain's to say (status/zone.py); `healthy`
below asks it for a zone whose configuration is fine, so these tests also pin
how the serial conditions decide Ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dns.serial
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secondary_dns.api import conditions
from secondary_dns.api.soa import ProbeResult, ProbeTarget, SoaAnswer
from secondary_dns.status.conditions import find_condition
from secondary_dns.status.serial import (
    ReplicaTarget,
    SerialEvaluation,
    ZoneHistory,
    evaluate,
    history_from_status,
    newest,
    oldest,
    recovery_advice,
    recovery_steps,
)
from secondary_dns.status.times import format_duration, timestamp_text
from secondary_dns.status.zone import ReadyInputs, ServerVerdict, ZoneConfig, ready

PRIMARY = ProbeTarget("192.0.2.1")
SECOND_PRIMARY = ProbeTarget("192.0.2.2")
EDGE = [
    ReplicaTarget("edge-0", "edge", "zone-a", "10.0.0.10"),
    ReplicaTarget("edge-1", "edge", "zone-b", "10.0.0.11"),
    ReplicaTarget("edge-2", "edge", "zone-c", "10.0.0.12"),
]
T0 = 1_700_000_000.0
serials = st.integers(min_value=0, max_value=2**32 - 1)


def soa(serial: int, *, refresh: int = 3600, expire: int = 86400) -> SoaAnswer:
    return SoaAnswer(serial=serial, refresh=refresh, retry=600, expire=expire, minimum=60)


def answered(target: ProbeTarget, serial: int, **timers: int) -> ProbeResult:
    return ProbeResult(target, soa(serial, **timers), None, 0.001, responded=True)


def failed(
    target: ProbeTarget, error: str = "timeout after 2s", responded: bool = False
) -> ProbeResult:
    return ProbeResult(target, None, error, 2.0, responded=responded)


def replica_results(
    served: Sequence[int | ProbeResult | None],
    targets: Sequence[ReplicaTarget] = EDGE,
    **timers: int,
) -> list[tuple[ReplicaTarget, ProbeResult | None]]:
    pairs: list[tuple[ReplicaTarget, ProbeResult | None]] = []
    for target, value in zip(targets, served, strict=False):
        probe = target.probe_target
        assert probe is not None
        if isinstance(value, int):
            pairs.append((target, answered(probe, value, **timers)))
        else:
            pairs.append((target, value))
    return pairs


def run(
    primaries: Sequence[ProbeResult],
    served: Sequence[int | ProbeResult | None],
    *,
    now: float = T0,
    history: ZoneHistory | None = None,
    status: Mapping[str, Any] | None = None,
    generation: int = 1,
    **kwargs: Any,
) -> SerialEvaluation:
    timers = kwargs.pop("timers", {})
    targets = kwargs.pop("targets", EDGE)
    return evaluate(
        generation=generation,
        primaries=primaries,
        replicas=replica_results(served, targets, **timers),
        history=history or ZoneHistory(),
        previous_status=status or {},
        now=now,
        **kwargs,
    )


def then(
    previous: SerialEvaluation,
    primaries: Sequence[ProbeResult],
    served: Sequence[int | ProbeResult | None],
    now: float,
    **kwargs: Any,
) -> SerialEvaluation:
    """The next round of probes, with the memory and status of the previous one."""
    return run(
        primaries, served, now=now, history=previous.history, status=previous.status, **kwargs
    )


def condition(evaluation: SerialEvaluation, type_: str) -> Mapping[str, Any]:
    found = find_condition(evaluation.status["conditions"], type_)
    assert found is not None, f"{type_} missing in {evaluation.status['conditions']}"
    return found


CONFIGURED = ZoneConfig(
    generation=1,
    zone_name="example.com.",
    verdicts=(ServerVerdict("edge", "h", True, None, 3, 3),),
)


def healthy(evaluation: SerialEvaluation) -> bool:
    """Ready, for a zone every server renders and every replica runs."""
    return ready(ReadyInputs(CONFIGURED, evaluation.serial_status)).is_true


def verdict(evaluation: SerialEvaluation, type_: str) -> tuple[str, str]:
    found = condition(evaluation, type_)
    return found["status"], found["reason"]


# ---------------------------------------------------------------- steady state


def test_all_replicas_in_sync() -> None:
    result = run([answered(PRIMARY, 5)], [5, 5, 5])
    status = result.status
    assert status["primarySerial"] == 5
    assert status["servedSerial"] == 5
    assert (status["replicasInSync"], status["replicasTotal"], status["synced"]) == (3, 3, "3/3")
    assert status["replicas"][0] == {
        "pod": "edge-0",
        "server": "edge",
        "failureDomain": "zone-a",
        "address": "10.0.0.10",
        "serial": 5,
        "inSync": True,
        "lastChange": timestamp_text(T0),
    }
    assert verdict(result, conditions.SYNCED) == ("True", conditions.IN_SYNC)
    assert condition(result, conditions.SYNCED)["message"] == "3/3 replicas serve serial 5"
    assert verdict(result, conditions.STALE) == ("False", conditions.IN_SYNC)
    assert verdict(result, conditions.PRIMARY_UNREACHABLE) == (
        "False",
        conditions.PRIMARY_REACHABLE,
    )
    assert verdict(result, conditions.EXPIRING) == ("False", conditions.IN_SYNC)
    assert verdict(result, conditions.SERIAL_REGRESSED) == ("False", conditions.SERIAL_ADVANCING)
    assert healthy(result)
    assert result.repairs == []
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])


def test_replicas_are_sorted_by_pod_and_removed_pods_are_forgotten() -> None:
    pairs = list(reversed(replica_results([5, 5, 5])))
    first = evaluate(
        generation=1,
        primaries=[answered(PRIMARY, 5)],
        replicas=pairs,
        history=ZoneHistory(),
        previous_status={},
        now=T0,
    )
    assert [r["pod"] for r in first.status["replicas"]] == ["edge-0", "edge-1", "edge-2"]
    second = then(first, [answered(PRIMARY, 5)], [5, 5], T0 + 10)
    assert set(second.history.replicas) == {"edge-0", "edge-1"}
    assert second.status["synced"] == "2/2"


def test_other_condition_types_are_left_alone_and_transitions_kept() -> None:
    ready = {
        "type": conditions.READY,
        "status": "True",
        "observedGeneration": 1,
        "lastTransitionTime": "2020-01-01T00:00:00Z",
        "reason": "AllReplicasReady",
        "message": "whatever the reconciler said",
    }
    first = run([answered(PRIMARY, 5)], [5, 5, 5], status={"conditions": [ready]})
    assert first.status["conditions"][0] == ready
    second = then(first, [answered(PRIMARY, 5)], [5, 5, 5], T0 + 60)
    assert second.status["conditions"] == first.status["conditions"]
    # Unchanged status: nothing to write (the operator compares before patching).
    assert second.status == first.status


def test_last_change_moves_only_when_the_serial_changes() -> None:
    first = run([answered(PRIMARY, 5)], [5, 5, 5])
    second = then(first, [answered(PRIMARY, 6)], [6, 5, 5], T0 + 20)
    assert second.status["replicas"][0]["lastChange"] == timestamp_text(T0 + 20)
    assert second.status["replicas"][1]["lastChange"] == timestamp_text(T0)


# ---------------------------------------------------------------- behind, stale, repair


def test_replica_behind_within_grace_is_not_stale_but_not_synced() -> None:
    first = run([answered(PRIMARY, 5)], [5, 5, 5])
    second = then(first, [answered(PRIMARY, 6)], [6, 5, 6], T0 + 10)
    assert verdict(second, conditions.SYNCED) == ("False", conditions.REPLICAS_BEHIND)
    assert condition(second, conditions.SYNCED)["message"] == (
        "2/3 replicas serve serial 6; edge-1 (failure domain zone-b) serves 5 (behind)"
    )
    assert verdict(second, conditions.STALE) == ("False", conditions.SERIAL_ADVANCING)
    assert second.status["servedSerial"] == 5
    assert second.status["synced"] == "2/3"
    assert not healthy(second)
    assert second.repairs == []  # just seen behind: give the NOTIFY a chance first
    assert [v.seconds_behind for v in second.replicas] == [0.0, 0.0, 0.0]


def test_repair_after_grace_then_at_most_once_per_interval() -> None:
    first = run([answered(PRIMARY, 6)], [6, 5, 6])
    assert first.repairs == []
    second = then(first, [answered(PRIMARY, 6)], [6, 5, 6], T0 + 6)
    assert second.repairs == [EDGE[1]]
    third = then(second, [answered(PRIMARY, 6)], [6, 5, 6], T0 + 20)
    assert third.repairs == []
    fourth = then(third, [answered(PRIMARY, 6)], [6, 5, 6], T0 + 67)
    assert fourth.repairs == [EDGE[1]]
    # Caught up: nothing to repair, and the next lag starts a fresh grace.
    fifth = then(fourth, [answered(PRIMARY, 6)], [6, 6, 6], T0 + 70)
    assert fifth.repairs == [] and fifth.history.replicas["edge-1"].repaired_at is None


def test_no_repair_while_the_primary_does_not_answer() -> None:
    first = run([answered(PRIMARY, 6)], [6, 5, 6])
    second = then(first, [failed(PRIMARY)], [6, 5, 6], T0 + 30)
    assert second.repairs == []


def test_stale_after_grace_names_pod_domain_serials_and_duration() -> None:
    first = run([answered(PRIMARY, 6)], [6, 5, 6])
    second = then(first, [answered(PRIMARY, 6)], [6, 5, 6], T0 + 95)
    assert verdict(second, conditions.STALE) == ("True", conditions.REPLICAS_BEHIND)
    assert condition(second, conditions.STALE)["message"] == (
        f"edge-1 (failure domain zone-b) serves 5, the primary 6, behind since {timestamp_text(T0)}"
    )
    assert second.replicas[1].seconds_behind == 95


def test_behind_longer_than_its_refresh_is_defective() -> None:
    first = run([answered(PRIMARY, 6)], [6, 5, 6], timers={"refresh": 300})
    second = then(first, [answered(PRIMARY, 6)], [6, 5, 6], T0 + 301, timers={"refresh": 300})
    assert verdict(second, conditions.STALE) == ("True", conditions.REFRESH_OVERDUE)
    message = condition(second, conditions.STALE)["message"]
    assert "edge-1 (failure domain zone-b) serves 5, the primary 6, behind since" in message
    assert "SOA refresh interval (300s)" in message and "RFC 2182 §7" in message


def test_stale_grace_is_configurable() -> None:
    first = run([answered(PRIMARY, 6)], [6, 5, 6])
    second = then(first, [answered(PRIMARY, 6)], [6, 5, 6], T0 + 15, stale_grace=10.0)
    assert verdict(second, conditions.STALE) == ("True", conditions.REPLICAS_BEHIND)


# ---------------------------------------------------------------- replicas that do not answer


def test_missing_and_silent_replicas_count_as_not_in_sync() -> None:
    silent = failed(ProbeTarget("10.0.0.11"))
    result = run([answered(PRIMARY, 5)], [5, silent, None])
    replicas = result.status["replicas"]
    assert replicas[1] == {
        "pod": "edge-1",
        "server": "edge",
        "failureDomain": "zone-b",
        "address": "10.0.0.11",
        "inSync": False,
    }
    assert "serial" not in replicas[2] and replicas[2]["inSync"] is False
    assert result.status["synced"] == "1/3"
    assert condition(result, conditions.SYNCED)["message"] == (
        "1/3 replicas serve serial 5; edge-1 (failure domain zone-b) does not answer for the "
        "zone: timeout after 2s; edge-2 (failure domain zone-c) has no address yet"
    )
    assert result.replicas[2].error == "no address yet"
    assert not healthy(result)


def test_no_replica_has_the_zone_yet() -> None:
    servfail = failed(ProbeTarget("10.0.0.10"), "SERVFAIL", responded=True)
    result = run([answered(PRIMARY, 5)], [servfail, None, None])
    assert verdict(result, conditions.SYNCED) == ("False", conditions.NOT_TRANSFERRED)
    assert "servedSerial" not in result.status
    assert verdict(result, conditions.EXPIRING) == ("False", conditions.IN_SYNC)


def test_zero_replicas() -> None:
    result = run([answered(PRIMARY, 5)], [])
    assert result.status["synced"] == "0/0"
    assert verdict(result, conditions.SYNCED) == ("False", conditions.NOT_TRANSFERRED)
    assert not healthy(result)


# ---------------------------------------------------------------- primary unreachable


def test_primary_unreachable_keeps_last_serial_and_tells_how_long() -> None:
    first = run([answered(PRIMARY, 5)], [5, 5, 5])
    second = then(first, [failed(PRIMARY)], [5, 5, 5], T0 + 60)
    third = then(second, [failed(PRIMARY)], [5, 5, 5], T0 + 185)
    assert verdict(third, conditions.PRIMARY_UNREACHABLE) == ("True", conditions.PRIMARY_TIMEOUT)
    message = condition(third, conditions.PRIMARY_UNREACHABLE)["message"]
    assert message.startswith(
        f"no primary has answered since {timestamp_text(T0 + 60)}: 192.0.2.1:53 timeout after 2s."
    )
    assert "Replicas keep serving their copy (serial 5) until SOA expire (86400s)" in message
    transition = condition(third, conditions.PRIMARY_UNREACHABLE)["lastTransitionTime"]
    assert transition == timestamp_text(T0 + 60)
    assert third.status["primarySerial"] == 5
    assert third.primary_serial == 5 and not third.primary_reachable
    synced = condition(third, conditions.SYNCED)
    assert synced["status"] == "True" and "no primary answers now" in synced["message"]
    assert not healthy(third)
    # The regression verdict of the last answer stands.
    assert verdict(third, conditions.SERIAL_REGRESSED) == ("False", conditions.SERIAL_ADVANCING)
    back = then(third, [answered(PRIMARY, 5)], [5, 5, 5], T0 + 200)
    assert verdict(back, conditions.PRIMARY_UNREACHABLE) == (
        "False",
        conditions.PRIMARY_REACHABLE,
    )
    assert healthy(back) and back.history.primary_unreachable_since is None


def test_a_refusing_primary_is_told_apart_from_a_silent_one() -> None:
    refused = failed(PRIMARY, "REFUSED", responded=True)
    result = run([refused, failed(SECOND_PRIMARY)], [5, 5, 5])
    assert verdict(result, conditions.PRIMARY_UNREACHABLE) == ("True", conditions.PRIMARY_REFUSED)
    assert (
        "192.0.2.1:53 REFUSED; 192.0.2.2:53 timeout after 2s"
        in (condition(result, conditions.PRIMARY_UNREACHABLE)["message"])
    )
    # Never seen: nothing to compare with.
    assert verdict(result, conditions.SYNCED) == ("Unknown", conditions.PRIMARY_REFUSED)
    assert verdict(result, conditions.STALE)[0] == "Unknown"
    assert verdict(result, conditions.SERIAL_REGRESSED)[0] == "Unknown"
    assert "primarySerial" not in result.status


def test_one_primary_answering_is_enough() -> None:
    result = run([failed(PRIMARY), answered(SECOND_PRIMARY, 5)], [5, 5, 5])
    assert verdict(result, conditions.PRIMARY_UNREACHABLE) == (
        "False",
        conditions.PRIMARY_REACHABLE,
    )
    assert condition(result, conditions.PRIMARY_UNREACHABLE)["message"] == (
        "1/2 primaries answer: 192.0.2.1:53 timeout after 2s; 192.0.2.2:53 serial 5"
    )
    assert healthy(result)


# ---------------------------------------------------------------- expiry


def test_expiring_when_no_refresh_for_a_fraction_of_expire_then_expired() -> None:
    first = run([answered(PRIMARY, 5)], [5, 5, 5], timers={"expire": 1000})
    down = then(first, [failed(PRIMARY)], [5, 5, 5], T0 + 400, timers={"expire": 1000})
    assert verdict(down, conditions.EXPIRING) == ("False", conditions.IN_SYNC)
    later = then(down, [failed(PRIMARY)], [5, 5, 5], T0 + 650, timers={"expire": 1000})
    assert verdict(later, conditions.EXPIRING) == ("True", conditions.EXPIRY_APPROACHING)
    message = condition(later, conditions.EXPIRING)["message"]
    assert "edge-0 (failure domain zone-a): its copy expires at" in message
    assert "SOA expire 1000s" in message
    # The clock is the replica's last refresh evidence, not this evaluation.
    servfail = failed(ProbeTarget("10.0.0.10"), "SERVFAIL", responded=True)
    gone = then(later, [failed(PRIMARY)], [servfail, 5, 5], T0 + 1001, timers={"expire": 1000})
    assert verdict(gone, conditions.EXPIRING) == ("True", conditions.EXPIRED)
    assert "longer than SOA expire (1000s)" in condition(gone, conditions.EXPIRING)["message"]
    back = then(gone, [answered(PRIMARY, 5)], [5, 5, 5], T0 + 1100, timers={"expire": 1000})
    assert verdict(back, conditions.EXPIRING) == ("False", conditions.IN_SYNC)


def test_expiry_warning_fraction_is_configurable() -> None:
    first = run([answered(PRIMARY, 5)], [5, 5, 5], timers={"expire": 1000})
    down = then(
        first,
        [failed(PRIMARY)],
        [5, 5, 5],
        T0 + 250,
        timers={"expire": 1000},
        expiry_warning_fraction=0.2,
    )
    assert verdict(down, conditions.EXPIRING) == ("True", conditions.EXPIRY_APPROACHING)


def test_a_replica_stuck_behind_also_runs_towards_expiry() -> None:
    first = run([answered(PRIMARY, 6)], [6, 5, 6], timers={"expire": 1000})
    later = then(first, [answered(PRIMARY, 6)], [6, 5, 6], T0 + 600, timers={"expire": 1000})
    assert verdict(later, conditions.EXPIRING) == ("True", conditions.EXPIRY_APPROACHING)
    assert "edge-1" in condition(later, conditions.EXPIRING)["message"]
    assert "edge-0" not in condition(later, conditions.EXPIRING)["message"]


def test_a_replica_cut_off_from_the_primary_is_seen_through_its_engines_expire_timer() -> None:
    # The primary answers the operator and the zone does not change: every probe
    # shows 5/5/5. Only edge-1's named knows its refreshes fail: its expire time
    # stopped moving at T0 (T0 + SOA expire).
    timers = {"expire": 1000}
    stuck = {"edge-1": T0 + 1000}
    first = run([answered(PRIMARY, 5)], [5, 5, 5], timers=timers, engine_expiry=stuck)
    assert verdict(first, conditions.SYNCED) == ("True", conditions.IN_SYNC)
    assert verdict(first, conditions.EXPIRING) == ("False", conditions.IN_SYNC)
    later = then(
        first, [answered(PRIMARY, 5)], [5, 5, 5], T0 + 600, timers=timers, engine_expiry=stuck
    )
    assert verdict(later, conditions.EXPIRING) == ("True", conditions.EXPIRY_APPROACHING)
    message = condition(later, conditions.EXPIRING)["message"]
    assert f"edge-1 (failure domain zone-b): its copy expires at {timestamp_text(T0 + 1000)}" in (
        message
    )
    assert "edge-0" not in message and "edge-2" not in message
    assert not healthy(later)
    # Without the engine's timer the same probes would call it healthy.
    blind = then(first, [answered(PRIMARY, 5)], [5, 5, 5], T0 + 600, timers=timers)
    assert verdict(blind, conditions.EXPIRING) == ("False", conditions.IN_SYNC)
    # A refresh gets through: named moves the timer, the warning clears.
    healed = then(
        later,
        [answered(PRIMARY, 5)],
        [5, 5, 5],
        T0 + 610,
        timers=timers,
        engine_expiry={"edge-1": T0 + 1610},
    )
    assert verdict(healed, conditions.EXPIRING) == ("False", conditions.IN_SYNC)


def test_a_new_serial_is_a_refresh_even_when_the_engine_timer_is_older() -> None:
    # The agent's timers are read at most every few seconds; a transfer seen by
    # the probes in between must not be undone by the older timer.
    timers = {"expire": 1000}
    old_timer = {"edge-0": T0 + 1000}
    first = run([answered(PRIMARY, 5)], [5, 5, 5], timers=timers, engine_expiry=old_timer)
    moved = then(
        first, [answered(PRIMARY, 6)], [6, 6, 6], T0 + 600, timers=timers, engine_expiry=old_timer
    )
    assert verdict(moved, conditions.EXPIRING) == ("False", conditions.IN_SYNC)


# ---------------------------------------------------------------- regression


def test_serial_regressed_gives_the_two_step_recovery_in_numbers() -> None:
    first = run([answered(PRIMARY, 2024010105)], [2024010105] * 3)
    second = then(first, [answered(PRIMARY, 2023123101)], [2024010105] * 3, T0 + 60)
    assert second.regressed and not healthy(second)
    assert verdict(second, conditions.SERIAL_REGRESSED) == (
        "True",
        conditions.SERIAL_WENT_BACKWARDS,
    )
    message = condition(second, conditions.SERIAL_REGRESSED)["message"]
    s1 = (2024010105 + 2**31 - 1) % 2**32
    assert s1 == 4171493752
    assert message.startswith("the primary's serial went from 2024010105 to 2023123101, ")
    assert "replicas keep serving 2024010105" in message
    assert (
        "set the primary's serial to S1 = (2024010105 + 2^31 - 1) mod 2^32 = 4171493752, "
        "wait until every replica serves 4171493752; then set it to the wanted 2023123101"
    ) in message
    # Replicas ahead of the primary are neither in sync nor behind (no repair NOTIFY).
    assert verdict(second, conditions.SYNCED) == ("False", conditions.SERIAL_WENT_BACKWARDS)
    assert "newer than the primary's 2023123101" in condition(second, conditions.SYNCED)["message"]
    assert verdict(second, conditions.STALE) == ("False", conditions.IN_SYNC)
    assert second.repairs == []
    # Step 1 reaches every replica: the regression is over.
    step1 = then(second, [answered(PRIMARY, s1)], [s1] * 3, T0 + 120)
    assert verdict(step1, conditions.SERIAL_REGRESSED) == ("False", conditions.SERIAL_ADVANCING)
    # Step 2 is an increment in RFC 1982 terms: replicas follow.
    step2 = then(step1, [answered(PRIMARY, 2023123101)], [2023123101] * 3, T0 + 180)
    assert not step2.regressed and healthy(step2)


def test_regression_is_against_the_replicas_even_while_they_lag() -> None:
    # Primary 10 -> 1000 reached one replica, then the primary went back to 11.
    first = run([answered(PRIMARY, 1000)], [1000, 10, 10])
    second = then(first, [answered(PRIMARY, 11)], [1000, 11, 11], T0 + 30)
    assert second.regressed
    message = condition(second, conditions.SERIAL_REGRESSED)["message"]
    assert "replicas keep serving 1000" in message
    assert "S1 = (1000 + 2^31 - 1) mod 2^32 = 2147484647" in message


def test_regression_seen_by_the_primary_history_when_no_replica_answers() -> None:
    first = run([answered(PRIMARY, 50)], [None, None, None])
    second = then(first, [answered(PRIMARY, 40)], [None, None, None], T0 + 30)
    assert second.regressed
    assert "went from 50 to 40" in condition(second, conditions.SERIAL_REGRESSED)["message"]


def test_replicas_recreated_at_the_lower_serial_clear_the_regression() -> None:
    first = run([answered(PRIMARY, 50)], [50, 50, 50])
    second = then(first, [answered(PRIMARY, 40)], [50, 50, 50], T0 + 30)
    assert second.regressed
    # Every replica was wiped and transferred 40 afresh: nobody is stuck any more.
    third = then(second, [answered(PRIMARY, 40)], [40, 40, 40], T0 + 60)
    assert not third.regressed and healthy(third)


def test_serials_exactly_half_the_space_apart_count_as_regressed() -> None:
    first = run([answered(PRIMARY, 2**31 + 7)], [7, 7, 7])
    assert first.regressed  # RFC 1982 leaves it undefined; secondaries do not follow
    message = condition(first, conditions.SERIAL_REGRESSED)["message"]
    assert "not comparable (exactly 2^31 apart)" in message


def test_wrap_around_is_an_increment_not_a_regression() -> None:
    first = run([answered(PRIMARY, 2**32 - 1)], [2**32 - 1] * 3)
    second = then(first, [answered(PRIMARY, 1)], [2**32 - 1, 1, 1], T0 + 10)
    assert not second.regressed
    assert second.replicas[0].behind
    assert second.status["servedSerial"] == 2**32 - 1  # the oldest, in serial arithmetic


# ---------------------------------------------------------------- primaries disagree


def test_primaries_disagree_is_reported_on_synced() -> None:
    result = run([answered(PRIMARY, 7), answered(SECOND_PRIMARY, 6)], [7, 7, 7])
    assert result.primaries_disagree
    assert result.status["primarySerial"] == 7
    assert verdict(result, conditions.SYNCED) == ("False", conditions.PRIMARIES_DISAGREE)
    assert condition(result, conditions.SYNCED)["message"] == (
        "primaries disagree (192.0.2.1:53 serial 7; 192.0.2.2:53 serial 6); replicas are "
        "compared with the newest, 7. 3/3 replicas serve serial 7"
    )
    assert not healthy(result)
    assert result.status["replicasInSync"] == 3


def test_generation_and_validation_of_conditions() -> None:
    result = run([answered(PRIMARY, 5)], [5, 5, 5], generation=4)
    assert {c["observedGeneration"] for c in result.status["conditions"]} == {4}
    types = [c["type"] for c in result.status["conditions"]]
    assert sorted(types) == sorted(
        [
            conditions.SYNCED,
            conditions.STALE,
            conditions.PRIMARY_UNREACHABLE,
            conditions.EXPIRING,
            conditions.SERIAL_REGRESSED,
            conditions.ENGINE_DIVERSE,
        ]
    )


# ---------------------------------------------------------------- serial arithmetic


def test_recovery_steps_of_the_rfc_2182_example() -> None:
    # RFC 2182 §7: the serial was accidentally set to 1000 and 11 is wanted.
    assert recovery_steps(1000, 11) == (1000 + 2**31 - 1, 11)


def test_recovery_from_one_below_needs_three_steps() -> None:
    steps = recovery_steps(100, 99)
    assert len(steps) == 3 and steps[-1] == 99
    assert "S2 = " in recovery_advice(100, 99, 100)


@given(replica=serials, wanted=serials)
def test_recovery_steps_are_increments_ending_at_the_wanted_serial(
    replica: int, wanted: int
) -> None:
    steps = recovery_steps(replica, wanted)
    assert steps[-1] == wanted
    previous = replica
    for step in steps:
        if step != previous:
            assert dns.serial.Serial(step) > dns.serial.Serial(previous), (previous, step)
        previous = step
    if dns.serial.Serial(wanted) >= dns.serial.Serial(replica):
        assert steps == (wanted,)
    elif (replica - wanted) % 2**32 == 1:
        assert len(steps) == 3
    else:
        assert len(steps) == 2


@given(primary=serials, replica=serials)
def test_regressed_iff_the_primary_is_not_at_least_the_replicas(primary: int, replica: int) -> None:
    result = run([answered(PRIMARY, primary)], [replica, replica, replica])
    assert result.regressed == (not dns.serial.Serial(primary) >= dns.serial.Serial(replica))
    behind = dns.serial.Serial(replica) < dns.serial.Serial(primary)
    assert all(v.behind == behind for v in result.replicas)
    assert all(v.in_sync == (primary == replica) for v in result.replicas)
    if result.regressed:
        message = condition(result, conditions.SERIAL_REGRESSED)["message"]
        assert f"set it to the wanted {primary}" in message


@given(st.lists(serials, min_size=1, max_size=5))
def test_newest_and_oldest_of_serials_within_half_the_space(values: list[int]) -> None:
    top, bottom = newest(values), oldest(values)
    assert top in values and bottom in values
    # RFC 1982 orders a set only when it fits in less than half the serial space
    # (otherwise comparisons can go round in a cycle): then the oldest is the base
    # from which every other is reached by an increment, the newest the farthest.
    for base in values:
        distances = [(value - base) % 2**32 for value in values]
        if all(distance < 2**31 for distance in distances):
            assert bottom is not None and bottom % 2**32 == base % 2**32
            farthest = max(distances)
            assert top is not None and (top - base) % 2**32 == farthest
            break


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (125, "2m5s"), (3600, "1h0m"), (90061, "1d1h"), (-3, "0s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_timestamp_text_is_rfc3339_utc() -> None:
    assert timestamp_text(0) == "1970-01-01T00:00:00Z"
    assert timestamp_text(1_700_000_000.7) == "2023-11-14T22:13:20Z"


def test_the_serial_part_replaces_its_fields_and_keeps_the_rest() -> None:
    previous = {
        "zone": "example.test.",
        "notifyAddress": "10.96.0.53",
        "servedSerial": 4,
        "primarySerial": 4,
        "conditions": [],
    }
    servfail = failed(ProbeTarget("10.0.0.10"), "SERVFAIL", responded=True)
    result = run([answered(PRIMARY, 5)], [servfail, None, None], status=previous)
    merged = result.serial_status.apply(previous)
    assert merged["zone"] == "example.test." and merged["notifyAddress"] == "10.96.0.53"
    assert merged["primarySerial"] == 5
    assert "servedSerial" not in merged  # nobody serves 4 any more
    assert merged["synced"] == "0/3"


def test_an_unchanged_fault_writes_the_same_status_every_round() -> None:
    """Status is written only when it changes: messages say "since T", never "for 2m5s"."""
    # A replica stays behind past the grace and its refresh, then the primary
    # stops answering: every later round sees the same world.
    t = {"refresh": 60, "expire": 600}
    first = run([answered(PRIMARY, 6, refresh=60, expire=600)], [6, 5, 6], timers=t)
    behind = then(
        first, [answered(PRIMARY, 6, refresh=60, expire=600)], [6, 5, 6], T0 + 100, timers=t
    )
    down = then(behind, [failed(PRIMARY)], [6, 5, 6], T0 + 400, timers=t)
    later = then(down, [failed(PRIMARY)], [6, 5, 6], T0 + 410, timers=t)
    much_later = then(later, [failed(PRIMARY)], [6, 5, 6], T0 + 430, timers=t)
    assert verdict(later, conditions.STALE)[0] == "True"
    assert verdict(later, conditions.PRIMARY_UNREACHABLE)[0] == "True"
    assert verdict(later, conditions.EXPIRING)[0] == "True"
    assert much_later.status == later.status


def test_a_restarted_monitor_rebuilds_its_clocks_from_the_stored_status() -> None:
    first = run([answered(PRIMARY, 6)], [6, 6, 6])
    down = then(first, [failed(PRIMARY)], [6, 6, 6], T0 + 60)
    steady = then(down, [failed(PRIMARY)], [6, 6, 6], T0 + 70)
    # A new process: no memory, only the status it reads back from the API.
    restarted = run(
        [failed(PRIMARY)],
        [6, 6, 6],
        now=T0 + 300,
        history=history_from_status(steady.status),
        status=steady.status,
    )
    assert restarted.status == steady.status
    assert verdict(restarted, conditions.PRIMARY_UNREACHABLE)[0] == "True"


# ---------------------------------------------------------------- engine diversity (RFC 2182 §3.1)

MIXED = [
    ReplicaTarget("bind-0", "bind", "zone-a", "10.0.0.20", engine="bind9"),
    ReplicaTarget("bind-1", "bind", "zone-b", "10.0.0.21", engine="bind9"),
    ReplicaTarget("knot-0", "knot", "zone-a", "10.0.0.30", engine="knot"),
    ReplicaTarget("knot-1", "knot", "zone-c", "10.0.0.31", engine="knot"),
]


def mixed_run(served: Sequence[int | None]) -> SerialEvaluation:
    """One round over MIXED: a serial per replica, None for one that does not answer."""
    results: list[int | ProbeResult | None] = []
    for target, value in zip(MIXED, served, strict=True):
        probe = target.probe_target
        assert probe is not None
        results.append(value if value is not None else failed(probe))
    return run([answered(PRIMARY, 5)], results, targets=MIXED)


def test_replicas_of_two_engines_answering_make_the_zone_engine_diverse() -> None:
    result = mixed_run([5, 5, 5, 5])
    assert verdict(result, conditions.ENGINE_DIVERSE) == ("True", conditions.MULTIPLE_ENGINES)
    message = condition(result, conditions.ENGINE_DIVERSE)["message"]
    assert "answering: bind9 2/2, knot 2/2" in message and "RFC 2182 §3.1" in message
    # Each replica's engine is in status.replicas.
    engines = {r["pod"]: r["engine"] for r in result.status["replicas"]}
    assert engines == {"bind-0": "bind9", "bind-1": "bind9", "knot-0": "knot", "knot-1": "knot"}
    # Advice, not health: the zone is Ready and Synced either way.
    assert healthy(result)


def test_every_replica_of_one_engine_down_loses_diversity_but_not_service() -> None:
    result = mixed_run([5, 5, None, None])
    assert verdict(result, conditions.ENGINE_DIVERSE) == (
        "False",
        conditions.ENGINES_NOT_ANSWERING,
    )
    message = condition(result, conditions.ENGINE_DIVERSE)["message"]
    assert "only bind9 replicas answer" in message and "knot 0/2" in message
    # The zone is still served at the primary's serial by the other engine.
    assert result.status["servedSerial"] == 5
    assert [r["inSync"] for r in result.status["replicas"]] == [True, True, False, False]


def test_one_engine_everywhere_is_said_with_the_fix() -> None:
    result = run([answered(PRIMARY, 5)], [5, 5, 5])
    assert verdict(result, conditions.ENGINE_DIVERSE) == ("False", conditions.SINGLE_ENGINE)
    message = condition(result, conditions.ENGINE_DIVERSE)["message"]
    assert "spec.engine.type" in message and "RFC 2182" in message
    # Not part of Ready: a fleet of one engine is healthy.
    assert healthy(result)
