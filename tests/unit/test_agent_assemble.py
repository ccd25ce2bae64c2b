"""Assembling one configuration from sharded ConfigMaps and the key Secret (pure)."""

from __future__ import annotations

import base64
import json

import dns.name
import pytest

from secondary_dns.agent.assemble import (
    ConfigShard,
    DesiredConfig,
    Invalid,
    KeySecret,
    Pending,
    assemble,
    join_parts,
    undefined_tsig_keys,
)
from secondary_dns.agent.kube import secret_from_object, shard_from_configmap
from secondary_dns.api import agent_contract
from secondary_dns.render import config_hash

KEYS = "k" * 64
KEY_FILE = 'key "t" { algorithm hmac-sha256; secret "AAAA"; };\n'
NAMED_CONF = 'options { directory "/var/lib/secondary-dns"; };\n' * 3
ZONES_CONF = 'zone "a.test" { type secondary; };\n'
FILES = {"named.conf": NAMED_CONF, "zones.conf": ZONES_CONF}
HASH = config_hash(FILES)
ZONES = json.dumps(["b.test.", "a.test."])


def shard(
    name: str,
    data: dict[str, str],
    *,
    hash_: str = HASH,
    shards: int = 1,
    keys: str | None = KEYS,
    version: str = "",
) -> ConfigShard:
    return ConfigShard(name, hash_, shards, keys, data, version)


SECRET = KeySecret("edge-keys", KEYS, KEY_FILE)


def test_one_configmap_with_matching_secret_is_complete() -> None:
    result = assemble([shard("edge-config-0", {**FILES, "zones.json": ZONES})], SECRET)
    assert isinstance(result, DesiredConfig)
    assert result.config_hash == HASH and result.keys_hash == KEYS
    assert dict(result.files) == FILES  # zones.json is not a named file
    assert result.zones == (dns.name.from_text("a.test."), dns.name.from_text("b.test."))
    assert result.key_file == KEY_FILE


def test_parts_across_configmaps_and_out_of_order_are_joined_in_order() -> None:
    chunks = [NAMED_CONF[i : i + 20] for i in range(0, len(NAMED_CONF), 20)]
    parts = {f"named.conf.part-{i:04d}": chunk for i, chunk in enumerate(chunks)}
    items = list(parts.items())
    # Parts scattered over two ConfigMaps, the later parts in the first one.
    first = dict(items[len(items) // 2 :] + [("zones.json", ZONES)])
    second = dict(items[: len(items) // 2] + [("zones.conf", ZONES_CONF)])
    result = assemble(
        [shard("edge-config-1", second, shards=2), shard("edge-config-0", first, shards=2)],
        SECRET,
    )
    assert isinstance(result, DesiredConfig), result
    assert result.files["named.conf"] == NAMED_CONF


def test_missing_shard_is_pending() -> None:
    result = assemble([shard("edge-config-0", {**FILES, "zones.json": ZONES}, shards=2)], SECRET)
    assert isinstance(result, Pending)
    assert "1 of 2" in result.reason


def test_mixed_generations_never_mix() -> None:
    other_files = {**FILES, "zones.conf": ""}
    other = config_hash(other_files)
    # Shard 0 already has the new generation (2 shards), shard 1 is still the old one.
    result = assemble(
        [
            shard("edge-config-0", {"named.conf": NAMED_CONF}, hash_=other, shards=2),
            shard("edge-config-1", {**FILES, "zones.json": ZONES}, hash_=HASH, shards=2),
        ],
        SECRET,
    )
    assert isinstance(result, Pending)


def test_of_two_complete_generations_the_newer_one_wins() -> None:
    new_files = {**FILES, "zones.conf": ZONES_CONF + "# new\n"}
    new_hash = config_hash(new_files)
    old = shard("edge-config-0", {**FILES, "zones.json": ZONES}, version="120")
    new = shard("edge-config-x", {**new_files, "zones.json": ZONES}, hash_=new_hash, version="95")
    newer = shard(
        "edge-config-x", {**new_files, "zones.json": ZONES}, hash_=new_hash, version="130"
    )
    result = assemble([old, newer], SECRET)
    assert isinstance(result, DesiredConfig) and result.config_hash == new_hash
    result = assemble([old, new], SECRET)
    assert isinstance(result, DesiredConfig) and result.config_hash == HASH


def test_shard_count_disagreement_within_a_hash_is_pending() -> None:
    result = assemble(
        [
            shard("edge-config-0", {"named.conf": NAMED_CONF}, shards=2),
            shard("edge-config-1", {"zones.conf": ZONES_CONF, "zones.json": ZONES}, shards=3),
        ],
        SECRET,
    )
    assert isinstance(result, Pending)


def test_lost_last_part_is_caught_by_the_hash() -> None:
    half = len(NAMED_CONF) // 2
    data = {"named.conf.part-0000": NAMED_CONF[:half], "zones.conf": ZONES_CONF}
    result = assemble([shard("edge-config-0", {**data, "zones.json": ZONES})], SECRET)
    assert isinstance(result, Invalid) and "hash" in result.reason


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("a", "f.part-0000", "x"), ("a", "f.part-0002", "z")], "lacks f.part-0001"),
        ([("a", "f", "x"), ("b", "f.part-0000", "y")], "both whole and in parts"),
        ([("a", "f", "x"), ("b", "f", "y")], "in both ConfigMap a and b"),
    ],
)
def test_part_errors(entries: list[tuple[str, str, str]], message: str) -> None:
    result = join_parts(entries)
    assert isinstance(result, str) and message in result


def test_secret_with_another_keys_hash_is_waited_for() -> None:
    configmap = shard("edge-config-0", {**FILES, "zones.json": ZONES})
    assert isinstance(assemble([configmap], None), Pending)
    stale = KeySecret("edge-keys", "0" * 64, KEY_FILE)
    result = assemble([configmap], stale)
    assert isinstance(result, Pending) and "edge-keys" in result.reason


def test_without_zones_json_the_config_is_invalid() -> None:
    result = assemble([shard("edge-config-0", dict(FILES))], SECRET)
    assert isinstance(result, Invalid) and "zones.json" in result.reason


@pytest.mark.parametrize(
    "text", ['{"a.test.": 1}', '["a.test"]', "not json", '["a..test."]', "[1]"]
)
def test_bad_zones_json(text: str) -> None:
    assert isinstance(agent_contract.parse_zones_file(text), str)


def test_no_configmaps_is_pending() -> None:
    assert isinstance(assemble([], SECRET), Pending)
    unannotated = ConfigShard("edge-config-0", None, None, None, {})
    result = assemble([unannotated], SECRET)
    assert isinstance(result, Pending) and "edge-config-0" in result.reason


def test_objects_from_the_api_convert_to_shards_and_secrets() -> None:
    configmap = {
        "metadata": {
            "name": "edge-config-0",
            "resourceVersion": "42",
            "annotations": {
                agent_contract.ANNOTATION_CONFIG_HASH: HASH,
                agent_contract.ANNOTATION_CONFIG_SHARDS: "1",
                agent_contract.ANNOTATION_KEYS_HASH: KEYS,
            },
        },
        "data": {**FILES, "zones.json": ZONES},
    }
    secret = {
        "metadata": {
            "name": "edge-keys",
            "annotations": {agent_contract.ANNOTATION_KEYS_HASH: KEYS},
        },
        "data": {"tsig-keys.conf": base64.b64encode(KEY_FILE.encode()).decode()},
    }
    result = assemble([shard_from_configmap(configmap)], secret_from_object(secret))
    assert isinstance(result, DesiredConfig)
    assert result.key_file == KEY_FILE
    broken = secret_from_object({"metadata": {"name": "edge-keys"}, "data": {"x": "y"}})
    assert broken.key_file is None and broken.keys_hash is None


def test_keys_used_but_not_defined_are_named() -> None:
    zones = 'zone "a" { primaries { 192.0.2.1 port 53 key "t.example"; }; };\n'
    zones += 'zone "b" { allow-notify { key "Relay"; }; };\n'
    key_file = 'key "t.example." {\n\talgorithm hmac-sha256;\n\tsecret "AAAA";\n};\n'
    assert undefined_tsig_keys({"zones.conf": zones}, key_file) == ["Relay"]
    key_file += 'key "relay" { algorithm hmac-sha256; secret "AAAA"; };\n'
    assert undefined_tsig_keys({"zones.conf": zones}, key_file) == []


def test_retransfer_requests_come_with_the_configuration_they_are_part_of() -> None:
    files = {**FILES, "retransfer.json": '{"a.test.": "ticket-1"}\n'}
    result = assemble(
        [shard("edge-config-0", {**files, "zones.json": ZONES}, hash_=config_hash(files))], SECRET
    )
    assert isinstance(result, DesiredConfig)
    assert dict(result.retransfer) == {dns.name.from_text("a.test."): "ticket-1"}
    # Without the file, no zone has a request.
    plain = assemble([shard("edge-config-0", {**FILES, "zones.json": ZONES})], SECRET)
    assert isinstance(plain, DesiredConfig) and dict(plain.retransfer) == {}

    broken = {**FILES, "retransfer.json": '["a.test."]'}
    invalid = assemble(
        [shard("edge-config-0", {**broken, "zones.json": ZONES}, hash_=config_hash(broken))],
        SECRET,
    )
    assert isinstance(invalid, Invalid) and "retransfer.json" in invalid.reason
