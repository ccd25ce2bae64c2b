"""The NOTIFY relay: one stable address that primaries notify, fanned out to every replica.

A NOTIFY sent to a Kubernetes Service reaches one pod, and pod addresses change,
so primaries notify the relay instead (docs/notify-relay.md). The relay accepts a
NOTIFY (RFC 1996) for a zone it has a route for only from that zone's primaries
or allowFrom networks, or signed with one of the primaries' TSIG keys; answers it
at once as RFC 1996 §4.7 says; then sends a NOTIFY of its own, signed with the
server's relay key, to every replica.

Everything it receives is untrusted: a message is parsed in one pure function,
`decide_notify`, that never raises, and anything that is not an acceptable NOTIFY
is dropped without an answer (no reflection, no amplification) and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.tsig

from secondary_dns import metrics
from secondary_dns.api import TsigKey
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.notify import DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT, send_notify

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MALFORMED = "malformed"
NOT_NOTIFY = "not_notify"
UNKNOWN_ZONE = "unknown_zone"
UNKNOWN_SOURCE = "unknown_source"
BAD_TSIG = "bad_tsig"
REJECT_REASONS = (MALFORMED, NOT_NOTIFY, UNKNOWN_ZONE, UNKNOWN_SOURCE, BAD_TSIG)

# RFC 1035 §4.1.1: a message is at least its 12-octet header.
HEADER_LENGTH = 12
# Bounds that keep a flood of connections or NOTIFYs from exhausting the operator.
DEFAULT_MAX_TCP_CONNECTIONS = 64
DEFAULT_TCP_IDLE_TIMEOUT = 10.0
DEFAULT_FANOUT_CONCURRENCY = 128

_TSIG_ERRORS = (
    dns.message.UnknownTSIGKey,
    dns.tsig.BadSignature,
    dns.tsig.BadTime,
    dns.tsig.BadKey,
    dns.tsig.BadAlgorithm,
    dns.tsig.PeerError,
)


@dataclass(frozen=True)
class RelayRoute:
    """Who may notify the relay about one zone, and which replicas hear about it."""

    zone: dns.name.Name
    # The zone's primaries as /32 or /128, plus spec.notify.allowFrom.
    allowed_sources: tuple[IPNetwork, ...]
    # The primaries' TSIG keys: a NOTIFY signed with one is accepted from anywhere.
    allowed_keys: tuple[TsigKey, ...]
    # Every replica address, with the relay key of its SecondaryServer.
    targets: tuple[tuple[ProbeTarget, TsigKey], ...]


@dataclass(frozen=True)
class Accepted:
    route: RelayRoute
    # The RFC 1996 §4.7 response, TSIG-signed when the NOTIFY was.
    response: bytes
    # The serial in the NOTIFY's SOA answer (§3.7), a hint passed on to the replicas.
    serial: int | None
    # The key that signed it, None when it was accepted by its source address.
    key_name: dns.name.Name | None


@dataclass(frozen=True)
class Rejected:
    reason: str  # one of REJECT_REASONS
    detail: str


def _source_address(source: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def decide_notify(
    wire: bytes, source: str, routes: Mapping[dns.name.Name, RelayRoute]
) -> Accepted | Rejected:
    """What to do with one message that arrived from `source`; never raises."""
    try:
        return _decide(wire, source, routes)
    except Exception as error:  # the last line of defence against hostile input
        return Rejected(MALFORMED, f"unparseable: {type(error).__name__}")


def _decide(
    wire: bytes, source: str, routes: Mapping[dns.name.Name, RelayRoute]
) -> Accepted | Rejected:
    if len(wire) < HEADER_LENGTH:
        return Rejected(MALFORMED, f"{len(wire)} octets, shorter than a DNS header")
    # First the header and question only: which zone, before any key is chosen.
    try:
        head = dns.message.from_wire(wire, question_only=True)
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError) as error:
        return Rejected(MALFORMED, f"bad header or question: {type(error).__name__}")
    if head.flags & dns.flags.QR:
        return Rejected(NOT_NOTIFY, "a response, not a request")
    if head.opcode() != dns.opcode.NOTIFY:
        return Rejected(NOT_NOTIFY, f"opcode {dns.opcode.to_text(head.opcode())}")
    # RFC 1996 §3.7: one question, QTYPE SOA, QNAME the zone.
    if len(head.question) != 1:
        return Rejected(NOT_NOTIFY, f"{len(head.question)} questions instead of one")
    question = head.question[0]
    if question.rdtype != dns.rdatatype.SOA or question.rdclass != dns.rdataclass.IN:
        return Rejected(
            NOT_NOTIFY,
            f"question type {dns.rdatatype.to_text(question.rdtype)}/"
            f"{dns.rdataclass.to_text(question.rdclass)} instead of SOA/IN",
        )
    zone = question.name
    route = routes.get(zone)
    if route is None:
        return Rejected(UNKNOWN_ZONE, f"no route for {zone}")

    def keyring(_: dns.message.Message, key_name: dns.name.Name) -> dns.tsig.Key | None:
        for key in route.allowed_keys:
            if key.name == key_name:
                return key.to_dnspython()
        return None

    # The whole message, verifying a TSIG (RFC 8945 §5.2: MAC, then time) if present.
    try:
        message = dns.message.from_wire(wire, keyring=keyring)
    except _TSIG_ERRORS as error:
        return Rejected(BAD_TSIG, f"TSIG for {zone} not accepted: {type(error).__name__}")
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError) as error:
        return Rejected(MALFORMED, f"bad message body: {type(error).__name__}")

    key_name: dns.name.Name | None = None
    if message.had_tsig:
        key_name = message.keyname
    else:
        address = _source_address(source)
        if address is None or not any(address in network for network in route.allowed_sources):
            return Rejected(UNKNOWN_SOURCE, f"{source} may not notify {zone}")

    serial: int | None = None
    for rrset in message.answer:
        if rrset.name == zone and rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            soa = next(iter(rrset))
            if isinstance(soa, dns.rdtypes.ANY.SOA.SOA):
                serial = int(soa.serial)

    # RFC 1996 §4.7: same id, QR set, opcode NOTIFY, the question copied; AA as a
    # secondary sets it. make_response signs with the request's key and MAC.
    response = dns.message.make_response(message)
    response.flags |= dns.flags.AA
    return Accepted(route, response.to_wire(), serial, key_name)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, relay: NotifyRelay) -> None:
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_datagram_endpoint hands over a datagram transport (the selector
        # loop's class does not derive from asyncio.DatagramTransport, hence a cast).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        response = self.relay.handle_message(data, str(addr[0]), "udp")
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier answers (a primary that went away): nothing to do.
        log.debug("NOTIFY relay UDP socket error: %s", exc)


class NotifyRelay:
    """UDP and TCP listener for NOTIFY, with routes replaced at any time.

    `set_routes` may be called from any thread: it swaps one reference to a new
    read-only mapping (atomic under the interpreter lock), and every message is
    decided against the mapping it read once, so it never sees half an update.
    All other methods belong to the event loop the relay was started on.
    """

    def __init__(
        self,
        *,
        fanout_timeout: float = DEFAULT_TIMEOUT,
        fanout_attempts: int = DEFAULT_ATTEMPTS,
        fanout_concurrency: int = DEFAULT_FANOUT_CONCURRENCY,
        max_tcp_connections: int = DEFAULT_MAX_TCP_CONNECTIONS,
        tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT,
        on_notify: Callable[[dns.name.Name], object] | None = None,
    ) -> None:
        # Called in the event loop with the zone of every accepted NOTIFY (the
        # serial monitor probes faster after one); it must not block.
        self.on_notify = on_notify
        self._routes: Mapping[dns.name.Name, RelayRoute] = MappingProxyType({})
        self.fanout_timeout = fanout_timeout
        self.fanout_attempts = fanout_attempts
        self.max_tcp_connections = max_tcp_connections
        self.tcp_idle_timeout = tcp_idle_timeout
        self._fanout_gate = asyncio.Semaphore(fanout_concurrency)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_connections = 0
        self._port: int | None = None
        # One fan-out per zone at a time; NOTIFYs arriving meanwhile coalesce into
        # one more round (RFC 1996 §4.5 lets a secondary treat them as one anyway).
        self._fanouts: dict[dns.name.Name, asyncio.Task[None]] = {}
        self._again: dict[dns.name.Name, int | None] = {}
        # Per-relay counts (the Prometheus counters are process-wide).
        self.received = 0
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.relayed = 0
        self.fanout_errors = 0
        self.last_fanout_errors: dict[ProbeTarget, str] = {}

    # ---- routes

    def set_routes(self, routes: Mapping[dns.name.Name, RelayRoute]) -> None:
        self._routes = MappingProxyType(dict(routes))

    @property
    def routes(self) -> Mapping[dns.name.Name, RelayRoute]:
        return self._routes

    # ---- lifecycle

    @property
    def bound_port(self) -> int:
        if self._port is None:
            raise RuntimeError("the NOTIFY relay is not started")
        return self._port

    async def start(self, host: str, port: int = 53) -> None:
        """Listen on UDP and TCP `host`:`port`; port 0 lets the OS choose one for both."""
        if self._udp is not None:
            raise RuntimeError("the NOTIFY relay is already started")
        loop = asyncio.get_running_loop()
        attempts = 5 if port == 0 else 1
        for attempt in range(attempts):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port)
            )
            chosen = int(udp.get_extra_info("sockname")[1])
            try:
                tcp = await asyncio.start_server(self._serve_tcp, host, chosen)
            except OSError:
                udp.close()
                # With port 0 the OS chose a UDP port whose TCP twin is taken: retry.
                if attempt + 1 == attempts:
                    raise
                continue
            self._udp, self._tcp, self._port = udp, tcp, chosen
            log.info("NOTIFY relay listening on %s port %d (UDP and TCP)", host, chosen)
            return

    async def stop(self) -> None:
        """Stop listening, then let fan-outs in flight finish (bounded by their timeouts)."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2)
            self._tcp = None
        await self.wait_idle()
        self._port = None

    async def wait_idle(self) -> None:
        """Wait until no fan-out is in flight (tests, shutdown)."""
        while self._fanouts:
            await asyncio.gather(*list(self._fanouts.values()), return_exceptions=True)

    # ---- messages

    def handle_message(self, wire: bytes, source: str, transport: str) -> bytes | None:
        """Decide, count, start the fan-out; the response to send back, or None."""
        self.received += 1
        metrics.NOTIFY_RECEIVED.labels(transport=transport).inc()
        decision = decide_notify(wire, source, self._routes)
        if isinstance(decision, Rejected):
            self.rejected[decision.reason] += 1
            metrics.NOTIFY_REJECTED.labels(reason=decision.reason).inc()
            log.info("NOTIFY relay dropped a message from %s: %s", source, decision.detail)
            return None
        self.accepted += 1
        zone = decision.route.zone
        how = f"key {decision.key_name}" if decision.key_name is not None else "source address"
        log.info("NOTIFY for %s from %s accepted (%s)", zone, source, how)
        if zone in self._fanouts:
            self._again[zone] = decision.serial
        else:
            task = asyncio.get_running_loop().create_task(self._fan_out(zone, decision.serial))
            self._fanouts[zone] = task
        if self.on_notify is not None:
            try:
                self.on_notify(zone)
            except Exception:  # a broken callback must not stop the relay answering
                log.exception("NOTIFY relay: on_notify callback failed for %s", zone)
        return decision.response

    async def _fan_out(self, zone: dns.name.Name, serial: int | None) -> None:
        try:
            while True:
                # The current route: replicas may have come or gone since the NOTIFY.
                route = self._routes.get(zone)
                if route is not None:
                    await asyncio.gather(
                        *(self._notify_replica(zone, t, k, serial) for t, k in route.targets)
                    )
                if zone not in self._again:
                    return
                serial = self._again.pop(zone)
        finally:
            self._fanouts.pop(zone, None)
            self._again.pop(zone, None)

    async def _notify_replica(
        self, zone: dns.name.Name, target: ProbeTarget, key: TsigKey, serial: int | None
    ) -> None:
        async with self._fanout_gate:
            error = await send_notify(
                zone,
                target,
                key=key,
                soa_serial=serial,
                timeout=self.fanout_timeout,
                attempts=self.fanout_attempts,
            )
        if error is None:
            self.relayed += 1
            self.last_fanout_errors.pop(target, None)
            metrics.NOTIFY_RELAYED.inc()
        else:
            self.fanout_errors += 1
            self.last_fanout_errors[target] = error
            metrics.NOTIFY_FANOUT_ERRORS.inc()
            log.warning("NOTIFY for %s to replica %s failed: %s", zone, target, error)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        if self._tcp_connections >= self.max_tcp_connections:
            writer.close()
            return
        self._tcp_connections += 1
        try:
            # RFC 1035 §4.2.2 / RFC 7766 §8: two-octet length, then the message; several
            # messages may follow on one connection.
            while True:
                prefix = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout)
                length = int.from_bytes(prefix, "big")
                wire = await asyncio.wait_for(reader.readexactly(length), self.tcp_idle_timeout)
                response = self.handle_message(wire, source, "tcp")
                if response is None:
                    # No answer to what is not an acceptable NOTIFY; the framing of
                    # whatever follows cannot be trusted either.
                    break
                writer.write(len(response).to_bytes(2, "big") + response)
                await asyncio.wait_for(writer.drain(), self.tcp_idle_timeout)
        except asyncio.IncompleteReadError as error:
            if error.partial:
                # A connection closed in the middle of a message: a truncated message.
                self.received += 1
                metrics.NOTIFY_RECEIVED.labels(transport="tcp").inc()
                self.rejected[MALFORMED] += 1
                metrics.NOTIFY_REJECTED.labels(reason=MALFORMED).inc()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._tcp_connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
