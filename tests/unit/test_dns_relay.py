"""The NOTIFY relay's decisions on raw messages, the NOTIFY it sends, the serial gauges."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from secondary_dns import metrics
from secondary_dns.api import ObjectRef, TsigKey
from secondary_dns.api.soa import ProbeResult, ProbeTarget, SoaAnswer
from secondary_dns.dns.notify import make_notify
from secondary_dns.dns.relay import (
    BAD_TSIG,
    MALFORMED,
    NOT_NOTIFY,
    UNKNOWN_SOURCE,
    UNKNOWN_ZONE,
    Accepted,
    Rejected,
    RelayRoute,
    decide_notify,
    later_serial,
    route_table,
)
from secondary_dns.status.serial import ReplicaTarget, ZoneHistory, evaluate

ZONE = dns.name.from_text("example.test.")
PRIMARY_ADDRESS = "192.0.2.1"
ALLOWED_NETWORK = "198.51.100.0/24"
STRANGER = "203.0.113.9"


def key(name: str) -> TsigKey:
    return TsigKey(dns.name.from_text(name), dns.tsig.HMAC_SHA256, secrets.token_bytes(32))


PRIMARY_KEY = key("primary-key.")
RELAY_KEY = key("secondary-dns-relay.")
ROUTE = RelayRoute(
    ref=ObjectRef("dns", "example-test"),
    zone=ZONE,
    allowed_sources=(
        ipaddress.ip_network(f"{PRIMARY_ADDRESS}/32"),
        ipaddress.ip_network(ALLOWED_NETWORK),
    ),
    allowed_keys=(PRIMARY_KEY,),
    targets=((ProbeTarget("10.0.0.10"), RELAY_KEY),),
)
ROUTES = route_table([ROUTE])


def notify_wire(
    zone: str | dns.name.Name = ZONE,
    *,
    signer: TsigKey | None = None,
    serial: int | None = None,
    opcode: dns.opcode.Opcode = dns.opcode.NOTIFY,
    rdtype: dns.rdatatype.RdataType = dns.rdatatype.SOA,
) -> tuple[dns.message.Message, bytes]:
    name = dns.name.from_text(zone) if isinstance(zone, str) else zone
    message = make_notify(name, key=None, soa_serial=serial)
    message.set_opcode(opcode)
    if rdtype != dns.rdatatype.SOA:
        message = dns.message.make_query(name, rdtype)
        message.flags = dns.flags.AA
        message.set_opcode(opcode)
    if signer is not None:
        message.use_tsig(signer.to_dnspython())
    return message, message.to_wire()


def test_notify_from_a_primary_address_is_answered_as_rfc_1996_says() -> None:
    request, wire = notify_wire(serial=7)
    decision = decide_notify(wire, PRIMARY_ADDRESS, ROUTES)
    assert isinstance(decision, Accepted)
    assert decision.serial == 7 and decision.key_name is None and decision.routes == (ROUTE,)
    response = dns.message.from_wire(decision.response)
    # §4.7: same id, QR, opcode NOTIFY, AA, the question copied.
    assert response.id == request.id
    assert response.flags & dns.flags.QR and response.flags & dns.flags.AA
    assert response.opcode() == dns.opcode.NOTIFY
    assert response.rcode() == dns.rcode.NOERROR
    assert response.question == request.question
    assert request.is_response(response)


def test_notify_from_an_allow_from_network_is_accepted() -> None:
    _, wire = notify_wire()
    assert isinstance(decide_notify(wire, "198.51.100.77", ROUTES), Accepted)
    # An IPv4 peer seen through a dual-stack socket.
    assert isinstance(decide_notify(wire, "::ffff:198.51.100.77", ROUTES), Accepted)


def test_signed_notify_is_accepted_from_anywhere_and_answered_signed() -> None:
    request, wire = notify_wire(signer=PRIMARY_KEY)
    decision = decide_notify(wire, STRANGER, ROUTES)
    assert isinstance(decision, Accepted)
    assert decision.key_name == PRIMARY_KEY.name
    # The primary verifies the response with its key and its request's MAC.
    response = dns.message.from_wire(
        decision.response,
        keyring={PRIMARY_KEY.name: PRIMARY_KEY.to_dnspython()},
        request_mac=request.mac,
    )
    assert response.had_tsig and response.keyname == PRIMARY_KEY.name
    assert request.is_response(response)


def test_unlisted_source_without_key_is_dropped() -> None:
    _, wire = notify_wire()
    decision = decide_notify(wire, STRANGER, ROUTES)
    assert isinstance(decision, Rejected) and decision.reason == UNKNOWN_SOURCE


def test_wrong_key_is_dropped_even_from_an_allowed_address() -> None:
    other = key("primary-key.")  # same name, other secret: a forgery or a stale key
    _, wire = notify_wire(signer=other)
    decision = decide_notify(wire, PRIMARY_ADDRESS, ROUTES)
    assert isinstance(decision, Rejected) and decision.reason == BAD_TSIG
    _, wire = notify_wire(signer=key("unknown-key."))
    decision = decide_notify(wire, PRIMARY_ADDRESS, ROUTES)
    assert isinstance(decision, Rejected) and decision.reason == BAD_TSIG
    # The relay key is for the replicas, not for notifying the relay.
    _, wire = notify_wire(signer=RELAY_KEY)
    decision = decide_notify(wire, PRIMARY_ADDRESS, ROUTES)
    assert isinstance(decision, Rejected) and decision.reason == BAD_TSIG


def test_tampered_signed_notify_is_dropped() -> None:
    _, wire = notify_wire(signer=PRIMARY_KEY)
    tampered = bytearray(wire)
    tampered[2] ^= 0x01  # RD flipped: the header is covered by the MAC
    decision = decide_notify(bytes(tampered), STRANGER, ROUTES)
    assert isinstance(decision, Rejected) and decision.reason == BAD_TSIG


def test_unknown_zone_is_dropped_and_zone_names_ignore_case() -> None:
    _, wire = notify_wire("other.test.")
    decision = decide_notify(wire, PRIMARY_ADDRESS, ROUTES)
    assert isinstance(decision, Rejected) and decision.reason == UNKNOWN_ZONE
    _, wire = notify_wire("EXAMPLE.Test.")
    assert isinstance(decide_notify(wire, PRIMARY_ADDRESS, ROUTES), Accepted)


def test_queries_updates_responses_and_other_types_are_not_notify() -> None:
    _, query = notify_wire(opcode=dns.opcode.QUERY)
    _, update = notify_wire(opcode=dns.opcode.UPDATE)
    _, a_type = notify_wire(rdtype=dns.rdatatype.A)
    request, _ = notify_wire()
    response = dns.message.make_response(request).to_wire()
    two_questions = dns.message.make_query(ZONE, "SOA")
    two_questions.question.append(two_questions.question[0])
    two_questions.set_opcode(dns.opcode.NOTIFY)
    for wire in (query, update, a_type, response, two_questions.to_wire()):
        decision = decide_notify(wire, PRIMARY_ADDRESS, ROUTES)
        assert isinstance(decision, Rejected) and decision.reason == NOT_NOTIFY, decision


def test_malformed_messages_are_dropped() -> None:
    _, wire = notify_wire(serial=7)
    # A NOTIFY request's header (opcode 4, one question) with a question that is no name.
    bad_question = b"\x00\x00\x20\x00\x00\x01" + b"\x00" * 6 + b"\xff" * 28
    for garbage in (b"", b"\x00" * 5, wire[:-3], wire + b"\x00", bad_question):
        decision = decide_notify(garbage, PRIMARY_ADDRESS, ROUTES)
        assert isinstance(decision, Rejected) and decision.reason == MALFORMED, garbage


@settings(max_examples=2000)
@given(st.binary(max_size=600), st.sampled_from([PRIMARY_ADDRESS, STRANGER, "::1", "junk"]))
def test_random_bytes_never_raise_and_are_never_accepted(wire: bytes, source: str) -> None:
    decision = decide_notify(wire, source, ROUTES)
    assert isinstance(decision, Rejected | Accepted)
    if isinstance(decision, Accepted):
        # Only a well-formed NOTIFY for the routed zone can pass; random bytes
        # almost never are one, and if they are, the answer must be one too.
        assert dns.message.from_wire(decision.response).opcode() == dns.opcode.NOTIFY


@given(st.binary(min_size=1, max_size=64), st.integers(0, 200))
def test_mutated_notifies_never_raise(noise: bytes, position: int) -> None:
    _, wire = notify_wire(signer=PRIMARY_KEY, serial=9)
    index = position % len(wire)
    mutated = wire[:index] + noise + wire[index + len(noise) :]
    decision = decide_notify(mutated, STRANGER, ROUTES)
    if isinstance(decision, Accepted):
        # What survives keeps its meaning: the MAC covers everything but the id
        # (RFC 8945 §4.3.3 uses the original id, so forwarders may change it) and
        # the TSIG RR's TTL (which must be 0 and is not taken from the wire).
        assert decision.serial == 9 and decision.key_name == PRIMARY_KEY.name
        keyring = {PRIMARY_KEY.name: PRIMARY_KEY.to_dnspython()}
        original = dns.message.from_wire(wire, keyring=keyring)
        survivor = dns.message.from_wire(mutated, keyring=keyring)
        assert survivor.flags == original.flags
        assert survivor.question == original.question and survivor.answer == original.answer


# ---------------------------------------------------------------- cheap rejections (issue 13)


class ParseCounter:
    """Counts dnspython's full parses of a message (question-only parses are not full)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = 0
        original = dns.message.from_wire

        def counting(wire: bytes, *args: Any, **kwargs: Any) -> dns.message.Message:
            if not kwargs.get("question_only"):
                self.full += 1
            return original(wire, *args, **kwargs)

        monkeypatch.setattr(dns.message, "from_wire", counting)


def test_an_oversized_message_is_dropped_before_any_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    parses = ParseCounter(monkeypatch)
    message = make_notify(ZONE, soa_serial=1)
    message.additional.append(
        dns.rrset.from_text(ZONE, 0, "IN", "TXT", *[f'"{n:03d}{"x" * 247}"' for n in range(240)])
    )
    wire = message.to_wire()
    assert len(wire) > 60_000
    decision = decide_notify(wire, STRANGER, ROUTES)
    assert isinstance(decision, Rejected) and decision.reason == MALFORMED
    assert "octets" in decision.detail and parses.full == 0


def test_an_unsigned_notify_from_a_stranger_is_dropped_unparsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parses = ParseCounter(monkeypatch)
    _, wire = notify_wire(serial=5)
    decision = decide_notify(wire, STRANGER, ROUTES)
    assert isinstance(decision, Rejected) and decision.reason == UNKNOWN_SOURCE
    assert parses.full == 0
    # From a primary it is parsed once, to read its serial and to answer it.
    assert isinstance(decide_notify(wire, PRIMARY_ADDRESS, ROUTES), Accepted)
    assert parses.full == 1


def test_more_records_than_a_notify_has_is_not_a_notify() -> None:
    stuffed = make_notify(ZONE, soa_serial=1)
    stuffed.answer.append(make_notify(ZONE, soa_serial=2).answer[0])
    authority = make_notify(ZONE)
    authority.authority.append(dns.rrset.from_text(ZONE, 0, "IN", "NS", "ns1.example.test."))
    additional = make_notify(ZONE)
    for index in range(3):
        additional.additional.append(
            dns.rrset.from_text(f"a{index}.example.test.", 0, "IN", "A", "192.0.2.1")
        )
    for message in (stuffed, authority, additional):
        decision = decide_notify(message.to_wire(), PRIMARY_ADDRESS, ROUTES)
        assert isinstance(decision, Rejected) and decision.reason == NOT_NOTIFY, decision
        assert "a NOTIFY has at most" in decision.detail
    # What primaries send passes: the SOA hint, EDNS, and a TSIG.
    usual = make_notify(ZONE, soa_serial=3)
    usual.use_edns(0, payload=1232)
    usual.use_tsig(PRIMARY_KEY.to_dnspython())
    assert isinstance(decide_notify(usual.to_wire(), STRANGER, ROUTES), Accepted)


def test_the_fudge_a_sender_claims_is_capped() -> None:
    """RFC 8945 §5.2.3 with the sender's fudge would accept a 17-hour-old message (fudge 65535)."""
    message = make_notify(ZONE, soa_serial=4)
    message.use_tsig(PRIMARY_KEY.to_dnspython(), fudge=65535)
    wire = message.to_wire()
    signed_at = dns.message.from_wire(wire, keyring=False).tsig[0].time_signed
    assert isinstance(decide_notify(wire, STRANGER, ROUTES, now=signed_at + 299), Accepted)
    late = decide_notify(wire, STRANGER, ROUTES, now=signed_at + 17 * 3600)
    assert isinstance(late, Rejected) and late.reason == BAD_TSIG and "BADTIME" in late.detail
    early = decide_notify(wire, STRANGER, ROUTES, now=signed_at - 301)
    assert isinstance(early, Rejected) and early.reason == BAD_TSIG
    # A sender's smaller fudge is the one that counts.
    message = make_notify(ZONE, soa_serial=4)
    message.use_tsig(PRIMARY_KEY.to_dnspython(), fudge=10)
    wire = message.to_wire()
    signed_at = dns.message.from_wire(wire, keyring=False).tsig[0].time_signed
    assert isinstance(decide_notify(wire, STRANGER, ROUTES, now=signed_at + 60), Rejected)


def tenant_route(namespace: str, source: str, keys: tuple[TsigKey, ...] = ()) -> RelayRoute:
    return RelayRoute(
        ref=ObjectRef(namespace, "example-test"),
        zone=ZONE,
        allowed_sources=(ipaddress.ip_network(f"{source}/32"),),
        allowed_keys=keys,
        targets=((ProbeTarget(f"10.0.{len(namespace)}.1"), RELAY_KEY),),
    )


def test_one_zone_name_of_two_tenants_is_decided_per_zone_object() -> None:
    key_a, key_b = key("transfer-key."), key("transfer-key.")  # one name, two secrets
    tenant_a = tenant_route("tenant-a", "192.0.2.10", (key_a,))
    tenant_b = tenant_route("tenant-b", "192.0.2.20", (key_b,))
    shared = tenant_route("tenant-c", "192.0.2.10")  # also a secondary of A's primary
    routes = route_table([tenant_a, tenant_b, shared])
    _, wire = notify_wire()
    decision = decide_notify(wire, "192.0.2.10", routes)
    assert isinstance(decision, Accepted) and decision.routes == (tenant_a, shared)
    decision = decide_notify(wire, "192.0.2.20", routes)
    assert isinstance(decision, Accepted) and decision.routes == (tenant_b,)
    # Signed with B's secret: B's Zone only, also from A's primary's address.
    _, signed = notify_wire(signer=key_b)
    decision = decide_notify(signed, "192.0.2.10", routes)
    assert isinstance(decision, Accepted) and decision.routes == (tenant_b,)
    assert decision.key_name == key_b.name
    # A third secret of that name is nobody's.
    _, forged = notify_wire(signer=key("transfer-key."))
    decision = decide_notify(forged, "192.0.2.10", routes)
    assert isinstance(decision, Rejected) and decision.reason == BAD_TSIG


def test_route_table_keeps_one_route_per_zone_object() -> None:
    first = tenant_route("tenant-a", "192.0.2.10")
    again = tenant_route("tenant-a", "192.0.2.11")
    other = tenant_route("tenant-b", "192.0.2.20")
    table = route_table([first, other, again])
    assert table == {ZONE: (again, other)}
    assert dns.name.from_text("EXAMPLE.test.") in table


@pytest.mark.parametrize(
    ("pending", "new", "kept"),
    [
        (100, 200, 200),
        (200, 150, 200),
        (4294967290, 5, 5),  # 5 is after 4294967290 (RFC 1982 §3.2: across the wrap)
        (5, 4294967290, 5),
        (0, 2**31, 0),  # not comparable: the first one stays
        (None, 7, None),  # a NOTIFY without a hint asks for a check whatever the serial
        (7, None, None),
    ],
)
def test_coalesced_notifies_keep_the_later_serial(
    pending: int | None, new: int | None, kept: int | None
) -> None:
    assert later_serial(pending, new) == kept


def test_make_notify_is_an_rfc_1996_notify_with_the_serial_hint() -> None:
    message = make_notify(ZONE, key=RELAY_KEY, soa_serial=2**32 + 5)
    assert message.opcode() == dns.opcode.NOTIFY
    assert message.flags & dns.flags.AA and not message.flags & dns.flags.RD
    assert message.question[0].name == ZONE
    assert message.question[0].rdtype == dns.rdatatype.SOA
    assert message.answer[0][0].serial == 5
    parsed = dns.message.from_wire(
        message.to_wire(), keyring={RELAY_KEY.name: RELAY_KEY.to_dnspython()}
    )
    assert parsed.had_tsig and parsed.keyname == RELAY_KEY.name


def test_gauges_follow_the_evaluation_and_forget_removed_replicas() -> None:
    edge = [ReplicaTarget(f"g-{i}", "gauges", None, f"10.1.0.{i}", engine="knot") for i in range(3)]
    primary = ProbeResult(ProbeTarget("192.0.2.1"), SoaAnswer(9, 3600, 600, 86400, 60), None, 0)

    def replica(i: int, serial: int | None) -> tuple[ReplicaTarget, ProbeResult | None]:
        target = ProbeTarget(f"10.1.0.{i}")
        if serial is None:
            return edge[i], ProbeResult(target, None, "timeout after 2s", 2.0)
        return edge[i], ProbeResult(target, SoaAnswer(serial, 3600, 600, 86400, 60), None, 0)

    def sample(name: str, pod: str | None = None) -> float | None:
        labels = {"namespace": "ns", "zone": "gauges.test."}
        if pod is not None:
            labels |= {"server": "gauges", "pod": pod, "engine": "knot"}
        return REGISTRY.get_sample_value(name, labels)

    first = evaluate(
        generation=1,
        primaries=[primary],
        replicas=[replica(0, 9), replica(1, 8), replica(2, 9)],
        history=ZoneHistory(),
        previous_status={},
        now=1000.0,
    )
    metrics.record_serial_evaluation("ns", dns.name.from_text("gauges.test."), first, 1000.0)
    assert sample("secondarydns_zone_primary_serial") == 9
    assert sample("secondarydns_zone_last_probe_timestamp_seconds") == 1000.0
    assert sample("secondarydns_replica_serial", "g-1") == 8
    assert sample("secondarydns_replica_in_sync", "g-1") == 0
    assert sample("secondarydns_replica_in_sync", "g-0") == 1

    second = evaluate(
        generation=1,
        primaries=[primary],
        replicas=[replica(0, None), replica(1, 8)],
        history=first.history,
        previous_status=first.status,
        now=1040.0,
    )
    metrics.record_serial_evaluation("ns", "gauges.test.", second, 1040.0)
    assert sample("secondarydns_replica_seconds_behind", "g-1") == 40.0
    assert sample("secondarydns_replica_serial", "g-0") is None  # not answering
    assert sample("secondarydns_replica_in_sync", "g-0") == 0
    assert sample("secondarydns_replica_in_sync", "g-2") is None  # scaled away
    metrics.forget_zone("ns", "gauges.test.")
    assert sample("secondarydns_zone_primary_serial") is None
    assert sample("secondarydns_replica_in_sync", "g-1") is None


def test_every_new_metric_has_help_and_the_prefix() -> None:
    for metric in (
        metrics.NOTIFY_RECEIVED,
        metrics.NOTIFY_RELAYED,
        metrics.NOTIFY_REJECTED,
        metrics.NOTIFY_FANOUT_ERRORS,
        metrics.REPAIR_NOTIFIES,
        metrics.PROBE_ERRORS,
        metrics.ZONE_PRIMARY_SERIAL,
        metrics.ZONE_LAST_PROBE,
        metrics.REPLICA_SERIAL,
        metrics.REPLICA_IN_SYNC,
        metrics.REPLICA_SECONDS_BEHIND,
    ):
        (family,) = metric.describe()
        assert family.name.startswith("secondarydns_") and family.documentation
