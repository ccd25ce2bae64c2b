"""What every engine renderer shares: inputs, outputs, and the zone plan.

The plan is engine-independent: which Zone objects a server serves, which are
left out and why (a duplicate zone name, a TSIG key that cannot be used, data
that got past admission but cannot be written safely), and the TSIG keys each
served zone needs. An engine renderer (BIND 9 now, Knot DNS later) only turns a
plan into its own configuration text.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Protocol

import dns.name

from secondary_dns.api import (
    ObjectRef,
    Primary,
    SecondaryServerSpec,
    SecretKeyRef,
    TsigKey,
    ZoneSpec,
    agent_contract,
    conditions,
    limits,
)
from secondary_dns.render import tokens
from secondary_dns.render.tokens import IPAddress, IPNetwork, UnsafeValueError

DEFAULT_RNDC_KEY_NAME = dns.name.from_text("secondary-dns-rndc.")
DEFAULT_RELAY_KEY_NAME = dns.name.from_text("secondary-dns-relay.")


@dataclass(frozen=True)
class TsigKeyUnavailable:
    """A referenced TSIG key that could not be read (no such Secret, bad data)."""

    message: str


TsigKeyLookup = Mapping[tuple[str, SecretKeyRef], "TsigKey | TsigKeyUnavailable"]


@dataclass(frozen=True)
class EnginePaths:
    """Where the engine finds and keeps things; the defaults are the pod's layout.

    config_dir is read-only (a ConfigMap); data_dir is writable and may be a
    persistent volume, so a restarted pod serves its last copy of each zone
    until the SOA expire timer runs out (RFC 1035 §3.3.13); run_dir is an
    emptyDir for the pid and session key files; the key files are written by
    the agent from Secrets and never appear in a ConfigMap.
    """

    config_dir: PurePosixPath = PurePosixPath("/etc/secondary-dns")
    data_dir: PurePosixPath = PurePosixPath("/var/lib/secondary-dns")
    run_dir: PurePosixPath = PurePosixPath("/run/secondary-dns")
    tsig_key_file: PurePosixPath = PurePosixPath("/run/secondary-dns/keys/tsig-keys.conf")
    rndc_key_file: PurePosixPath = PurePosixPath("/run/secondary-dns/keys/rndc.key")
    rndc_key_name: dns.name.Name = DEFAULT_RNDC_KEY_NAME
    # Empty: every IPv4 and IPv6 address of the pod.
    listen_addresses: tuple[IPAddress, ...] = ()
    port: int = 53
    control_port: int = 953
    statistics_port: int = 8053


@dataclass(frozen=True)
class RenderRequest:
    server: SecondaryServerSpec
    zones: Sequence[tuple[ObjectRef, ZoneSpec]]
    tsig_keys: TsigKeyLookup
    # The key the operator's NOTIFY relay signs with; every zone accepts it.
    relay_key_name: dns.name.Name
    paths: EnginePaths = EnginePaths()
    # metadata.creationTimestamp per Zone (RFC 3339, sorts as text): when two
    # Zone objects claim one zone name, the older one keeps it.
    created: Mapping[ObjectRef, str] = field(default_factory=dict)
    # Ranges no primary may be in, an operator setting (--refused-primary-networks):
    # the cluster's own Service range, which the CRD cannot know. A Zone pointing
    # there would have the replicas and the operator's probes knock on the
    # cluster's services (and echo their errors in its status).
    refused_primary_networks: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class ZoneRejection:
    reason: str
    message: str


@dataclass(frozen=True)
class PlannedPrimary:
    address: IPAddress
    port: int
    key_name: dns.name.Name | None

    @property
    def network(self) -> IPNetwork:
        """The primary as a one-address network (/32 or /128): ACLs, the NetworkPolicy."""
        return ipaddress.ip_network(self.address)


@dataclass(frozen=True)
class PlannedAclEntry:
    cidr: IPNetwork | None
    key_name: dns.name.Name | None


@dataclass(frozen=True)
class PlannedZone:
    """A zone that passed every check, with its key references resolved to key names."""

    ref: ObjectRef
    zone: dns.name.Name
    primaries: tuple[PlannedPrimary, ...]
    allow_transfer: tuple[PlannedAclEntry, ...]
    notify_allow_from: tuple[IPNetwork, ...]
    min_refresh_seconds: int | None
    max_refresh_seconds: int | None
    min_retry_seconds: int | None
    max_retry_seconds: int | None
    # spec.retransferRequest: a new value asks every replica for one full transfer.
    retransfer_request: str | None = None

    @property
    def notify_sources(self) -> tuple[IPNetwork, ...]:
        """Who may NOTIFY this zone by address (RFC 1996 §3.10): its primaries, notify.allowFrom."""
        networks = [primary.network for primary in self.primaries] + list(self.notify_allow_from)
        return tuple(sorted(set(networks), key=networks.index))


@dataclass(frozen=True)
class ZonePlan:
    """What a server serves: the zones that passed, the ones left out and why, their keys.

    Carried whole in `RenderedConfig`, so every consumer (the configuration, the
    NetworkPolicy, the serial monitor, the NOTIFY relay, the Zones' status)
    works from one decision: a zone left out here reaches none of them.
    """

    zones: tuple[PlannedZone, ...]
    rejected: Mapping[ObjectRef, ZoneRejection]
    tsig_keys: tuple[TsigKey, ...] = field(repr=False)

    def zone(self, ref: ObjectRef) -> PlannedZone | None:
        return next((zone for zone in self.zones if zone.ref == ref), None)

    def key(self, name: dns.name.Name) -> TsigKey:
        """The key a planned zone names (every name in the plan has its key here)."""
        return next(key for key in self.tsig_keys if key.name == name)


@dataclass(frozen=True)
class RenderedConfig:
    """Engine configuration files (no key material) and the plan they were rendered from.

    `files` maps a file name inside the config directory to its text;
    `config_hash` is the SHA-256 of those files, so an unchanged hash means no
    write and no reload.
    """

    engine: str
    files: Mapping[str, str]
    config_hash: str
    plan: ZonePlan
    # What the engine cannot express exactly and does instead, in words for the
    # Zone's ConfigValid message: for the whole server (spec.limits), and per
    # served zone (its own fields). Empty for BIND 9, which expresses every field.
    server_limitations: tuple[str, ...] = ()
    zone_limitations: Mapping[ObjectRef, tuple[str, ...]] = field(default_factory=dict)

    @property
    def rejected(self) -> Mapping[ObjectRef, ZoneRejection]:
        return self.plan.rejected

    @property
    def main_file(self) -> str:
        """The file the engine is started with; a change of it needs a restart."""
        return agent_contract.ENGINE_CONFIG_FILES[self.engine]

    def limitations(self, ref: ObjectRef) -> tuple[str, ...]:
        """What this server does differently from what a served Zone asks (none: exactly)."""
        if self.plan.zone(ref) is None:
            return ()
        return (*self.server_limitations, *self.zone_limitations.get(ref, ()))

    @property
    def tsig_keys(self) -> tuple[TsigKey, ...]:
        """The keys the separate key file must define (the relay key comes from the operator)."""
        return self.plan.tsig_keys


class EngineRenderer(Protocol):
    """One DNS engine's configuration, rendered from the same plan."""

    engine: str

    def render(self, request: RenderRequest) -> RenderedConfig: ...

    def render_key_file(self, keys: Iterable[TsigKey]) -> str: ...


class RenderError(ValueError):
    """Nothing can be rendered: the server itself (not one zone) is unusable."""


def config_hash(files: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        # Length-prefixed so that moving text between files changes the hash.
        for part in (name.encode(), files[name].encode()):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


def unique_keys(keys: Iterable[TsigKey]) -> list[TsigKey]:
    """TSIG keys for a key file (RFC 8945): one per name, sorted by name.

    The same name twice with the same material is written once; with different
    material the file would make the engine refuse the whole configuration, so
    that raises, as does an empty secret.
    """
    by_name: dict[dns.name.Name, TsigKey] = {}
    for key in keys:
        known = by_name.get(key.name)
        if known is not None and known != key:
            raise RenderError(f"TSIG key {key.name} is defined twice with different secrets")
        if not key.secret:
            raise RenderError(f"TSIG key {key.name} has an empty secret")
        by_name[key.name] = key
    return [by_name[name] for name in sorted(by_name)]


def zone_comment(ref: ObjectRef) -> str:
    """`# Zone namespace/name` above a zone's configuration (both engines use `#`)."""
    try:
        return f"# Zone {tokens.object_name(ref.namespace)}/{tokens.object_name(ref.name)}"
    except UnsafeValueError:
        return "# Zone object with an unprintable name"


def retransfer_file(plan: ZonePlan) -> str | None:
    """The retransfer file of a plan (api.agent_contract.RETRANSFER_FILE), None when no zone asks.

    Not an engine file, but part of the configuration (and its hash), so the
    agent sees a new request exactly when a replica applies the configuration
    that carries it.
    """
    return agent_contract.encode_retransfer_file(
        {zone.zone: zone.retransfer_request for zone in plan.zones if zone.retransfer_request}
    )


def _claim_order(request: RenderRequest, ref: ObjectRef) -> tuple[int, str, ObjectRef]:
    created = request.created.get(ref)
    # Objects without a timestamp come after those with one, then by name.
    return (0, created, ref) if created else (1, "", ref)


def _resolve_key(
    request: RenderRequest,
    ref: ObjectRef,
    secret_ref: SecretKeyRef,
    field_path: str,
    keys_by_name: dict[dns.name.Name, TsigKey],
) -> dns.name.Name:
    found = request.tsig_keys.get((ref.namespace, secret_ref))
    where = f"Secret {secret_ref.name}" + (f" (key {secret_ref.key})" if secret_ref.key else "")
    if found is None:
        raise _Rejected(
            conditions.SECRET_NOT_FOUND, f"{field_path}: {where} was not found or has no key"
        )
    if isinstance(found, TsigKeyUnavailable):
        raise _Rejected(conditions.INVALID_TSIG_KEY, f"{field_path}: {where}: {found.message}")
    try:
        tokens.config_name(found.name, "TSIG key name")
        tokens.config_name(found.algorithm, "TSIG algorithm")
    except UnsafeValueError as error:
        raise _Rejected(conditions.INVALID_TSIG_KEY, f"{field_path}: {where}: {error}") from None
    if found.name == request.relay_key_name or found.name == request.paths.rndc_key_name:
        raise _Rejected(
            conditions.INVALID_TSIG_KEY,
            f"{field_path}: {where}: key name {found.name} is reserved by the operator; "
            "set the Secret's `name` to another key name",
        )
    known = keys_by_name.get(found.name)
    if known is not None and known != found:
        # One key name can only have one secret in a server's configuration.
        raise _Rejected(
            conditions.INVALID_TSIG_KEY,
            f"{field_path}: {where}: key name {found.name} is already used by another "
            "Secret with a different secret or algorithm; give one of them another `name`",
        )
    keys_by_name[found.name] = found
    return found.name


class _Rejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.rejection = ZoneRejection(reason, message)


def _check_timer(value: int | None, field_path: str) -> int | None:
    if value is None:
        return None
    try:
        tokens.integer(value, limits.MIN_TIMER_SECONDS, limits.MAX_TIMER_SECONDS, field_path)
    except UnsafeValueError as error:
        raise _Rejected(conditions.INVALID_SPEC, str(error)) from None
    return value


def _plan_zone(
    request: RenderRequest, ref: ObjectRef, spec: ZoneSpec, keys: dict[dns.name.Name, TsigKey]
) -> PlannedZone:
    try:
        tokens.config_name(spec.zone, "spec.zone")
        if not spec.primaries:
            raise UnsafeValueError("spec.primaries is empty: a secondary needs a primary")
        for index, primary in enumerate(spec.primaries):
            field_path = f"spec.primaries[{index}].address"
            tokens.unicast_address(primary.address, field_path)
            if primary.address.is_loopback or primary.address.is_link_local:
                # Refused by the CRD and the models; a Zone stored before they were is
                # refused here alike.
                raise UnsafeValueError(
                    f"{field_path} {primary.address} must be the global unicast address of a "
                    "primary, not loopback or link-local"
                )
            tokens.port(primary.port, f"spec.primaries[{index}].port")
        for index, entry in enumerate(spec.allow_transfer):
            if entry.cidr is None and entry.tsig_key_secret_ref is None:
                raise UnsafeValueError(
                    f"spec.allowTransfer[{index}] names neither a cidr nor a key"
                )
            if entry.cidr is not None:
                tokens.network(entry.cidr, f"spec.allowTransfer[{index}].cidr")
        for index, source in enumerate(spec.notify_allow_from):
            tokens.network(source, f"spec.notify.allowFrom[{index}]")
    except UnsafeValueError as error:
        raise _Rejected(conditions.INVALID_SPEC, str(error)) from None

    timers = spec.timers
    min_refresh = _check_timer(timers.min_refresh_seconds, "spec.timers.minRefreshSeconds")
    max_refresh = _check_timer(timers.max_refresh_seconds, "spec.timers.maxRefreshSeconds")
    min_retry = _check_timer(timers.min_retry_seconds, "spec.timers.minRetrySeconds")
    max_retry = _check_timer(timers.max_retry_seconds, "spec.timers.maxRetrySeconds")
    for low, high, what in ((min_refresh, max_refresh, "Refresh"), (min_retry, max_retry, "Retry")):
        if low is not None and high is not None and low > high:
            raise _Rejected(
                conditions.INVALID_SPEC,
                f"spec.timers.min{what}Seconds ({low}) is above max{what}Seconds ({high})",
            )

    for index, primary in enumerate(spec.primaries):
        for refused in request.refused_primary_networks:
            if primary.address in refused:
                raise _Rejected(
                    conditions.PRIMARY_NOT_ALLOWED,
                    f"spec.primaries[{index}].address {primary.address} is inside "
                    f"{refused.compressed}, a range this operator refuses primaries in "
                    "(--refused-primary-networks: the cluster's own addresses); give the "
                    "primary's address outside the cluster, or ask the operator's "
                    "administrators to allow that range",
                )
    primaries = tuple(
        _plan_primary(request, ref, primary, index, keys)
        for index, primary in enumerate(spec.primaries)
    )
    allow_transfer = tuple(
        PlannedAclEntry(
            entry.cidr,
            None
            if entry.tsig_key_secret_ref is None
            else _resolve_key(
                request,
                ref,
                entry.tsig_key_secret_ref,
                f"spec.allowTransfer[{index}].tsigKeySecretRef",
                keys,
            ),
        )
        for index, entry in enumerate(spec.allow_transfer)
    )
    return PlannedZone(
        ref=ref,
        zone=spec.zone.canonicalize(),
        primaries=primaries,
        allow_transfer=allow_transfer,
        notify_allow_from=spec.notify_allow_from,
        min_refresh_seconds=min_refresh,
        max_refresh_seconds=max_refresh,
        min_retry_seconds=min_retry,
        max_retry_seconds=max_retry,
        retransfer_request=spec.retransfer_request or None,
    )


def _plan_primary(
    request: RenderRequest,
    ref: ObjectRef,
    primary: Primary,
    index: int,
    keys: dict[dns.name.Name, TsigKey],
) -> PlannedPrimary:
    key_name = None
    if primary.tsig_key_secret_ref is not None:
        key_name = _resolve_key(
            request,
            ref,
            primary.tsig_key_secret_ref,
            f"spec.primaries[{index}].tsigKeySecretRef",
            keys,
        )
    return PlannedPrimary(primary.address, primary.port, key_name)


def plan_zones(request: RenderRequest) -> ZonePlan:
    """Decide which zones a server serves; pure and deterministic."""
    rejected: dict[ObjectRef, ZoneRejection] = {}
    keys: dict[dns.name.Name, TsigKey] = {}
    planned: dict[dns.name.Name, PlannedZone] = {}
    # Oldest claim first, so a later duplicate is the one left out, and key
    # name conflicts are resolved in favour of the zone that was there first.
    for ref, spec in sorted(request.zones, key=lambda item: _claim_order(request, item[0])):
        if ref in rejected or any(zone.ref == ref for zone in planned.values()):
            continue
        zone_keys = dict(keys)
        try:
            zone = _plan_zone(request, ref, spec, zone_keys)
        except _Rejected as rejection:
            rejected[ref] = rejection.rejection
            continue
        holder = planned.get(zone.zone)
        if holder is not None:
            rejected[ref] = ZoneRejection(
                conditions.ZONE_CONFLICT,
                f"zone {tokens.config_name(zone.zone)} is already served by this server "
                f"for Zone {holder.ref}, which claimed it first; delete one of the two",
            )
            continue
        keys = zone_keys
        planned[zone.zone] = zone
    return ZonePlan(
        zones=tuple(planned[name] for name in sorted(planned)),
        rejected=dict(sorted(rejected.items())),
        tsig_keys=tuple(keys[name] for name in sorted(keys)),
    )


def check_server(server: SecondaryServerSpec) -> None:
    """Server-wide values every zone statement uses; a bad one stops the whole render."""
    server_limits = server.limits
    try:
        if server_limits.max_records is not None:
            tokens.integer(
                server_limits.max_records,
                limits.MIN_RECORDS,
                limits.MAX_RECORDS,
                "spec.limits.maxRecords",
            )
        if server_limits.transfer_timeout_seconds is not None:
            tokens.integer(
                server_limits.transfer_timeout_seconds,
                limits.MIN_TRANSFER_TIMEOUT,
                limits.MAX_TRANSFER_TIMEOUT,
                "spec.limits.transferTimeoutSeconds",
            )
    except UnsafeValueError as error:
        raise RenderError(str(error)) from None
