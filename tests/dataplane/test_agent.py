"""The pod agent with a real engine: reload without restart, last good config, readiness.

Every test runs once with named and once with knotd (the `engine` fixture), the
same agent loop driving each through its own tools.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.name
import pytest

from localcluster.named import NamedFleet, PrimaryServer, TsigCredentials, make_zone
from localcluster.waiting import wait_for
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import shard_file_name
from secondary_dns.render.shards import shard_of
from tests.agent_configs import Bundle, PrimaryZone
from tests.dataplane.agent_harness import AgentPod
from tests.dataplane.engines import ENGINES, Engine

A = agent_contract.ANNOTATION_APPLIED_CONFIG_HASH
ERROR = agent_contract.ANNOTATION_CONFIG_ERROR
LOADED = agent_contract.ANNOTATION_ZONES_LOADED


@pytest.fixture
def pod(
    fleet: NamedFleet, transfer_key: TsigCredentials, tmp_path: Path, engine: Engine
) -> Iterator[AgentPod]:
    with AgentPod(tmp_path / "pod", fleet.address(), transfer_key, engine.name) as agent_pod:
        yield agent_pod


def test_added_zone_is_served_without_restarting_the_engine(
    fleet: NamedFleet, transfer_key: TsigCredentials, pod: AgentPod, engine: Engine
) -> None:
    primary = fleet.start_primary(
        [make_zone("example.test.", serial=1), make_zone("added.test.", serial=7)], transfer_key
    )
    first = pod.bundle([PrimaryZone("example.test.", primary.address)])
    # The engine command waits for the agent's first checked config before it starts.
    assert pod.engine.alive() and pod.engine.engine_pid() is None
    pod.publish(first)
    pod.wait_until_serving("example.test.", 1)
    pod.wait_for_annotation(A, first.config_hash)
    engine_pid = wait_for("the engine's pid file", pod.engine.engine_pid, 10)
    # `engine` exec'd the engine: the container's process is named or knotd itself.
    assert engine_pid == pod.engine.pid

    second = pod.bundle(
        [PrimaryZone("example.test.", primary.address), PrimaryZone("added.test.", primary.address)]
    )
    latencies = []
    started = time.monotonic()
    pod.publish(second)
    pod.wait_until_serving("added.test.", 7)
    latencies.append(time.monotonic() - started)
    pod.wait_for_annotation(A, second.config_hash)
    pod.wait_for_annotation(LOADED, "2/2")
    how = "rndc addzone" if engine.zone_added else "reload"
    print(
        f"\n{engine.name}: config change -> new zone served ({how}, AXFR): "
        f"{latencies[0] * 1000:.0f} ms"
    )

    assert pod.engine.alive() and pod.engine.engine_pid() == engine_pid
    if engine.zone_added:
        # named took the one new zone by itself: no reconfigure, no pause in answering.
        assert re.search(engine.pattern(engine.zone_added, "added.test."), pod.engine.log())
        assert engine.reloaded not in pod.engine.log()
    else:
        assert engine.reloaded in pod.engine.log()
    # Zones already there were never dropped.
    assert pod.dns.serial("example.test.") == 1
    assert pod.annotation(ERROR) == ""
    status, metrics = pod.get("/metrics")
    assert status == 200
    assert 'secondarydns_agent_reloads_total{result="success"} 2.0' in metrics
    assert f'secondarydns_agent_config_applied_info{{config_hash="{second.config_hash}"}} 1.0' in (
        metrics
    )
    assert "secondarydns_agent_zones_loaded 2.0" in metrics

    # The same hash again (a resync, another ConfigMap event): no write, no reload.
    reloads = pod.engine.log().count(engine.reloaded)
    patches = len(pod.reporter.patches)
    pod.publish(second, part_bytes=200)
    time.sleep(1.0)
    assert pod.engine.log().count(engine.reloaded) == reloads
    assert len(pod.reporter.patches) == patches


def test_rejected_config_keeps_the_last_good_one_serving(
    fleet: NamedFleet, transfer_key: TsigCredentials, pod: AgentPod, engine: Engine
) -> None:
    primary = fleet.start_primary(
        [make_zone("example.test.", serial=3), make_zone("other.test.", serial=4)], transfer_key
    )
    good = pod.bundle([PrimaryZone("example.test.", primary.address)])
    pod.publish(good)
    pod.wait_until_serving("example.test.", 3)
    pod.wait_for_annotation(A, good.config_hash)

    both = pod.bundle(
        [PrimaryZone("example.test.", primary.address), PrimaryZone("other.test.", primary.address)]
    )
    # The engine's checker refuses it: one statement of other.test's shard has an unknown word.
    shard_file = shard_file_name(shard_of(dns.name.from_text("other.test.")))
    bad = both.with_file(shard_file, engine.break_zones_conf(both.files[shard_file]))
    pod.publish(bad)
    error = wait_for("the config error to be reported", lambda: pod.annotation(ERROR), 30)
    assert error.startswith(f"{bad.config_hash}: {pod.agent.control.checker}: ")
    assert engine.broken_word in error and "\n" not in error
    assert pod.annotation(A) == good.config_hash
    assert pod.dns.serial("example.test.") == 3
    assert pod.dns.serial("other.test.") is None
    assert "secondarydns_agent_config_rejected 1.0" in pod.get("/metrics")[1]
    assert pod.engine.log().count(engine.reloaded) == 0

    # The operator fixes it: applied, error cleared.
    fixed = pod.bundle(
        [PrimaryZone("example.test.", primary.address), PrimaryZone("other.test.", primary.address)]
    )
    pod.publish(fixed)
    pod.wait_until_serving("other.test.", 4)
    pod.wait_for_annotation(A, fixed.config_hash)
    pod.wait_for_annotation(ERROR, "")


def test_ready_only_when_every_zone_has_loaded(
    fleet: NamedFleet, transfer_key: TsigCredentials, pod: AgentPod
) -> None:
    primary = fleet.start_primary([make_zone("example.test.", serial=1)], transfer_key)
    assert pod.get("/readyz")[0] == 503
    assert pod.get("/healthz")[0] == 200
    # late.test. is not on the primary yet: the replica must not take queries.
    config = pod.bundle(
        [PrimaryZone("example.test.", primary.address), PrimaryZone("late.test.", primary.address)]
    )
    pod.publish(config)
    pod.wait_until_serving("example.test.", 1)
    pod.wait_for_annotation(LOADED, "1/2")
    status, reason = pod.get("/readyz")
    assert status == 503 and "late.test." in reason

    late = make_zone("late.test.", serial=9)
    assert late.origin is not None
    primary.zones[late.origin] = late
    primary.write_config()
    primary.rndc("reconfig")
    primary.wait_for_serial("late.test.", 9)
    primary.notify(pod.dns, "late.test.")
    pod.wait_until_serving("late.test.", 9)
    pod.wait_for_annotation(LOADED, "2/2")
    wait_for("/readyz to be 200", lambda: pod.get("/readyz")[0] == 200, 10)
    assert "secondarydns_agent_ready 1.0" in pod.get("/metrics")[1]


def test_a_new_retransfer_request_makes_every_zone_it_names_transfer_in_full(
    fleet: NamedFleet, transfer_key: TsigCredentials, pod: AgentPod
) -> None:
    primary = fleet.start_primary(
        [make_zone("example.test.", serial=5), make_zone("other.test.", serial=6)], transfer_key
    )

    def zones(request: str | None) -> list[PrimaryZone]:
        return [
            PrimaryZone("example.test.", primary.address, retransfer_request=request),
            PrimaryZone("other.test.", primary.address),
        ]

    pod.publish(pod.bundle(zones(None)))
    pod.wait_until_serving("example.test.", 5)
    pod.wait_until_serving("other.test.", 6)
    assert primary.outgoing_transfers("example.test.") == [("AXFR", 5)]

    # The serial did not move, so only the request can cause this transfer.
    requested = pod.bundle(zones("ticket-1"))
    pod.publish(requested)
    wait_for(
        "a second full transfer of example.test.",
        lambda: primary.outgoing_transfers("example.test.") == [("AXFR", 5), ("AXFR", 5)],
        30,
    )
    pod.wait_for_annotation(A, requested.config_hash)
    assert primary.outgoing_transfers("other.test.") == [("AXFR", 6)]
    assert pod.dns.serial("example.test.") == 5
    assert 'secondarydns_agent_retransfers_total{result="requested"} 1.0' in pod.get("/metrics")[1]

    # Any other change of the configuration does not repeat it.
    pod.publish(pod.bundle([*zones("ticket-1"), PrimaryZone("third.test.", primary.address)]))
    time.sleep(2.0)
    assert primary.outgoing_transfers("example.test.") == [("AXFR", 5), ("AXFR", 5)]


def test_a_zone_moved_to_other_primaries_is_transferred_from_them_at_once(
    fleet: NamedFleet, transfer_key: TsigCredentials, pod: AgentPod
) -> None:
    # SOA refresh 3600 s, retry 600 s: a reload alone would leave the zone on the
    # old primary's copy for up to an hour before the new primary is asked.
    old = fleet.start_primary([make_zone("moved.test.", serial=1)], transfer_key)
    new = fleet.start_primary([make_zone("moved.test.", serial=2)], transfer_key)
    pod.publish(pod.bundle([PrimaryZone("moved.test.", old.address)]))
    pod.wait_until_serving("moved.test.", 1)

    moved = pod.bundle([PrimaryZone("moved.test.", new.address)])
    pod.publish(moved)
    # The agent asks the engine to refresh the zones of the changed shard after
    # the reload, so the new primary's serial is served within seconds.
    pod.wait_until_serving("moved.test.", 2, 30)
    pod.wait_for_annotation(A, moved.config_hash)
    assert new.outgoing_transfers("moved.test.")
    assert 'secondarydns_agent_refreshes_total{result="requested"} 1.0' in pod.get("/metrics")[1]


def test_zones_endpoint_shows_the_engine_s_own_expire_timer(
    fleet: NamedFleet, transfer_key: TsigCredentials, pod: AgentPod
) -> None:
    primary = fleet.start_primary([make_zone("example.test.", serial=9, expire=7200)], transfer_key)
    pod.publish(
        pod.bundle(
            [
                PrimaryZone("example.test.", primary.address),
                # Its primary does not serve it: configured, never loaded.
                PrimaryZone("absent.test.", primary.address),
            ]
        )
    )
    pod.wait_until_serving("example.test.", 9)
    transferred = time.time()

    def zones() -> dict[str, Any] | None:
        status, body = pod.get("/zones")
        assert status == 200
        found: dict[str, Any] = json.loads(body)["zones"]
        return found if found.get("example.test.", {}).get("expires") else None

    shown = wait_for("the expire time of example.test. on /zones", zones, 30)
    # Both engines: expire = last successful refresh (the transfer just now) + SOA expire.
    assert abs(shown["example.test."]["expires"] - (transferred + 7200)) < 5
    assert shown["example.test."]["serial"] == 9
    # Never loaded: no serial, no expiry; the engine keeps retrying (refresh: its next try).
    absent = shown["absent.test."]
    assert absent["serial"] is None and absent["expires"] is None
    metrics = pod.get("/metrics")[1]
    assert 'secondarydns_agent_zone_expires_timestamp_seconds{zone="example.test."}' in metrics
    assert 'zone="absent.test."' not in metrics


def test_named_takes_zones_one_by_one_and_still_restarts_and_reloads(
    fleet: NamedFleet, transfer_key: TsigCredentials, tmp_path: Path
) -> None:
    """Zones added, moved to other primaries and removed reach named by rndc
    addzone/modzone/delzone, without a reconfigure; named keeps those in its
    zone database, which must not make a restart or a later reconfigure refuse
    the configuration files (they hold the same zones: "already exists")."""
    engine = ENGINES[agent_contract.ENGINE_BIND9]
    primary = fleet.start_primary(
        [
            make_zone(f"{name}.test.", serial=serial)
            for name, serial in (("a", 1), ("b", 2), ("c", 3))
        ],
        transfer_key,
    )
    other = fleet.start_primary([make_zone("b.test.", serial=20)], transfer_key)
    with AgentPod(tmp_path / "pod", fleet.address(), transfer_key, engine.name) as pod:
        first = pod.bundle(
            [PrimaryZone("a.test.", primary.address), PrimaryZone("b.test.", primary.address)]
        )
        pod.publish(first)
        pod.wait_until_serving("b.test.", 2)
        pod.wait_for_annotation(A, first.config_hash)

        def serve(b: PrimaryServer, then: str, serial: int) -> Bundle:
            """a.test and c.test from `primary`, b.test from `b`; published and applied."""
            bundle = pod.bundle(
                [
                    PrimaryZone("a.test.", primary.address),
                    PrimaryZone("b.test.", b.address),
                    PrimaryZone("c.test.", primary.address),
                ]
            )
            pod.publish(bundle)
            pod.wait_until_serving(then, serial)
            pod.wait_for_annotation(A, bundle.config_hash)
            return bundle

        serve(primary, "c.test.", 3)

        moved = pod.bundle(
            [PrimaryZone("b.test.", other.address), PrimaryZone("c.test.", primary.address)]
        )
        pod.publish(moved)
        # The agent asks for a refresh of a zone whose statement changed.
        pod.wait_until_serving("b.test.", 20)
        wait_for("a.test no longer served", lambda: pod.dns.serial("a.test.") is None, 30)
        pod.wait_for_annotation(A, moved.config_hash)
        log = pod.engine.log()
        for command in ("addzone", "modzone", "delzone"):
            assert re.search(rf"zone [abc]\.test .*via {command}", log), command
        assert engine.reloaded not in log

        pod.engine.stop()
        pod.engine.start()
        wait_for("named again", pod.engine.engine_pid, 30)
        pod.wait_until_serving("c.test.", 3)
        pod.wait_until_serving("b.test.", 20)
        assert pod.dns.serial("a.test.") is None
        assert "already exists" not in pod.engine.log()

        # A change only a reconfigure applies (the main file) after more zones came
        # one by one: named takes it, and serves every zone still.
        again = serve(other, "a.test.", 1)
        main = engine.main_file
        reload_only = again.with_file(
            main,
            again.files[main].replace("minimal-any yes;", "minimal-any yes;\n\tnotify-rate 25;"),
        )
        assert reload_only.files[main] != again.files[main]
        pod.publish(reload_only)
        pod.wait_for_annotation(A, reload_only.config_hash)
        assert engine.reloaded in pod.engine.log()
        assert pod.annotation(ERROR) == ""
        for zone, serial in (("a.test.", 1), ("b.test.", 20), ("c.test.", 3)):
            assert pod.dns.serial(zone) == serial
