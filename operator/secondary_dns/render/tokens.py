"""Validated tokens for engine configuration text.

Engine configs are text with their own quoting rules (named.conf strings end at
the next `"`, `;` ends a statement, `#`, `//` and `/*` start comments). Nothing
from a manifest reaches the text without passing one of these functions, which
accept only values whose presentation needs no quoting rules at all: a DNS name
made of letters, digits, `-` and `_`; an address or network from `ipaddress`;
an absolute path of plain characters; a bounded integer. Anything else raises
`UnsafeValueError` and the caller leaves the zone (or the whole config) out.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath

import dns.name

# Letters, digits, hyphen (RFC 952/1123 host names) and underscore (service
# labels such as _dmarc, RFC 8552). Deliberately narrower than what DNS allows
# (RFC 2181 §11: any octet): such names would need escapes in zone and config
# text, and no zone delegated in the public DNS needs them.
_SAFE_LABEL = re.compile(rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# Plain path characters only: no quote, backslash, whitespace, `;` or braces.
_SAFE_PATH = re.compile(r"/(?:[A-Za-z0-9._+-]+/?)*")
# Kubernetes object names (RFC 1123 subdomains) as they appear in comments.
_OBJECT_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeValueError(ValueError):
    """A value that cannot be written into engine configuration safely."""


def config_name(name: dns.name.Name, what: str = "name") -> str:
    """A zone or key name as configuration text: lowercase, no trailing dot.

    Lowercase because names compare case-insensitively (RFC 4343): two
    spellings of one zone must render (and hash) the same.
    """
    if not isinstance(name, dns.name.Name):
        raise UnsafeValueError(f"{what} is not a DNS name: {name!r}")
    if not name.is_absolute():
        raise UnsafeValueError(f"{what} {name} is not absolute")
    if name == dns.name.root:
        raise UnsafeValueError(f"{what} must not be the root zone")
    labels = name.canonicalize().labels[:-1]
    for label in labels:
        if _SAFE_LABEL.fullmatch(label) is None:
            raise UnsafeValueError(
                f"{what} {name} has a label with characters other than letters, digits, '-' and '_'"
            )
    if len(name.to_wire() or b"") > 255:  # RFC 1035 §3.1; dnspython enforces it too
        raise UnsafeValueError(f"{what} {name} is longer than 255 octets")
    return b".".join(labels).decode("ascii")


def quoted_name(name: dns.name.Name, what: str = "name") -> str:
    return f'"{config_name(name, what)}"'


def address(value: IPAddress, what: str = "address") -> str:
    if not isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise UnsafeValueError(f"{what} is not an IP address: {value!r}")
    if isinstance(value, ipaddress.IPv6Address) and value.scope_id is not None:
        raise UnsafeValueError(f"{what} {value} has an interface scope")
    return value.compressed


def unicast_address(value: IPAddress, what: str = "address") -> str:
    """An address a server can be reached at: not unspecified, multicast or broadcast."""
    text = address(value, what)
    if (
        value.is_unspecified
        or value.is_multicast
        or value == ipaddress.IPv4Address("255.255.255.255")
    ):
        raise UnsafeValueError(f"{what} {text} is not a unicast address")
    return text


def network(value: IPNetwork, what: str = "network") -> str:
    if not isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        raise UnsafeValueError(f"{what} is not an IP network: {value!r}")
    return value.compressed


def integer(value: int, minimum: int, maximum: int, what: str = "value") -> str:
    # bool is an int in Python; True must not render as 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise UnsafeValueError(f"{what} is not an integer: {value!r}")
    if not minimum <= value <= maximum:
        raise UnsafeValueError(f"{what} {value} is outside {minimum}..{maximum}")
    return str(value)


def port(value: int, what: str = "port") -> str:
    return integer(value, 1, 65535, what)


def quoted_path(path: PurePosixPath, what: str = "path") -> str:
    text = str(path)
    if not path.is_absolute() or _SAFE_PATH.fullmatch(text) is None or ".." in path.parts:
        raise UnsafeValueError(f"{what} {text!r} is not a plain absolute path")
    return f'"{text}"'


def object_name(text: str) -> str:
    """A Kubernetes object or namespace name, for comments in the config."""
    if _OBJECT_NAME.fullmatch(text) is None:
        raise UnsafeValueError(f"{text!r} is not a Kubernetes object name")
    return text
