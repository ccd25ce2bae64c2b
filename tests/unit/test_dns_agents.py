"""Reading the agents' /zones answers (pure part of secondary_dns.dns.agents)."""

from __future__ import annotations

import json

import dns.name

from secondary_dns.dns.agents import parse_zones_document

A = dns.name.from_text("a.test.")


def test_expire_times_are_read_and_junk_is_skipped() -> None:
    document = {
        "configHash": "h",
        "zones": {
            "a.test.": {"serial": 5, "expires": 1796275910.0, "refresh": 1796192424.0},
            "b.test.": {"serial": None, "expires": None, "refresh": None},
            "c.test.": {"expires": "soon"},
            "d.test.": {"expires": True},
            "e..test.": {"expires": 1.0},
            "f.test.": "not an object",
        },
    }
    assert parse_zones_document(json.dumps(document).encode()) == {A: 1796275910.0}


def test_what_is_not_an_agent_answer_is_none() -> None:
    assert parse_zones_document(b"<html>") is None
    assert parse_zones_document(b"[]") is None
    assert parse_zones_document(b'{"zones": []}') is None
    assert parse_zones_document(b'{"zones": {}}') == {}
