"""The documents the operator and the agents exchange: one encoder, one parser each."""

from __future__ import annotations

import json

import dns.name

from secondary_dns.api.agent_contract import (
    ZonesDocument,
    ZoneState,
    canonical_order,
    encode_zones_file,
    parse_zones_file,
)

A = dns.name.from_text("a.test.")
B = dns.name.from_text("b.test.")


def test_the_zones_document_round_trips() -> None:
    document = ZonesDocument(
        "h", {A: ZoneState(5, 1796275910.0, 1796192424.0), B: ZoneState(None, None, None)}
    )
    assert ZonesDocument.parse(document.encode()) == document
    # The wire form other tools (dig-minded people, the demo's curl) read.
    assert json.loads(document.encode())["zones"]["a.test."] == {
        "serial": 5,
        "expires": 1796275910.0,
        "refresh": 1796192424.0,
    }


def test_junk_in_a_zones_document_is_left_out_zone_by_zone() -> None:
    document = {
        "configHash": "h",
        "zones": {
            "a.test.": {"serial": 5, "expires": 1796275910.0, "refresh": 1796192424.0},
            "c.test.": {"expires": "soon"},
            "d.test.": {"expires": True, "serial": True},
            "e..test.": {"expires": 1.0},
            "f.test.": "not an object",
        },
    }
    parsed = ZonesDocument.parse(json.dumps(document).encode())
    assert parsed is not None
    assert {zone: state.expires for zone, state in parsed.zones.items()} == {
        A: 1796275910.0,
        dns.name.from_text("c.test."): None,
        dns.name.from_text("d.test."): None,
    }
    assert parsed.zones[dns.name.from_text("d.test.")].serial is None


def test_what_is_not_an_agent_answer_is_none() -> None:
    assert ZonesDocument.parse(b"<html>") is None
    assert ZonesDocument.parse(b"[]") is None
    assert ZonesDocument.parse(b'{"zones": []}') is None
    assert ZonesDocument.parse(b'{"zones": {}}') == ZonesDocument(None, {})


def test_the_zones_file_round_trips_sorted_and_absolute() -> None:
    text = encode_zones_file([B, A])
    assert json.loads(text) == ["a.test.", "b.test."]
    assert parse_zones_file(text) == (A, B)
    assert "not absolute" in str(parse_zones_file('["a.test"]'))


def test_canonical_order_is_dns_names_own_order() -> None:
    names = [
        dns.name.from_text(text)
        for text in (
            "example.",
            "a.example.",
            "yljkjljk.a.example.",
            "Z.a.example.",
            "zABC.a.EXAMPLE.",
            "z.example.",
            "\\001.z.example.",
            "*.z.example.",
            "\\200.z.example.",
            "b.",
            "a-b.",
            "a.",
            "aa.",
            ".",
        )
    ]
    for shuffled in (names, names[::-1], names[3:] + names[:3]):
        assert sorted(shuffled, key=canonical_order) == sorted(shuffled)
