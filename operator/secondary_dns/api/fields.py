"""Reading one field of a custom resource: type, bounds and format, with the field's path.

These mirror the OpenAPI schema in crds/: the API server applies the schema when an
object is written, this module applies the same rules when the operator reads it,
because an object stored before a schema change was never checked against the new one.
Every check raises SpecError naming the field and what a valid value looks like.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from typing import Any

import dns.name

from secondary_dns.api.errors import SpecError
from secondary_dns.api.limits import (
    MAX_ADDRESS_LENGTH,
    MAX_LABEL_KEY,
    MAX_LABEL_LENGTH,
    MAX_LABEL_VALUE,
    MAX_NAME_LENGTH,
    MAX_OBJECT_NAME,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Labels are letters, digits, '-' (not at either end, so no name can be mistaken
# for a command-line option by rndc or knotc) and '_' (service zones such as
# _msdcs.example.com).
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")

# Kubernetes object names (k8s.io/apimachinery/pkg/util/validation).
DNS1123_SUBDOMAIN = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
)
DNS1035_LABEL = re.compile(r"[a-z](?:[-a-z0-9]*[a-z0-9])?")
# A label key is an optional DNS-1123 subdomain prefix and a name of at most 63
# characters (k8s IsQualifiedName); the CRDs use the same expression in CEL.
LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
# resource.Quantity as controller-gen writes its pattern.
QUANTITY = re.compile(
    r"(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?"
)
_PREFIX_LENGTH = re.compile(r"0|[1-9][0-9]{0,2}")


def json_type(value: object) -> str:
    """The JSON type name the API server would use in its message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def read_object(value: object, path: str, known: Collection[str]) -> dict[str, Any]:
    """An object with only known fields; nulls dropped as the API server prunes them."""
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be an object (a YAML mapping), not {json_type(value)}")
    for key in value:
        if key not in known:
            fields = ", ".join(sorted(known))
            raise SpecError(
                child(path, str(key)),
                f"unknown field; the fields of {path or 'the object'} are: {fields}",
            )
    # A null for a non-nullable field is pruned before defaulting (apiextensions
    # since Kubernetes 1.20), so "port: null" means "port: 53", as on the server.
    return {str(key): item for key, item in value.items() if item is not None}


def read_string(
    obj: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: str | None = None,
    max_length: int | None = None,
    enum: Collection[str] | None = None,
    required: bool = False,
    hint: str = "",
) -> str | None:
    field = child(path, key)
    if key not in obj:
        if required:
            raise SpecError(field, f"is required: {hint}" if hint else "is required")
        return default
    value = obj[key]
    if not isinstance(value, str):
        raise SpecError(field, f"must be a string, not {json_type(value)}")
    if enum is not None and value not in enum:
        choices = ", ".join(f'"{choice}"' for choice in enum)
        raise SpecError(field, f'"{value}" is not supported; supported values: {choices}')
    if max_length is not None and len(value) > max_length:
        raise SpecError(field, f"must have at most {max_length} characters, has {len(value)}")
    return value


def require_string(obj: Mapping[str, Any], key: str, path: str, **kwargs: Any) -> str:
    value = read_string(obj, key, path, required=True, **kwargs)
    assert value is not None
    return value


def read_integer(
    obj: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    what: str = "",
) -> int | None:
    field = child(path, key)
    if key not in obj:
        return default
    value = obj[key]
    # bool is an int in Python; in JSON it is not, and the API server says so.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field, f"must be an integer, not {json_type(value)} (write it unquoted)")
    if minimum is not None and value < minimum:
        raise SpecError(field, f"must be at least {minimum}{what}, got {value}")
    if maximum is not None and value > maximum:
        raise SpecError(field, f"must be at most {maximum}{what}, got {value}")
    return value


def read_boolean(obj: Mapping[str, Any], key: str, path: str, *, default: bool) -> bool:
    if key not in obj:
        return default
    value = obj[key]
    if not isinstance(value, bool):
        raise SpecError(
            child(path, key), f"must be true or false, not {json_type(value)} (write it unquoted)"
        )
    return value


def read_list(
    obj: Mapping[str, Any],
    key: str,
    path: str,
    *,
    min_items: int = 0,
    max_items: int | None = None,
) -> list[Any] | None:
    field = child(path, key)
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, list | tuple):
        raise SpecError(field, f"must be a list, not {json_type(value)}")
    if len(value) < min_items:
        raise SpecError(field, f"must have at least {min_items} item(s), has {len(value)}")
    if max_items is not None and len(value) > max_items:
        raise SpecError(field, f"must have at most {max_items} items, has {len(value)}")
    return list(value)


def read_string_list(
    obj: Mapping[str, Any],
    key: str,
    path: str,
    *,
    min_items: int = 0,
    max_items: int | None = None,
    unique: bool = False,
) -> list[str] | None:
    items = read_list(obj, key, path, min_items=min_items, max_items=max_items)
    if items is None:
        return None
    field = child(path, key)
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise SpecError(f"{field}[{index}]", f"must be a string, not {json_type(item)}")
        if unique and item in seen:
            raise SpecError(f"{field}[{index}]", f'"{item}" is listed twice; list it once')
        seen.add(item)
    return items


def read_string_map(
    obj: Mapping[str, Any], key: str, path: str, *, max_properties: int | None = None
) -> dict[str, str] | None:
    field = child(path, key)
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, Mapping):
        raise SpecError(field, f"must be a map of strings, not {json_type(value)}")
    if max_properties is not None and len(value) > max_properties:
        raise SpecError(field, f"must have at most {max_properties} entries, has {len(value)}")
    for name, item in value.items():
        if not isinstance(item, str):
            raise SpecError(
                f"{field}.{name}", f"must be a string, not {json_type(item)} (quote it)"
            )
    return {str(name): item for name, item in value.items()}


def check_label_key(key: str, field: str) -> None:
    """A label or annotation key: [prefix/]name (k8s IsQualifiedName)."""
    if len(key) > MAX_LABEL_KEY or LABEL_KEY.fullmatch(key) is None:
        raise SpecError(
            field,
            f'"{key}" is not a valid label key; use an optional DNS subdomain prefix and a name '
            "of at most 63 letters, digits, '-', '_' or '.', e.g. example.com/role",
        )


def check_labels(labels: Mapping[str, str], field: str) -> None:
    for key, value in labels.items():
        check_label_key(key, field)
        if len(value) > MAX_LABEL_VALUE or LABEL_VALUE.fullmatch(value) is None:
            raise SpecError(
                field,
                f'the value of label "{key}" is not a valid label value; use at most 63 '
                "letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            )


def check_object_name(name: str, field: str) -> None:
    """A DNS-1123 subdomain: the name of a Secret or another namespaced object."""
    if len(name) > MAX_OBJECT_NAME or DNS1123_SUBDOMAIN.fullmatch(name) is None:
        raise SpecError(
            field,
            f'"{name}" is not a valid object name; use lowercase letters, digits, '
            "'-' and '.', starting and ending with a letter or digit, e.g. tsig-primary",
        )


def parse_dns_name(text: str, field: str) -> dns.name.Name:
    """A zone or key name, absolute or relative to the root, returned absolute and lowercased.

    Lowercased because DNS names compare case-insensitively (RFC 4343), and one
    spelling per zone keeps file names, status and metrics from splitting in two.
    """
    body = text[:-1] if text.endswith(".") else text
    if len(body) > MAX_NAME_LENGTH:
        raise SpecError(
            field,
            f"must have at most {MAX_NAME_LENGTH} characters, not counting a trailing dot "
            f"(RFC 1035 §2.3.4); this one has {len(body)}",
        )
    labels = body.split(".")
    if "*" in labels:
        raise SpecError(
            field,
            "must not be a wildcard: name the zone by its apex, e.g. example.com rather "
            "than *.example.com",
        )
    for label in labels:
        if not 1 <= len(label) <= MAX_LABEL_LENGTH:
            raise SpecError(
                field,
                "every label must have 1 to 63 characters: no empty labels (a leading dot, "
                f'"..", or the root "."), e.g. example.com; "{text}" does not',
            )
    for label in labels:
        if _DNS_LABEL.fullmatch(label) is None:
            raise SpecError(
                field,
                "labels may only contain letters, digits, '_' and '-' (not at either end of "
                f'a label), e.g. example.com or 2.0.192.in-addr.arpa; "{text}" does not',
            )
    return dns.name.from_text(body + ".").canonicalize()


def _check_address_length(value: str, field: str) -> None:
    if len(value) > MAX_ADDRESS_LENGTH:
        raise SpecError(
            field, f"must have at most {MAX_ADDRESS_LENGTH} characters, has {len(value)}"
        )


def parse_ip_address(value: object, field: str) -> IPAddress:
    """One unicast IPv4 or IPv6 address in the form Kubernetes' CEL isIP() accepts."""
    address = _ip_address(value, field)
    # Go's netip IsGlobalUnicast, which the CRD rule uses: private ranges are fine,
    # unspecified, multicast and broadcast addresses cannot be a transfer peer.
    broadcast = ipaddress.IPv4Address("255.255.255.255")
    if address.is_unspecified or address.is_multicast or address == broadcast:
        raise SpecError(
            field,
            f'"{value}" is not a unicast address (unspecified, multicast or broadcast); '
            f"write the address of one server, {_ADDRESS_EXAMPLE}",
        )
    return address


def parse_primary_address(value: object, field: str) -> IPAddress:
    """A primary's address: what CEL's ip(self).isGlobalUnicast() accepts.

    Private and unique-local addresses are global unicast too (hidden primaries
    have them); loopback and link-local are not: from a replica they reach the
    replica itself, its node or its neighbours (169.254.169.254 is many clouds'
    metadata service), so a Zone could make the replicas and the operator's
    probes knock on them.
    """
    address = _ip_address(value, field)
    kinds = (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_multicast, "a multicast address"),
        (address == ipaddress.IPv4Address("255.255.255.255"), "the broadcast address"),
    )
    for matches, kind in kinds:
        if matches:
            raise SpecError(
                field,
                f'"{value}" is {kind}; it must be the global unicast address of a primary, '
                "not loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10), "
                "unspecified, multicast or broadcast: from a replica those reach the replica "
                f"itself, its node or its neighbours, {_ADDRESS_EXAMPLE}",
            )
    return address


_ADDRESS_EXAMPLE = "e.g. 192.0.2.53 or 2001:db8::53"


def _ip_address(value: object, field: str) -> IPAddress:
    """An IPv4 or IPv6 address written as CEL isIP() accepts it, of any kind."""
    if not isinstance(value, str):
        raise SpecError(field, f"must be an IP address as a string, not {json_type(value)}")
    _check_address_length(value, field)
    example = _ADDRESS_EXAMPLE
    # Python accepts scoped IPv6 ("fe80::1%eth0") and IPv4-mapped IPv6; the API
    # server's isIP() refuses both, and a scope means nothing outside one host.
    if "%" in value:
        raise SpecError(
            field, f'"{value}" has an interface scope; write the address alone, {example}'
        )
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise SpecError(
            field, f'"{value}" is not an IPv4 or IPv6 address (no host names), {example}'
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise SpecError(
            field, f'"{value}" is an IPv4-mapped IPv6 address; write {address.ipv4_mapped}'
        )
    return address


def parse_cidr(value: object, field: str) -> IPNetwork:
    """A network in CIDR notation with no host bits set, as CEL isCIDR() plus a mask check."""
    if not isinstance(value, str):
        raise SpecError(field, f"must be a CIDR as a string, not {json_type(value)}")
    _check_address_length(value, field)
    example = "e.g. 192.0.2.0/24, 198.51.100.7/32 or 2001:db8::/64"
    address, slash, length = value.partition("/")
    if not slash or _PREFIX_LENGTH.fullmatch(length) is None or "%" in value:
        raise SpecError(
            field, f'"{value}" is not a CIDR; write an address and a prefix length, {example}'
        )
    try:
        network = ipaddress.ip_network(value, strict=False)
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise SpecError(field, f'"{value}" is not a valid CIDR, {example}') from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        raise SpecError(field, f'"{value}" uses an IPv4-mapped IPv6 address; write the IPv4 CIDR')
    if network.network_address != ip:
        raise SpecError(
            field,
            f'"{value}" has host bits set; write the network, {network}, or the host '
            f"alone as {ip}/{ip.max_prefixlen}",
        )
    return network


def check_quantity(value: object, field: str) -> str:
    """A resource.Quantity such as 500m, 1Gi or 2; the API server keeps ints as ints."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SpecError(field, f"must be a quantity such as 500m or 1Gi, not {json_type(value)}")
    text = str(value)
    if QUANTITY.fullmatch(text) is None:
        raise SpecError(field, f'"{text}" is not a quantity; write e.g. 500m, 2, 128Mi or 1Gi')
    return text


# The operator setting --refused-primary-networks travels in this variable.
REFUSED_PRIMARY_NETWORKS_ENV = "SDNS_REFUSED_PRIMARY_NETWORKS"


def parse_cidr_list(text: str, field: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs (an operator setting); a SpecError names the bad item."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    return tuple(parse_cidr(item, f"{field}[{index}]") for index, item in enumerate(items))
