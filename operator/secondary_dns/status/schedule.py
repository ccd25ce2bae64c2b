"""When the serial monitor sends which SOA probe: primaries on a budget, hot zones fast.

PURE: no I/O and no clock; the monitor passes `now` (a monotonic time) to every
call. docs/serial-status.md explains the figures.

**Primaries on a budget.** A zone's primaries must be watched even when nothing
is announced: a primary may delay its NOTIFY (BIND's `notify-delay`, 5 s by
default) or lose it, and only a probe then sees the new serial (the monitor
then NOTIFYs the replicas itself). Probing every zone at a fixed interval makes
the cost grow with the number of zones, so the monitor has a budget of
queries per second instead, shared by every zone's primaries:

- each zone has a weight: 1, or ACTIVE_WEIGHT while its primary's serial
  changed within ACTIVE_SECONDS (zones that change keep changing) or while a
  change came without a NOTIFY within SILENT_SECONDS (its primary does not
  notify us, or its NOTIFYs are lost: the probe is all it has);
- the budget is divided in proportion to the weights, by water-filling: no zone
  is probed more often than every `min_interval`, and what such a zone leaves
  unused goes to the others;
- no zone waits longer than its SOA refresh once that is known (RFC 1996 §4:
  secondaries themselves look at most that late);
- a token bucket holds the whole to the budget; due probes wait in due order.

So with few zones each primary is asked every `min_interval` (a lost NOTIFY costs
at most that), and with many the budget decides: N zones of weight 1 are each
probed every N / budget seconds.

**First looks.** A zone added while the schedule already watches others (a new
Zone, not an operator start) has its primaries asked at once, in arrival order,
from the hot budget, not at its place in the steady round: the monitor cannot
evaluate a zone before it knows its primary's serial, and at N zones the steady
round is N / budget seconds long (200 s at 10,000 zones and 50 queries a second),
so 10,000 Zones created together waited up to that long for their first
evaluation. The zones of the first `set_zones` (an operator start, or a new
leader) keep their spread over the steady round: their stored statuses stand
meanwhile.

**Hot zones.** A NOTIFY, a change of what serves a zone, or a primary seen
ahead of its replicas makes the zone hot: its replicas (and its primaries, at
most every HOT_PRIMARY_INTERVAL) are probed at once, then at intervals that
double from HOT_FIRST_INTERVAL up to HOT_FAST_INTERVAL (a replica acknowledges a
NOTIFY before it transfers, and serves the change some milliseconds later: the
probes at 10, 20, 40 and 80 ms see it when it happens, not at the next 0.1 s),
every HOT_FAST_INTERVAL until HOT_FAST_SECONDS, then every HOT_SLOW_INTERVAL,
until the monitor sees every replica serve the primary's serial (`cool`) or
HOT_SECONDS pass. Hot probes have a budget of their own, so a storm of NOTIFYs
cannot take the steady watch's share, nor grow without bound.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dns.serial

from secondary_dns.api import ObjectRef

DEFAULT_BUDGET = 50.0
DEFAULT_MIN_INTERVAL = 0.5
DEFAULT_HOT_BUDGET = 1000.0

ACTIVE_WEIGHT = 10.0
ACTIVE_SECONDS = 600.0
SILENT_SECONDS = 3600.0

# 10 SOA queries a second per replica for a hot zone: half the replicas'
# default response rate limit (spec.limits.responsesPerSecond 20 for one client
# and answer), which would otherwise drop the monitor's own probes.
# The ramp's first intervals (0.01, 0.02, 0.04, 0.08 s) add 4 probes a replica to
# the first 0.1 s: 13 in the first second, still under that limit.
HOT_FIRST_INTERVAL = 0.01
HOT_FAST_INTERVAL = 0.1
HOT_FAST_SECONDS = 2.0
HOT_SLOW_INTERVAL = 0.25
HOT_PRIMARY_INTERVAL = 0.25
HOT_SECONDS = 30.0

# Weights decay and intervals follow at most this often (a recomputation is O(zones)).
RECOMPUTE_SECONDS = 1.0
# Steady primary probes go out in batches at most this often: at a budget of 50
# queries a second, 12 probes a step instead of one step (a wake-up, a probe round,
# an evaluation handed to a thread) per probe; a probe is at most this late, far
# below any zone's interval (min_interval is 0.5 s).
PRIMARY_BATCH_SECONDS = 0.25


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `capacity` saved up."""

    rate: float
    capacity: float
    tokens: float = 0.0
    at: float | None = None

    def refill(self, now: float) -> None:
        if self.at is None:
            self.tokens = self.capacity
        else:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, count: float, now: float) -> bool:
        self.refill(now)
        # A probe of more queries than the bucket holds still goes when it is full.
        if self.tokens >= min(count, self.capacity):
            self.tokens -= count
            return True
        return False

    def ready_at(self, count: float, now: float) -> float:
        """When `count` tokens (at most a full bucket) will be there."""
        self.refill(now)
        missing = min(count, self.capacity) - self.tokens
        return now if missing <= 0 else now + missing / self.rate


@dataclass(frozen=True, slots=True)
class ScheduledZone:
    """What the schedule needs to know of a zone: how many queries each kind of probe costs."""

    primaries: int
    replicas: int


@dataclass(slots=True)
class _ZoneState:
    zone: ScheduledZone
    phase: float
    interval: float = math.inf
    refresh: float | None = None
    last_primary: float | None = None
    due: float = math.inf
    changed_at: float | None = None
    silent_at: float | None = None
    hot_since: float | None = None
    hot_until: float = -math.inf
    hot_due: float = math.inf
    hot_serial: int | None = None
    version: int = 0


@dataclass(frozen=True)
class DueProbes:
    """What to probe now: zones whose primaries are due, and hot zones (with or without
    their primaries)."""

    primaries: tuple[ObjectRef, ...] = ()
    hot: tuple[tuple[ObjectRef, bool], ...] = ()


def _phase(ref: ObjectRef) -> float:
    """A fixed fraction in [0, 1) per zone: new zones' first probes spread over an interval."""
    digest = hashlib.sha256(f"{ref.namespace}/{ref.name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def recheck_at(ref: ObjectRef, now: float, period: float) -> float:
    """The zone's next moment on its own grid of `period` seconds, after `now`.

    Each zone's grid is offset by its phase, so zones evaluated together (every
    zone at the first report round, or after a restart) fall due spread over the
    period, not all at once: at most `period` later, at the same offset each time.
    """
    phase = _phase(ref)
    return (math.floor(now / period + phase) + 1 - phase) * period


def spread_budget(
    demands: Mapping[ObjectRef, tuple[int, float, float | None]],
    budget: float,
    min_interval: float,
) -> dict[ObjectRef, float]:
    """Each zone's probe interval: (queries per probe, weight, ceiling) -> seconds.

    Water-filling: the budget (queries per second) is shared in proportion to
    `queries * weight`; a zone that would be probed more often than
    `min_interval` gets `min_interval` and leaves the rest to the others. A
    ceiling (the zone's SOA refresh) caps the interval whatever the budget.
    """
    intervals: dict[ObjectRef, float] = {}
    remaining = {ref: demand for ref, demand in demands.items() if demand[0] > 0}
    left = budget
    while remaining:
        total = sum(queries * weight for queries, weight, _ in remaining.values())
        if left <= 0 or total <= 0:
            share = 0.0
        else:
            share = left / total  # probes per second per unit of weight
        floored = [
            ref
            for ref, (_, weight, _) in remaining.items()
            if share > 0 and 1 / (share * weight) < min_interval
        ]
        if not floored:
            for ref, (_, weight, ceiling) in remaining.items():
                interval = 1 / (share * weight) if share > 0 else math.inf
                intervals[ref] = min(interval, ceiling) if ceiling else interval
            break
        for ref in floored:
            queries = remaining.pop(ref)[0]
            intervals[ref] = min_interval
            left -= queries / min_interval
    return intervals


def hot_interval(since: float) -> float:
    """The wait before a hot zone's next probe, `since` seconds after it turned hot."""
    if since >= HOT_FAST_SECONDS:
        return HOT_SLOW_INTERVAL
    # Waiting as long again as the zone has been hot doubles the interval.
    return min(HOT_FAST_INTERVAL, max(HOT_FIRST_INTERVAL, since))


def later(serial: int | None, other: int | None) -> int | None:
    """The newer of two serials (RFC 1982); either when the other is unknown."""
    if serial is None:
        return other
    if other is None:
        return serial
    return other if dns.serial.Serial(other) > dns.serial.Serial(serial) else serial


@dataclass
class ProbeSchedule:
    budget: float = DEFAULT_BUDGET
    min_interval: float = DEFAULT_MIN_INTERVAL
    hot_budget: float = DEFAULT_HOT_BUDGET
    _zones: dict[ObjectRef, _ZoneState] = field(default_factory=dict)
    # (due, version, zone): an entry whose version is not the zone's is stale.
    _primary_heap: list[tuple[float, int, ObjectRef]] = field(default_factory=list)
    _hot_heap: list[tuple[float, int, ObjectRef]] = field(default_factory=list)
    _bucket: TokenBucket = field(init=False)
    _hot_bucket: TokenBucket = field(init=False)
    _dirty: bool = False
    _recomputed_at: float = -math.inf
    _next_decay: float = math.inf
    # When the last steady primary probes were taken (see PRIMARY_BATCH_SECONDS).
    _primary_batch_at: float = -math.inf
    # Zones added after the first set_zones whose primaries were never asked, in
    # arrival order (First looks); False until the first set_zones.
    _first_looks: deque[ObjectRef] = field(default_factory=deque)
    _watching: bool = False

    def __post_init__(self) -> None:
        if self.budget <= 0 or self.hot_budget <= 0 or self.min_interval <= 0:
            raise ValueError("budgets and the minimum interval must be positive")
        # A second's worth: one tick may send what a second of budget allows.
        self._bucket = TokenBucket(self.budget, max(1.0, self.budget))
        self._hot_bucket = TokenBucket(self.hot_budget, max(1.0, self.hot_budget))

    # ---- what is watched

    def set_zones(self, zones: Mapping[ObjectRef, ScheduledZone]) -> None:
        """The zones to watch now; new ones start, gone ones are forgotten."""
        for ref in set(self._zones) - set(zones):
            del self._zones[ref]
        for ref, zone in zones.items():
            state = self._zones.get(ref)
            if state is None:
                self._zones[ref] = _ZoneState(zone, _phase(ref))
                if self._watching:
                    self._first_looks.append(ref)
            elif state.zone != zone:
                state.zone = zone
            else:
                continue
            self._dirty = True
        self._watching = True

    def set_refresh(self, ref: ObjectRef, refresh: float | None) -> None:
        """The zone's SOA refresh as its primary serves it: the longest interval it gets."""
        state = self._zones.get(ref)
        if state is not None and state.refresh != refresh:
            state.refresh = refresh
            self._dirty = True

    def interval(self, ref: ObjectRef) -> float | None:
        """Seconds between two steady probes of the zone's primaries (inf: not yet planned)."""
        state = self._zones.get(ref)
        return state.interval if state is not None else None

    def weight(self, ref: ObjectRef, now: float) -> float:
        state = self._zones[ref]
        if state.changed_at is not None and now - state.changed_at < ACTIVE_SECONDS:
            return ACTIVE_WEIGHT
        if state.silent_at is not None and now - state.silent_at < SILENT_SECONDS:
            return ACTIVE_WEIGHT
        return 1.0

    def is_hot(self, ref: ObjectRef, now: float) -> bool:
        state = self._zones.get(ref)
        return state is not None and state.hot_since is not None and now < state.hot_until

    def hot_serial(self, ref: ObjectRef) -> int | None:
        """The newest serial a NOTIFY announced while the zone is hot."""
        state = self._zones.get(ref)
        return state.hot_serial if state is not None else None

    # ---- events

    def heat(self, ref: ObjectRef, now: float, serial: int | None = None) -> None:
        """A NOTIFY (with its serial, when it carried one), or a change: probe it fast from now."""
        state = self._zones.get(ref)
        if state is None:
            return
        state.hot_since = now
        state.hot_until = now + HOT_SECONDS
        state.hot_serial = later(state.hot_serial, serial)
        state.hot_due = now
        self._reschedule(ref, state)

    def cool(self, ref: ObjectRef) -> None:
        """Every replica serves the primary's serial: back to the steady watch."""
        state = self._zones.get(ref)
        if state is not None and state.hot_since is not None:
            state.hot_since = None
            state.hot_serial = None
            state.hot_due = math.inf
            self._reschedule(ref, state)

    def primary_changed(self, ref: ObjectRef, now: float, notified: bool) -> None:
        """The primary's serial moved; `notified`: a NOTIFY had announced it."""
        state = self._zones.get(ref)
        if state is None:
            return
        state.changed_at = now
        if not notified:
            state.silent_at = now
        self._dirty = True

    # ---- what is due

    def due(self, now: float) -> DueProbes:
        """The probes to send now; they count as sent (their cost is taken from the budgets)."""
        self._maybe_recompute(now)
        primaries: list[ObjectRef] = []
        # First looks before hot probes: a burst of new zones is hot too, and their
        # replica probes (which cannot succeed before the replicas load the zone)
        # would otherwise take the hot budget from the one query each needs.
        while self._first_looks:
            ref = self._first_looks[0]
            state = self._zones.get(ref)
            if state is None or state.last_primary is not None or not state.zone.primaries:
                self._first_looks.popleft()
                continue
            if not self._hot_bucket.take(state.zone.primaries, now):
                break
            self._first_looks.popleft()
            primaries.append(ref)
            state.last_primary = now
            state.due = now + state.interval
            self._reschedule(ref, state)
        hot: list[tuple[ObjectRef, bool]] = []
        while self._hot_heap and self._hot_heap[0][0] <= now:
            _, version, ref = self._hot_heap[0]
            state = self._zones.get(ref)
            if state is None or state.version != version or state.hot_since is None:
                heapq.heappop(self._hot_heap)
                continue
            if now >= state.hot_until:
                heapq.heappop(self._hot_heap)
                self.cool(ref)
                continue
            with_primaries = (
                state.last_primary is None or now - state.last_primary >= HOT_PRIMARY_INTERVAL
            )
            cost = state.zone.replicas + (state.zone.primaries if with_primaries else 0)
            if not self._hot_bucket.take(cost, now):
                break
            heapq.heappop(self._hot_heap)
            hot.append((ref, with_primaries))
            state.hot_due = now + hot_interval(now - state.hot_since)
            if with_primaries:
                state.last_primary = now
                state.due = now + state.interval
            self._reschedule(ref, state)
        while self._primary_heap and self._primary_heap[0][0] <= now:
            _, version, ref = self._primary_heap[0]
            state = self._zones.get(ref)
            if state is None or state.version != version:
                heapq.heappop(self._primary_heap)
                continue
            if not self._bucket.take(state.zone.primaries, now):
                break
            heapq.heappop(self._primary_heap)
            primaries.append(ref)
            self._primary_batch_at = now
            state.last_primary = now
            state.due = now + state.interval
            self._reschedule(ref, state)
        return DueProbes(tuple(primaries), tuple(hot))

    def next_wake(self, now: float) -> float:
        """The earliest time something may be due (never earlier than `now`)."""
        self._drop_stale()
        times = [self._next_decay]
        if self._first_looks:
            state = self._zones.get(self._first_looks[0])
            cost = state.zone.primaries if state is not None else 0
            times.append(self._hot_bucket.ready_at(cost, now))
        if self._dirty:
            times.append(self._recomputed_at + RECOMPUTE_SECONDS)
        if self._hot_heap:
            due_at, _, ref = self._hot_heap[0]
            zone = self._zones[ref].zone
            cost = zone.replicas + zone.primaries
            times.append(max(due_at, self._hot_bucket.ready_at(cost, now)))
        if self._primary_heap:
            due_at, _, ref = self._primary_heap[0]
            cost = self._zones[ref].zone.primaries
            batch_at = self._primary_batch_at + PRIMARY_BATCH_SECONDS
            times.append(max(due_at, self._bucket.ready_at(cost, now), batch_at))
        return max(now, min(times))

    # ---- internals

    def _reschedule(self, ref: ObjectRef, state: _ZoneState) -> None:
        """New heap entries for the zone's current due times; older entries go stale."""
        state.version += 1
        if math.isfinite(state.due):
            heapq.heappush(self._primary_heap, (state.due, state.version, ref))
        if state.hot_since is not None and math.isfinite(state.hot_due):
            heapq.heappush(self._hot_heap, (state.hot_due, state.version, ref))

    def _drop_stale(self) -> None:
        for heap, hot in ((self._hot_heap, True), (self._primary_heap, False)):
            while heap:
                _, version, ref = heap[0]
                state = self._zones.get(ref)
                if (
                    state is not None
                    and state.version == version
                    and (not hot or state.hot_since is not None)
                ):
                    break
                heapq.heappop(heap)

    def _maybe_recompute(self, now: float) -> None:
        if now >= self._next_decay or (
            self._dirty and now - self._recomputed_at >= RECOMPUTE_SECONDS
        ):
            self.recompute(now)

    def recompute(self, now: float) -> None:
        """Every zone's interval from the budget and the weights as they are now."""
        demands = {
            ref: (state.zone.primaries, self.weight(ref, now), state.refresh)
            for ref, state in self._zones.items()
        }
        intervals = spread_budget(demands, self.budget, self.min_interval)
        self._primary_heap = []
        self._hot_heap = []
        next_decay = math.inf
        for ref, state in self._zones.items():
            state.interval = intervals.get(ref, math.inf)
            if state.last_primary is not None:
                state.due = state.last_primary + state.interval
            elif not math.isfinite(state.due):
                # First sight: spread over one interval, so that 10,000 zones (an
                # operator start) do not all fall due at once.
                spread = state.phase * state.interval if math.isfinite(state.interval) else 0.0
                state.due = now + spread
            self._reschedule(ref, state)
            for since, window in (
                (state.changed_at, ACTIVE_SECONDS),
                (state.silent_at, SILENT_SECONDS),
            ):
                if since is not None and since + window > now:
                    next_decay = min(next_decay, since + window)
        self._next_decay = next_decay
        self._dirty = False
        self._recomputed_at = now


def scheduled_zones(
    zones: Iterable[tuple[ObjectRef, int, int]],
) -> dict[ObjectRef, ScheduledZone]:
    """(ref, primaries, replicas with an address) -> what `ProbeSchedule.set_zones` takes."""
    return {ref: ScheduledZone(primaries, replicas) for ref, primaries, replicas in zones}
