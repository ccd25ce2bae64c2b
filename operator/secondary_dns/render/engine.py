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
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import PurePosixPath
from typing import Protocol

import dns.name

from secondary_dns.api import (
    ObjectRef,
    SecondaryServerSpec,
    SecretKeyRef,
    TsigKey,
    ZoneSpec,
    agent_contract,
    conditions,
    limits,
)
from secondary_dns.api.sharing import RecentValues, shared
from secondary_dns.render import tokens
from secondary_dns.render.tokens import IPAddress, IPNetwork, UnsafeValueError

DEFAULT_RNDC_KEY_NAME = dns.name.from_text("secondary-dns-rndc.")
# The file the engine's main file includes for its zones; it includes each shard's file.
ZONES_INCLUDE = "zones.conf"
DEFAULT_RELAY_KEY_NAME = dns.name.from_text("secondary-dns-relay.")


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class ZoneRejection:
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class PlannedPrimary:
    address: IPAddress
    port: int
    key_name: dns.name.Name | None

    @property
    def network(self) -> IPNetwork:
        """The primary as a one-address network (/32 or /128): ACLs, the NetworkPolicy."""
        return ipaddress.ip_network(self.address)


@dataclass(frozen=True, slots=True)
class PlannedAclEntry:
    cidr: IPNetwork | None
    key_name: dns.name.Name | None


@dataclass(frozen=True, slots=True)
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
    Looked up by Zone object; `zones` lists them in a stable order (by object).
    """

    by_ref: Mapping[ObjectRef, PlannedZone]
    rejected: Mapping[ObjectRef, ZoneRejection]
    tsig_keys: tuple[TsigKey, ...] = field(repr=False)
    # Every (primary as a one-address network, port) of the served zones: what the
    # NetworkPolicy lets the replicas reach.
    primary_ports: frozenset[tuple[IPNetwork, int]] = frozenset()

    @cached_property
    def zones(self) -> tuple[PlannedZone, ...]:
        return tuple(self.by_ref[ref] for ref in sorted(self.by_ref))

    def __len__(self) -> int:
        return len(self.by_ref)

    def zone(self, ref: ObjectRef) -> PlannedZone | None:
        return self.by_ref.get(ref)

    @cached_property
    def _keys_by_name(self) -> dict[dns.name.Name, TsigKey]:
        # The first key of a name, as a search of tsig_keys in order would find.
        return {key.name: key for key in reversed(self.tsig_keys)}

    def key(self, name: dns.name.Name) -> TsigKey:
        """The key a planned zone names (every name in the plan has its key here)."""
        # A dict, not a search: the relay plan asks once per zone at every
        # reconcile of its server (10,000 name comparisons at 10,000 Zones).
        return self._keys_by_name[name]


@dataclass(frozen=True, slots=True)
class RenderedShard:
    """The zones of one shard: its engine file, and the agent's list of its zones.

    `files` are the shard's files (api.agent_contract: the engine's include
    file, ZONES_FILE, RETRANSFER_FILE when a zone asks); `config_hash` is
    `config_hash(files)`, which the root configuration's manifest names.
    """

    files: Mapping[str, str]
    config_hash: str


@dataclass(frozen=True)
class RenderedConfig:
    """Engine configuration files (no key material) and the plan they were rendered from.

    The configuration is a root and shards (render/shards.py): `files` are the
    root's (the engine's main file, the zones include that includes every
    shard's file, and the manifest of shard hashes, SHARDS_FILE), `shards` the
    zones by a stable hash of their names. `config_hash` is the hash of the root
    files, manifest included, so it covers every shard: an unchanged hash means
    no write and no reload, and a one-zone change changes one shard and the root.
    """

    engine: str
    files: Mapping[str, str]
    config_hash: str
    plan: ZonePlan
    shards: Mapping[str, RenderedShard] = field(default_factory=dict)
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

    def engine_files(self) -> dict[str, str]:
        """What the engine reads from its configuration directory: root and shard files."""
        files = {
            name: text for name, text in self.files.items() if name != agent_contract.SHARDS_FILE
        }
        for shard in self.shards.values():
            for name, text in shard.files.items():
                if name not in agent_contract.SHARD_METADATA_FILES:
                    files[name] = text
        return dict(sorted(files.items()))


@dataclass(frozen=True)
class RenderSettings:
    """What every part of one server's configuration is rendered with."""

    server: SecondaryServerSpec
    # The key the operator's NOTIFY relay signs with; every zone accepts it.
    relay_key_name: dns.name.Name
    paths: EnginePaths = EnginePaths()


@dataclass(frozen=True, slots=True)
class RenderedZone:
    """One zone's part of its shard's file, by section, and what the engine does differently.

    BIND 9 has one section (""), Knot DNS three (remote, acl, zone) that every
    shard file repeats for its own zones. Each section's lines are kept as one
    text (`section_text`): the builder keeps every zone's part, and ten strings
    and a tuple a zone cost about 1 KB more than one string (bench/memory.py).
    """

    sections: tuple[tuple[str, str], ...]
    limitations: tuple[str, ...] = ()


def section_text(lines: Iterable[str]) -> str:
    """A section's lines as RenderedZone keeps them."""
    return "\n".join(lines)


class EngineRenderer(Protocol):
    """One DNS engine's configuration, rendered from the same plan.

    A renderer writes the parts; `render.shards.ConfigBuilder` assembles them
    into a root and shards, incrementally in the operator and at once in
    `render()` (`secondary-dns render`, tests).
    """

    engine: str

    def main_files(self, settings: RenderSettings) -> tuple[dict[str, str], tuple[str, ...]]:
        """The server-wide files (the main file) and the server's limitations; RenderError."""
        ...

    def zone_part(self, zone: PlannedZone, settings: RenderSettings) -> RenderedZone: ...

    def shard_text(self, parts: Sequence[RenderedZone]) -> str:
        """A shard's include file from its zones' parts (in zone name order)."""
        ...

    def zones_include(self, shard_files: Sequence[str], settings: RenderSettings) -> str:
        """The zones include of the main file: it includes every shard's file."""
        ...

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


@dataclass(frozen=True)
class PlanContext:
    """What every zone's plan depends on besides the zone and its keys."""

    # The key the operator's NOTIFY relay signs with, and the engine's control
    # key: no Zone's Secret may name either.
    relay_key_name: dns.name.Name
    rndc_key_name: dns.name.Name = DEFAULT_RNDC_KEY_NAME
    refused_primary_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, request: RenderRequest) -> PlanContext:
        return cls(
            request.relay_key_name, request.paths.rndc_key_name, request.refused_primary_networks
        )


@dataclass(frozen=True, slots=True)
class KeyUse:
    """One TSIG key reference of a Zone, resolved: where it is written and the key."""

    field_path: str
    where: str
    key: TsigKey


@dataclass(frozen=True, slots=True)
class ZoneDraft:
    """One Zone planned on its own, before other zones have a say (pure).

    Other zones decide two things only: whether an older Zone claims the same
    zone name, and whether an older Zone defines one of its key names with
    another secret. `uses` are the keys it resolved, in the order of its fields,
    up to where it was rejected on its own (if it was).
    """

    ref: ObjectRef
    planned: PlannedZone | None
    rejection: ZoneRejection | None
    uses: tuple[KeyUse, ...]
    # Claim order: the older creationTimestamp keeps a zone name (objects
    # without one after those with one, then by object).
    claim: tuple[int, str, ObjectRef]


def claim_order(ref: ObjectRef, created: str | None) -> tuple[int, str, ObjectRef]:
    return (0, created, ref) if created else (1, "", ref)


def _where(secret_ref: SecretKeyRef) -> str:
    return f"Secret {secret_ref.name}" + (f" (key {secret_ref.key})" if secret_ref.key else "")


def _key_conflict(use: KeyUse) -> ZoneRejection:
    # One key name can only have one secret in a server's configuration.
    return ZoneRejection(
        conditions.INVALID_TSIG_KEY,
        f"{use.field_path}: {use.where}: key name {use.key.name} is already used by another "
        "Secret with a different secret or algorithm; give one of them another `name`",
    )


def _resolve_key(
    context: PlanContext,
    keys: TsigKeyLookup,
    ref: ObjectRef,
    secret_ref: SecretKeyRef,
    field_path: str,
    uses: list[KeyUse],
) -> dns.name.Name:
    found = keys.get((ref.namespace, secret_ref))
    where = _where(secret_ref)
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
    if found.name == context.relay_key_name or found.name == context.rndc_key_name:
        raise _Rejected(
            conditions.INVALID_TSIG_KEY,
            f"{field_path}: {where}: key name {found.name} is reserved by the operator; "
            "set the Secret's `name` to another key name",
        )
    use = KeyUse(field_path, where, found)
    if any(earlier.key.name == found.name and earlier.key != found for earlier in uses):
        raise _Rejected(_key_conflict(use).reason, _key_conflict(use).message)
    uses.append(use)
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
    context: PlanContext,
    keys: TsigKeyLookup,
    ref: ObjectRef,
    spec: ZoneSpec,
    uses: list[KeyUse],
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
        for refused in context.refused_primary_networks:
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
        PlannedPrimary(
            primary.address,
            primary.port,
            None
            if primary.tsig_key_secret_ref is None
            else _resolve_key(
                context,
                keys,
                ref,
                primary.tsig_key_secret_ref,
                f"spec.primaries[{index}].tsigKeySecretRef",
                uses,
            ),
        )
        for index, primary in enumerate(spec.primaries)
    )
    allow_transfer = tuple(
        PlannedAclEntry(
            entry.cidr,
            None
            if entry.tsig_key_secret_ref is None
            else _resolve_key(
                context,
                keys,
                ref,
                entry.tsig_key_secret_ref,
                f"spec.allowTransfer[{index}].tsigKeySecretRef",
                uses,
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


def draft_zone(
    context: PlanContext,
    keys: TsigKeyLookup,
    ref: ObjectRef,
    spec: ZoneSpec,
    created: str | None,
) -> ZoneDraft:
    """One Zone's plan on its own: checked, keys resolved, or the reason it cannot be served."""
    uses: list[KeyUse] = []
    try:
        planned = _plan_zone(context, keys, ref, spec, uses)
    except _Rejected as rejection:
        return ZoneDraft(ref, None, rejection.rejection, tuple(uses), claim_order(ref, created))
    return ZoneDraft(ref, planned, None, tuple(uses), claim_order(ref, created))


def secret_refs(spec: ZoneSpec) -> frozenset[SecretKeyRef]:
    """The TSIG key references of a Zone (primaries and transfer ACLs)."""
    refs = {p.tsig_key_secret_ref for p in spec.primaries if p.tsig_key_secret_ref}
    refs |= {a.tsig_key_secret_ref for a in spec.allow_transfer if a.tsig_key_secret_ref}
    return frozenset(refs)


Outcome = PlannedZone | ZoneRejection


class ZonePlanner:
    """Which zones a server serves, kept current one changed Zone at a time.

    Each Zone is drafted on its own (`draft_zone`, memoized: a Zone redrafted
    only when it, or a key it uses, changes). Other zones matter only through a
    shared zone name or a shared key name; while neither a changed Zone's name
    nor any of its key names is shared with a conflicting claim, its outcome is
    its draft's and no other zone's changes: O(1) per change. Otherwise every
    zone is decided again in claim order (oldest first), as `plan_zones` does.
    """

    def __init__(self, context: PlanContext) -> None:
        self.context = context
        self.inputs: dict[ObjectRef, tuple[ZoneSpec, str | None]] = {}
        self.drafts: dict[ObjectRef, ZoneDraft] = {}
        self.outcomes: dict[ObjectRef, Outcome] = {}
        self._planned: dict[ObjectRef, PlannedZone] = {}
        self._rejected: dict[ObjectRef, ZoneRejection] = {}
        # Who could claim a zone name (drafts that passed) and who uses a key name
        # with which material (every resolved use, also of rejected drafts).
        # (A tuple, mostly of one: a set each was 216 bytes, 2 MiB at 10,000 Zones.)
        self._claimants: dict[dns.name.Name, tuple[ObjectRef, ...]] = {}
        self._key_users: dict[dns.name.Name, dict[TsigKey, set[ObjectRef]]] = {}
        # The keys the served zones name, with how many uses, and each one's uses.
        self._served_keys: dict[dns.name.Name, dict[TsigKey, int]] = {}
        self._counted: dict[ObjectRef, tuple[KeyUse, ...]] = {}
        self._primary_ports: dict[tuple[IPNetwork, int], int] = {}
        self._keys: dict[tuple[str, SecretKeyRef], TsigKey | TsigKeyUnavailable] = {}
        # Which Zones reference a key Secret, and the other way round.
        self._secret_users: dict[tuple[str, SecretKeyRef], set[ObjectRef]] = {}
        self._secrets_of: dict[ObjectRef, frozenset[tuple[str, SecretKeyRef]]] = {}
        # Parts of drafts seen last, held once (api/sharing.py).
        self._parts: RecentValues[object, object] = RecentValues()

    def _shared_parts(self, draft: ZoneDraft) -> ZoneDraft:
        """The draft with its primaries, ACL and key uses as the equal ones other
        drafts hold (Zones of one server mostly share them; kept for every Zone)."""
        planned = draft.planned
        if planned is not None:
            planned = replace(
                planned,
                primaries=shared(self._parts, planned.primaries),
                allow_transfer=shared(self._parts, planned.allow_transfer),
                notify_allow_from=shared(self._parts, planned.notify_allow_from),
            )
        return replace(draft, planned=planned, uses=shared(self._parts, draft.uses))

    # ---- the indexes -------------------------------------------------------------

    def _index(self, draft: ZoneDraft, sign: int) -> None:
        if draft.planned is not None:
            zone = draft.planned.zone
            claimants = self._claimants.get(zone, ())
            if sign > 0:
                if draft.ref not in claimants:
                    self._claimants[zone] = (*claimants, draft.ref)
            elif remaining := tuple(ref for ref in claimants if ref != draft.ref):
                self._claimants[zone] = remaining
            else:
                self._claimants.pop(zone, None)
        for use in draft.uses:
            materials = self._key_users.setdefault(use.key.name, {})
            users = materials.setdefault(use.key, set())
            if sign > 0:
                users.add(draft.ref)
            else:
                users.discard(draft.ref)
                if not users:
                    del materials[use.key]
                if not materials:
                    del self._key_users[use.key.name]

    def _set_outcome(self, ref: ObjectRef, outcome: Outcome | None) -> bool:
        """Record a zone's outcome (and the keys it serves with); True when the outcome changed.

        A served zone's keys can change while its plan does not (a Secret's new
        secret under the same key name): the keys are counted again either way.
        """
        before = self.outcomes.get(ref)
        draft = self.drafts.get(ref)
        uses = draft.uses if isinstance(outcome, PlannedZone) and draft is not None else ()
        if before == outcome and self._counted.get(ref, ()) == uses:
            return False
        self._count_keys(self._counted.pop(ref, ()), -1)
        if uses:
            self._counted[ref] = uses
            self._count_keys(uses, 1)
        if isinstance(before, PlannedZone):
            del self._planned[ref]
            self._count_primaries(before, -1)
        elif isinstance(before, ZoneRejection):
            del self._rejected[ref]
        if outcome is None:
            self.outcomes.pop(ref, None)
        else:
            self.outcomes[ref] = outcome
            if isinstance(outcome, PlannedZone):
                self._planned[ref] = outcome
                self._count_primaries(outcome, 1)
            else:
                self._rejected[ref] = outcome
        return before != outcome

    def _count_primaries(self, zone: PlannedZone, sign: int) -> None:
        for primary in zone.primaries:
            pair = (primary.network, primary.port)
            count = self._primary_ports.get(pair, 0) + sign
            if count > 0:
                self._primary_ports[pair] = count
            else:
                self._primary_ports.pop(pair, None)

    def _count_keys(self, uses: tuple[KeyUse, ...], sign: int) -> None:
        for use in uses:
            counts = self._served_keys.setdefault(use.key.name, {})
            counts[use.key] = counts.get(use.key, 0) + sign
            if counts[use.key] <= 0:
                del counts[use.key]
            if not counts:
                del self._served_keys[use.key.name]

    def _shared(self, draft: ZoneDraft | None) -> bool:
        """Could this draft's outcome depend on other zones, or theirs on it?"""
        if draft is None:
            return False
        if draft.planned is not None and len(self._claimants.get(draft.planned.zone, ())) > 1:
            return True
        return any(len(self._key_users.get(use.key.name, ())) > 1 for use in draft.uses)

    # ---- changes -----------------------------------------------------------------

    def update(
        self,
        zones: Mapping[ObjectRef, tuple[ZoneSpec, str | None] | None],
        keys: TsigKeyLookup | None = None,
    ) -> set[ObjectRef]:
        """Apply changed Zones (None: gone) and the current keys; the zones whose outcome changed.

        `keys` is every key the Zones may reference (a key absent from it is not
        found); None keeps the keys as they were.
        """
        redraft = {ref for ref, value in zones.items() if self.inputs.get(ref) != value}
        if keys is not None:
            for secret, users in self._secret_users.items():
                if keys.get(secret) != self._keys.get(secret):
                    redraft |= users
            self._keys = dict(keys)
        for ref in redraft:
            if ref in zones:
                value = zones[ref]
                if value is None:
                    self.inputs.pop(ref, None)
                else:
                    self.inputs[ref] = value
        local = True
        new_drafts: dict[ObjectRef, ZoneDraft | None] = {}
        for ref in redraft:
            old = self.drafts.get(ref)
            if self._shared(old):
                local = False
            if old is not None:
                self._index(old, -1)
            for secret in self._secrets_of.pop(ref, frozenset()):
                users = self._secret_users[secret]
                users.discard(ref)
                if not users:
                    del self._secret_users[secret]
            value = self.inputs.get(ref)
            new = None
            if value is not None:
                spec, created = value
                new = self._shared_parts(draft_zone(self.context, self._keys, ref, spec, created))
                self._index(new, 1)
                # Held once for the Zones naming the same Secrets (one set each was
                # 3 MiB at 10,000 Zones sharing one key).
                secrets = shared(
                    self._parts, frozenset((ref.namespace, s) for s in secret_refs(spec))
                )
                self._secrets_of[ref] = secrets
                for secret in secrets:
                    self._secret_users.setdefault(secret, set()).add(ref)
            new_drafts[ref] = new
        for ref, new in new_drafts.items():
            if new is None:
                self.drafts.pop(ref, None)
            else:
                self.drafts[ref] = new
        if any(self._shared(new) for new in new_drafts.values()):
            local = False
        if local:
            changed = set()
            for ref, new in new_drafts.items():
                outcome = None if new is None else (new.planned or new.rejection)
                if self._set_outcome(ref, outcome):
                    changed.add(ref)
            return changed
        return self._decide_all()

    def _decide_all(self) -> set[ObjectRef]:
        """Every zone in claim order, as `plan_zones` decides (when claims are shared)."""
        keys: dict[dns.name.Name, TsigKey] = {}
        holders: dict[dns.name.Name, PlannedZone] = {}
        decided: dict[ObjectRef, Outcome] = {}
        for draft in sorted(self.drafts.values(), key=lambda d: d.claim):
            conflict = next(
                (
                    use
                    for use in draft.uses
                    if use.key.name in keys and keys[use.key.name] != use.key
                ),
                None,
            )
            if conflict is not None:
                decided[draft.ref] = _key_conflict(conflict)
                continue
            if draft.planned is None:
                assert draft.rejection is not None
                decided[draft.ref] = draft.rejection
                continue
            holder = holders.get(draft.planned.zone)
            if holder is not None:
                decided[draft.ref] = ZoneRejection(
                    conditions.ZONE_CONFLICT,
                    f"zone {tokens.config_name(draft.planned.zone)} is already served by this "
                    f"server for Zone {holder.ref}, which claimed it first; delete one of the two",
                )
                continue
            for use in draft.uses:
                keys[use.key.name] = use.key
            holders[draft.planned.zone] = draft.planned
            decided[draft.ref] = draft.planned
        changed = set()
        for ref in set(self.outcomes) | set(decided):
            if self._set_outcome(ref, decided.get(ref)):
                changed.add(ref)
        return changed

    # ---- the plan ----------------------------------------------------------------

    def plan(self) -> ZonePlan:
        """A snapshot of the current decision."""
        keys = [next(iter(materials)) for materials in self._served_keys.values()]
        return ZonePlan(
            by_ref=dict(self._planned),
            rejected=dict(self._rejected),
            tsig_keys=tuple(sorted(keys, key=lambda key: key.name)),
            primary_ports=frozenset(self._primary_ports),
        )


def plan_zones(request: RenderRequest) -> ZonePlan:
    """Decide which zones a server serves; pure and deterministic."""
    planner = ZonePlanner(PlanContext.of(request))
    planner.update(
        {ref: (spec, request.created.get(ref)) for ref, spec in request.zones}, request.tsig_keys
    )
    return planner.plan()


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
