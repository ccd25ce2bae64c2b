"""SOA probes (secondary_dns.dns.probe) against real named: serials, refusals, timeouts."""

from __future__ import annotations

import asyncio
import socket
import threading

import dns.name

from localcluster.named import NamedFleet, PrimaryServer, TsigCredentials
from secondary_dns.api import TsigKey
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.probe import ProbeRequest, probe_all, probe_soa
from tests.dataplane.rendered import ZONE as ZONE_TEXT
from tests.dataplane.rendered import ExampleSecondary

ZONE = dns.name.from_text(ZONE_TEXT)


def test_probe_reads_serials_of_a_primary_and_a_rendered_secondary(
    primary: PrimaryServer, example_secondary: ExampleSecondary
) -> None:
    named = example_secondary().process

    result = asyncio.run(probe_soa(ZONE, ProbeTarget(primary.address)))
    assert result.error is None and result.answer is not None
    assert result.answer.serial == 1
    # The SOA timers are the zone's (make_zone's defaults).
    assert (result.answer.refresh, result.answer.retry, result.answer.expire) == (3600, 600, 86400)
    assert result.responded and not result.used_tcp and result.rtt_seconds < 2

    serial = primary.set_record(ZONE, "www", "A", "192.0.2.80")
    primary.notify(named, ZONE)
    named.wait_for_serial(ZONE, serial)
    results = asyncio.run(
        probe_all([(ZONE, ProbeTarget(primary.address)), (ZONE, ProbeTarget(named.address))])
    )
    assert [r.serial for r in results] == [serial, serial]


def test_probe_with_tsig_is_answered_signed(
    fleet: NamedFleet, primary: PrimaryServer, transfer_key: TsigCredentials
) -> None:
    key = TsigKey(transfer_key.name, transfer_key.algorithm, transfer_key.secret)
    result = asyncio.run(probe_soa(ZONE, ProbeTarget(primary.address), key=key))
    assert result.serial == 1, result.error
    # The primary does not know this key: it answers NOTAUTH (RFC 8945 §5.2.2).
    stranger = TsigKey(dns.name.from_text("stranger."), transfer_key.algorithm, b"x" * 32)
    refused = asyncio.run(probe_soa(ZONE, ProbeTarget(primary.address), key=stranger))
    assert refused.answer is None and refused.responded
    assert refused.error == "NOTAUTH: the server does not know the TSIG key (BADKEY)"


def test_unknown_zone_is_refused_not_an_answer(fleet: NamedFleet, primary: PrimaryServer) -> None:
    result = asyncio.run(probe_soa(dns.name.from_text("other.test."), ProbeTarget(primary.address)))
    assert result.answer is None
    assert result.error == "REFUSED"
    assert result.responded


def test_silence_and_a_closed_port_are_timeouts(fleet: NamedFleet) -> None:
    address = fleet.address()
    # A socket that never reads: the query is delivered and nobody answers.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((address, 0))
        port = silent.getsockname()[1]
        result = asyncio.run(probe_soa(ZONE, ProbeTarget(address, port), timeout=0.5))
        once = asyncio.run(probe_soa(ZONE, ProbeTarget(address, port), timeout=0.5, attempts=1))
        # The monitor's mix: one try for a replica, two for a primary.
        mixed = asyncio.run(
            probe_all([(ZONE, ProbeTarget(address, port))] * 2, timeout=0.5, attempts=[1, 2])
        )
    assert result.answer is None
    # Sent twice by default (a lost datagram is not an unreachable server), then
    # once over TCP (response rate limiting drops UDP answers only); nothing
    # listens on TCP there.
    assert result.error == "timeout after 2 attempts of 0.5s, also over TCP"
    assert result.timed_out and not result.responded
    assert 0.9 < result.rtt_seconds < 3.0
    assert once.error == "timeout after 0.5s, also over TCP" and 0.4 < once.rtt_seconds < 2.0
    assert [r.error for r in mixed] == [
        "timeout after 0.5s, also over TCP",
        "timeout after 2 attempts of 0.5s, also over TCP",
    ]
    # Nothing bound at all: the ICMP port unreachable does not reach an unconnected
    # UDP socket, so this too is a timeout, and never an exception.
    closed = asyncio.run(probe_soa(ZONE, ProbeTarget(address, port), timeout=0.5, attempts=1))
    assert closed.error == "timeout after 0.5s, also over TCP"


def test_one_lost_datagram_is_retried_not_a_timeout(
    fleet: NamedFleet, primary: PrimaryServer
) -> None:
    # A forwarder in front of the real primary that loses the first query it gets.
    address = fleet.address()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as lossy:
        lossy.bind((address, 0))
        lossy.settimeout(10)
        port = lossy.getsockname()[1]

        def forward_all_but_the_first() -> None:
            lossy.recvfrom(4096)  # dropped
            for _ in range(2):
                try:
                    query, client = lossy.recvfrom(4096)
                except OSError:
                    return
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
                    upstream.settimeout(5)
                    upstream.sendto(query, (primary.address, primary.port))
                    lossy.sendto(upstream.recv(4096), client)

        forwarder = threading.Thread(target=forward_all_but_the_first, daemon=True)
        forwarder.start()
        result = asyncio.run(probe_soa(ZONE, ProbeTarget(address, port), timeout=0.5))
        forwarder.join(timeout=15)
    assert result.error is None, result.error
    assert result.serial == primary.serial(ZONE)
    assert result.rtt_seconds < 0.5  # the attempt that answered, not the lost one


def test_probe_all_keeps_order_and_bounds_concurrency(
    fleet: NamedFleet, primary: PrimaryServer
) -> None:
    address = fleet.address()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((address, 0))
        dead = ProbeTarget(address, silent.getsockname()[1])
        live = ProbeTarget(primary.address)
        requests: list[ProbeRequest] = []
        for index in range(40):
            requests.append((ZONE, dead if index % 10 == 0 else live))
        requests.append((dns.name.from_text("other.test."), live, None))

        async def run() -> tuple[list[int | None], float]:
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await probe_all(requests, concurrency=8, timeout=0.5)
            return [r.serial for r in results], loop.time() - started

        serials, elapsed = asyncio.run(run())
    assert serials[:40] == [None if i % 10 == 0 else 1 for i in range(40)]
    assert serials[40] is None
    print(f"probe_all: 41 probes, 4 timing out, took {elapsed:.2f}s")
