"""The propagation benchmark's pollers (hack/localcluster/serial_watch.py) on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from localcluster.serial_watch import poll_serials, soa_serial_of

ORIGIN = dns.name.from_text("bench.example.")


def answer(query: dns.message.Message, serial: int, extra_txt: bool = False) -> bytes:
    response = dns.message.make_response(query)
    soa = dns.rdata.from_text(
        dns.rdataclass.IN,
        dns.rdatatype.SOA,
        f"ns.bench.example. hostmaster.bench.example. {serial} 3600 600 86400 300",
    )
    if extra_txt:
        response.answer.append(dns.rrset.from_text(ORIGIN, 60, "IN", "TXT", '"first"'))
    response.answer.append(dns.rrset.from_rdata(ORIGIN, 60, soa))
    return response.to_wire()


def test_the_serial_is_read_off_the_wire_and_by_dnspython_otherwise() -> None:
    query = dns.message.make_query(ORIGIN, dns.rdatatype.SOA, use_edns=False)
    wire = query.to_wire()
    assert soa_serial_of(answer(query, 2026120301), len(wire)) == 2026120301
    # Two records: the fast path does not apply, dnspython finds the SOA.
    assert soa_serial_of(answer(query, 7, extra_txt=True), len(wire)) == 7
    refused = dns.message.make_response(query)
    refused.set_rcode(dns.rcode.REFUSED)
    assert soa_serial_of(refused.to_wire(), len(wire)) is None


class Server(asyncio.DatagramProtocol):
    """Answers serial `old` until `switch_at`, then `new`; counts the queries."""

    def __init__(self, old: int, new: int, switch_at: float) -> None:
        self.old, self.new, self.switch_at = old, new, switch_at
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.queries += 1
        serial = self.new if time.monotonic() >= self.switch_at else self.old
        assert self.transport is not None
        self.transport.sendto(answer(dns.message.from_wire(data), serial), addr)


def test_each_server_is_seen_when_it_first_serves_the_serial() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        servers = {"early": Server(1, 2, start + 0.1), "late": Server(1, 2, start + 0.3)}
        transports = []
        port = 0
        for address, server in zip(("127.0.0.71", "127.0.0.72"), servers.values(), strict=True):
            transport, _ = await loop.create_datagram_endpoint(
                lambda server=server: server, local_addr=(address, port)
            )
            port = int(transport.get_extra_info("sockname")[1])
            transports.append(transport)
        seen = await poll_serials(
            ORIGIN,
            {"early": "127.0.0.71", "late": "127.0.0.72"},
            2,
            start + 5,
            interval=0.01,
            port=port,
        )
        for transport in transports:
            transport.close()
        # Never before the server had it, each on its own (no timing bound: a
        # loaded machine may be late, which the benchmark prints as resolution).
        assert seen.at["early"] - start >= 0.1
        assert seen.at["late"] - start >= 0.3
        assert seen.at["early"] < seen.at["late"]
        # Polled on the 10 ms grid until seen: about 10 and 30 queries, not hundreds.
        assert servers["early"].queries < 30 and servers["late"].queries < 60

    asyncio.run(scenario())
