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
    ShardReads,
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
ZONES = json.dumps(["b.test.", "a.test."])
SHARD_FILES = {"zones-0a.conf": ZONES_CONF, "zones.json": ZONES}
SHARD_HASH = config_hash(SHARD_FILES)


def root_files(manifest: dict[str, str], named_conf: str = NAMED_CONF) -> dict[str, str]:
    return {
        "named.conf": named_conf,
        "zones.conf": "".join(f'include "zones-{shard}.conf";\n' for shard in sorted(manifest)),
        agent_contract.SHARDS_FILE: agent_contract.encode_shards_file(manifest),
    }


ROOT_FILES = root_files({"0a": SHARD_HASH})
HASH = config_hash(ROOT_FILES)
ENGINE_FILES = {
    "named.conf": NAMED_CONF,
    "zones.conf": ROOT_FILES["zones.conf"],
    **{"zones-0a.conf": ZONES_CONF},
}


def root(
    data: dict[str, str] = ROOT_FILES,
    *,
    hash_: str | None = None,
    keys: str | None = KEYS,
    version: str = "",
    name: str = "edge-config",
) -> ConfigShard:
    return ConfigShard(
        name, dict(data), config_hash=hash_ or config_hash(data), keys_hash=keys,
        resource_version=version,
    )  # fmt: skip


def shard(
    data: dict[str, str] = SHARD_FILES,
    *,
    name: str = "edge-zones-0a",
    shard_name: str = "0a",
    hash_: str | None = None,
    configmaps: int = 1,
) -> ConfigShard:
    return ConfigShard(
        name, dict(data), shard=shard_name, shard_hash=hash_ or config_hash(data),
        shard_configmaps=configmaps,
    )  # fmt: skip


SECRET = KeySecret("edge-keys", KEYS, KEY_FILE)


def test_a_root_its_shard_and_the_matching_secret_are_complete() -> None:
    result = assemble([shard(), root()], SECRET)
    assert isinstance(result, DesiredConfig), result
    assert result.config_hash == HASH and result.keys_hash == KEYS
    # The engine's files: neither the manifest nor zones.json is one.
    assert dict(result.files) == ENGINE_FILES
    assert result.zones == (dns.name.from_text("a.test."), dns.name.from_text("b.test."))
    assert result.key_file == KEY_FILE
    assert dict(result.shards) == {"0a": SHARD_HASH}


def test_parts_across_configmaps_and_out_of_order_are_joined_in_order() -> None:
    text = ZONES_CONF * 10
    files = {"zones-0a.conf": text, "zones.json": ZONES}
    wanted = config_hash(files)
    chunks = [text[i : i + 20] for i in range(0, len(text), 20)]
    items = list({f"zones-0a.conf.part-{i:04d}": c for i, c in enumerate(chunks)}.items())
    # Parts scattered over two ConfigMaps of the shard, the later parts in the first one.
    first = dict(items[len(items) // 2 :] + [("zones.json", ZONES)])
    second = dict(items[: len(items) // 2])
    members = [
        shard(second, name="edge-zones-0a-1", hash_=wanted, configmaps=2),
        shard(first, name="edge-zones-0a", hash_=wanted, configmaps=2),
    ]
    result = assemble([*members, root(root_files({"0a": wanted}))], SECRET)
    assert isinstance(result, DesiredConfig), result
    assert result.files["zones-0a.conf"] == text
    # One of the two missing: waited for.
    missing = assemble([members[1], root(root_files({"0a": wanted}))], SECRET)
    assert isinstance(missing, Pending) and "every ConfigMap of shard 0a" in missing.reason


def test_a_shard_the_root_names_and_nobody_wrote_yet_is_pending() -> None:
    result = assemble([root()], SECRET)
    assert isinstance(result, Pending) and "shard 0a" in result.reason


def test_a_shard_at_another_hash_than_the_root_names_never_mixes() -> None:
    # The root was written for a new shard hash; the shard is still the old one.
    new_shard = {"zones-0a.conf": ZONES_CONF + "# new\n", "zones.json": ZONES}
    result = assemble([shard(), root(root_files({"0a": config_hash(new_shard)}))], SECRET)
    assert isinstance(result, Pending)
    # Both copies present (the old one a leftover): the one the root names is used.
    result = assemble(
        [
            shard(),
            shard(new_shard, name="edge-zones-0a-new"),
            root(root_files({"0a": config_hash(new_shard)})),
        ],
        SECRET,
    )
    assert isinstance(result, DesiredConfig) and result.files["zones-0a.conf"].endswith("# new\n")


def test_of_two_roots_the_newer_one_wins() -> None:
    new_root = root_files({"0a": SHARD_HASH}, NAMED_CONF + "# new\n")
    old = root(version="120")
    older_new = root(new_root, name="edge-config-x", version="95")
    newer_new = root(new_root, name="edge-config-x", version="130")
    result = assemble([shard(), old, newer_new], SECRET)
    assert isinstance(result, DesiredConfig) and result.config_hash == config_hash(new_root)
    result = assemble([shard(), old, older_new], SECRET)
    assert isinstance(result, DesiredConfig) and result.config_hash == HASH
    tie = assemble([shard(), root(version="7"), root(new_root, name="x", version="7")], SECRET)
    assert isinstance(tie, Pending) and "none is newer" in tie.reason


def test_lost_last_part_is_caught_by_the_hash() -> None:
    half = len(ZONES_CONF) // 2
    data = {"zones-0a.conf.part-0000": ZONES_CONF[:half], "zones.json": ZONES}
    result = assemble([shard(data, hash_=SHARD_HASH), root()], SECRET)
    assert isinstance(result, Invalid) and "do not match the shard hash" in result.reason
    tampered = root(ROOT_FILES, hash_="0" * 64)
    result = assemble([shard(), tampered], SECRET)
    assert isinstance(result, Invalid) and "config hash annotation" in result.reason


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
    assert isinstance(assemble([shard(), root()], None), Pending)
    stale = KeySecret("edge-keys", "0" * 64, KEY_FILE)
    result = assemble([shard(), root()], stale)
    assert isinstance(result, Pending) and "edge-keys" in result.reason


def test_without_zones_json_a_shard_is_invalid() -> None:
    files = {"zones-0a.conf": ZONES_CONF}
    result = assemble([shard(files), root(root_files({"0a": config_hash(files)}))], SECRET)
    assert isinstance(result, Invalid) and "zones.json" in result.reason


def test_a_root_without_keys_hash_or_with_a_bad_manifest_is_invalid() -> None:
    result = assemble([shard(), root(keys=None)], SECRET)
    assert isinstance(result, Invalid) and agent_contract.ANNOTATION_KEYS_HASH in result.reason
    bad = {**ROOT_FILES, agent_contract.SHARDS_FILE: '{"0a": "short"}'}
    result = assemble([shard(), root(bad)], SECRET)
    assert isinstance(result, Invalid) and "SHA-256" in result.reason


def test_one_file_in_two_shards_is_invalid() -> None:
    other = {"zones-0a.conf": ZONES_CONF, "zones.json": "[]"}
    manifest = {"0a": SHARD_HASH, "0b": config_hash(other)}
    result = assemble(
        [shard(), shard(other, name="edge-zones-0b", shard_name="0b"), root(root_files(manifest))],
        SECRET,
    )
    assert isinstance(result, Invalid) and "written twice" in result.reason


def test_one_zone_in_two_shards_is_invalid() -> None:
    # The agent checks a changed shard without the unchanged ones (files.py): only
    # sound while no zone is declared by two shards.
    other = {"zones-0b.conf": 'zone "b.test" { type secondary; };\n', "zones.json": '["b.test."]'}
    manifest = {"0a": SHARD_HASH, "0b": config_hash(other)}
    result = assemble(
        [shard(), shard(other, name="edge-zones-0b", shard_name="0b"), root(root_files(manifest))],
        SECRET,
    )
    assert isinstance(result, Invalid) and "zone b.test. is in another shard" in result.reason


def test_the_files_of_each_shard_are_known() -> None:
    result = assemble([shard(), root()], SECRET)
    assert isinstance(result, DesiredConfig)
    assert result.shard_files == {"0a": ("zones-0a.conf",)}
    assert result.root_files == {"named.conf": NAMED_CONF, "zones.conf": ROOT_FILES["zones.conf"]}


@pytest.mark.parametrize(
    "text", ['{"a.test.": 1}', '["a.test"]', "not json", '["a..test."]', "[1]"]
)
def test_bad_zones_json(text: str) -> None:
    assert isinstance(agent_contract.parse_zones_file(text), str)


def test_no_configmaps_is_pending() -> None:
    assert isinstance(assemble([], SECRET), Pending)
    unannotated = ConfigShard("edge-config", {})
    result = assemble([unannotated], SECRET)
    assert isinstance(result, Pending) and agent_contract.ANNOTATION_CONFIG_HASH in result.reason


def test_objects_from_the_api_convert_to_shards_and_secrets() -> None:
    root_object = {
        "metadata": {
            "name": "edge-config",
            "resourceVersion": "42",
            "annotations": {
                agent_contract.ANNOTATION_CONFIG_HASH: HASH,
                agent_contract.ANNOTATION_KEYS_HASH: KEYS,
            },
        },
        "data": ROOT_FILES,
    }
    shard_object = {
        "metadata": {
            "name": "edge-zones-0a",
            "annotations": {
                agent_contract.ANNOTATION_SHARD: "0a",
                agent_contract.ANNOTATION_SHARD_HASH: SHARD_HASH,
                agent_contract.ANNOTATION_SHARD_CONFIGMAPS: "1",
            },
        },
        "data": SHARD_FILES,
    }
    secret = {
        "metadata": {
            "name": "edge-keys",
            "annotations": {agent_contract.ANNOTATION_KEYS_HASH: KEYS},
        },
        "data": {"tsig-keys.conf": base64.b64encode(KEY_FILE.encode()).decode()},
    }
    result = assemble(
        [shard_from_configmap(shard_object), shard_from_configmap(root_object)],
        secret_from_object(secret),
    )
    assert isinstance(result, DesiredConfig), result
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


def test_retransfer_requests_come_with_the_shard_they_are_part_of() -> None:
    files = {**SHARD_FILES, "retransfer.json": '{"a.test.": "ticket-1"}\n'}
    result = assemble([shard(files), root(root_files({"0a": config_hash(files)}))], SECRET)
    assert isinstance(result, DesiredConfig), result
    assert dict(result.retransfer) == {dns.name.from_text("a.test."): "ticket-1"}
    assert "retransfer.json" not in result.files
    # Without the file, no zone has a request.
    plain = assemble([shard(), root()], SECRET)
    assert isinstance(plain, DesiredConfig) and dict(plain.retransfer) == {}

    broken = {**SHARD_FILES, "retransfer.json": '["a.test."]'}
    invalid = assemble([shard(broken), root(root_files({"0a": config_hash(broken)}))], SECRET)
    assert isinstance(invalid, Invalid) and "retransfer.json" in invalid.reason


def test_an_assembly_reads_only_the_shards_that_changed_since_the_last() -> None:
    """At 10,000 zones reading every shard's zone names was most of an assembly."""
    reads: ShardReads = {}
    first = assemble([shard(), root()], SECRET, reads)
    assert isinstance(first, DesiredConfig) and list(reads) == [("0a", SHARD_HASH)]
    # The shard's ConfigMap is gone from what the agent sees, but the root names it
    # at the same hash: what was read at that hash is the same, so it is used.
    again = assemble([root()], SECRET, reads)
    assert again == first
    without = assemble([root()], SECRET)
    assert isinstance(without, Pending)  # read anew, nothing to read: it waits
    # A root naming no shard leaves nothing kept.
    assemble([root(root_files({}))], SECRET, reads)
    assert reads == {}
