"""What the relay does with one message: for which Zone objects it is an acceptable NOTIFY.

Pure and total: `decide_notify` never raises, whatever the bytes. Everything
the relay receives is untrusted and most of what a hostile sender can send
comes from an address that may not notify anything, so the checks run cheapest
first and a stranger's message is dropped before the expensive part (a full
parse, a TSIG verification):

1. the size and the raw 12-octet header, before any parsing: a request (QR
   clear), opcode NOTIFY, one question, and no more records than a NOTIFY has
   (at most one SOA answer; in the additional section at most an OPT and a
   TSIG);
2. the question alone: the zone, its type SOA and class IN;
3. the routes of that zone, one per Zone object that serves it (two tenants may
   serve the same name). A TSIG record is the last of the additional section
   (RFC 8945 §4.2, §5.2), so with ARCOUNT 0 none can be present: an unsigned
   message is checked against the routes' sources before anything else is
   parsed;
4. only then the whole message; a TSIG is verified (RFC 8945 §5.2) with the
   keys of those routes that have one of that name, and its time checked
   against a fudge capped at MAX_FUDGE_SECONDS, whatever fudge the sender
   claims (§5.2.3 would let a fudge of 65535 s accept an 18-hour-old message).

A message is accepted for the routes whose sources or keys it satisfies, and
only those: a NOTIFY from tenant A's primary never reaches tenant B's replicas.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TSIG
import dns.tsig
import dns.wire

from secondary_dns.api import IPNetwork, ObjectRef, TsigKey
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.api.tsig import MAX_FUDGE_SECONDS

MALFORMED = "malformed"
NOT_NOTIFY = "not_notify"
UNKNOWN_ZONE = "unknown_zone"
UNKNOWN_SOURCE = "unknown_source"
BAD_TSIG = "bad_tsig"
REPLAYED = "replayed"
REJECT_REASONS = (MALFORMED, NOT_NOTIFY, UNKNOWN_ZONE, UNKNOWN_SOURCE, BAD_TSIG, REPLAYED)

# RFC 1035 §4.1.1: a message is at least its 12-octet header.
HEADER_LENGTH = 12
_HEADER = struct.Struct("!HHHHHH")
# More than a NOTIFY needs: the longest zone name in the question and in one SOA
# answer, an OPT and a TSIG with the longest key name come to about 1.7 KB.
MAX_MESSAGE_SIZE = 4096
# RFC 1996 §3.7: the answer section may hold the zone's SOA; nothing goes in the
# authority section; the additional section holds at most an OPT (RFC 6891) and
# a TSIG (RFC 8945).
MAX_ANSWERS = 1
MAX_AUTHORITIES = 0
MAX_ADDITIONALS = 2

_PARSE_ERRORS = (dns.exception.DNSException, ValueError, IndexError, UnicodeError, struct.error)
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
    """One Zone object's NOTIFY route: who may notify it, which replicas hear about it."""

    # The Zone object (two namespaces may serve one zone name: each has a route).
    ref: ObjectRef
    zone: dns.name.Name
    # The zone's primaries as /32 or /128, plus spec.notify.allowFrom.
    allowed_sources: tuple[IPNetwork, ...]
    # The primaries' TSIG keys: a NOTIFY signed with one is accepted from anywhere.
    allowed_keys: tuple[TsigKey, ...]
    # Every replica address, with the relay key of its SecondaryServer.
    targets: tuple[tuple[ProbeTarget, TsigKey], ...]


# zone name -> the routes of every Zone object of that name (names compare
# case-insensitively, as dns.name.Name does).
RouteTable = Mapping[dns.name.Name, tuple[RelayRoute, ...]]


def route_table(routes: Iterable[RelayRoute]) -> dict[dns.name.Name, tuple[RelayRoute, ...]]:
    by_ref = {route.ref: route for route in routes}
    table: dict[dns.name.Name, list[RelayRoute]] = {}
    for ref in sorted(by_ref):
        table.setdefault(by_ref[ref].zone, []).append(by_ref[ref])
    return {zone: tuple(found) for zone, found in table.items()}


@dataclass(frozen=True)
class Accepted:
    # The Zone objects this NOTIFY is accepted for (by source address or key).
    routes: tuple[RelayRoute, ...]
    # The RFC 1996 §4.7 response, TSIG-signed when the NOTIFY was.
    response: bytes
    # The serial in the NOTIFY's SOA answer (§3.7), a hint passed on to the replicas.
    serial: int | None
    # The key that signed it, None when it was accepted by its source address.
    key_name: dns.name.Name | None = None
    # For a signed NOTIFY: its MAC and when it was signed (the replay cache's key).
    mac: bytes | None = None
    time_signed: int | None = None

    @property
    def zone(self) -> dns.name.Name:
        return self.routes[0].zone


@dataclass(frozen=True)
class Rejected:
    reason: str  # one of REJECT_REASONS
    detail: str


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def source_address(source: str) -> Address | None:
    try:
        address = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def decide_notify(
    wire: bytes,
    source: str,
    routes: RouteTable,
    *,
    now: float | None = None,
    max_fudge: int = MAX_FUDGE_SECONDS,
) -> Accepted | Rejected:
    """What to do with one message that arrived from `source`; never raises."""
    try:
        return _decide(wire, source, routes, time.time() if now is None else now, max_fudge)
    except Exception as error:  # the last line of defence against hostile input
        return Rejected(MALFORMED, f"unparseable: {type(error).__name__}")


def _decide(
    wire: bytes, source: str, routes: RouteTable, now: float, max_fudge: int
) -> Accepted | Rejected:
    header = _check_header(wire)
    if isinstance(header, Rejected):
        return header
    additionals = header
    question = _question(wire)
    if isinstance(question, Rejected):
        return question
    zone = question
    candidates = routes.get(zone)
    if not candidates:
        return Rejected(UNKNOWN_ZONE, f"no route for {zone}")

    address = source_address(source)
    by_address = tuple(
        route
        for route in candidates
        if address is not None and any(address in network for network in route.allowed_sources)
    )
    keyed = tuple(route for route in candidates if route.allowed_keys)
    if not by_address and (additionals == 0 or not keyed):
        # No TSIG can be present, or none could verify: drop it unparsed.
        return Rejected(UNKNOWN_SOURCE, f"{source} may not notify {zone}")

    # The whole message, verifying a TSIG if there is one (RFC 8945 §5.2) with the
    # routes' keys of its name; one key name may stand for different secrets in
    # different tenants' Zones, so each is tried until one verifies.
    chosen: list[TsigKey] = []
    while True:
        keyring = _Keyring(keyed, skip=len(chosen))
        try:
            message = dns.message.from_wire(wire, keyring=keyring)
        except dns.message.UnknownTSIGKey:
            return Rejected(BAD_TSIG, f"key {keyring.asked} is not a primary's key for {zone}")
        except _TSIG_ERRORS as error:
            assert keyring.offered is not None
            chosen.append(keyring.offered)
            if len(chosen) >= keyring.available:
                return Rejected(
                    BAD_TSIG,
                    f"TSIG for {zone} with key {keyring.asked} not accepted: "
                    f"{type(error).__name__}",
                )
            continue
        except _PARSE_ERRORS as error:
            return Rejected(MALFORMED, f"bad message body: {type(error).__name__}")
        break
    if not message.had_tsig:
        if not by_address:
            return Rejected(UNKNOWN_SOURCE, f"{source} may not notify {zone}")
        return _accept(by_address, message, zone)
    # Signed: the signature decides, also from an allowed address (a TSIG that
    # fails is a forgery, a replay or a key rotated on one side only).
    assert keyring.offered is not None and message.tsig is not None
    key = keyring.offered
    tsig = message.tsig[0]
    assert isinstance(tsig, dns.rdtypes.ANY.TSIG.TSIG)
    # RFC 8945 §5.2.3 with the sender's fudge capped: whoever holds a key must
    # not make a message valid for hours.
    fudge = min(int(tsig.fudge), max_fudge)
    skew = abs(now - int(tsig.time_signed))
    if skew > fudge:
        return Rejected(
            BAD_TSIG,
            f"TSIG for {zone} signed {skew:.0f}s from now, beyond the fudge of {fudge}s "
            "the relay accepts (RFC 8945 §5.2.3: BADTIME)",
        )
    accepted_for = tuple(route for route in keyed if key in route.allowed_keys)
    return _accept(accepted_for, message, zone, key.name, message.mac, int(tsig.time_signed))


class _Keyring:
    """dnspython's keyring callback: the next untried key of the routes with that name."""

    def __init__(self, routes: tuple[RelayRoute, ...], skip: int) -> None:
        self.routes = routes
        self.skip = skip
        self.asked: dns.name.Name | None = None
        self.offered: TsigKey | None = None
        self.available = 0

    def __call__(self, _: dns.message.Message, name: dns.name.Name) -> dns.tsig.Key | None:
        self.asked = name
        keys = list(
            dict.fromkeys(
                key for route in self.routes for key in route.allowed_keys if key.name == name
            )
        )
        self.available = len(keys)
        if self.skip >= len(keys):
            return None
        self.offered = keys[self.skip]
        return self.offered.to_dnspython()


def _check_header(wire: bytes) -> int | Rejected:
    """The raw header's verdict; the ARCOUNT when it may be a NOTIFY."""
    if len(wire) < HEADER_LENGTH:
        return Rejected(MALFORMED, f"{len(wire)} octets, shorter than a DNS header")
    if len(wire) > MAX_MESSAGE_SIZE:
        return Rejected(
            MALFORMED, f"{len(wire)} octets, more than the {MAX_MESSAGE_SIZE} a NOTIFY may have"
        )
    _, flags, questions, answers, authorities, additionals = _HEADER.unpack_from(wire)
    if flags & dns.flags.QR:
        return Rejected(NOT_NOTIFY, "a response, not a request")
    opcode = dns.opcode.from_flags(flags)
    if opcode != dns.opcode.NOTIFY:
        return Rejected(NOT_NOTIFY, f"opcode {dns.opcode.to_text(opcode)}")
    # RFC 1996 §3.7: one question, QTYPE SOA, QNAME the zone.
    if questions != 1:
        return Rejected(NOT_NOTIFY, f"{questions} questions instead of one")
    if answers > MAX_ANSWERS or authorities > MAX_AUTHORITIES or additionals > MAX_ADDITIONALS:
        return Rejected(
            NOT_NOTIFY,
            f"{answers} answer, {authorities} authority and {additionals} additional records; "
            f"a NOTIFY has at most {MAX_ANSWERS}, {MAX_AUTHORITIES} and {MAX_ADDITIONALS}",
        )
    return int(additionals)


def _question(wire: bytes) -> dns.name.Name | Rejected:
    parser = dns.wire.Parser(wire, HEADER_LENGTH)
    try:
        name = parser.get_name()
        rdtype, rdclass = parser.get_struct("!HH")
    except _PARSE_ERRORS as error:
        return Rejected(MALFORMED, f"bad question: {type(error).__name__}")
    if rdtype != dns.rdatatype.SOA or rdclass != dns.rdataclass.IN:
        return Rejected(
            NOT_NOTIFY,
            f"question type {dns.rdatatype.to_text(rdtype)}/{dns.rdataclass.to_text(rdclass)} "
            "instead of SOA/IN",
        )
    return name


def _accept(
    routes: tuple[RelayRoute, ...],
    message: dns.message.Message,
    zone: dns.name.Name,
    key_name: dns.name.Name | None = None,
    mac: bytes | None = None,
    time_signed: int | None = None,
) -> Accepted:
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
    return Accepted(routes, response.to_wire(), serial, key_name, mac, time_signed)
