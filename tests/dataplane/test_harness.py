"""The harness is real: named transfers with TSIG, NOTIFY, refused AXFR (issue 2, test 3)."""

from __future__ import annotations

from pathlib import Path

import dns.rdatatype
import dns.xfr
import pytest

from localcluster.named import (
    NamedFleet,
    PrimaryServer,
    TsigCredentials,
    axfr,
    free_port,
    write_rndc_conf,
)


def hand_written_secondary(
    directory: Path, primary: PrimaryServer, address: str, allowed_client: str
) -> Path:
    """A minimal secondary config, written by hand (later tests use the renderer)."""
    directory.mkdir(parents=True)
    rndc_key = TsigCredentials.generate("rndc-secondary")
    control_port = free_port()
    key_name = primary.key.name.to_text(omit_final_dot=True)
    conf = directory / "named.conf"
    conf.write_text(
        primary.key.named_conf()
        + rndc_key.named_conf()
        + "options {\n"
        + f'\tdirectory "{directory}";\n'
        + f'\tpid-file "{directory}/named.pid";\n'
        + f'\tsession-keyfile "{directory}/session.key";\n'
        + f"\tlisten-on {{ {address}; }};\n"
        + "\tlisten-on-v6 { none; };\n"
        + "\trecursion no;\n"
        + "\tdnssec-validation no;\n"
        + "\tnotify no;\n"
        + "};\n"
        + f"controls {{ inet 127.0.0.1 port {control_port} allow {{ 127.0.0.1; }} "
        + 'keys { "rndc-secondary"; }; };\n'
        + 'zone "example.test" {\n'
        + "\ttype secondary;\n"
        + f'\tprimaries {{ {primary.address} key "{key_name}"; }};\n'
        + f'\tfile "{directory}/example.test.db";\n'
        + f"\tallow-notify {{ {primary.address}; }};\n"
        + f"\tallow-transfer {{ {allowed_client}; }};\n"
        + "};\n"
    )
    write_rndc_conf(directory / "rndc.conf", rndc_key, control_port)
    return conf


def test_tsig_transfer_notify_and_refused_axfr(
    fleet: NamedFleet, primary: PrimaryServer, tmp_path: Path
) -> None:
    # The primary itself only hands the zone out with its TSIG key.
    with pytest.raises(dns.xfr.TransferError):
        axfr(primary.address, "example.test.")
    assert axfr(primary.address, "example.test.", key=primary.key).get_soa().serial == 1

    address = fleet.address()
    allowed_client = fleet.address()
    conf = hand_written_secondary(tmp_path / "secondary", primary, address, allowed_client)
    secondary = fleet.start_secondary(conf, address, rndc_conf=conf.parent / "rndc.conf")

    # Initial transfer, signed with the key (the primary refuses unsigned ones, above).
    secondary.wait_for_serial("example.test.", 1)
    answer = secondary.query("host0.example.test.", "A")
    assert answer.answer[0].to_text().endswith("198.18.0.1")

    # A change at the primary, announced by NOTIFY, reaches the secondary.
    serial = primary.set_record("example.test.", "host0", "A", "203.0.113.7")
    assert serial == 2
    primary.notify(secondary, "example.test.")
    secondary.wait_for_serial("example.test.", 2)
    answer = secondary.query("host0.example.test.", "A")
    assert answer.answer[0].rdtype == dns.rdatatype.A
    assert answer.answer[0][0].to_text() == "203.0.113.7"
    assert primary.outgoing_transfers("example.test.")[-1] == ("IXFR", 2)

    # The secondary refuses AXFR to an address not on its ACL, serves the listed one.
    with pytest.raises(dns.xfr.TransferError):
        axfr(secondary.address, "example.test.", source=fleet.address())
    copy = axfr(secondary.address, "example.test.", source=allowed_client)
    assert copy.get_soa().serial == 2
