"""Connection slots shared fairly between sources (the relay's TCP, the agent's HTTP)."""

from __future__ import annotations

import pytest

from secondary_dns.connections import ConnectionSlots, source_key


def test_sources_are_addresses_and_ipv6_64s() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9")
    assert source_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("") == ""


def test_one_source_holds_at_most_its_share() -> None:
    slots: ConnectionSlots[str] = ConnectionSlots(total=10, per_source=3)
    assert [slots.admit("192.0.2.1", f"c{n}").admitted for n in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert len(slots) == 3 and slots.refused == 2
    slots.release("c0")
    assert slots.admit("192.0.2.1", "c5").admitted
    slots.release("never-admitted")  # harmless
    assert len(slots) == 3


def test_a_full_table_takes_the_oldest_connection_of_the_biggest_holder() -> None:
    slots: ConnectionSlots[str] = ConnectionSlots(total=4, per_source=3)
    for name in ("a1", "a2", "a3"):
        assert slots.admit("192.0.2.1", name).admitted
    assert slots.admit("192.0.2.2", "b1").admitted
    # Full: a newcomer takes a's oldest, a holds the most.
    admission = slots.admit("192.0.2.3", "c1")
    assert admission.admitted and admission.evict == "a1"
    # b, c and a hold 1, 1 and 2: the next newcomer takes a's oldest left.
    admission = slots.admit("192.0.2.4", "d1")
    assert admission.admitted and admission.evict == "a2"
    # Everyone holds one: the oldest of all makes room (a3, then b1, c1, d1).
    admission = slots.admit("192.0.2.5", "e1")
    assert admission.admitted and admission.evict == "a3"
    # A source that would then hold the most may not take from others.
    admission = slots.admit("192.0.2.5", "e2")
    assert not admission.admitted and admission.evict is None
    assert len(slots) == 4 and slots.evicted == 3
    # The evicted connection's release later is harmless.
    slots.release("a1")
    assert len(slots) == 4


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ConnectionSlots(total=0, per_source=1)
