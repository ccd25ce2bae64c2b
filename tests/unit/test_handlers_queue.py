"""The work queue: marks coalesce per key, a key is never worked on twice at once."""

from __future__ import annotations

import threading

from secondary_dns.api import ObjectRef
from secondary_dns.handlers.queue import ServerWork, WorkQueue, ZoneWork

EDGE, CORE = ObjectRef("dns", "edge"), ObjectRef("dns", "core")
A, B = ObjectRef("dns", "a"), ObjectRef("dns", "b")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_marks_of_one_server_is_one_piece_of_work() -> None:
    clock = Clock()
    queue = WorkQueue(window=0.05, clock=clock)
    stop = threading.Event()
    queue.add(EDGE, ServerWork(zones=frozenset({A})))
    queue.add(EDGE, ServerWork(zones=frozenset({B}), pods=True))
    queue.add(EDGE, ServerWork(secrets=True))
    # Within the window nothing is handed out.
    assert queue.take(stop, timeout=0) is None
    clock.now += 0.05
    taken = queue.take(stop, timeout=0)
    assert taken == (
        EDGE,
        ServerWork(zones=frozenset({A, B}), pods=True, secrets=True),
    )
    assert len(queue) == 0


def test_a_key_being_worked_on_is_not_handed_out_again_until_done() -> None:
    clock = Clock()
    queue = WorkQueue(window=0.0, clock=clock)
    stop = threading.Event()
    queue.add(EDGE, ServerWork(spec=True))
    assert queue.take(stop, timeout=0) == (EDGE, ServerWork(spec=True))
    # A mark that arrives meanwhile waits for the next turn; other keys go on.
    queue.add(EDGE, ServerWork(zones=frozenset({A})))
    queue.add(CORE, ServerWork(pods=True))
    assert queue.take(stop, timeout=0) == (CORE, ServerWork(pods=True))
    assert queue.take(stop, timeout=0) is None
    queue.done(EDGE)
    assert queue.take(stop, timeout=0) == (EDGE, ServerWork(zones=frozenset({A})))


def test_the_oldest_mark_goes_first_and_zone_work_merges() -> None:
    clock = Clock()
    queue = WorkQueue(window=0.0, clock=clock)
    stop = threading.Event()
    queue.add(CORE, ServerWork(resync=True))
    clock.now += 1
    queue.add(EDGE, ServerWork(spec=True))
    queue.add(A, ZoneWork())
    queue.add(A, ZoneWork())
    assert [queue.take(stop, timeout=0, ignore_window=True) for _ in range(3)] == [
        (CORE, ServerWork(resync=True)),
        (EDGE, ServerWork(spec=True)),
        (A, ZoneWork()),
    ]


def test_a_worker_waiting_for_work_wakes_up_when_it_comes() -> None:
    queue = WorkQueue(window=0.0)
    stop = threading.Event()
    taken: list[object] = []
    worker = threading.Thread(target=lambda: taken.append(queue.take(stop, timeout=30)))
    worker.start()
    queue.add(EDGE, ServerWork(spec=True))
    worker.join()
    assert taken == [(EDGE, ServerWork(spec=True))]
    # Stopping ends a wait with nothing.
    stop.set()
    assert queue.take(stop, timeout=30) is None


def test_server_work_goes_before_zone_status_work_which_keeps_its_order() -> None:
    clock = Clock()
    queue = WorkQueue(window=0.05, clock=clock)
    stop = threading.Event()
    zones = [ObjectRef("dns", f"z{i}") for i in range(5)]
    for zone in zones:
        queue.add(zone, ZoneWork())
    clock.now += 0.01
    queue.add(EDGE, ServerWork(zones=frozenset({A})))
    clock.now += 0.05
    assert len(queue) == 6
    # The server was marked last, and still goes first: it publishes configurations.
    assert queue.take(stop, timeout=0) == (EDGE, ServerWork(zones=frozenset({A})))
    first = queue.take(stop, timeout=0)
    assert first == (zones[0], ZoneWork())
    # The head being worked on, the next in arrival order comes.
    assert queue.take(stop, timeout=0) == (zones[1], ZoneWork())
    queue.done(zones[0])
    queue.add(zones[0], ZoneWork())  # marked again: to the back
    taken = [queue.take(stop, timeout=0, ignore_window=True) for _ in range(4)]
    assert [item[0] for item in taken if item] == [*zones[2:], zones[0]]
