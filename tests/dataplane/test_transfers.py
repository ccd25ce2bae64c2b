"""Rendered secondaries against a real primary: transfers, NOTIFY, ACLs (issues 4, 15).

Every scenario runs once with named and once with knotd as the secondary (the
`engine` fixture), from the same manifests through `secondary-dns render`.
"""

from __future__ import annotations

import re
import time

import dns.rcode
import dns.tsig
import dns.xfr
import pytest

from localcluster.named import NamedFleet, PrimaryServer, TsigCredentials, axfr, send_notify
from tests.dataplane.engines import Engine
from tests.dataplane.rendered import ZONE, ExampleSecondary, secret_manifest

# How a client sees a refused transfer: an error rcode, or a TSIG error (BADKEY).
REFUSED = (dns.xfr.TransferError, dns.tsig.PeerError)


def test_initial_axfr_with_tsig_then_notify_brings_ixfr(
    primary: PrimaryServer, example_secondary: ExampleSecondary, engine: Engine
) -> None:
    secondary = example_secondary(engine=engine.name)
    assert "left out" not in secondary.stderr
    named = secondary.process
    # The first copy came by AXFR, signed with the Secret's key (the primary
    # refuses unsigned transfers, see the harness test).
    assert primary.outgoing_transfers(ZONE) == [("AXFR", 1)]
    assert re.search(r"AXFR started: TSIG transfer-key\.example", primary.log())

    serial = primary.set_record(ZONE, "www", "A", "192.0.2.80")
    primary.notify(named, ZONE)
    named.wait_for_serial(ZONE, serial)
    # RFC 1995: only the difference travelled.
    assert primary.outgoing_transfers(ZONE) == [("AXFR", 1), ("IXFR", serial)]
    answer = named.query("www.example.test.", "A")
    assert [rr.to_text() for rr in answer.answer[0]] == ["192.0.2.80"]
    # The copy is kept on disk as text, for restarts (named writes the latest
    # change to its journal first, knotd to the file at once).
    assert "SOA" in (secondary.data_dir / "example.test.db").read_text()


def test_notify_from_unlisted_address_without_key_is_ignored(
    fleet: NamedFleet, primary: PrimaryServer, example_secondary: ExampleSecondary, engine: Engine
) -> None:
    notifier = fleet.address()  # listed in notify.allowFrom
    stranger = fleet.address()  # listed nowhere
    secondary = example_secondary(engine=engine.name, notify_allow_from=[f"{notifier}/32"])
    named = secondary.process
    serial = primary.set_record(ZONE, "www", "A", "192.0.2.80")

    response = send_notify(named, ZONE, source=stranger)
    # Refused (named) or NOTAUTH (knotd): either way an error, and no refresh.
    assert response is not None and response.rcode() in (dns.rcode.REFUSED, dns.rcode.NOTAUTH)
    if engine.notify_refused is not None:
        named.wait_for_log(engine.pattern(engine.notify_refused, ZONE, stranger))
    # No refresh was started: the secondary neither asked the primary nor moved on.
    time.sleep(1)
    assert named.serial(ZONE) == 1
    assert primary.outgoing_transfers(ZONE) == [("AXFR", 1)]

    # The same NOTIFY from the listed source is honoured, and so is one signed
    # with the operator's relay key from anywhere.
    response = send_notify(named, ZONE, source=notifier)
    assert response is not None and response.rcode() == dns.rcode.NOERROR
    named.wait_for_serial(ZONE, serial)
    serial = primary.set_record(ZONE, "www", "A", "192.0.2.81")
    response = send_notify(named, ZONE, source=stranger, key=secondary.relay_key())
    assert response is not None and response.rcode() == dns.rcode.NOERROR
    named.wait_for_serial(ZONE, serial)


def test_transfers_from_the_secondary_follow_the_zone_acl(
    fleet: NamedFleet, primary: PrimaryServer, example_secondary: ExampleSecondary, engine: Engine
) -> None:
    downstream_key = TsigCredentials.generate("downstream.example.")
    site_key = TsigCredentials.generate("site.example.")
    site_client = fleet.address()
    other_client = fleet.address()
    secondary = example_secondary(
        engine=engine.name,
        allow_transfer=[
            # Address AND key: both must match.
            {"cidr": f"{site_client}/32", "tsigKeySecretRef": {"name": "site"}},
            # Key alone: from anywhere.
            {"tsigKeySecretRef": {"name": "downstream"}},
        ],
        extra=[secret_manifest(downstream_key, "downstream"), secret_manifest(site_key, "site")],
    )
    named = secondary.process
    serial = primary.set_record(ZONE, "www", "A", "192.0.2.80")
    primary.notify(named, ZONE)
    named.wait_for_serial(ZONE, serial)

    address = named.address
    # Unlisted client, no key: AXFR and IXFR refused.
    for kind in ("AXFR", "IXFR"):
        with pytest.raises(REFUSED):
            axfr(address, ZONE, rdtype=kind, serial=1, source=other_client)
    # The site key from outside the site's address: refused too (a nested ACL in
    # BIND; knotd answers BADKEY, the key not being allowed from there).
    with pytest.raises(REFUSED):
        axfr(address, ZONE, key=site_key, source=other_client)
    # The site address without its key: refused.
    with pytest.raises(REFUSED):
        axfr(address, ZONE, source=site_client)
    # Allowed: the site address with the site key; the downstream key from anywhere.
    assert axfr(address, ZONE, key=site_key, source=site_client).get_soa().serial == serial
    for kind in ("AXFR", "IXFR"):
        copy = axfr(address, ZONE, rdtype=kind, serial=1, key=downstream_key, source=other_client)
        assert copy.get_soa().serial == serial
    assert named.wait_for_log(engine.pattern(engine.outgoing_ixfr_with_key, address=other_client))
