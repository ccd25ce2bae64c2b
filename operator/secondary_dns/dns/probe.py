"""SOA probes of primaries and replicas with dnspython's asyncio queries.

A probe asks one server for the zone's SOA without recursion and accepts only an
authoritative answer (RFC 1034 §6.2: the AA bit tells a server that serves the
zone from one that merely knows of it). Every DNS or network failure becomes a
short text in the result, never an exception: the serial monitor turns those
texts into condition messages, and one dead server must not stop the probes of
the others.

Unsigned probes over UDP (the monitor's steady work: every primary on its
budget, replicas in spot checks) skip dnspython's message objects: the query's
wire form is built once per zone (only the ID changes) and the answer is read
with dnspython's wire parser up to the zone's SOA, without parsing the
authority and additional sections a server adds (its NS records and their
addresses). Reading an answer with three NS and three addresses takes 0.04 ms
this way against 0.36 ms for `dns.message.from_wire` (this 2-core machine), which
is what lets one operator watch 10,000 primaries. The answer is accepted by the
same rules; a truncated one, or a signed probe, goes through dnspython's full path.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import replace

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.tsig
import dns.wire

from secondary_dns.api import TsigKey
from secondary_dns.api.soa import ProbeResult, ProbeTarget, SoaAnswer

DEFAULT_TIMEOUT = 2.0
# A query that timed out is sent once more, as dig (+tries=2) and stub resolvers
# do: one lost UDP datagram must not make a primary "unreachable" for a round.
DEFAULT_ATTEMPTS = 2
DEFAULT_CONCURRENCY = 64


ProbeRequest = tuple[dns.name.Name, ProbeTarget] | tuple[dns.name.Name, ProbeTarget, TsigKey | None]


def make_soa_query(zone: dns.name.Name, key: TsigKey | None = None) -> dns.message.Message:
    """A non-recursive SOA query for `zone`, TSIG-signed when `key` is given."""
    query = dns.message.make_query(zone, dns.rdatatype.SOA, dns.rdataclass.IN)
    # RD off: a name server must answer from its own data, never by asking others.
    query.flags &= ~dns.flags.RD
    if key is not None:
        query.use_tsig(key.to_dnspython())
    return query


def read_soa_answer(zone: dns.name.Name, response: dns.message.Message) -> SoaAnswer | str:
    """The SOA of `zone` in an authoritative answer, or why the answer does not count."""
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        # REFUSED: the server does not serve the zone (or an ACL); NOTAUTH: TSIG
        # trouble or not authoritative (RFC 8945 §5.2); SERVFAIL: the zone is not
        # loaded, e.g. before the first transfer or after SOA expire.
        return str(dns.rcode.to_text(rcode))
    if not response.flags & dns.flags.AA:
        return "not authoritative (AA not set)"
    for rrset in response.answer:
        if (
            rrset.name == zone
            and rrset.rdtype == dns.rdatatype.SOA
            and rrset.rdclass == dns.rdataclass.IN
            and len(rrset) > 0
        ):
            return _soa_answer(next(iter(rrset)))
    return "no SOA in answer"


def _soa_answer(soa: dns.rdata.Rdata) -> SoaAnswer:
    assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
    return SoaAnswer(
        serial=int(soa.serial),
        refresh=int(soa.refresh),
        retry=int(soa.retry),
        expire=int(soa.expire),
        minimum=int(soa.minimum),
    )


def _error_text(error: BaseException, timeout: float) -> str:
    if isinstance(error, dns.exception.Timeout | TimeoutError):
        return f"timeout after {timeout:g}s"
    if isinstance(error, ConnectionRefusedError):
        # ICMP port unreachable: the address exists but nothing listens on the port.
        return "connection refused (nothing listening)"
    if isinstance(error, dns.tsig.PeerBadKey):
        return "NOTAUTH: the server does not know the TSIG key (BADKEY)"
    if isinstance(error, dns.tsig.PeerBadSignature):
        return "NOTAUTH: the server rejected the TSIG signature (BADSIG)"
    if isinstance(error, dns.tsig.PeerBadTime):
        return "NOTAUTH: the server rejected the TSIG time (BADTIME): check clocks"
    if isinstance(error, dns.tsig.PeerError | dns.tsig.BadSignature | dns.tsig.BadTime):
        return f"TSIG verification failed: {type(error).__name__}"
    if isinstance(error, dns.message.UnknownTSIGKey):
        return "TSIG: the answer is signed with an unknown key"
    if isinstance(error, OSError):
        return f"network error: {error.strerror or type(error).__name__}"
    if isinstance(error, dns.exception.FormError):
        return f"malformed answer: {error}"
    return f"{type(error).__name__}: {error}"


async def probe_soa(
    zone: dns.name.Name,
    target: ProbeTarget,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    key: TsigKey | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
) -> ProbeResult:
    """Ask `target` for the SOA of `zone`: UDP, TCP when the answer is truncated.

    A timeout is tried again, up to `attempts` UDP queries in all (each with a
    new ID and `timeout` of its own), then once over TCP: response rate
    limiting (BIND's rate-limit, Knot's mod-rrl; on by default in the replicas,
    spec.limits.responsesPerSecond) drops or truncates UDP answers past the
    rate of a client's network, a /24 that the operator's pod shares with other
    pods of its node, and never limits TCP (docs/serial-status.md). Any answer,
    also a refusal, is final. Never raises for DNS or network failures; they
    are in `ProbeResult.error`.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    started = time.monotonic()
    result = await _probe_once(zone, target, timeout, key)
    for _ in range(attempts - 1):
        if not result.timed_out:
            break
        result = await _probe_once(zone, target, timeout, key)
    if not result.timed_out:
        return result  # rtt of the attempt that answered
    over_tcp = await _probe_with_message(zone, target, timeout, key, tcp_only=True)
    if over_tcp.responded:
        return replace(over_tcp, rtt_seconds=time.monotonic() - started)
    # A final timeout reports the whole wait.
    udp = f"timeout after {attempts} attempts of {timeout:g}s" if attempts > 1 else result.error
    return replace(result, error=f"{udp}, also over TCP", rtt_seconds=time.monotonic() - started)


async def _probe_once(
    zone: dns.name.Name, target: ProbeTarget, timeout: float, key: TsigKey | None
) -> ProbeResult:
    if key is None:
        return await _probe_udp_unsigned(zone, target, timeout)
    return await _probe_with_message(zone, target, timeout, key)


async def _probe_with_message(
    zone: dns.name.Name,
    target: ProbeTarget,
    timeout: float,
    key: TsigKey | None,
    tcp_only: bool = False,
) -> ProbeResult:
    query = make_soa_query(zone, key)
    started = time.monotonic()
    try:
        # The timeout bounds the whole exchange. An answer from another address is
        # skipped (ignore_unexpected); a malformed or mismatched one is an error, so
        # that a TSIG rejection (NOTAUTH with BADKEY/BADSIG) reads as such and not as
        # a timeout.
        if tcp_only:
            response = await asyncio.wait_for(
                dns.asyncquery.tcp(query, target.address, timeout=timeout, port=target.port),
                timeout=timeout + 0.5,
            )
            used_tcp = True
        else:
            response, used_tcp = await asyncio.wait_for(
                dns.asyncquery.udp_with_fallback(
                    query,
                    target.address,
                    timeout=timeout,
                    port=target.port,
                    ignore_unexpected=True,
                ),
                timeout=timeout + 0.5,
            )
    except dns.tsig.PeerError as error:
        # The server answered and rejected our signature (RFC 8945 §5.2).
        text = _error_text(error, timeout)
        return ProbeResult(target, None, text, time.monotonic() - started, responded=True)
    except (dns.exception.DNSException, OSError, TimeoutError, ValueError, EOFError) as error:
        return ProbeResult(target, None, _error_text(error, timeout), time.monotonic() - started)
    rtt = time.monotonic() - started
    verdict = read_soa_answer(zone, response)
    if isinstance(verdict, str):
        return ProbeResult(target, None, verdict, rtt, used_tcp, responded=True)
    return ProbeResult(target, verdict, None, rtt, used_tcp, responded=True)


# ---- unsigned UDP probes without message objects

_HEADER = struct.Struct("!HHHHHH")
_RR_HEADER = struct.Struct("!HHIH")
_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_TC = 0x0200
_OPCODE_MASK = 0x7800
_RCODE_MASK = 0x000F
_QUERY_CACHE_SIZE = 65536


@functools.lru_cache(maxsize=_QUERY_CACHE_SIZE)
def _query_template(zone: dns.name.Name) -> bytes:
    """The wire form of `make_soa_query(zone)`; each probe writes its own ID into a copy."""
    return make_soa_query(zone).to_wire()


class _Unexpected(Exception):
    """A datagram that is not the answer to our query (dnspython's ignore_unexpected)."""


def _read_udp_answer(zone: dns.name.Name, wire: bytes, query_id: int) -> SoaAnswer | str | None:
    """The SOA of an answer, the reason it does not count, or None when it is truncated.

    Raises _Unexpected for a datagram that answers some other query, and
    dnspython's FormError (and friends) for a malformed one.
    """
    if len(wire) < _HEADER.size:
        raise _Unexpected
    answer_id, flags, questions, answers, _, _ = _HEADER.unpack_from(wire)
    if answer_id != query_id or not flags & _FLAG_QR or flags & _OPCODE_MASK:
        raise _Unexpected
    rcode = flags & _RCODE_MASK
    parser = dns.wire.Parser(wire, _HEADER.size)
    if questions == 0 and rcode != dns.rcode.NOERROR:
        # Some servers leave the question out of an error (dnspython accepts that too).
        return str(dns.rcode.to_text(dns.rcode.Rcode(rcode)))
    if questions != 1:
        raise _Unexpected
    qname = parser.get_name(decompress=True)
    qtype, qclass = parser.get_struct("!HH")
    if qname != zone or qtype != dns.rdatatype.SOA or qclass != dns.rdataclass.IN:
        raise _Unexpected
    if flags & _FLAG_TC:
        return None
    if rcode != dns.rcode.NOERROR:
        return str(dns.rcode.to_text(dns.rcode.Rcode(rcode)))
    if not flags & _FLAG_AA:
        return "not authoritative (AA not set)"
    for _ in range(answers):
        owner = parser.get_name(decompress=True)
        rdtype, rdclass, _, length = parser.get_struct(_RR_HEADER.format)
        if owner == zone and rdtype == dns.rdatatype.SOA and rdclass == dns.rdataclass.IN:
            with parser.restrict_to(length):
                return _soa_answer(dns.rdata.from_wire_parser(rdclass, rdtype, parser))
        parser.seek(parser.current + length)
    return "no SOA in answer"


async def _exchange_udp(
    wire: bytes, target: ProbeTarget, query_id: int, zone: dns.name.Name, timeout: float
) -> SoaAnswer | str | None:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in target.address else socket.AF_INET
    # Unconnected, as dnspython's: the kernel picks a random source port, and an
    # ICMP error does not end the wait (a closed port reads as a timeout).
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_sendto(sock, wire, (target.address, target.port))
        async with asyncio.timeout(timeout):
            while True:
                data, source = await loop.sock_recvfrom(sock, 65535)
                if source[0] != target.address or source[1] != target.port:
                    continue
                try:
                    return _read_udp_answer(zone, data, query_id)
                except _Unexpected:
                    continue


async def _probe_udp_unsigned(
    zone: dns.name.Name, target: ProbeTarget, timeout: float
) -> ProbeResult:
    query_id = secrets.randbits(16)
    wire = bytearray(_query_template(zone))
    struct.pack_into("!H", wire, 0, query_id)
    started = time.monotonic()
    try:
        verdict = await _exchange_udp(bytes(wire), target, query_id, zone, timeout)
    except (dns.exception.DNSException, OSError, TimeoutError, ValueError, EOFError) as error:
        return ProbeResult(target, None, _error_text(error, timeout), time.monotonic() - started)
    if verdict is None:
        # Truncated (RFC 7766 §5): the question again over TCP, with message objects.
        return await _probe_with_message(zone, target, timeout, None, tcp_only=True)
    rtt = time.monotonic() - started
    if isinstance(verdict, str):
        return ProbeResult(target, None, verdict, rtt, responded=True)
    return ProbeResult(target, verdict, None, rtt, responded=True)


async def probe_all(
    requests: Sequence[ProbeRequest],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int | Sequence[int] = DEFAULT_ATTEMPTS,
) -> list[ProbeResult]:
    """Probe every (zone, target[, key]) with at most `concurrency` queries in flight.

    Results are in the order of `requests`. One coroutine per request, gated by a
    semaphore: no thread per zone, and a fleet of many zones does not open
    thousands of sockets at once. `attempts` is one count for all, or one per request.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    counts = [attempts] * len(requests) if isinstance(attempts, int) else list(attempts)
    if len(counts) != len(requests):
        raise ValueError("attempts needs one count per request")
    gate = asyncio.Semaphore(concurrency)

    async def one(request: ProbeRequest, tries: int) -> ProbeResult:
        zone, target = request[0], request[1]
        key = request[2] if len(request) == 3 else None
        async with gate:
            return await probe_soa(zone, target, timeout=timeout, key=key, attempts=tries)

    return list(
        await asyncio.gather(
            *(one(request, n) for request, n in zip(requests, counts, strict=True))
        )
    )
