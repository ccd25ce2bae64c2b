"""The NOTIFY relay in process, between a real BIND primary and rendered BIND secondaries.

The primary notifies only the relay (`notify explicit` + `also-notify`), the
secondaries accept NOTIFY only from the primary's address or signed with their
own relay key, and the zone's SOA refresh is a day: a secondary that serves a new
serial within seconds got there by the relay's NOTIFY and nothing else.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.tsig
import pytest
from prometheus_client import REGISTRY

from localcluster.named import NamedFleet, NamedProcess, PrimaryServer, TsigCredentials, make_zone
from localcluster.waiting import wait_for
from secondary_dns.api import ObjectRef, TsigKey
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.relay import NotifyRelay, RelayRoute, RelayThread
from secondary_dns.routes import MonitoredZone, relay_routes
from secondary_dns.status.serial import ReplicaTarget
from tests.dataplane.rendered import ZONE as ZONE_TEXT
from tests.dataplane.rendered import RenderedSecondary, start_example_secondary

ZONE = dns.name.from_text(ZONE_TEXT)
ZONE_REF = ObjectRef("dns", "example")
DAY = 86400


@dataclass
class Setup:
    relay: NotifyRelay
    relay_address: str
    primary: PrimaryServer
    primary_key: TsigKey
    secondaries: list[RenderedSecondary]

    @property
    def named(self) -> list[NamedProcess]:
        return [s.process for s in self.secondaries]

    def route(self, *, allow_primary: bool = True) -> RelayRoute:
        sources = [ipaddress.ip_network(f"{self.primary.address}/32")] if allow_primary else []
        return RelayRoute(
            ref=ZONE_REF,
            zone=ZONE,
            allowed_sources=tuple(sources),
            allowed_keys=(self.primary_key,),
            targets=tuple(
                (ProbeTarget(s.process.address), as_key(s.relay_key())) for s in self.secondaries
            ),
        )


def as_key(credentials: TsigCredentials) -> TsigKey:
    return TsigKey(credentials.name, credentials.algorithm, credentials.secret)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def setup(fleet: NamedFleet, transfer_key: TsigCredentials, tmp_path: Path) -> Iterator[Setup]:
    relay_address = fleet.address()
    # In a thread with an event loop of its own, as the operator runs it.
    relay_thread = RelayThread(NotifyRelay(fanout_timeout=0.5, fanout_attempts=2))
    relay_thread.start(relay_address, 0)
    relay = relay_thread.relay
    try:
        primary = PrimaryServer(
            tmp_path / "primary",
            [make_zone(ZONE, serial=1, refresh=DAY, retry=DAY, expire=7 * DAY)],
            transfer_key,
            address=fleet.address(),
            # The primary notifies the relay and only the relay.
            also_notify=[(relay_address, relay.bound_port)],
        )
        # The primary notifies at start-up: route the zone (to no replica yet) first.
        relay.set_routes(
            [RelayRoute(ZONE_REF, ZONE, (ipaddress.ip_network(f"{primary.address}/32"),), (), ())]
        )
        fleet.processes.append(primary)
        primary.start()
        secondaries = [
            start_example_secondary(fleet, tmp_path / f"edge-{i}", [primary], transfer_key)
            for i in range(3)
        ]
        result = Setup(relay, relay_address, primary, as_key(transfer_key), secondaries)
        # From another thread than the relay's loop, as the operator does.
        relay.set_routes([result.route()])
        relay_thread.call(relay.wait_idle())
        yield result
    finally:
        relay_thread.stop()


def notify_relay(
    setup: Setup, source: str, *, key: TsigKey | None = None, timeout: float = 1.0
) -> dns.message.Message | None:
    request = dns.message.make_query(ZONE, "SOA")
    request.flags = dns.flags.AA
    request.set_opcode(dns.opcode.NOTIFY)
    if key is not None:
        request.use_tsig(key.to_dnspython())
    try:
        return dns.query.udp(
            request,
            setup.relay_address,
            port=setup.relay.bound_port,
            timeout=timeout,
            source=source,
        )
    except dns.exception.Timeout:
        return None


def log_marks(named: list[NamedProcess]) -> list[int]:
    return [len(n.log()) for n in named]


def logs_since(named: list[NamedProcess], marks: list[int]) -> list[str]:
    return [n.log()[mark:] for n, mark in zip(named, marks, strict=True)]


def test_serial_bump_reaches_every_secondary_through_the_relay(setup: Setup) -> None:
    relayed_before = counter("secondarydns_notify_relayed_total")
    marks = log_marks(setup.named)
    started = time.monotonic()
    serial = setup.primary.set_record(ZONE, "www", "A", "192.0.2.80")
    for named in setup.named:
        named.wait_for_serial(ZONE, serial, deadline=15)
    elapsed = time.monotonic() - started
    print(f"serial {serial}: primary reload to 3/3 secondaries via the relay in {elapsed:.2f}s")
    # The primary's own NOTIFY was accepted by its address, and every secondary
    # got a NOTIFY signed with its relay key (the refresh timer is a day).
    assert setup.relay.accepted >= 2  # the start-up NOTIFY and this one
    assert setup.relay.rejected == {}
    wait_for("3 fan-outs", lambda: setup.relay.relayed >= 3, 10)
    assert counter("secondarydns_notify_relayed_total") - relayed_before >= 3
    for text in logs_since(setup.named, marks):
        assert "received notify for zone 'example.test': TSIG 'secondary-dns-relay'" in text, text

    # The answer the primary got is RFC 1996 §4.7's: same id, QR, AA, NOTIFY.
    response = notify_relay(setup, setup.primary.address)
    assert response is not None
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.QR and response.flags & dns.flags.AA
    assert response.opcode() == dns.opcode.NOTIFY


def test_notify_from_unlisted_addresses_is_dropped_and_nothing_refreshes(
    setup: Setup, fleet: NamedFleet
) -> None:
    # The route no longer lists the primary: its own NOTIFYs now come from an
    # unlisted address.
    setup.relay.set_routes([setup.route(allow_primary=False)])
    accepted_before, relayed_before = setup.relay.accepted, setup.relay.relayed
    rejected_before = counter("secondarydns_notify_rejected_total", reason="unknown_source")
    marks = log_marks(setup.named)
    serial = setup.primary.set_record(ZONE, "www", "A", "192.0.2.81")
    wait_for(
        "the primary's NOTIFY to be dropped",
        lambda: setup.relay.rejected["unknown_source"] >= 1,
        10,
    )
    stranger = fleet.address()
    assert notify_relay(setup, stranger) is None  # dropped: no answer at all
    assert setup.relay.rejected["unknown_source"] >= 2
    assert counter("secondarydns_notify_rejected_total", reason="unknown_source") >= (
        rejected_before + 2
    )
    time.sleep(2)
    assert (setup.relay.accepted, setup.relay.relayed) == (accepted_before, relayed_before)
    for named, text in zip(setup.named, logs_since(setup.named, marks), strict=True):
        assert named.serial(ZONE) == 1
        assert "notify" not in text and "Transfer started" not in text, text

    # Listed again (routes change while running): the next NOTIFY goes through.
    setup.relay.set_routes([setup.route()])
    response = notify_relay(setup, setup.primary.address)
    assert response is not None and response.rcode() == dns.rcode.NOERROR
    for named in setup.named:
        named.wait_for_serial(ZONE, serial, deadline=15)


def test_notify_with_a_wrong_key_is_dropped_even_from_the_primary(
    setup: Setup, fleet: NamedFleet
) -> None:
    # Same key name, another secret: a forgery, or a key rotated on one side only.
    forged = TsigKey(setup.primary_key.name, setup.primary_key.algorithm, os.urandom(32))
    bad_before = counter("secondarydns_notify_rejected_total", reason="bad_tsig")
    accepted_before, relayed_before = setup.relay.accepted, setup.relay.relayed
    marks = log_marks(setup.named)
    for source in (setup.primary.address, fleet.address()):
        assert notify_relay(setup, source, key=forged) is None
    assert setup.relay.rejected["bad_tsig"] == 2
    assert counter("secondarydns_notify_rejected_total", reason="bad_tsig") == bad_before + 2
    time.sleep(2)
    assert (setup.relay.accepted, setup.relay.relayed) == (accepted_before, relayed_before)
    for text in logs_since(setup.named, marks):
        assert "notify" not in text, text
    # The primary's real key is accepted from anywhere, answered signed, and fanned out.
    response = notify_relay(setup, fleet.address(), key=setup.primary_key)
    assert response is not None and response.had_tsig
    assert response.rcode() == dns.rcode.NOERROR
    wait_for("fan-out", lambda: setup.relay.relayed >= relayed_before + 3, 10)
    for text in logs_since(setup.named, marks):
        assert "received notify for zone 'example.test': TSIG 'secondary-dns-relay'" in text


def test_malformed_packets_are_counted_and_the_relay_keeps_working(setup: Setup) -> None:
    malformed_before = counter("secondarydns_notify_rejected_total", reason="malformed")
    port = setup.relay.bound_port
    garbage = [os.urandom(n) for n in (0, 1, 11, 12, 40, 512)] + [b"\x00" * 12 + b"\xff" * 30]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((setup.primary.address, 0))  # even from the primary's own address
        udp.settimeout(0.5)
        for packet in garbage:
            udp.sendto(packet, (setup.relay_address, port))
        with pytest.raises(TimeoutError):
            udp.recvfrom(65535)  # no response to garbage
    for packet in garbage[1:]:
        with socket.create_connection((setup.relay_address, port), timeout=2) as tcp:
            tcp.sendall(len(packet).to_bytes(2, "big") + packet)
            tcp.settimeout(2)
            assert tcp.recv(65535) == b""  # closed without an answer
    # A message cut short by the peer closing the connection.
    with socket.create_connection((setup.relay_address, port), timeout=2) as tcp:
        tcp.sendall((300).to_bytes(2, "big") + b"\x01" * 20)

    # Random bytes may by chance parse as a (non-NOTIFY) message; either way dropped.
    def dropped() -> bool:
        count = setup.relay.rejected["malformed"] + setup.relay.rejected["not_notify"]
        return count >= 2 * len(garbage)

    wait_for("every malformed packet to be counted", dropped, 10)
    assert counter("secondarydns_notify_rejected_total", reason="malformed") > malformed_before

    # Still working, over UDP (the primary's NOTIFY) and TCP.
    serial = setup.primary.set_record(ZONE, "www", "A", "192.0.2.83")
    for named in setup.named:
        named.wait_for_serial(ZONE, serial, deadline=15)
    request = dns.message.make_query(ZONE, "SOA")
    request.flags = dns.flags.AA
    request.set_opcode(dns.opcode.NOTIFY)
    response = dns.query.tcp(
        request, setup.relay_address, port=port, timeout=2, source=setup.primary.address
    )
    assert response.rcode() == dns.rcode.NOERROR and response.id == request.id


def test_one_zone_name_for_two_tenants_reaches_only_each_tenants_secondaries(
    fleet: NamedFleet, transfer_key: TsigCredentials, tmp_path: Path
) -> None:
    """example.test in two namespaces with different primaries (issue 13, item 4).

    Each tenant's secondaries are rendered by the project from that tenant's
    Zone; the relay's routes come from the same code the operator runs
    (`routes.relay_routes`). A serial bump at one tenant's primary must
    reach that tenant's secondaries and not one NOTIFY the other's.
    """
    relay_address = fleet.address()
    relay_thread = RelayThread(NotifyRelay(fanout_timeout=0.5, fanout_attempts=2))
    relay_thread.start(relay_address, 0)
    relay = relay_thread.relay
    try:
        primaries = {
            tenant: PrimaryServer(
                tmp_path / f"primary-{tenant}",
                [make_zone(ZONE, serial=serial, refresh=DAY, retry=DAY, expire=7 * DAY)],
                transfer_key,
                address=fleet.address(),
                also_notify=[(relay_address, relay.bound_port)],
            )
            for tenant, serial in (("tenant-a", 1), ("tenant-b", 100))
        }

        def zones(replicas: dict[str, list[RenderedSecondary]]) -> list[MonitoredZone]:
            return [
                MonitoredZone(
                    ref=ObjectRef(tenant, "example"),
                    name=ZONE,
                    primaries=(ProbeTarget(primary.address, primary.port),),
                    primary_keys=(),
                    notify_sources=(ipaddress.ip_network(f"{primary.address}/32"),),
                    replicas=tuple(
                        (
                            ReplicaTarget(f"edge-{index}", tenant, None, s.process.address),
                            as_key(s.relay_key()),
                        )
                        for index, s in enumerate(replicas.get(tenant, []))
                    ),
                )
                for tenant, primary in primaries.items()
            ]

        relay.set_routes(relay_routes(zones({})))
        for primary in primaries.values():
            fleet.processes.append(primary)
            primary.start()
        # Each tenant's Zone and secondaries, rendered by the project; each
        # returns once it serves its primary's serial (1 and 100).
        secondaries = {
            tenant: [
                start_example_secondary(
                    fleet, tmp_path / f"{tenant}-edge-{i}", [primary], transfer_key
                )
                for i in range(2)
            ]
            for tenant, primary in primaries.items()
        }
        relay.set_routes(relay_routes(zones(secondaries)))
        relay_thread.call(relay.wait_idle())

        for tenant, other in (("tenant-a", "tenant-b"), ("tenant-b", "tenant-a")):
            mine = [s.process for s in secondaries[tenant]]
            theirs = [s.process for s in secondaries[other]]
            their_serial = theirs[0].serial(ZONE)
            marks = log_marks(theirs)
            serial = primaries[tenant].set_record(ZONE, "www", "A", "192.0.2.90")
            for named in mine:
                named.wait_for_serial(ZONE, serial, deadline=15)
            relay_thread.call(relay.wait_idle())
            time.sleep(1)
            print(f"{tenant}: serial {serial} reached its 2 secondaries; {other} heard nothing")
            for named, text in zip(theirs, logs_since(theirs, marks), strict=True):
                assert named.serial(ZONE) == their_serial
                assert "notify" not in text, text
        assert relay.rejected == {}
    finally:
        relay_thread.stop()
