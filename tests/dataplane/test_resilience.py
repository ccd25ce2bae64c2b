"""Rendered secondaries when things go wrong: primaries down, hostile sizes, bad keys.

Every scenario runs once with named and once with knotd as the secondary.
"""

from __future__ import annotations

import re
from pathlib import Path

import dns.rdata

from localcluster.named import NamedFleet, PrimaryServer, TsigCredentials, make_zone
from tests.dataplane.engines import Engine
from tests.dataplane.rendered import (
    ZONE,
    ExampleSecondary,
    primary_entry,
    secret_manifest,
    server_manifest,
    start_example_secondary,
    start_rendered_secondary,
    zone_manifest,
)


def test_first_primary_down_zone_transfers_from_the_second(
    fleet: NamedFleet, transfer_key: TsigCredentials, tmp_path: Path, engine: Engine
) -> None:
    first = fleet.start_primary([make_zone(ZONE, serial=7)], transfer_key)
    second = fleet.start_primary([make_zone(ZONE, serial=7)], transfer_key)
    first.stop()
    named = start_example_secondary(
        fleet, tmp_path / "edge", [first, second], transfer_key, engine=engine.name
    ).process
    assert second.outgoing_transfers(ZONE) == [("AXFR", 7)]

    # Later changes keep coming from the second primary while the first is away.
    serial = second.set_record(ZONE, "www", "A", "192.0.2.80")
    second.notify(named, ZONE)
    named.wait_for_serial(ZONE, serial)
    assert second.outgoing_transfers(ZONE)[-1] == ("IXFR", serial)


def test_more_records_than_max_records_is_refused_and_old_copy_served(
    primary: PrimaryServer, example_secondary: ExampleSecondary, engine: Engine
) -> None:
    named = example_secondary(server=server_manifest(engine=engine.name, max_records=10)).process

    # A primary that suddenly serves 20 records of 40 kB each (a mistake or an
    # attack): more records than BIND's limit of 10, and more bytes than the most
    # 10 records can take, Knot's zone-max-size for it (docs/render.md).
    hostile = make_zone(ZONE, serial=2, hosts=0)
    with hostile.writer() as txn:
        for index in range(20):
            strings = " ".join(f'"{index:03d}{"x" * 247}"' for _ in range(160))
            txn.add(f"big{index}", 300, dns.rdata.from_text("IN", "TXT", strings))
    serial = primary.serve_zone(hostile)
    primary.notify(named, ZONE)
    named.wait_for_log(engine.pattern(engine.too_big_refused, ZONE))
    assert primary.serial(ZONE) == serial
    assert named.serial(ZONE) == 1
    answer = named.query("host0.example.test.", "A")
    assert [rr.to_text() for rr in answer.answer[0]] == ["198.18.0.1"]
    assert not named.query("big0.example.test.", "TXT").answer


def test_zone_with_wrong_key_fails_while_other_zones_stay_in_sync(
    fleet: NamedFleet, transfer_key: TsigCredentials, tmp_path: Path, engine: Engine
) -> None:
    good, bad, keyless = "good.test.", "bad.test.", "orphan.test."
    primary = fleet.start_primary(
        [make_zone(good), make_zone(bad), make_zone(keyless)], transfer_key
    )
    wrong_key = TsigCredentials.generate("guessed-key.example.")
    secondary = start_rendered_secondary(
        fleet,
        tmp_path / "edge",
        [
            server_manifest(engine=engine.name),
            zone_manifest("good", good, [primary_entry(primary)]),
            zone_manifest("bad", bad, [primary_entry(primary, "wrong-key")]),
            # A Secret that does not exist: the renderer leaves the zone out.
            zone_manifest("orphan", keyless, [primary_entry(primary, "no-such-secret")]),
            secret_manifest(transfer_key),
            secret_manifest(wrong_key, "wrong-key"),
        ],
    )
    assert "left out Zone dns/orphan: SecretNotFound" in secondary.stderr
    named = secondary.process
    named.wait_for_serial(good, 1)
    # The primary refuses the key it does not know (RFC 8945 §5.2: BADKEY), already
    # for the SOA query that precedes a transfer; the secondary has no copy.
    named.wait_for_log(engine.pattern(engine.bad_key_refresh_failed, bad))
    assert named.serial(bad) is None
    assert named.serial(keyless) is None

    serial = primary.set_record(good, "www", "A", "192.0.2.80")
    primary.notify(named, good)
    named.wait_for_serial(good, serial)
    assert named.serial(bad) is None


def test_restart_while_primary_is_down_serves_the_copy_on_disk(
    primary: PrimaryServer, example_secondary: ExampleSecondary, engine: Engine
) -> None:
    named = example_secondary(engine=engine.name).process
    serial = primary.set_record(ZONE, "www", "A", "192.0.2.80")
    primary.notify(named, ZONE)
    named.wait_for_serial(ZONE, serial)

    primary.stop()
    named.stop()
    named.start()
    # Loaded from the data directory (zone file and IXFR journal), not transferred.
    named.wait_for_log(engine.pattern(engine.loaded_from_disk, ZONE, serial=serial))
    assert named.serial(ZONE) == serial
    answer = named.query("www.example.test.", "A")
    assert [rr.to_text() for rr in answer.answer[0]] == ["192.0.2.80"]


def test_small_max_refresh_picks_up_a_change_without_notify(
    primary: PrimaryServer, example_secondary: ExampleSecondary, engine: Engine
) -> None:
    # The zone's SOA says refresh 3600; the Zone's ceiling makes it 2 seconds.
    assert primary.zone(ZONE).get_soa().refresh == 3600
    secondary = example_secondary(
        engine=engine.name, timers={"maxRefreshSeconds": 2, "maxRetrySeconds": 2}
    )
    named = secondary.process
    serial = primary.set_record(ZONE, "www", "A", "192.0.2.80")
    # No NOTIFY: only the refresh timer can bring the change.
    named.wait_for_serial(ZONE, serial, deadline=30)
    assert not re.search(engine.pattern(engine.notify_received, ZONE), named.log())
