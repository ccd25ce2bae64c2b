"""The lean UDP answer reader of dns/probe.py agrees with dnspython's full parse."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secondary_dns.dns import probe

ZONE = dns.name.from_text("example.com.")


def _answer(
    serial: int = 5,
    *,
    aa: bool = True,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    owner: dns.name.Name = ZONE,
    extra: bool = True,
) -> tuple[int, bytes]:
    query = probe.make_soa_query(ZONE)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if aa:
        response.flags |= dns.flags.AA
    if rcode == dns.rcode.NOERROR:
        response.find_rrset(
            response.answer, owner, dns.rdataclass.IN, dns.rdatatype.SOA, create=True
        ).add(dns.rdata.from_text("IN", "SOA", f"ns1.example.com. h.example.com. {serial} 1 2 3 4"))
    if extra:
        ns = response.find_rrset(
            response.authority, ZONE, dns.rdataclass.IN, dns.rdatatype.NS, create=True
        )
        ns.add(dns.rdata.from_text("IN", "NS", "ns1.example.com."))
        response.find_rrset(
            response.additional,
            dns.name.from_text("ns1.example.com."),
            dns.rdataclass.IN,
            dns.rdatatype.A,
            create=True,
        ).add(dns.rdata.from_text("IN", "A", "192.0.2.1"))
    return query.id, response.to_wire()


def _full(wire: bytes) -> object:
    return probe.read_soa_answer(ZONE, dns.message.from_wire(wire))


@given(st.integers(min_value=0, max_value=2**32 - 1), st.booleans(), st.booleans())
def test_lean_reader_agrees_with_the_full_parse(serial: int, aa: bool, extra: bool) -> None:
    query_id, wire = _answer(serial, aa=aa, extra=extra)
    assert probe._read_udp_answer(ZONE, wire, query_id) == _full(wire)


@pytest.mark.parametrize("rcode", [dns.rcode.REFUSED, dns.rcode.SERVFAIL, dns.rcode.NOTAUTH])
def test_errors_read_as_their_rcode(rcode: dns.rcode.Rcode) -> None:
    query_id, wire = _answer(rcode=rcode)
    assert probe._read_udp_answer(ZONE, wire, query_id) == dns.rcode.to_text(rcode) == _full(wire)


def test_soa_of_another_owner_is_no_answer() -> None:
    query_id, wire = _answer(owner=dns.name.from_text("sub.example.com."))
    assert probe._read_udp_answer(ZONE, wire, query_id) == "no SOA in answer" == _full(wire)


def test_truncated_answer_asks_for_tcp() -> None:
    query_id, wire = _answer()
    flags = int.from_bytes(wire[2:4], "big") | dns.flags.TC
    truncated = wire[:2] + flags.to_bytes(2, "big") + wire[4:]
    assert probe._read_udp_answer(ZONE, truncated, query_id) is None


def test_a_datagram_for_another_query_is_skipped() -> None:
    query_id, wire = _answer()
    with pytest.raises(probe._Unexpected):
        probe._read_udp_answer(ZONE, wire, (query_id + 1) % 65536)
    with pytest.raises(probe._Unexpected):
        probe._read_udp_answer(dns.name.from_text("other.test."), wire, query_id)
    with pytest.raises(probe._Unexpected):
        probe._read_udp_answer(ZONE, wire[:5], query_id)
