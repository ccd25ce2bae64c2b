"""Pure: from the ConfigMaps and the key Secret to one configuration, or why not yet.

A configuration is a root ConfigMap and shard ConfigMaps (api.agent_contract):
the root names every shard by its hash (its manifest, SHARDS_FILE), and its
own hash covers that manifest. It is applied only whole: the root's files
equal to its hash, every shard it names present at that hash (its parts
joined in order, its files equal to the hash), and the key Secret of the keys
hash it names. Anything less is `Pending` (the operator is still writing:
it writes the shards, then the root) or `Invalid` (the operator wrote
something the agent must not apply; reported on the Pod).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from operator import itemgetter

import dns.exception
import dns.name

from secondary_dns.api import agent_contract
from secondary_dns.render import config_hash


@dataclass(frozen=True)
class ConfigShard:
    """One config ConfigMap, reduced to what assembly needs (the root, or part of a shard)."""

    name: str
    data: Mapping[str, str]
    # The root's: the configuration's hash and the keys hash it needs.
    config_hash: str | None = None
    keys_hash: str | None = None
    # A shard's: which shard, its hash, and how many ConfigMaps carry it.
    shard: str | None = None
    shard_hash: str | None = None
    shard_configmaps: int | None = None
    # metadata.resourceVersion: only used to prefer the newer of two roots.
    resource_version: str = ""

    @property
    def is_root(self) -> bool:
        return bool(self.config_hash) and agent_contract.SHARDS_FILE in self.data


@dataclass(frozen=True)
class KeySecret:
    """The `<server>-keys` Secret, data already base64-decoded."""

    name: str
    keys_hash: str | None
    key_file: str | None = field(repr=False)


@dataclass(frozen=True)
class DesiredConfig:
    """A complete configuration the agent may apply."""

    config_hash: str
    keys_hash: str
    # What goes in the engine's configuration directory (root and shard files).
    files: Mapping[str, str]
    zones: tuple[dns.name.Name, ...]
    key_file: str = field(repr=False)
    # spec.retransferRequest per zone (the shards' RETRANSFER_FILE).
    retransfer: Mapping[dns.name.Name, str] = field(default_factory=dict)
    # shard -> its hash: which shards a later configuration changed.
    shards: Mapping[str, str] = field(default_factory=dict)
    # shard -> the names of its engine files (in `files`); the other files are the root's.
    shard_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def root_files(self) -> dict[str, str]:
        """The files that belong to no shard (the engine's main file, the zones include)."""
        in_shards = {name for names in self.shard_files.values() for name in names}
        return {name: text for name, text in self.files.items() if name not in in_shards}

    @property
    def identity(self) -> tuple[str, str]:
        """What is content-addressed: the config and the key file it needs."""
        return (self.config_hash, self.keys_hash)


@dataclass(frozen=True)
class Pending:
    """Not complete yet; normal while the operator writes several objects."""

    reason: str


@dataclass(frozen=True)
class Invalid:
    """A complete generation that must not be applied."""

    config_hash: str
    reason: str


Assembly = DesiredConfig | Pending | Invalid

_PART = re.compile(
    rf"^(?P<base>.+){re.escape(agent_contract.PART_SEPARATOR)}"
    rf"(?P<index>\d{{{agent_contract.PART_DIGITS}}})$"
)


def _parse_resource_version(value: str) -> int | None:
    # resourceVersion is opaque by contract, but every API server in use (etcd
    # revisions) makes it an integer; without one, no root is preferred.
    # isascii: str.isdigit() also holds for "²", which int() refuses.
    return int(value) if value.isascii() and value.isdigit() else None


def select_root(configmaps: Iterable[ConfigShard]) -> ConfigShard | Pending:
    """The root ConfigMap of the configuration (the newest, should there be two)."""
    roots = [configmap for configmap in configmaps if configmap.is_root]
    if not roots:
        return Pending(
            "no configuration ConfigMap yet (none has the "
            f"{agent_contract.ANNOTATION_CONFIG_HASH} annotation and {agent_contract.SHARDS_FILE})"
        )
    if len(roots) == 1:
        return roots[0]
    ranked = sorted(
        roots, key=lambda root: _parse_resource_version(root.resource_version) or -1, reverse=True
    )
    newest, second = (_parse_resource_version(root.resource_version) for root in ranked[:2])
    if newest is None or newest == second:
        names = ", ".join(sorted(root.name for root in roots))
        return Pending(f"several configuration roots and none is newer: {names}")
    return ranked[0]


def join_parts(entries: Iterable[tuple[str, str, str]]) -> dict[str, str] | str:
    """Files from (ConfigMap, key, value) entries, parts joined; an error text when they clash.

    `f.part-0000`, `f.part-0001`, ... become `f`; the parts must be numbered
    from 0 without gaps (a missing last part is caught by the content hash).
    """
    whole: dict[str, str] = {}
    parts: dict[str, dict[int, str]] = {}
    origin: dict[str, str] = {}
    for configmap, key, value in entries:
        if key in origin:
            return f"data key {key} is in both ConfigMap {origin[key]} and {configmap}"
        origin[key] = configmap
        match = _PART.match(key)
        if match is None:
            whole[key] = value
        else:
            parts.setdefault(match.group("base"), {})[int(match.group("index"))] = value
    files = dict(whole)
    for base, numbered in parts.items():
        if base in whole:
            return f"file {base} is stored both whole and in parts"
        missing = sorted(set(range(max(numbered) + 1)) - set(numbered))
        if missing:
            names = ", ".join(
                f"{base}{agent_contract.PART_SEPARATOR}{index:04d}" for index in missing
            )
            return f"file {base} lacks {names}"
        files[base] = "".join(numbered[index] for index in sorted(numbered))
    return files


def _joined(members: Iterable[ConfigShard]) -> dict[str, str] | str:
    return join_parts(
        (member.name, key, value)
        for member in sorted(members, key=lambda member: member.name)
        for key, value in sorted(member.data.items())
    )


@dataclass(frozen=True)
class _Shard:
    files: dict[str, str]
    zones: tuple[dns.name.Name, ...]
    # Each zone's agent_contract.canonical_order key, in the order of `zones`: a
    # tuple of bytes hashes and compares in C, where dns.name.Name hashes each
    # label in Python (at 10,000 zones that was most of an assembly's time).
    keys: tuple[tuple[bytes, ...], ...]
    retransfer: dict[dns.name.Name, str]


def _read_shard(shard: str, wanted: str, members: list[ConfigShard]) -> _Shard | Pending | str:
    """One shard at the hash the root names: its files, or Pending, or why it is invalid."""
    if not members:
        return Pending(f"waiting for shard {shard} ({wanted[:12]})")
    declared = {member.shard_configmaps for member in members}
    if len(declared) != 1 or None in declared or len(members) != declared.pop():
        return Pending(f"waiting for every ConfigMap of shard {shard} ({wanted[:12]})")
    files = _joined(members)
    if isinstance(files, str):
        return f"shard {shard}: {files}"
    if config_hash(files) != wanted:
        # Guards the join: a lost last part or a stale ConfigMap with the new
        # annotations must not reach the engine.
        return f"shard {shard}: the files do not match the shard hash {wanted[:12]}"
    zones_text = files.pop(agent_contract.ZONES_FILE, None)
    if zones_text is None:
        return f"shard {shard}: no {agent_contract.ZONES_FILE}"
    zones = agent_contract.parse_zones_file(zones_text)
    if isinstance(zones, str):
        return f"shard {shard}: {zones}"
    retransfer = agent_contract.parse_retransfer_file(
        files.pop(agent_contract.RETRANSFER_FILE, None)
    )
    if isinstance(retransfer, str):
        return f"shard {shard}: {retransfer}"
    keys = tuple(agent_contract.canonical_order(zone) for zone in zones)
    return _Shard(files, zones, keys, retransfer)


# (shard, its hash) -> the shard as read: what an assembly may take from the last one.
ShardReads = MutableMapping[tuple[str, str], _Shard]


def assemble(
    configmaps: Iterable[ConfigShard],
    secret: KeySecret | None,
    reads: ShardReads | None = None,
) -> Assembly:
    """The configuration to apply, from everything the agent currently sees.

    `reads`, when given, keeps each shard as read at its hash, so the next
    assembly reads only the shards that changed: reading every shard's zone
    names was most of an assembly at 10,000 zones (0.3-0.5 s in the cluster,
    bench/scale.py; an agent assembles at every change). A shard is kept only
    once it matched its hash, so a kept one is exactly what reading it again
    would give. Only the shards of this root stay in it.
    """
    configmaps = list(configmaps)
    root = select_root(configmaps)
    if isinstance(root, Pending):
        return root
    wanted_hash = root.config_hash or ""
    keys_hash = root.keys_hash or ""
    if not keys_hash:
        missing = agent_contract.ANNOTATION_KEYS_HASH
        return Invalid(wanted_hash, f"the root ConfigMap {root.name} lacks {missing}")
    root_files = _joined([root])
    if isinstance(root_files, str):
        return Invalid(wanted_hash, root_files)
    if config_hash(root_files) != wanted_hash:
        return Invalid(wanted_hash, "the files do not match the config hash annotation")
    manifest = agent_contract.parse_shards_file(root_files.pop(agent_contract.SHARDS_FILE))
    if isinstance(manifest, str):
        return Invalid(wanted_hash, manifest)
    by_shard: dict[tuple[str, str], list[ConfigShard]] = {}
    for configmap in configmaps:
        if configmap.shard and configmap.shard_hash:
            by_shard.setdefault((configmap.shard, configmap.shard_hash), []).append(configmap)
    files = dict(root_files)
    keys: set[tuple[bytes, ...]] = set()
    zones: list[tuple[tuple[bytes, ...], dns.name.Name]] = []
    retransfer: dict[dns.name.Name, str] = {}
    shard_files: dict[str, tuple[str, ...]] = {}
    if reads is not None:
        for gone in set(reads) - set(manifest.items()):
            del reads[gone]
    for shard, shard_hash in sorted(manifest.items()):
        kept = reads.get((shard, shard_hash)) if reads is not None else None
        read = kept or _read_shard(shard, shard_hash, by_shard.get((shard, shard_hash), []))
        if reads is not None and isinstance(read, _Shard):
            reads[(shard, shard_hash)] = read
        if isinstance(read, Pending):
            return read
        if isinstance(read, str):
            return Invalid(wanted_hash, read)
        clash = sorted(set(files) & set(read.files))
        if clash:
            return Invalid(wanted_hash, f"shard {shard}: file {clash[0]} is written twice")
        if not keys.isdisjoint(read.keys):
            twice = [zone for key, zone in zip(read.keys, read.zones, strict=True) if key in keys]
            # A zone is in the shard its name hashes to, and only there. The agent
            # relies on it: a changed shard is checked without the unchanged ones
            # (files.py), so two shards must never declare the same zone.
            return Invalid(wanted_hash, f"shard {shard}: zone {twice[0]} is in another shard too")
        files.update(read.files)
        keys.update(read.keys)
        zones.extend(zip(read.keys, read.zones, strict=True))
        shard_files[shard] = tuple(sorted(read.files))
        retransfer.update(read.retransfer)
    if secret is None:
        return Pending(f"waiting for the key Secret (keys hash {keys_hash[:12]})")
    if secret.keys_hash != keys_hash:
        return Pending(
            f"waiting for Secret {secret.name} with keys hash {keys_hash[:12]} "
            f"(it has {(secret.keys_hash or 'none')[:12]})"
        )
    if secret.key_file is None:
        return Invalid(wanted_hash, f"Secret {secret.name} has no {agent_contract.KEYS_DATA_KEY}")
    return DesiredConfig(
        config_hash=wanted_hash,
        keys_hash=keys_hash,
        files=dict(sorted(files.items())),
        zones=tuple(zone for _, zone in sorted(zones, key=itemgetter(0))),
        key_file=secret.key_file,
        retransfer=retransfer,
        shards=dict(manifest),
        shard_files=shard_files,
    )


# `key "name"` followed by `{` defines a key; anywhere else (primaries, ACLs) it
# names one. The renderer always quotes key names (render.tokens.quoted_name).
_KEY_WORD = re.compile(r'\bkey\s+"([^"]+)"\s*(\{)?')


def undefined_tsig_keys(files: Mapping[str, str], key_file: str) -> list[str]:
    """Key names the configuration uses that neither it nor the key file defines.

    named-checkconf (9.18) and named accept a zone whose primaries or ACLs name
    an unknown key; the zone then silently fails every transfer. The operator
    ships the key file in a Secret of its own, so the agent checks the pair.
    """
    defined: set[dns.name.Name] = set()
    used: dict[dns.name.Name, str] = {}
    for text in (*files.values(), key_file):
        for match in _KEY_WORD.finditer(text):
            try:
                name = dns.name.from_text(match.group(1))
            except dns.exception.DNSException:
                continue
            if match.group(2):
                defined.add(name)
            else:
                used.setdefault(name, match.group(1))
    return sorted(text for name, text in used.items() if name not in defined)
