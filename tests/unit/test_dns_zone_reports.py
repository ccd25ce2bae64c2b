"""The agents' /zones read incrementally: unchanged zones keep their state object."""

from __future__ import annotations

import json
import sys

import dns.name

from secondary_dns.api.agent_contract import ZonesDocument, ZoneState
from secondary_dns.dns.agent_client import ZoneReports, zone_key


def body(**zones: tuple[int | None, float | None]) -> bytes:
    return ZonesDocument(
        "hash",
        {dns.name.from_text(z): ZoneState(s, e, 1000.0) for z, (s, e) in zones.items()},
    ).encode()


def test_a_zone_is_keyed_by_its_text_in_lower_case() -> None:
    reports = ZoneReports()
    reports.update({"10.0.0.1": body(**{"Example.COM": (5, 9000.0)})})
    states = reports.states("10.0.0.1")
    assert states is not None
    assert zone_key(dns.name.from_text("example.com")) == "example.com."
    assert states["example.com."] == ZoneState(5, 9000.0, 1000.0)


def test_unchanged_zones_keep_their_state_and_only_changes_are_reported() -> None:
    reports = ZoneReports()
    reports.update({"a": body(one=(5, 9000.0), two=(7, 9000.0))})
    first = dict(reports.states("a") or {})
    assert reports.changed("a", "one.") and reports.changed("a", "two.")
    # The same body: nothing read anew.
    reports.update({"a": body(one=(5, 9000.0), two=(7, 9000.0))})
    assert not reports.changed("a", "one.") and not reports.changed("a", "two.")
    # One zone refreshed (new expiry), one new serial, one new zone.
    reports.update({"a": body(one=(5, 9500.0), two=(7, 9000.0), three=(1, 9000.0))})
    states = reports.states("a") or {}
    assert states["two."] is first["two."] and not reports.changed("a", "two.")
    assert states["one."] == ZoneState(5, 9500.0, 1000.0) and reports.changed("a", "one.")
    assert reports.changed("a", "three.")
    reports.update({"a": body(one=(6, 9500.0), two=(7, 9000.0))})
    assert (reports.states("a") or {})["one."].serial == 6 and reports.changed("a", "one.")
    assert "three." not in (reports.states("a") or {})


def test_a_report_s_body_is_not_kept_once_read() -> None:
    """Each replica's body was kept to tell the next one identical: 1.1 MB each at
    10,000 zones. Its digest tells the same; the body itself is let go."""
    reports = ZoneReports()
    first = body(one=(5, 9000.0), two=(7, 9000.0))
    held = sys.getrefcount(first)
    reports.update({"a": first})
    assert sys.getrefcount(first) == held
    # An identical body (another object, as each round's is) is still not read anew.
    reports.update({"a": body(one=(5, 9000.0), two=(7, 9000.0))})
    assert not reports.changed("a", "one.") and not reports.changed("a", "two.")


def test_an_agent_that_did_not_answer_or_sent_no_document_has_no_states() -> None:
    reports = ZoneReports()
    reports.update({"a": body(one=(5, None)), "b": body(one=(5, None))})
    reports.update({"a": b"<html>"})
    assert reports.states("a") is None and reports.states("b") is None
    assert not reports.changed("a", "one.")


def test_a_malformed_entry_is_left_out_and_odd_values_are_unknown() -> None:
    reports = ZoneReports()
    document = {
        "zones": {
            "good.": {"serial": 3, "expires": 9000},
            "bad..name": {"serial": 3},
            "odd.": {"serial": True, "expires": "soon"},
            "list.": [1],
        }
    }
    reports.update({"a": json.dumps(document).encode()})
    states = reports.states("a") or {}
    assert set(states) == {"good.", "odd."}
    assert states["odd."] == ZoneState(None, None, None)
    assert states["good."] == ZoneState(3, 9000.0, None)
    # Read again with a change elsewhere: the odd entry reads the same, kept.
    document["zones"]["good."] = {"serial": 4}
    odd = states["odd."]
    reports.update({"a": json.dumps(document).encode()})
    assert (reports.states("a") or {})["odd."] is odd


def test_every_replica_s_report_names_a_zone_with_one_string() -> None:
    """Each report is decoded from its own body: the zone names are interned, so
    10,000 zones reported by 3 replicas hold 10,000 names, not 30,000."""
    reports = ZoneReports()
    reports.update({"a": body(one=(5, 9000.0)), "b": body(one=(5, 9000.0))})
    reports.update({"a": body(one=(6, 9000.0)), "b": body(one=(5, 9000.0))})
    (in_a,), (in_b,) = (list(reports.states(address) or {}) for address in ("a", "b"))
    assert in_a == in_b == "one." and in_a is in_b
