"""A Zone's status from its two writers, the reconciler and the serial monitor, on one API.

Both compute the whole status with status.zone.zone_status; these tests drive
both as the operator does (kopf events, monitor rounds) against the in-memory
API server and look at what a user would read with kubectl.
"""

from __future__ import annotations

from typing import Any

import pytest

from secondary_dns.handlers.queue import ServerWork
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
    operator.controller.servers.on_change = lambda: None
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
