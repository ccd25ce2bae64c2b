"""Defaults for a public service (issue 13, item 10), seen from a client.

Response rate limiting and minimal ANY answers, against real named and knotd
rendered with the defaults and with rate limiting turned off.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdatatype

from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.probe import probe_soa
from tests.dataplane.engines import Engine
from tests.dataplane.rendered import ZONE, ExampleSecondary, server_manifest

BURST = 200


def _burst(address: str, port: int, rdtype: str) -> tuple[int, int, int]:
    """(full answers, truncated answers, no answer) to BURST identical queries sent at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for query_id in range(BURST):
            query = dns.message.make_query(ZONE, rdtype, id=query_id)
            query.flags &= ~dns.flags.RD
            sock.sendto(query.to_wire(), (address, port))
        full = truncated = 0
        # Collect what comes back; the quiet time ends it, not a speed.
        sock.settimeout(2.0)
        seen: set[int] = set()
        while True:
            try:
                wire = sock.recv(65535)
            except TimeoutError:
                break
            response = dns.message.from_wire(wire)
            if response.id in seen:
                continue
            seen.add(response.id)
            if response.flags & dns.flags.TC:
                truncated += 1
            elif response.answer:
                full += 1
    return full, truncated, BURST - full - truncated


def test_a_burst_of_identical_queries_is_rate_limited_by_default(
    example_secondary: ExampleSecondary, engine: Engine
) -> None:
    secondary = example_secondary(engine=engine.name)
    process = secondary.process
    full, truncated, missing = _burst(process.address, process.port, "SOA")
    print(f"{engine.name} default: {full} full, {truncated} truncated, {missing} dropped")
    # Past the rate, answers are slipped (truncated: a real client retries over
    # TCP, a spoofed victim gets nothing large) or dropped.
    assert truncated > 0 and missing > 0
    assert full < BURST // 2
    # TCP is not limited: the real client gets its answer.
    time.sleep(1)
    query = dns.message.make_query(ZONE, "SOA")
    assert dns.query.tcp(query, process.address, port=process.port, timeout=5).answer


def test_rate_limiting_can_be_turned_off(
    example_secondary: ExampleSecondary, engine: Engine
) -> None:
    secondary = example_secondary(
        server=server_manifest(engine=engine.name, responses_per_second=0)
    )
    process = secondary.process
    full, truncated, missing = _burst(process.address, process.port, "SOA")
    assert (full, truncated, missing) == (BURST, 0, 0)


def test_any_is_answered_with_one_rrset(
    example_secondary: ExampleSecondary, engine: Engine
) -> None:
    secondary = example_secondary(
        server=server_manifest(engine=engine.name, responses_per_second=0)
    )
    response = secondary.process.query(ZONE, "ANY")
    # RFC 8482: the apex has SOA and NS (at least); one RRset comes back, or
    # a truncated answer that sends the client to TCP.
    rrsets = [
        (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)) for rrset in response.answer
    ]
    print(f"{engine.name} ANY: flags {dns.flags.to_text(response.flags)}, {rrsets}")
    assert len(rrsets) <= 1


def test_the_operators_probes_are_answered_while_its_network_is_rate_limited(
    example_secondary: ExampleSecondary, engine: Engine
) -> None:
    """Clients in the operator's /24 (pods of its node) ask the zone's SOA past the rate.

    The serial monitor asks each replica once (attempts=1, monitor.py); a UDP
    answer dropped by response rate limiting would read as a replica that does
    not answer, and a spot check would distrust it. The probe asks again over
    TCP, which the limit never applies to.
    """
    secondary = example_secondary(engine=engine.name)
    process = secondary.process
    serial = process.serial(dns.name.from_text(ZONE))
    stop = threading.Event()

    def flood() -> None:
        # Same source address as the probes (both ask from this namespace).
        query = dns.message.make_query(ZONE, "SOA")
        query.flags &= ~dns.flags.RD
        wire = query.to_wire()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not stop.is_set():
                sock.sendto(wire, (process.address, process.port))
                stop.wait(0.005)  # about 200 a second, 10 times the default rate

    flooding = threading.Thread(target=flood, daemon=True)
    flooding.start()
    try:
        time.sleep(1)
        target = ProbeTarget(process.address, process.port)
        results = [
            asyncio.run(probe_soa(dns.name.from_text(ZONE), target, attempts=1)) for _ in range(12)
        ]
    finally:
        stop.set()
        flooding.join()
    over_tcp = sum(result.used_tcp for result in results)
    print(f"{engine.name}: 12 probes under a flood, {over_tcp} answered over TCP")
    assert [(result.serial, result.error) for result in results] == [(serial, None)] * 12
