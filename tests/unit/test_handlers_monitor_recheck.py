"""The serial monitor re-evaluates a zone in sync only when its inputs change (or lately not)."""

from __future__ import annotations

from typing import Any

from secondary_dns.api import ObjectRef
from secondary_dns.api.soa import ProbeResult, ProbeTarget, SoaAnswer
from secondary_dns.handlers.monitor import RECHECK_SECONDS, SerialMonitor
from secondary_dns.status.serial import ReplicaTarget

REF = ObjectRef("dns", "example")
PRIMARY = ProbeTarget("192.0.2.1", 53)
REPLICAS = [ReplicaTarget(f"edge-{i}", "edge", None, f"10.0.0.{i}") for i in range(3)]


def answer(serial: int | None, target: ProbeTarget = PRIMARY) -> ProbeResult:
    soa = SoaAnswer(serial, 3600, 600, 86400, 60) if serial is not None else None
    return ProbeResult(target, soa, None if soa else "timeout", 0.001)


def replicas(*serials: int | None) -> list[tuple[ReplicaTarget, ProbeResult | None]]:
    return [(target, answer(serial)) for target, serial in zip(REPLICAS, serials, strict=True)]


def monitor() -> SerialMonitor:
    zone_status: Any = None
    return SerialMonitor(lambda: [], zone_status, None)


def test_a_zone_in_sync_with_the_same_answers_is_not_evaluated_again() -> None:
    watcher, primaries = monitor(), [answer(5)]
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {}, 0.0)
    # A report round: new results, the same answers.
    assert watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {}, 10.0)
    # ... until RECHECK_SECONDS have passed since the evaluation.
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {}, RECHECK_SECONDS)


def test_a_new_probe_a_new_answer_or_a_zone_out_of_sync_is_evaluated() -> None:
    watcher, primaries = monitor(), [answer(5)]
    watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {}, 0.0)
    # A new primary probe with the same answer: unchanged (only its clock moves).
    assert watcher._unchanged_in_sync(REF, [answer(5)], replicas(5, 5, 5), {}, 1.0)
    assert not watcher._unchanged_in_sync(REF, [answer(6)], replicas(6, 6, 6), {}, 1.5)
    primaries = [answer(5)]
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 4), {}, 2.0)
    # Behind: every round evaluates it (Stale waits for its grace, measured in time).
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 4), {}, 3.0)
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, None), {}, 4.0)
    watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {}, 5.0)
    assert not watcher._unchanged_in_sync(REF, primaries, replicas(5, 5, 5), {"edge-0": 9.0}, 6.0)
