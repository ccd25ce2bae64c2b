"""SOA probes of primaries and replicas with dnspython's asyncio queries.

A probe asks one server for the zone's SOA without recursion and accepts only an
authoritative answer (RFC 1034 §6.2: the AA bit tells a server that serves the
zone from one that merely knows of it). Every DNS or network failure becomes a
short text in the result, never an exception: the serial monitor turns those
texts into condition messages, and one dead server must not stop the probes of
the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.tsig

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
            soa = next(iter(rrset))
            assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
            return SoaAnswer(
                serial=int(soa.serial),
                refresh=int(soa.refresh),
                retry=int(soa.retry),
                expire=int(soa.expire),
                minimum=int(soa.minimum),
            )
    return "no SOA in answer"


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

    A timeout is tried again, up to `attempts` queries in all (each with a new
    ID and `timeout` of its own); any answer, also a refusal, is final. Never
    raises for DNS or network failures; they are in `ProbeResult.error`.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    started = time.monotonic()
    result = await _probe_once(zone, target, timeout, key)
    for _ in range(attempts - 1):
        if not result.timed_out:
            break
        result = await _probe_once(zone, target, timeout, key)
    # rtt of the attempt that answered; a final timeout reports the whole wait.
    if result.timed_out and attempts > 1:
        result = replace(
            result,
            error=f"timeout after {attempts} attempts of {timeout:g}s",
            rtt_seconds=time.monotonic() - started,
        )
    return result


async def _probe_once(
    zone: dns.name.Name, target: ProbeTarget, timeout: float, key: TsigKey | None
) -> ProbeResult:
    query = make_soa_query(zone, key)
    started = time.monotonic()
    try:
        # The timeout bounds the whole exchange. An answer from another address is
        # skipped (ignore_unexpected); a malformed or mismatched one is an error, so
        # that a TSIG rejection (NOTAUTH with BADKEY/BADSIG) reads as such and not as
        # a timeout.
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
