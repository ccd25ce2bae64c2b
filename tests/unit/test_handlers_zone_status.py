"""A Zone's status from its two writers, the reconciler and the serial monitor, on one API.

Both compute the whole status with status.zone.zone_status; these tests drive
both as the operator does (kopf events, monitor rounds) against the in-memory
API server and look at what a user would read with kubectl.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from secondary_dns.api import ObjectRef
from secondary_dns.handlers import zone_status as zone_status_module
from secondary_dns.handlers.controller import ZoneKey
from secondary_dns.handlers.queue import ServerWork, ZoneWork
from secondary_dns.handlers.zone_status import in_progress
from tests.fake_cluster import FakeApiServer, run_statefulset
from tests.handlers_harness import (
    API,
    NS,
    Operator,
    condition,
    declared_namespace,
    start_operator,
    tsig_secret,
    zone_manifest,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def zone(api: FakeApiServer) -> dict[str, Any] | None:
    return api.get(API, "Zone", NS, "example-com")


def ready(api: FakeApiServer) -> tuple[str, str]:
    found = condition(zone(api), "Ready")
    return found["status"], found["reason"]


@pytest.fixture
def api() -> FakeApiServer:
    return declared_namespace()


@pytest.fixture
def operator(api: FakeApiServer) -> Operator:
    started = start_operator(api)
    started.reconcile_server("edge")
    run_statefulset(api, NS, "edge")
    started.pods_changed("edge")
    return started


def test_ready_follows_the_serials_once_the_monitor_has_looked(
    api: FakeApiServer, operator: Operator
) -> None:
    assert ready(api) == ("Unknown", "AwaitingSerials")
    operator.probe("example.com.", 5, [5, 5, 5], T0)
    assert ready(api) == ("True", "InSync")
    assert condition(zone(api), "Ready")["message"] == "3/3 replicas serve serial 5"
    status = (zone(api) or {})["status"]
    assert (status["primarySerial"], status["synced"]) == (5, "3/3")
    # The configuration path writes with the monitor's half and changes nothing.
    versions = api.versions()
    operator.zone_changed("example-com")
    operator.reconcile_server("edge")
    assert api.versions() == versions

    operator.probe("example.com.", 6, [6, 5, 6], T0 + 10)
    assert ready(api) == ("False", "ReplicasBehind")
    operator.probe("example.com.", None, [6, 6, 6], T0 + 20)
    assert ready(api) == ("False", "PrimaryTimeout")


def test_a_restarted_operator_rewrites_no_zone_status(
    api: FakeApiServer, operator: Operator
) -> None:
    operator.probe("example.com.", 5, [5, 5, 5], T0)
    versions, writes = api.versions(), len(api.writes)
    restarted = start_operator(api)
    # kopf resumes every object; the monitor's first round comes later.
    restarted.reconcile_server("edge")
    restarted.zone_changed("example-com")
    assert api.writes[writes:] == []
    restarted.probe("example.com.", 5, [5, 5, 5], T0 + 300)
    assert api.writes[writes:] == []
    assert api.versions() == versions


EXAMPLE = ObjectRef(NS, "example-com")


def test_a_written_serial_half_is_read_back_from_the_stored_status(
    api: FakeApiServer, operator: Operator
) -> None:
    """Once written, the monitor's half is not kept beside the stored status (a copy
    of it for every Zone); the configuration path then reads it back, as after a
    restart, and writes what a restarted operator would write."""
    operator.probe("example.com.", 5, [5, 5, 5], T0)
    assert EXAMPLE not in operator.controller.zone_status._serials
    api.apply(zone_manifest(allowTransfer=[{"cidr": "192.0.2.0/24"}]))
    operator.zone_changed("example-com")

    other = declared_namespace()
    first = start_operator(other)
    first.reconcile_server("edge")
    run_statefulset(other, NS, "edge")
    first.pods_changed("edge")
    first.probe("example.com.", 5, [5, 5, 5], T0)
    restarted = start_operator(other)
    restarted.reconcile_server("edge")
    other.apply(zone_manifest(allowTransfer=[{"cidr": "192.0.2.0/24"}]))
    restarted.zone_changed("example-com")

    assert (zone(api) or {})["status"] == (zone(other) or {})["status"]
    assert (zone(api) or {})["status"]["observedGeneration"] == 2
    assert condition(zone(api), "Synced")["reason"] == "InSync"


def test_a_configuration_fault_decides_ready_before_any_serial(
    api: FakeApiServer, operator: Operator
) -> None:
    operator.probe("example.com.", 5, [5, 5, 5], T0)
    # The zone now needs a key its Secret does not hold yet: left out everywhere.
    api.apply(
        zone_manifest(primaries=[{"address": "192.0.2.1", "tsigKeySecretRef": {"name": "tsig"}}])
    )
    operator.zone_changed("example-com")
    assert ready(api) == ("False", "SecretNotFound")
    assert "example.com." not in operator.monitored_zones()
    operator.monitor_round_ends()
    # Stored serials (from before) do not count for the zone served again: the new
    # configuration is rolling out, then the monitor looks afresh.
    api.apply(tsig_secret())
    operator.secret_retry()
    assert condition(zone(api), "ConfigValid")["reason"] == "Rendered"
    assert ready(api) == ("False", "Progressing")
    run_statefulset(api, NS, "edge")
    operator.pods_changed("edge")
    assert ready(api) == ("Unknown", "AwaitingSerials")
    operator.probe("example.com.", 5, [5, 5, 5], T0 + 60)
    assert ready(api) == ("True", "InSync")


def test_the_monitor_writes_nothing_before_the_configuration_path_has_looked() -> None:
    api = declared_namespace()
    operator = start_operator(api)
    # The server is reconciled and published, the zone not yet refreshed (a race
    # between a kopf handler thread and the monitor's round).
    operator.sync_caches()
    reconciled = operator.controller.servers.reconcile(
        api.get(API, "SecondaryServer", NS, "edge") or {}, ServerWork(resync=True), None
    )
    assert reconciled is not None
    operator.controller.states.publish(reconciled.state)
    before = (zone(api) or {}).get("status")
    operator.probe("example.com.", 5, [None, None, None], T0)
    assert (zone(api) or {}).get("status") == before
    # The configuration path then writes both halves.
    operator.zone_changed("example-com")
    assert condition(zone(api), "Synced")["reason"] == "NotTransferred"
    assert ready(api) == ("False", "NotTransferred")


# ---- statuses in progress, held back (handlers/zone_status.py)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def zone_status_writes(api: FakeApiServer, since: int = 0) -> int:
    return sum(1 for _, path in api.writes[since:] if path.endswith("/zones/example-com/status"))


def work_without_windows_ending(operator: Operator) -> None:
    """The queued work, as workers do it; held statuses stay held (drain would write them)."""
    operator.sync_caches()
    stop = threading.Event()
    while operator.controller.work_once(stop, timeout=0.0, wait=False):
        pass


def in_sync_with_a_window(api: FakeApiServer, clock: Clock) -> Operator:
    """An operator holding statuses in progress, its one Zone in sync at serial 5."""
    operator = start_operator(api, progress_window=2.0, clock=clock)
    operator.reconcile_server("edge")
    run_statefulset(api, NS, "edge")
    operator.pods_changed("edge")
    operator.probe("example.com.", 5, [5, 5, 5], T0)
    return operator


def test_a_new_zone_s_first_status_carries_both_halves_in_one_write() -> None:
    api = declared_namespace()
    clock = Clock()
    operator = start_operator(api, progress_window=2.0, clock=clock)
    work_without_windows_ending(operator)
    run_statefulset(api, NS, "edge")
    work_without_windows_ending(operator)
    # Rendered, rolled out, then waiting for serials: all in progress, all held.
    assert zone_status_writes(api) == 0
    assert operator.controller.zone_status.take_due(clock.now) == []
    clock.now += 0.5
    operator.probe("example.com.", 5, [5, 5, 5], T0)
    assert zone_status_writes(api) == 1
    assert ready(api) == ("True", "InSync")
    assert condition(zone(api), "ConfigValid")["reason"] == "Rendered"
    # A new Zone rendered is no Event (its status says it; a fault would be one).
    assert [event for event in operator.events if event[0] == "Zone"] == []
    # The window's end finds it written: nothing more.
    clock.now += 2.0
    for ref in operator.controller.zone_status.take_due(clock.now):
        operator.controller.queue.add(ZoneKey(ref), ZoneWork())
    work_without_windows_ending(operator)
    assert zone_status_writes(api) == 1


def test_a_new_zone_in_progress_is_written_when_its_window_ends() -> None:
    api = declared_namespace()
    clock = Clock()
    operator = start_operator(api, progress_window=2.0, clock=clock)
    work_without_windows_ending(operator)
    assert zone(api) is not None and "status" not in (zone(api) or {})
    clock.now += 2.0
    due = operator.controller.zone_status.take_due(clock.now)
    assert [ref.name for ref in due] == ["example-com"]
    for ref in due:
        operator.controller.zone_status.on_due(ref)  # what the writer's thread does
    work_without_windows_ending(operator)
    assert zone_status_writes(api) == 1
    assert ready(api) == ("False", "Progressing")


def test_replica_counts_of_a_converging_zone_are_coalesced_and_in_sync_is_written_at_once(
    api: FakeApiServer,
) -> None:
    clock = Clock()
    operator = in_sync_with_a_window(api, clock)
    assert ready(api) == ("True", "InSync")
    clock.now += 60
    writes = len(api.writes)
    # The primary moved on: shown at once (the last write is a minute old).
    operator.probe("example.com.", 6, [5, 5, 5], T0 + 60)
    assert (zone(api) or {})["status"]["synced"] == "0/3"
    # Replicas catching up within the window: held, the latest kept.
    clock.now += 0.1
    operator.probe("example.com.", 6, [6, 5, 5], T0 + 60.1)
    clock.now += 0.1
    operator.probe("example.com.", 6, [6, 6, 5], T0 + 60.2)
    assert zone_status_writes(api, writes) == 1
    # When the window ends, the latest count is written, computed then.
    clock.now += 2.0
    for ref in operator.controller.zone_status.take_due(clock.now):
        operator.controller.zone_status.on_due(ref)
    work_without_windows_ending(operator)
    assert zone_status_writes(api, writes) == 2
    assert (zone(api) or {})["status"]["synced"] == "2/3"
    # The last replica: at once, however recent the last write.
    clock.now += 0.1
    operator.probe("example.com.", 6, [6, 6, 6], T0 + 62.4)
    assert zone_status_writes(api, writes) == 3
    assert ready(api) == ("True", "InSync")


def test_a_new_generation_is_written_at_once_within_the_window(api: FakeApiServer) -> None:
    """A spec change in progress (new primaries, replicas not there yet) shows its
    observedGeneration at once however recent the last write: kstatus and Flux read
    it, and the monitor may already have written the new primary's serial."""
    clock = Clock()
    operator = in_sync_with_a_window(api, clock)
    clock.now += 0.1
    writes = len(api.writes)
    # The primary moved on (in progress, within the window: held).
    operator.probe("example.com.", 7, [5, 5, 5], T0 + 0.1)
    assert zone_status_writes(api, writes) == 0
    clock.now += 0.1
    api.apply(zone_manifest(primaries=[{"address": "192.0.2.9"}]))
    work_without_windows_ending(operator)
    status = (zone(api) or {})["status"]
    assert status["observedGeneration"] == 2
    assert in_progress(status)
    assert zone_status_writes(api, writes) == 1


def test_a_held_serial_half_is_kept_until_a_configuration_write_carries_it(
    api: FakeApiServer,
) -> None:
    """Latest wins: the monitor's half held back is what the next configuration
    write combines; written, it is read back from the stored status."""
    clock = Clock()
    operator = in_sync_with_a_window(api, clock)
    clock.now += 0.1
    operator.probe("example.com.", 7, [5, 5, 5], T0 + 0.1)
    clock.now += 0.1
    operator.probe("example.com.", 7, [7, 5, 5], T0 + 0.2)
    assert (zone(api) or {})["status"]["primarySerial"] == 5  # held
    assert EXAMPLE in operator.controller.zone_status._serials
    api.apply(zone_manifest(allowTransfer=[{"cidr": "192.0.2.0/24"}]))
    work_without_windows_ending(operator)
    status = (zone(api) or {})["status"]
    assert (status["observedGeneration"], status["primarySerial"], status["synced"]) == (
        2,
        7,
        "1/3",
    )
    assert EXAMPLE not in operator.controller.zone_status._serials


def test_a_fault_is_written_at_once_within_the_window(api: FakeApiServer) -> None:
    clock = Clock()
    operator = in_sync_with_a_window(api, clock)
    clock.now += 0.1
    operator.probe("example.com.", None, [5, 5, 5], T0 + 0.1)
    assert ready(api) == ("False", "PrimaryTimeout")


def test_a_spec_change_asks_the_monitor_to_evaluate_the_zone_again(
    api: FakeApiServer, operator: Operator
) -> None:
    """Its Synced must carry the new generation: a change that does not change what
    is probed (allowTransfer) would otherwise wait for the zone's next recheck."""
    asked: list[tuple[str, int]] = []
    operator.controller.zone_status.on_stale_serial = lambda ref, serial: asked.append(
        (ref.name, serial)
    )
    operator.probe("example.com.", 5, [5, 5, 5], T0)
    operator.zone_changed("example-com")
    assert asked == []  # the same generation: nothing to evaluate
    api.apply(zone_manifest(allowTransfer=[{"cidr": "192.0.2.0/24"}]))
    operator.zone_changed("example-com")
    assert asked == [("example-com", 5)]
    synced = condition(zone(api), "Synced")
    assert synced["observedGeneration"] == 1
    assert (zone(api) or {})["status"]["observedGeneration"] == 2
    operator.probe("example.com.", 5, [5, 5, 5], T0 + 1)
    assert condition(zone(api), "Synced")["observedGeneration"] == 2


def test_zones_in_progress_together_share_a_write_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst: the more Zones in progress at once, the longer each one's window."""
    monkeypatch.setattr(zone_status_module, "PROGRESS_WRITES_PER_SECOND", 1.0)
    api = declared_namespace()
    for index in range(2):
        api.apply(zone_manifest(f"z{index}", f"z{index}.example"))
    clock = Clock()
    operator = start_operator(api, progress_window=2.0, clock=clock)
    work_without_windows_ending(operator)
    # 3 Zones in progress at 1 write a second: each waits 3 s, not 2.
    assert operator.controller.zone_status.take_due(clock.now + 2.0) == []
    due = operator.controller.zone_status.take_due(clock.now + 3.0)
    assert sorted(ref.name for ref in due) == ["example-com", "z0", "z1"]


def test_ten_thousand_zones_in_progress_keep_to_the_write_budget() -> None:
    """10,000 Zones created together: their statuses in progress make at most
    PROGRESS_WRITES_PER_SECOND writes a second together, so that the API server's
    writes go to the statuses that say something new (Ready) first."""
    writer = start_operator(declared_namespace()).controller.zone_status
    writer._progressing.update(ObjectRef(NS, f"z{index:05d}") for index in range(10_000))
    with writer._guard:
        window = writer.window()
    assert 10_000 / window <= zone_status_module.PROGRESS_WRITES_PER_SECOND
