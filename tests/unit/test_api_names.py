"""Property tests for zone names and addresses: what the CRD's rules accept, the models accept."""

from __future__ import annotations

import ipaddress
import string

import dns.name
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from manifest_cases import valid_zone
from secondary_dns.api import SpecError, parse_zone

LDH_ = string.ascii_letters + string.digits + "_"


@st.composite
def labels(draw: st.DrawFn, max_size: int = 63) -> str:
    # letters, digits, '_' and '-' (not at either end), 1 to 63 characters
    size = draw(st.integers(1, max_size))
    if size == 1:
        return draw(st.sampled_from(LDH_))
    middle = draw(st.text(alphabet=LDH_ + "-", min_size=size - 2, max_size=size - 2))
    return draw(st.sampled_from(LDH_)) + middle + draw(st.sampled_from(LDH_))


@st.composite
def zone_names(draw: st.DrawFn) -> str:
    parts = draw(st.lists(labels(), min_size=1, max_size=8))
    while len(".".join(parts)) > 253:
        parts.pop()
    assume(parts)
    return ".".join(parts) + draw(st.sampled_from(["", "."]))


def zone_with(name: object = "example.com", address: object = "192.0.2.1") -> dict[str, object]:
    manifest = valid_zone()
    manifest["spec"]["zone"] = name
    manifest["spec"]["primaries"][0]["address"] = address
    return manifest


@given(zone_names())
def test_valid_zone_names_round_trip(name: str) -> None:
    parsed = parse_zone(zone_with(name)).zone
    assert parsed.is_absolute()
    assert parsed == dns.name.from_text(name)
    text = parsed.to_text()
    assert text == text.lower() and text.endswith(".")
    # Normalising twice changes nothing: status.zone is a fixed point.
    assert parse_zone(zone_with(text)).zone.to_text() == text


@given(zone_names(), st.integers(0, 7), st.sampled_from(["", "..", "*", "-a", "a-", " ", "a/b"]))
def test_names_with_a_bad_label_are_rejected(name: str, where: int, bad: str) -> None:
    parts = name.rstrip(".").split(".")
    # Before the last label: an empty label at the end is just the trailing dot.
    parts.insert(min(where, len(parts) - 1), bad)
    with pytest.raises(SpecError) as caught:
        parse_zone(zone_with(".".join(parts)))
    assert caught.value.field == "spec.zone"


@given(labels(), st.integers(64, 80))
def test_labels_over_63_characters_are_rejected(label: str, size: int) -> None:
    with pytest.raises(SpecError, match="1 to 63 characters"):
        parse_zone(zone_with(("x" * size) + "." + label))


@given(st.lists(labels(), min_size=4, max_size=10))
def test_names_over_253_characters_are_rejected(parts: list[str]) -> None:
    name = ".".join(parts)
    while len(name) <= 253:
        name = "a" * 63 + "." + name
    with pytest.raises(SpecError, match="at most 253 characters"):
        parse_zone(zone_with(name))


@given(st.text(max_size=40))
def test_arbitrary_text_is_accepted_only_as_a_dns_name(text: str) -> None:
    try:
        parsed = parse_zone(zone_with(text)).zone
    except SpecError as error:
        assert error.field == "spec.zone"
        return
    assert parsed == dns.name.from_text(text)


def unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """What a primary may be: Go's netip IsGlobalUnicast (the CRD's rule), not IPv4-mapped."""
    mapped = isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None
    broadcast = address == ipaddress.IPv4Address("255.255.255.255")
    return not (
        address.is_unspecified
        or address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or broadcast
        or mapped
    )


@given(st.ip_addresses())
def test_unicast_addresses_round_trip(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assume(unicast(address))
    for text in {str(address), address.exploded, str(address).upper()}:
        assert parse_zone(zone_with(address=text)).primaries[0].address == address


NOT_A_PRIMARY = st.one_of(
    st.ip_addresses(network="224.0.0.0/4"),
    st.ip_addresses(network="ff00::/8"),
    st.ip_addresses(network="::ffff:0:0/96"),
    st.ip_addresses(network="127.0.0.0/8"),
    st.ip_addresses(network="169.254.0.0/16"),
    st.ip_addresses(network="fe80::/10"),
    st.sampled_from(
        [
            ipaddress.IPv4Address("0.0.0.0"),
            ipaddress.IPv6Address("::"),
            ipaddress.IPv4Address("255.255.255.255"),
            ipaddress.IPv6Address("::1"),
        ]
    ),
)


@given(NOT_A_PRIMARY)
def test_addresses_that_cannot_be_a_primary_are_rejected(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert not unicast(address)
    with pytest.raises(SpecError) as caught:
        parse_zone(zone_with(address=str(address)))
    assert caught.value.field == "spec.primaries[0].address"


@given(st.ip_addresses(v=6), st.from_regex(r"\A[a-z0-9]{1,8}\Z"))
def test_scoped_addresses_are_rejected(address: ipaddress.IPv6Address, scope: str) -> None:
    with pytest.raises(SpecError, match="interface scope"):
        parse_zone(zone_with(address=f"{address}%{scope}"))


@given(st.ip_addresses(v=4), st.integers(0, 3))
def test_ipv4_with_leading_zeros_is_rejected(address: ipaddress.IPv4Address, octet: int) -> None:
    parts = str(address).split(".")
    parts[octet] = "0" + parts[octet]
    with pytest.raises(SpecError):
        parse_zone(zone_with(address=".".join(parts)))


@given(st.text(alphabet=string.ascii_letters + ".-", min_size=1, max_size=30))
def test_host_names_are_not_addresses(text: str) -> None:
    with pytest.raises(SpecError, match="not an IPv4 or IPv6 address"):
        parse_zone(zone_with(address=text))


@given(st.ip_addresses(), st.data())
def test_networks_round_trip_and_host_bits_are_rejected(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, data: st.DataObject
) -> None:
    assume(not (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped))
    length = data.draw(st.integers(0, address.max_prefixlen))
    network = ipaddress.ip_network(f"{address}/{length}", strict=False)
    manifest = zone_with()
    manifest["spec"]["allowTransfer"] = [{"cidr": str(network)}]
    assert parse_zone(manifest).allow_transfer[0].cidr == network
    if network.network_address != address:
        manifest["spec"]["allowTransfer"] = [{"cidr": f"{address}/{length}"}]
        with pytest.raises(SpecError, match="host bits"):
            parse_zone(manifest)
