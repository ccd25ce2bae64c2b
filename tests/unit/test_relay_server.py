"""The NOTIFY relay on loopback: routes per Zone object, fan-out, TCP limits, its log.

Real sockets on 127.0.0.0/8 (every address of it is local on Linux, so a test
can send from a "primary" and from "strangers"); the replicas are small UDP
responders that record every NOTIFY they hear and answer it, signed, as a
secondary would.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import socket
import time
import unittest.mock
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import dns.asyncquery
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import pytest

from secondary_dns.api import ObjectRef, TsigKey
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.notify import make_notify
from secondary_dns.dns.relay import NotifyRelay
from secondary_dns.routes import MonitoredZone, relay_routes
from secondary_dns.status.serial import ReplicaTarget

ZONE = dns.name.from_text("example.com.")
LOCAL = "127.0.0.1"


def tsig_key(name: str) -> TsigKey:
    return TsigKey(dns.name.from_text(name), dns.tsig.HMAC_SHA256, secrets.token_bytes(32))


@dataclass
class Heard:
    zone: dns.name.Name
    serial: int | None
    key_name: dns.name.Name | None


class FakeReplica(asyncio.DatagramProtocol):
    """A secondary's NOTIFY handling: verify the relay key, record, answer NOERROR."""

    def __init__(self, key: TsigKey, delay: float = 0.0) -> None:
        self.key = key
        self.delay = delay
        self.heard: list[Heard] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        message = dns.message.from_wire(data, keyring={self.key.name: self.key.to_dnspython()})
        serial = None
        for rrset in message.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                serial = int(next(iter(rrset)).serial)
        if not any(h.serial == serial and h.zone == message.question[0].name for h in self.heard):
            self.heard.append(Heard(message.question[0].name, serial, message.keyname))
        response = dns.message.make_response(message).to_wire()
        assert self.transport is not None
        asyncio.get_running_loop().call_later(self.delay, self.transport.sendto, response, addr)

    @property
    def serials(self) -> list[int | None]:
        return [h.serial for h in self.heard]


@dataclass
class Replicas:
    key: TsigKey
    protocols: list[FakeReplica] = field(default_factory=list)
    targets: list[ReplicaTarget] = field(default_factory=list)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)

    @property
    def heard(self) -> list[Heard]:
        return [h for p in self.protocols for h in p.heard]


async def start_replicas(server: str, count: int, *, delay: float = 0.0) -> Replicas:
    replicas = Replicas(tsig_key("secondary-dns-relay."))
    loop = asyncio.get_running_loop()
    for index in range(count):
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: FakeReplica(replicas.key, delay), local_addr=(LOCAL, 0)
        )
        port = int(transport.get_extra_info("sockname")[1])
        replicas.protocols.append(protocol)
        replicas.transports.append(transport)
        replicas.targets.append(ReplicaTarget(f"{server}-{index}", server, None, LOCAL, port))
    return replicas


def monitored(
    namespace: str,
    primary: str,
    replicas: Replicas,
    keys: Iterable[TsigKey] = (),
    zone: dns.name.Name = ZONE,
) -> MonitoredZone:
    return MonitoredZone(
        ref=ObjectRef(namespace, "example-com"),
        name=zone,
        primaries=(ProbeTarget(primary),),
        primary_keys=tuple(keys),
        notify_sources=(ipaddress.ip_network(f"{primary}/32"),),
        replicas=tuple((target, replicas.key) for target in replicas.targets),
    )


@contextlib.asynccontextmanager
async def running_relay(**options: Any) -> AsyncIterator[NotifyRelay]:
    options.setdefault("fanout_timeout", 2.0)
    options.setdefault("fanout_attempts", 1)
    relay = NotifyRelay(**options)
    await relay.start(LOCAL, 0)
    try:
        yield relay
    finally:
        await relay.stop()


async def notify(
    relay: NotifyRelay,
    source: str,
    *,
    serial: int | None = None,
    key: TsigKey | None = None,
    zone: dns.name.Name = ZONE,
    tcp: bool = False,
    timeout: float = 2.0,
) -> dns.message.Message | None:
    """A NOTIFY as a primary sends it, from `source`; the answer, or None if none came."""
    request = make_notify(zone, key=key, soa_serial=serial)
    query = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    try:
        return await query(request, LOCAL, port=relay.bound_port, source=source, timeout=timeout)
    except (dns.exception.Timeout, EOFError, ConnectionError):
        return None


async def until(condition: Any, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- tenants (issue 13, item 4)


def test_one_zone_name_in_two_namespaces_reaches_only_its_own_replicas() -> None:
    """example.com for two tenants: each primary's NOTIFY reaches its tenant's replicas only."""

    async def scenario() -> None:
        # Both tenants call their key transfer-key, with different secrets.
        key_a, key_b = tsig_key("transfer-key."), tsig_key("transfer-key.")
        tenant_a = await start_replicas("edge-a", 2)
        tenant_b = await start_replicas("edge-b", 2)
        async with running_relay() as relay:
            relay.set_routes(
                relay_routes(
                    [
                        monitored("tenant-a", "127.0.0.11", tenant_a, [key_a]),
                        monitored("tenant-b", "127.0.0.12", tenant_b, [key_b]),
                    ]
                )
            )
            # Tenant A's primary, by address.
            answer = await notify(relay, "127.0.0.11", serial=10)
            assert answer is not None and answer.rcode() == dns.rcode.NOERROR
            await relay.wait_idle()
            assert [h.serial for h in tenant_a.heard] == [10, 10]
            assert tenant_b.heard == []
            # Tenant B's primary, by address.
            answer = await notify(relay, "127.0.0.12", serial=20)
            assert answer is not None and answer.rcode() == dns.rcode.NOERROR
            await relay.wait_idle()
            assert [h.serial for h in tenant_b.heard] == [20, 20]
            assert [h.serial for h in tenant_a.heard] == [10, 10]
            # Tenant B's key from anywhere: B's replicas only, though A has a key of that name.
            answer = await notify(relay, "127.0.0.99", serial=21, key=key_b)
            assert answer is not None and answer.rcode() == dns.rcode.NOERROR and answer.had_tsig
            await relay.wait_idle()
            assert sorted(h.serial or 0 for h in tenant_b.heard) == [20, 20, 21, 21]
            assert [h.serial for h in tenant_a.heard] == [10, 10]
            # A stranger is nobody's primary.
            assert await notify(relay, "127.0.0.99", serial=30, timeout=0.3) is None
            await relay.wait_idle()
            assert len(tenant_a.heard) == 2 and len(tenant_b.heard) == 4
        for transport in tenant_a.transports + tenant_b.transports:
            transport.close()

    asyncio.run(scenario())


def test_a_notify_allowed_by_both_tenants_reaches_both() -> None:
    """Two tenants secondaries of one primary: each Zone object accepts it, both fan out."""

    async def scenario() -> None:
        tenant_a = await start_replicas("edge-a", 1)
        tenant_b = await start_replicas("edge-b", 1)
        async with running_relay() as relay:
            relay.set_routes(
                relay_routes(
                    [
                        monitored("tenant-a", "127.0.0.11", tenant_a),
                        monitored("tenant-b", "127.0.0.11", tenant_b),
                    ]
                )
            )
            answer = await notify(relay, "127.0.0.11", serial=5)
            assert answer is not None and answer.rcode() == dns.rcode.NOERROR
            await relay.wait_idle()
            assert [h.serial for h in tenant_a.heard] == [5]
            assert [h.serial for h in tenant_b.heard] == [5]
        for transport in tenant_a.transports + tenant_b.transports:
            transport.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------- coalescing (issue 13, item 7)


def test_coalesced_notifies_announce_the_highest_serial() -> None:
    """100, then 200 and 150 while 100 is in flight: the next round carries 200 (RFC 1982)."""

    async def scenario() -> None:
        # The replica answers slowly, so the later NOTIFYs arrive during the fan-out.
        replicas = await start_replicas("edge", 1, delay=0.5)
        async with running_relay() as relay:
            relay.set_routes(relay_routes([monitored("dns", "127.0.0.11", replicas)]))
            for serial in (100, 200, 150):
                answer = await notify(relay, "127.0.0.11", serial=serial)
                assert answer is not None and answer.rcode() == dns.rcode.NOERROR
            await relay.wait_idle()
            assert replicas.protocols[0].serials == [100, 200]
            # Across the 2^32 wrap: 4294967290 then 5 (5 is ahead by RFC 1982) then 4294967295.
            for serial in (4294967290, 5, 4294967295):
                await notify(relay, "127.0.0.11", serial=serial)
            await relay.wait_idle()
            assert replicas.protocols[0].serials[2:] == [4294967290, 5]
        for transport in replicas.transports:
            transport.close()

    asyncio.run(scenario())


def test_the_fan_out_is_reported_once_every_replica_has_answered() -> None:
    """The serial monitor probes the zone the moment its replicas acknowledged the NOTIFY."""

    async def scenario() -> None:
        replicas = await start_replicas("edge", 3, delay=0.2)
        reported: list[tuple[ObjectRef, int | None, int]] = []
        running: list[NotifyRelay] = []

        def fanned_out(route: Any, serial: int | None) -> None:
            # How many replicas had answered by then (the relay counts answered NOTIFYs).
            reported.append((route.ref, serial, running[0].relayed))

        async with running_relay(on_fanned_out=fanned_out) as relay:
            running.append(relay)
            relay.set_routes(relay_routes([monitored("dns", "127.0.0.11", replicas)]))
            await notify(relay, "127.0.0.11", serial=42)
            await relay.wait_idle()
        # Once, after all three answered (each answers 0.2 s late), with the serial.
        assert reported == [(ObjectRef("dns", "example-com"), 42, 3)]
        for transport in replicas.transports:
            transport.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------- TCP (issue 13, item 2)


def _idle_connections(port: int, sources: Iterable[str], each: int) -> list[socket.socket]:
    """Connections that send nothing, as a client that went away would leave them."""
    opened = []
    for source in sources:
        for _ in range(each):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((source, 0))
            sock.settimeout(5)
            sock.connect((LOCAL, port))
            opened.append(sock)
    return opened


def primary_tcp_notify_behind(sources: list[str], each: int) -> float:
    """Seconds until a primary's TCP NOTIFY is answered while `sources` hold idle connections."""

    async def scenario() -> float:
        replicas = await start_replicas("edge", 1)
        async with running_relay() as relay:
            relay.set_routes(relay_routes([monitored("dns", "127.0.0.11", replicas)]))
            idle = await asyncio.to_thread(_idle_connections, relay.bound_port, sources, each)
            try:
                await asyncio.sleep(0.2)  # the relay has accepted (or refused) them all
                started = time.monotonic()
                answer = await notify(relay, "127.0.0.11", serial=7, tcp=True)
                assert answer is not None and answer.rcode() == dns.rcode.NOERROR
                return time.monotonic() - started
            finally:
                for sock in idle:
                    sock.close()
                for transport in replicas.transports:
                    transport.close()

    return asyncio.run(scenario())


def test_idle_tcp_connections_of_one_source_do_not_block_a_primary() -> None:
    waited = primary_tcp_notify_behind(["127.0.0.66"], 64)
    print(f"TCP NOTIFY with 64 idle connections from one source: answered in {waited:.3f}s")


def test_many_sources_filling_every_tcp_slot_do_not_lock_out_a_primary() -> None:
    primary_tcp_notify_behind([f"127.0.1.{n}" for n in range(1, 21)], 4)


def test_a_connection_that_sends_nothing_is_closed() -> None:
    async def scenario() -> None:
        async with running_relay() as relay:
            (sock,) = await asyncio.to_thread(
                _idle_connections, relay.bound_port, ["127.0.0.66"], 1
            )
            with sock:
                sock.settimeout(30)
                started = time.monotonic()
                assert await asyncio.to_thread(sock.recv, 1) == b""
                print(f"an idle TCP connection was closed after {time.monotonic() - started:.1f}s")

    asyncio.run(scenario())


def test_an_oversized_tcp_message_is_refused_on_its_length_prefix() -> None:
    async def scenario() -> None:
        async with running_relay() as relay:
            relay.set_routes(relay_routes([monitored("dns", "127.0.0.11", Replicas(RELAY))]))

            def send() -> bytes:
                with socket.create_connection((LOCAL, relay.bound_port), timeout=10) as sock:
                    # Announce 60 000 octets and send only 100: the relay must not wait for more.
                    sock.sendall((60_000).to_bytes(2, "big") + b"\x00" * 100)
                    return sock.recv(100)

            assert await asyncio.to_thread(send) == b""
            await until(lambda: relay.rejected["malformed"] >= 1, 5)

    asyncio.run(scenario())


RELAY = tsig_key("secondary-dns-relay.")


# ---------------------------------------------------------------- the rejection log


def test_rejections_are_logged_as_periodic_summaries(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running_relay() as relay:
            relay.set_routes(relay_routes([monitored("dns", "127.0.0.11", Replicas(RELAY))]))
            wire = make_notify(ZONE).to_wire()

            def send() -> None:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.99", 0))
                    for index in range(300):
                        udp.sendto(wire, (LOCAL, relay.bound_port))
                        udp.sendto(b"\x00" * 5, (LOCAL, relay.bound_port))
                        if index % 10 == 9:
                            time.sleep(0.01)  # within the socket's receive buffer

            await asyncio.to_thread(send)
            await until(lambda: sum(relay.rejected.values()) >= 600)

    with caplog.at_level(logging.INFO, logger="secondary_dns.dns.relay"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    print(f"600 rejected messages, {len(lines)} log lines: {lines[:2]}")
    assert 1 <= len(lines) <= 3
    # The summaries count them all, by reason, with the source that sent most.
    counted: dict[str, int] = {}
    for line in lines:
        for reason, count in re.findall(r"(\w+)=(\d+)", line):
            counted[reason] = counted.get(reason, 0) + int(count)
    assert counted.get("unknown_source") == 300 and counted.get("malformed") == 300, lines
    assert "127.0.0.99" in " ".join(lines)


# ---------------------------------------------------------------- TSIG time and replays (item 8)


def signed_wire(key: TsigKey, *, serial: int, when: float | None = None, fudge: int = 300) -> bytes:
    """A NOTIFY signed with `key` as if at `when` (RFC 8945 §4.2 Time Signed)."""
    message = make_notify(ZONE, soa_serial=serial)
    message.use_tsig(key.to_dnspython(), fudge=fudge)
    if when is None:
        return message.to_wire()
    with unittest.mock.patch("dns.message.time.time", return_value=when):
        return message.to_wire()


async def send_raw(relay: NotifyRelay, wire: bytes, source: str, timeout: float) -> bytes | None:
    def exchange() -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((source, 0))
            udp.settimeout(timeout)
            udp.sendto(wire, (LOCAL, relay.bound_port))
            try:
                return udp.recv(65535)
            except TimeoutError:
                return None

    return await asyncio.to_thread(exchange)


def test_a_17_hour_old_signature_with_a_huge_fudge_is_refused() -> None:
    """RFC 8945 §5.2.3 checks |now - time signed| against the sender's fudge; the relay caps it."""

    async def scenario() -> None:
        key = tsig_key("transfer-key.")
        replicas = await start_replicas("edge", 1)
        async with running_relay() as relay:
            relay.set_routes(relay_routes([monitored("dns", "127.0.0.11", replicas, [key])]))
            old = signed_wire(key, serial=3, when=time.time() - 17 * 3600, fudge=65535)
            assert await send_raw(relay, old, "127.0.0.99", 0.5) is None
            assert relay.rejected["bad_tsig"] == 1
            # Within the cap it is accepted, also from an address nobody listed.
            recent = signed_wire(key, serial=4, when=time.time() - 200, fudge=65535)
            assert await send_raw(relay, recent, "127.0.0.99", 2) is not None
            await relay.wait_idle()
            assert replicas.protocols[0].serials == [4]
        for transport in replicas.transports:
            transport.close()

    asyncio.run(scenario())


def test_a_replayed_signed_notify_is_not_fanned_out_again() -> None:
    async def scenario() -> None:
        key = tsig_key("transfer-key.")
        replicas = await start_replicas("edge", 1)
        async with running_relay() as relay:
            relay.set_routes(relay_routes([monitored("dns", "127.0.0.11", replicas, [key])]))
            wire = signed_wire(key, serial=9)
            assert await send_raw(relay, wire, "127.0.0.11", 2) is not None
            await relay.wait_idle()
            # The primary retransmits the same message (its answer was lost, RFC 1996
            # §3.6): answered again, but the replicas already heard of it.
            assert await send_raw(relay, wire, "127.0.0.11", 2) is not None
            # Someone else replays it: dropped without an answer.
            assert await send_raw(relay, wire, "127.0.0.99", 0.5) is None
            await relay.wait_idle()
            assert len(replicas.protocols[0].heard) == 1
            assert relay.rejected["replayed"] == 1
        for transport in replicas.transports:
            transport.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------- the raw header (item 2)


def test_a_notify_with_more_records_than_a_notify_has_is_not_answered() -> None:
    async def scenario() -> None:
        replicas = await start_replicas("edge", 1)
        async with running_relay() as relay:
            relay.set_routes(relay_routes([monitored("dns", "127.0.0.11", replicas)]))
            message = make_notify(ZONE, soa_serial=1)
            for serial in (2, 3):
                message.answer.append(make_notify(ZONE, soa_serial=serial).answer[0])
            stuffed = message.to_wire()
            assert await send_raw(relay, stuffed, "127.0.0.11", 0.5) is None
            assert relay.rejected["not_notify"] == 1
            assert replicas.heard == []
        for transport in replicas.transports:
            transport.close()

    asyncio.run(scenario())
