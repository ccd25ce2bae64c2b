"""Pure: from the ConfigMaps and the key Secret to one configuration, or why not yet.

A configuration is applied only whole: every ConfigMap of one generation (same
config hash, as many as its shard count says), its parts joined in order, its
content equal to its hash, and the key Secret of the keys hash it names.
Anything less is `Pending` (the operator is still writing) or `Invalid` (the
operator wrote something the agent must not apply; reported on the Pod).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dns.exception
import dns.name

from secondary_dns.api import agent_contract
from secondary_dns.render import config_hash


@dataclass(frozen=True)
class ConfigShard:
    """One config ConfigMap, reduced to what assembly needs."""

    name: str
    config_hash: str | None
    shards: int | None
    keys_hash: str | None
    data: Mapping[str, str]
    # metadata.resourceVersion: only used to prefer the newer of two complete generations.
    resource_version: str = ""


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
    files: Mapping[str, str]
    zones: tuple[dns.name.Name, ...]
    key_file: str = field(repr=False)
    # spec.retransferRequest per zone (retransfer.json, one of `files`).
    retransfer: Mapping[dns.name.Name, str] = field(default_factory=dict)

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
    # revisions) makes it an integer; without one, no generation is preferred.
    # isascii: str.isdigit() also holds for "²", which int() refuses.
    return int(value) if value.isascii() and value.isdigit() else None


def select_generation(shards: Iterable[ConfigShard]) -> list[ConfigShard] | Pending:
    """The ConfigMaps of the one complete generation, sorted by name."""
    by_hash: dict[str, list[ConfigShard]] = {}
    unlabelled: list[str] = []
    for shard in shards:
        if not shard.config_hash or shard.shards is None or shard.shards < 1:
            unlabelled.append(shard.name)
            continue
        by_hash.setdefault(shard.config_hash, []).append(shard)
    if not by_hash:
        if unlabelled:
            return Pending(
                f"ConfigMaps {', '.join(sorted(unlabelled))} lack the "
                f"{agent_contract.ANNOTATION_CONFIG_HASH}/"
                f"{agent_contract.ANNOTATION_CONFIG_SHARDS} annotations"
            )
        return Pending("no configuration ConfigMap yet")
    complete: list[list[ConfigShard]] = []
    waiting: list[str] = []
    for hash_, members in sorted(by_hash.items()):
        declared = {member.shards for member in members}
        expected = max(member.shards or 0 for member in members)
        if len(declared) == 1 and len(members) == expected:
            complete.append(sorted(members, key=lambda member: member.name))
        else:
            waiting.append(f"{hash_[:12]} has {len(members)} of {expected} ConfigMaps")
    if not complete:
        return Pending("waiting for a complete configuration: " + "; ".join(waiting))
    if len(complete) == 1:
        return complete[0]

    # Two complete generations side by side (the operator writes the new one
    # before deleting the old): the one written last is the newer one.
    def newest(members: list[ConfigShard]) -> int:
        versions = [_parse_resource_version(member.resource_version) for member in members]
        return max((version for version in versions if version is not None), default=-1)

    ranked = sorted(complete, key=newest, reverse=True)
    if newest(ranked[0]) == newest(ranked[1]) or newest(ranked[0]) < 0:
        hashes = ", ".join(members[0].config_hash or "" for members in complete)
        return Pending(f"several complete configurations and none is newer: {hashes}")
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


def assemble(shards: Iterable[ConfigShard], secret: KeySecret | None) -> Assembly:
    """The configuration to apply, from everything the agent currently sees."""
    generation = select_generation(shards)
    if isinstance(generation, Pending):
        return generation
    wanted_hash = generation[0].config_hash or ""
    keys_hashes = {shard.keys_hash for shard in generation}
    if len(keys_hashes) != 1 or None in keys_hashes or "" in keys_hashes:
        return Invalid(
            wanted_hash,
            f"the ConfigMaps disagree on or lack {agent_contract.ANNOTATION_KEYS_HASH}",
        )
    keys_hash = keys_hashes.pop() or ""
    joined = join_parts(
        (shard.name, key, value)
        for shard in generation
        for key, value in sorted(shard.data.items())
    )
    if isinstance(joined, str):
        return Invalid(wanted_hash, joined)
    zones_text = joined.pop(agent_contract.ZONES_FILE, None)
    if zones_text is None:
        return Invalid(wanted_hash, f"no {agent_contract.ZONES_FILE} in the configuration")
    zones = agent_contract.parse_zones_file(zones_text)
    if isinstance(zones, str):
        return Invalid(wanted_hash, zones)
    if config_hash(joined) != wanted_hash:
        # Guards the join: a lost last part or a stale ConfigMap with the new
        # annotations must not reach named.
        return Invalid(wanted_hash, "the files do not match the config hash annotation")
    retransfer = agent_contract.parse_retransfer_file(joined.get(agent_contract.RETRANSFER_FILE))
    if isinstance(retransfer, str):
        return Invalid(wanted_hash, retransfer)
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
        files=dict(sorted(joined.items())),
        zones=zones,
        key_file=secret.key_file,
        retransfer=retransfer,
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
