"""Validation of everything that reaches engine config text (hypothesis)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath

import dns.name
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secondary_dns.render import tokens
from secondary_dns.render.tokens import UnsafeValueError

SAFE_TEXT = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")

labels = st.binary(min_size=1, max_size=63)
names = st.lists(labels, min_size=1, max_size=3).map(lambda parts: dns.name.Name([*parts, b""]))


@given(names)
def test_a_name_is_written_safely_or_refused(name: dns.name.Name) -> None:
    try:
        text = tokens.config_name(name)
    except UnsafeValueError:
        # Refused only for a reason: some label has a byte outside [A-Za-z0-9_-]
        # or starts/ends with '-'.
        assert any(
            re.fullmatch(rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?", label) is None
            for label in name.labels[:-1]
        )
        return
    assert SAFE_TEXT.fullmatch(text)
    # The text means the same name (case-insensitively, RFC 4343).
    assert dns.name.from_text(text) == name
    assert text == text.lower()


@given(st.from_regex(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,20}[A-Za-z0-9_])?", fullmatch=True))
def test_host_names_and_service_labels_are_accepted(label: str) -> None:
    assert tokens.config_name(dns.name.from_text(f"{label}.example.")) == f"{label.lower()}.example"


@pytest.mark.parametrize(
    "text",
    ['a"b.example.', "a;b.example.", "a{b.example.", "a\\032b.example.", "-a.example.", "*.x."],
)
def test_config_syntax_in_names_is_refused(text: str) -> None:
    with pytest.raises(UnsafeValueError):
        tokens.config_name(dns.name.from_text(text))


def test_relative_and_root_names_are_refused() -> None:
    with pytest.raises(UnsafeValueError):
        tokens.config_name(dns.name.from_text("example", origin=None))
    with pytest.raises(UnsafeValueError):
        tokens.config_name(dns.name.root)


@given(st.ip_addresses())
def test_addresses_round_trip(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    text = tokens.address(address)
    assert ipaddress.ip_address(text) == address
    assert re.fullmatch(r"[0-9a-f.:]+", text)


@given(st.ip_addresses())
def test_unicast_addresses_only_for_primaries(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    if address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255":
        with pytest.raises(UnsafeValueError):
            tokens.unicast_address(address)
    else:
        assert tokens.unicast_address(address) == address.compressed


@given(st.ip_addresses(), st.integers(min_value=0, max_value=128))
def test_networks_round_trip(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int
) -> None:
    network = ipaddress.ip_network(f"{address}/{min(prefix, address.max_prefixlen)}", strict=False)
    assert ipaddress.ip_network(tokens.network(network)) == network


def test_scoped_ipv6_is_refused() -> None:
    with pytest.raises(UnsafeValueError):
        tokens.address(ipaddress.IPv6Address("fe80::1%eth0"))


@given(st.text(min_size=1, max_size=40))
def test_paths_are_plain_or_refused(text: str) -> None:
    path = PurePosixPath("/" + text)
    try:
        quoted = tokens.quoted_path(path)
    except UnsafeValueError:
        return
    inner = quoted[1:-1]
    assert re.fullmatch(r"/[A-Za-z0-9._+/-]*", inner)
    assert ".." not in path.parts


@given(
    st.integers(), st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=100)
)
def test_integers_in_bounds_only(value: int, low: int, high: int) -> None:
    if low <= value <= high:
        assert tokens.integer(value, low, high) == str(value)
    else:
        with pytest.raises(UnsafeValueError):
            tokens.integer(value, low, high)


def test_booleans_are_not_integers() -> None:
    with pytest.raises(UnsafeValueError):
        tokens.integer(True, 0, 10)
