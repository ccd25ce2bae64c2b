"""The agent reads the shards its root names, each by name (agent/kube.py), with a fake API."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from localcluster.waiting import wait_for
from secondary_dns.agent.kube import ShardConfigMapsByName, shards_of_root
from secondary_dns.api import agent_contract

HASH_A, HASH_B, HASH_C = ("a" * 64, "b" * 64, "c" * 64)


@dataclass
class _Response:
    data: bytes


class FakeCore:
    """What the agent's Role allows for shards: read by name, and a list of one name
    at an exact resourceVersion (the API server's revisions: one per put); counts reads."""

    def __init__(self) -> None:
        self.config_maps: dict[str, dict[str, Any]] = {}
        self.reads: list[str] = []
        self.exact_reads: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.revision = 0
        # name -> [(revision, object)], every version put
        self.history: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        # Revisions at or below this are compacted (410 Gone).
        self.compacted = 0

    def put(self, shard: str, hash_: str, parts: int = 1) -> str:
        """The shard at `hash_`; returns the revision it was written at."""
        with self.lock:
            self.revision += 1
            for part in range(parts):
                name = agent_contract.shard_config_map_name("edge", shard, part)
                self.config_maps[name] = {
                    "metadata": {
                        "name": name,
                        "annotations": {
                            agent_contract.ANNOTATION_SHARD: shard,
                            agent_contract.ANNOTATION_SHARD_HASH: hash_,
                            agent_contract.ANNOTATION_SHARD_CONFIGMAPS: str(parts),
                        },
                    },
                    "data": {f"part{part}": shard},
                }
                self.history.setdefault(name, []).append((self.revision, self.config_maps[name]))
            return str(self.revision)

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> _Response:
        with self.lock:
            self.reads.append(name)
            if name not in self.config_maps:
                raise ApiException(status=404, reason="Not Found")
            return _Response(json.dumps(self.config_maps[name]).encode())

    def list_namespaced_config_map(
        self,
        namespace: str,
        *,
        field_selector: str,
        resource_version: str,
        resource_version_match: str,
        **_: Any,
    ) -> _Response:
        assert resource_version_match == "Exact"
        name = field_selector.removeprefix("metadata.name=")
        with self.lock:
            self.exact_reads.append((name, resource_version))
            if int(resource_version) <= self.compacted:
                raise ApiException(status=410, reason="Gone")
            versions = [o for r, o in self.history.get(name, []) if r <= int(resource_version)]
            return _Response(json.dumps({"items": versions[-1:]}).encode())


def _names(shards: ShardConfigMapsByName) -> list[str]:
    return [obj["metadata"]["name"] for obj in shards.items()]


def test_the_shards_a_root_names_are_read_by_name_and_only_when_their_hash_moves() -> None:
    core, stop = FakeCore(), threading.Event()
    core.put("0a", HASH_A)
    core.put("ff", HASH_B, parts=2)
    changes = threading.Event()
    shards = ShardConfigMapsByName(core, "ns", "edge", changes.set, stop)
    shards.start()
    try:
        assert not shards.synced  # no root seen yet
        shards.want({"0a": HASH_A, "ff": HASH_B})
        wait_for("synced", lambda: shards.synced, timeout=10, every=0.02)
        assert _names(shards) == ["edge-zones-0a", "edge-zones-ff", "edge-zones-ff-1"]
        assert sorted(core.reads) == ["edge-zones-0a", "edge-zones-ff", "edge-zones-ff-1"]
        # One shard changed (the operator writes it before the root): read it alone.
        core.reads.clear()
        core.put("0a", HASH_C)
        shards.want({"0a": HASH_C, "ff": HASH_B})
        wait_for(
            "0a read",
            lambda: shards.synced and core.reads == ["edge-zones-0a"],
            timeout=10,
            every=0.02,
        )
        # A shard the root no longer names is dropped, nothing is read.
        core.reads.clear()
        shards.want({"0a": HASH_C})
        wait_for("ff dropped", lambda: _names(shards) == ["edge-zones-0a"], timeout=10, every=0.02)
        assert core.reads == []
    finally:
        stop.set()
        shards.stop()


def test_a_shard_behind_the_root_is_read_again_until_it_catches_up() -> None:
    core, stop = FakeCore(), threading.Event()
    core.put("0a", HASH_A)
    shards = ShardConfigMapsByName(core, "ns", "edge", lambda: None, stop)
    shards.start()
    try:
        shards.want({"0a": HASH_B})
        wait_for(
            "synced", lambda: shards.synced, timeout=10, every=0.02
        )  # read once: assembly waits for the hash
        core.put("0a", HASH_B)
        wait_for(
            "the shard at the root's hash",
            lambda: (
                shards.items()[0]["metadata"]["annotations"][agent_contract.ANNOTATION_SHARD_HASH]
                == HASH_B
            ),
            timeout=10,
            every=0.05,
        )
    finally:
        stop.set()
        shards.stop()


def _held(shards: ShardConfigMapsByName) -> dict[str, str]:
    return {
        obj["metadata"]["name"]: obj["metadata"]["annotations"][
            agent_contract.ANNOTATION_SHARD_HASH
        ]
        for obj in shards.items()
    }


def test_a_shard_already_ahead_of_the_root_is_read_as_of_the_root() -> None:
    """The operator wrote the next root's shard before this root was read: the agent
    reads it at the root's resourceVersion, not again and again until a root catches up."""
    core, stop = FakeCore(), threading.Event()
    core.put("0a", HASH_A)
    core.put("ff", HASH_A)
    root_revision = core.put("0a", HASH_B)  # the root naming 0a@B is written now
    core.put("ff", HASH_C)  # the next change's shard, before the next root
    shards = ShardConfigMapsByName(core, "ns", "edge", lambda: None, stop)
    shards.start()
    try:
        shards.want({"0a": HASH_B, "ff": HASH_A}, root_revision)
        wait_for("synced", lambda: shards.synced, timeout=10, every=0.02)
        assert _held(shards) == {"edge-zones-0a": HASH_B, "edge-zones-ff": HASH_A}
        # 0a was at the root's hash when read by name; ff alone is read as of the root.
        assert core.exact_reads == [("edge-zones-ff", root_revision)]
        assert sorted(core.reads) == ["edge-zones-0a", "edge-zones-ff"]
    finally:
        stop.set()
        shards.stop()


def test_a_root_revision_compacted_away_falls_back_to_reading_by_name() -> None:
    core, stop = FakeCore(), threading.Event()
    root_revision = core.put("0a", HASH_A)
    core.put("0a", HASH_B)
    core.compacted = int(root_revision)
    shards = ShardConfigMapsByName(core, "ns", "edge", lambda: None, stop)
    shards.start()
    try:
        shards.want({"0a": HASH_A}, root_revision)
        wait_for("synced", lambda: shards.synced, timeout=10, every=0.02)
        assert _held(shards) == {"edge-zones-0a": HASH_B}  # not at the root's hash: pending
        # The next root names what is there now: read by name, complete.
        shards.want({"0a": HASH_B}, str(core.revision + 1))
        wait_for(
            "at the new root's hash",
            lambda: _held(shards) == {"edge-zones-0a": HASH_B} and shards.synced,
            timeout=10,
            every=0.02,
        )
        assert core.exact_reads[0] == ("edge-zones-0a", root_revision)
    finally:
        stop.set()
        shards.stop()


def test_no_root_or_a_bad_manifest_names_no_shard() -> None:
    assert shards_of_root(None) == {}
    assert shards_of_root({"data": {agent_contract.SHARDS_FILE: "not json"}}) == {}
    manifest = agent_contract.encode_shards_file({"0a": HASH_A})
    assert shards_of_root({"data": {agent_contract.SHARDS_FILE: manifest}}) == {"0a": HASH_A}


def test_a_pass_completed_for_a_root_that_moved_on_meanwhile_is_kept_and_served() -> None:
    """A burst: the next root arrives while a pass reads the shards of this one. The
    set the pass completed is consistent (this root and its shards), so it is what the
    agent gets, not nothing until a pass ends before the next root does."""
    core, stop = FakeCore(), threading.Event()
    first_revision = core.put("0a", HASH_A)
    root_a = {"metadata": {"name": "edge-config", "resourceVersion": first_revision}}
    root_b = {"metadata": {"name": "edge-config", "resourceVersion": "99"}}
    shards = ShardConfigMapsByName(core, "ns", "edge", lambda: None, stop)
    forward = core.read_namespaced_config_map

    def read_while_the_next_root_arrives(name: str, namespace: str, **kwargs: Any) -> Any:
        # The next root names 0a at a hash that is not there yet, nor ever will be
        # here: its pass cannot complete.
        shards.want({"0a": HASH_C}, "99", root_b)
        return forward(name, namespace, **kwargs)

    core.read_namespaced_config_map = read_while_the_next_root_arrives  # type: ignore[method-assign]
    core.compacted = 99
    shards.start()
    try:
        shards.want({"0a": HASH_A}, first_revision, root_a)
        wait_for("synced", lambda: shards.synced, timeout=10, every=0.02)
        assert shards.complete_root() == (True, root_a)
        assert _held(shards) == {"edge-zones-0a": HASH_A}
    finally:
        stop.set()
        shards.stop()
