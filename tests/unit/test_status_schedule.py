"""When the serial monitor probes what: primaries on a budget, one notified zone fast."""

from __future__ import annotations

import math

import pytest

from secondary_dns.api import ObjectRef
from secondary_dns.status.schedule import (
    ACTIVE_WEIGHT,
    HOT_FAST_INTERVAL,
    HOT_FIRST_INTERVAL,
    HOT_SECONDS,
    HOT_SLOW_INTERVAL,
    PRIMARY_BATCH_SECONDS,
    ProbeSchedule,
    ScheduledZone,
    spread_budget,
)


def refs(count: int) -> list[ObjectRef]:
    return [ObjectRef("dns", f"z{i:05d}") for i in range(count)]


def schedule_of(count: int, **options: float) -> tuple[ProbeSchedule, list[ObjectRef]]:
    schedule = ProbeSchedule(**options)
    zones = refs(count)
    schedule.set_zones({ref: ScheduledZone(primaries=1, replicas=3) for ref in zones})
    schedule.recompute(0.0)
    return schedule, zones


def run(
    schedule: ProbeSchedule, start: float, end: float, step: float = 0.01
) -> list[tuple[float, ObjectRef, str]]:
    """Every probe the schedule hands out between two times: (time, zone, primary|hot)."""
    sent: list[tuple[float, ObjectRef, str]] = []
    now = start
    while now < end:
        due = schedule.due(now)
        sent += [(now, ref, "primary") for ref in due.primaries]
        sent += [(now, ref, "hot") for ref, _ in due.hot]
        now += step
    return sent


@pytest.mark.parametrize(
    ("zones", "budget", "interval"),
    [(40, 50.0, 0.8), (10, 50.0, 0.5), (10_000, 50.0, 200.0)],
)
def test_every_zone_gets_its_share_of_the_budget(
    zones: int, budget: float, interval: float
) -> None:
    schedule, all_zones = schedule_of(zones, budget=budget, min_interval=0.5)
    assert schedule.interval(all_zones[0]) == pytest.approx(interval)


def test_a_zone_is_probed_no_later_than_its_soa_refresh() -> None:
    demands = {ref: (1, 1.0, 60.0) for ref in refs(10_000)}
    assert set(spread_budget(demands, 50.0, 0.5).values()) == {60.0}


def test_changing_zones_get_more_of_the_budget_and_quiet_ones_no_less_than_the_rest() -> None:
    schedule, zones = schedule_of(100, budget=10.0, min_interval=0.5)
    schedule.primary_changed(zones[0], 0.0, notified=True)
    schedule.recompute(0.0)
    assert schedule.weight(zones[0], 0.0) == ACTIVE_WEIGHT
    assert schedule.interval(zones[0]) == pytest.approx(schedule.interval(zones[1]) / ACTIVE_WEIGHT)


def test_the_budget_holds_over_time_and_every_zone_is_probed() -> None:
    schedule, zones = schedule_of(1_000, budget=50.0, min_interval=0.5)
    sent = run(schedule, 0.0, 60.0)
    # A second's worth may go at once (the bucket starts full), then the rate.
    assert len(sent) <= 50 * 60 + 50
    assert {ref for _, ref, _ in sent} == set(zones)


def test_one_notified_zone_is_probed_fast_and_no_other() -> None:
    schedule, zones = schedule_of(40, budget=50.0, min_interval=0.5)
    run(schedule, 0.0, 5.0)
    notified = zones[7]
    schedule.heat(notified, 5.0, serial=2)
    sent = run(schedule, 5.0, 10.0)
    hot = [(at, ref) for at, ref, kind in sent if kind == "hot"]
    assert {ref for _, ref in hot} == {notified}
    # The first probe at once, then at doubling intervals up to HOT_FAST_INTERVAL
    # (a replica serves a change milliseconds after it acknowledged the NOTIFY),
    # then slower.
    times = [at for at, _ in hot]
    assert times[0] == pytest.approx(5.0)
    assert times[1] - times[0] == pytest.approx(HOT_FIRST_INTERVAL, abs=0.011)
    assert [round(at - 5.0, 2) for at in times[:6]] == [0.0, 0.01, 0.02, 0.04, 0.08, 0.16]
    assert times[7] - times[6] == pytest.approx(HOT_FAST_INTERVAL, abs=0.011)
    assert times[-1] - times[-2] == pytest.approx(HOT_SLOW_INTERVAL, abs=0.011)
    # The others keep their steady interval (40 zones, 50 queries a second: 0.8 s).
    steady = [ref for _, ref, kind in sent if kind == "primary" and ref != notified]
    assert len(steady) == pytest.approx(39 * 5 / 0.8, abs=39)


def test_cooling_ends_the_fast_probes_and_heat_ends_by_itself() -> None:
    schedule, zones = schedule_of(4)
    schedule.heat(zones[0], 0.0)
    assert schedule.is_hot(zones[0], 0.0)
    schedule.cool(zones[0])
    assert not schedule.is_hot(zones[0], 0.0)
    assert not [ref for _, ref, kind in run(schedule, 0.0, 2.0) if kind == "hot"]
    schedule.heat(zones[1], 0.0, serial=7)
    assert schedule.hot_serial(zones[1]) == 7
    assert not schedule.is_hot(zones[1], HOT_SECONDS + 1)


def test_a_storm_of_notifies_is_bounded_by_the_hot_budget() -> None:
    schedule, zones = schedule_of(2_000, hot_budget=100.0)
    for ref in zones:
        schedule.heat(ref, 0.0)
    hot = [ref for _, ref, kind in run(schedule, 0.0, 10.0) if kind == "hot"]
    # Each hot probe costs 3 replicas (+1 primary): at most ~100 queries a second.
    assert len(hot) * 3 <= 100 * 10 + 100


def test_forgotten_zones_are_never_due() -> None:
    schedule, zones = schedule_of(3)
    schedule.heat(zones[0], 0.0)
    schedule.set_zones({zones[1]: ScheduledZone(1, 3)})
    sent = run(schedule, 0.0, 3.0)
    assert {ref for _, ref, _ in sent} == {zones[1]}
    assert schedule.next_wake(3.0) >= 3.0
    assert schedule.interval(zones[0]) is None
    assert math.isfinite(schedule.interval(zones[1]) or math.inf)


def test_steady_primary_probes_go_out_in_batches() -> None:
    """Woken when next_wake says, the monitor takes a batch of probes per step, not one."""
    schedule, _ = schedule_of(1000, budget=50.0)
    now, steps, probes = 0.0, 0, 0
    while now < 20.0:
        due = schedule.due(now)
        if due.primaries:
            steps += 1
            probes += len(due.primaries)
        now = max(schedule.next_wake(now), now + 0.001)
    assert probes == pytest.approx(20.0 * 50.0, rel=0.1)
    assert steps <= 20.0 / PRIMARY_BATCH_SECONDS + 2


def test_new_zones_get_their_first_primary_probe_at_once_from_the_hot_budget() -> None:
    """10,000 Zones watched, 1,000 created together and heated (as the monitor does):
    each one's primaries are asked within the hot budget's pace, not at its place in
    the steady round (10,000 zones at 50 queries a second: 200 s)."""
    schedule, zones = schedule_of(10_000, budget=50.0, hot_budget=1000.0)
    run(schedule, 0.0, 1.0)
    new = refs(11_000)[10_000:]
    schedule.set_zones({ref: ScheduledZone(primaries=1, replicas=3) for ref in zones + new})
    for ref in new:
        schedule.heat(ref, 1.0)
    sent = run(schedule, 1.0, 4.0)
    first: dict[ObjectRef, float] = {}
    for at, ref, kind in sent:
        if kind == "primary" or (kind == "hot" and ref not in first):
            first.setdefault(ref, at)
    assert set(new) <= set(first)
    # 1,000 queries from a budget of 1,000 a second (a second's worth at once).
    assert max(first[ref] for ref in new) <= 1.0 + 1000 / 1000.0 + 0.02
    # The steady round and its budget are the others' as before.
    assert schedule.interval(zones[0]) == pytest.approx(11_000 / 50.0)


def test_the_zones_of_an_operator_start_keep_their_spread_over_the_steady_round() -> None:
    schedule, zones = schedule_of(1_000, budget=50.0)
    sent = run(schedule, 0.0, 2.0)
    # Not 1,000 first looks at once: the steady budget's pace.
    assert len(sent) <= 50 * 2 + 50
