"""The Zone custom resource: one zone, its primaries, who serves it and who may transfer it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dns.name

from secondary_dns.api.common import (
    check_root,
    check_server_name,
    parse_label_selector,
    parse_secret_key_ref,
)
from secondary_dns.api.errors import SpecError
from secondary_dns.api.fields import (
    IPAddress,
    IPNetwork,
    child,
    parse_cidr,
    parse_dns_name,
    parse_primary_address,
    read_integer,
    read_list,
    read_object,
    read_string,
    read_string_list,
    require_string,
)
from secondary_dns.api.limits import (
    MAX_ALLOW_TRANSFER,
    MAX_NOTIFY_ALLOW_FROM,
    MAX_PORT,
    MAX_PRIMARIES,
    MAX_RETRANSFER_REQUEST,
    MAX_SERVERS,
    MAX_TIMER_SECONDS,
    MIN_PORT,
    MIN_PRIMARIES,
    MIN_TIMER_SECONDS,
)
from secondary_dns.api.meta import ZONE_KIND, LabelSelector, SecretKeyRef

DEFAULT_PORT = 53

SPEC_FIELDS = (
    "zone",
    "primaries",
    "servers",
    "serverSelector",
    "allowTransfer",
    "notify",
    "timers",
    "retransferRequest",
)


@dataclass(frozen=True, slots=True)
class Primary:
    """A primary to transfer from; several are tried in the order listed."""

    address: IPAddress
    port: int = DEFAULT_PORT
    tsig_key_secret_ref: SecretKeyRef | None = None


@dataclass(frozen=True, slots=True)
class TransferAclEntry:
    """Who may transfer the zone from the secondaries: a network, a TSIG key, or both.

    With both set a client must come from the network AND sign with the key.
    """

    cidr: IPNetwork | None
    tsig_key_secret_ref: SecretKeyRef | None


@dataclass(frozen=True, slots=True)
class ZoneTimers:
    """Floors and ceilings for the SOA refresh and retry a primary publishes (RFC 1035 §3.3.13)."""

    min_refresh_seconds: int | None = None
    max_refresh_seconds: int | None = None
    min_retry_seconds: int | None = None
    max_retry_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    zone: dns.name.Name
    primaries: tuple[Primary, ...]
    servers: tuple[str, ...] | None
    server_selector: LabelSelector | None
    allow_transfer: tuple[TransferAclEntry, ...] = ()
    notify_allow_from: tuple[IPNetwork, ...] = ()
    timers: ZoneTimers = ZoneTimers()
    retransfer_request: str | None = None

    def serves_on(self, server_name: str, server_labels: Mapping[str, str]) -> bool:
        """Whether the SecondaryServer with this name and these labels serves the zone."""
        if self.servers is not None:
            return server_name in self.servers
        return self.server_selector is not None and self.server_selector.matches(server_labels)


def parse_zone(obj: Mapping[str, Any]) -> ZoneSpec:
    """The Zone's spec with the CRD's defaults and rules applied, or a SpecError."""
    root = check_root(obj, ZONE_KIND)
    if "spec" not in root:
        raise SpecError("spec", "is required: a Zone needs spec.zone, spec.primaries and servers")
    spec = read_object(root["spec"], "spec", SPEC_FIELDS)

    zone_text = require_string(spec, "zone", "spec", hint="the zone's name, e.g. example.com")
    zone = parse_dns_name(zone_text, "spec.zone")

    primaries = _parse_primaries(spec)
    servers, server_selector = _parse_servers(spec)

    allow_transfer = []
    for index, item in enumerate(
        read_list(spec, "allowTransfer", "spec", max_items=MAX_ALLOW_TRANSFER) or []
    ):
        allow_transfer.append(_parse_transfer_acl_entry(item, f"spec.allowTransfer[{index}]"))

    notify_allow_from: list[IPNetwork] = []
    if "notify" in spec:
        notify = read_object(spec["notify"], "spec.notify", ("allowFrom",))
        cidrs = read_string_list(
            notify, "allowFrom", "spec.notify", max_items=MAX_NOTIFY_ALLOW_FROM, unique=True
        )
        for index, cidr in enumerate(cidrs or []):
            notify_allow_from.append(parse_cidr(cidr, f"spec.notify.allowFrom[{index}]"))

    timers = _parse_timers(spec)
    retransfer_request = read_string(
        spec, "retransferRequest", "spec", max_length=MAX_RETRANSFER_REQUEST
    )
    return ZoneSpec(
        zone=zone,
        primaries=primaries,
        servers=servers,
        server_selector=server_selector,
        allow_transfer=tuple(allow_transfer),
        notify_allow_from=tuple(notify_allow_from),
        timers=timers,
        retransfer_request=retransfer_request,
    )


def _parse_primaries(spec: Mapping[str, Any]) -> tuple[Primary, ...]:
    if "primaries" not in spec:
        raise SpecError(
            "spec.primaries", "is required: list 1 to 8 primaries, e.g. - address: 192.0.2.1"
        )
    items = read_list(spec, "primaries", "spec", min_items=MIN_PRIMARIES, max_items=MAX_PRIMARIES)
    primaries: list[Primary] = []
    for index, item in enumerate(items or []):
        path = f"spec.primaries[{index}]"
        primary = read_object(item, path, ("address", "port", "tsigKeySecretRef"))
        if "address" not in primary:
            raise SpecError(child(path, "address"), "is required: the primary's IP address")
        address = parse_primary_address(primary["address"], child(path, "address"))
        port = read_integer(
            primary,
            "port",
            path,
            default=DEFAULT_PORT,
            minimum=MIN_PORT,
            maximum=MAX_PORT,
            what=" (a port)",
        )
        assert port is not None
        ref = None
        if "tsigKeySecretRef" in primary:
            ref = parse_secret_key_ref(primary["tsigKeySecretRef"], child(path, "tsigKeySecretRef"))
        primaries.append(Primary(address=address, port=port, tsig_key_secret_ref=ref))
    endpoints = [(parsed.address, parsed.port) for parsed in primaries]
    for index, endpoint in enumerate(endpoints):
        if endpoint in endpoints[:index]:
            raise SpecError(
                "spec.primaries",
                f"every primary must have a distinct address and port; {endpoint[0]} port "
                f"{endpoint[1]} is listed twice (items {endpoints.index(endpoint)} and {index})",
            )
    return tuple(primaries)


def _parse_servers(spec: Mapping[str, Any]) -> tuple[tuple[str, ...] | None, LabelSelector | None]:
    has_servers, has_selector = "servers" in spec, "serverSelector" in spec
    if has_servers and has_selector:
        raise SpecError(
            "spec.serverSelector",
            "cannot be combined with spec.servers; set exactly one: servers (names of "
            "SecondaryServers) or serverSelector (labels of SecondaryServers)",
        )
    if not has_servers and not has_selector:
        raise SpecError(
            "spec.servers",
            "set exactly one of spec.servers (names of SecondaryServers in this namespace) "
            "or spec.serverSelector (a label selector)",
        )
    if has_selector:
        return None, parse_label_selector(spec["serverSelector"], "spec.serverSelector")
    names = read_string_list(
        spec, "servers", "spec", min_items=1, max_items=MAX_SERVERS, unique=True
    )
    for index, name in enumerate(names or []):
        check_server_name(name, f"spec.servers[{index}]")
    return tuple(names or ()), None


def _parse_transfer_acl_entry(value: object, path: str) -> TransferAclEntry:
    entry = read_object(value, path, ("cidr", "tsigKeySecretRef"))
    if "cidr" not in entry and "tsigKeySecretRef" not in entry:
        raise SpecError(
            path,
            "set cidr, tsigKeySecretRef or both: an entry with neither would allow nobody; "
            "to allow nobody, leave allowTransfer empty",
        )
    cidr = parse_cidr(entry["cidr"], child(path, "cidr")) if "cidr" in entry else None
    ref = None
    if "tsigKeySecretRef" in entry:
        ref = parse_secret_key_ref(entry["tsigKeySecretRef"], child(path, "tsigKeySecretRef"))
    return TransferAclEntry(cidr=cidr, tsig_key_secret_ref=ref)


def _parse_timers(spec: Mapping[str, Any]) -> ZoneTimers:
    if "timers" not in spec:
        return ZoneTimers()
    names = ("minRefreshSeconds", "maxRefreshSeconds", "minRetrySeconds", "maxRetrySeconds")
    timers = read_object(spec["timers"], "spec.timers", names)
    values = {
        name: read_integer(
            timers,
            name,
            "spec.timers",
            minimum=MIN_TIMER_SECONDS,
            maximum=MAX_TIMER_SECONDS,
            what=" seconds",
        )
        for name in names
    }
    for floor, ceiling in (
        ("minRefreshSeconds", "maxRefreshSeconds"),
        ("minRetrySeconds", "maxRetrySeconds"),
    ):
        low, high = values[floor], values[ceiling]
        if low is not None and high is not None and low > high:
            raise SpecError(
                f"spec.timers.{floor}",
                f"({low}) must not exceed spec.timers.{ceiling} ({high}); lower {floor} "
                f"or raise {ceiling}",
            )
    return ZoneTimers(
        min_refresh_seconds=values["minRefreshSeconds"],
        max_refresh_seconds=values["maxRefreshSeconds"],
        min_retry_seconds=values["minRetrySeconds"],
        max_retry_seconds=values["maxRetrySeconds"],
    )
