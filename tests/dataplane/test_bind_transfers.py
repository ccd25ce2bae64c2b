"""Rendered BIND secondaries against a real primary: transfers, NOTIFY, ACLs (issue 4)."""

from __future__ import annotations

from pathlib import Path

from tests.dataplane.named import NamedFleet, PrimaryServer, TsigCredentials
from tests.dataplane.rendered import (
    primary_entry,
    secret_manifest,
    server_manifest,
    start_rendered_secondary,
    zone_manifest,
)

ZONE = "example.test."


def test_initial_axfr_with_tsig_then_notify_brings_ixfr(
    fleet: NamedFleet, primary: PrimaryServer, transfer_key: TsigCredentials, tmp_path: Path
) -> None:
    secondary = start_rendered_secondary(
        fleet,
        tmp_path / "edge",
        [
            server_manifest(),
            zone_manifest("example", ZONE, [primary_entry(primary)]),
            secret_manifest(transfer_key),
        ],
    )
    assert "left out" not in secondary.stderr
    named = secondary.process
    named.wait_for_serial(ZONE, 1)
    # The first copy came by AXFR, signed with the Secret's key (the primary
    # refuses unsigned transfers, see the harness test).
    assert primary.outgoing_transfers(ZONE) == [("AXFR", 1)]
    assert named.wait_for_log(r"transferred serial 1: TSIG 'transfer-key.example'")

    serial = primary.set_record(ZONE, "www", "A", "192.0.2.80")
    primary.notify(named, ZONE)
    named.wait_for_serial(ZONE, serial)
    # RFC 1995: only the difference travelled.
    assert primary.outgoing_transfers(ZONE) == [("AXFR", 1), ("IXFR", serial)]
    answer = named.query("www.example.test.", "A")
    assert [rr.to_text() for rr in answer.answer[0]] == ["192.0.2.80"]
    # The copy is kept on disk as text (masterfile-format text), for restarts.
    assert (secondary.data_dir / "example.test.db").exists()
