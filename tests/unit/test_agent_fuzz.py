"""Hypothesis against what the agent reads: its ConfigMaps, its key Secret, its /zones answers.

Whoever may write ConfigMaps in the namespace can put anything there; the agent
must turn any of it into a configuration, Pending or Invalid, never an
exception that stops its loop. (Its HTTP server: tests/unit/test_agent_http.py.)
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from secondary_dns.agent.assemble import DesiredConfig, Invalid, Pending, assemble, join_parts
from secondary_dns.agent.kube import secret_from_object, shard_from_configmap
from secondary_dns.api import agent_contract
from secondary_dns.render import config_hash

ANNOTATIONS = (
    agent_contract.ANNOTATION_CONFIG_HASH,
    agent_contract.ANNOTATION_KEYS_HASH,
    agent_contract.ANNOTATION_SHARD,
    agent_contract.ANNOTATION_SHARD_HASH,
    agent_contract.ANNOTATION_SHARD_CONFIGMAPS,
)
FILES = {"named.conf": "options { };\n", "zones.conf": 'zone "a.test" { type secondary; };\n'}
KEYS = "k" * 64

# Text as the API server stores it (any Unicode), with the words that matter mixed in.
words = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "0",
            "1",
            "2",
            "0a",
            "²",
            "٣",
            "-1",
            "",
            KEYS,
            config_hash(FILES),
            json.dumps({"0a": KEYS}),
        ]
    ),
    st.integers(0, 99).map(lambda n: f"{n:04d}"),
)
file_names = st.one_of(
    st.sampled_from(
        [
            "named.conf",
            "zones.conf",
            "zones-0a.conf",
            agent_contract.ZONES_FILE,
            agent_contract.SHARDS_FILE,
            "retransfer.json",
        ]
    ),
    st.builds(
        lambda base, index: f"{base}{agent_contract.PART_SEPARATOR}{index}",
        st.sampled_from(["named.conf", "zones.conf"]),
        words,
    ),
    st.text(max_size=20),
)


@st.composite
def configmaps(draw: Any) -> dict[str, Any]:
    annotations = draw(st.dictionaries(st.sampled_from(ANNOTATIONS), words, max_size=3))
    return {
        "metadata": {
            "name": draw(st.text(max_size=20)),
            "resourceVersion": draw(words),
            "annotations": annotations,
        },
        "data": draw(st.dictionaries(file_names, words, max_size=6)),
    }


@st.composite
def secrets(draw: Any) -> dict[str, Any]:
    data = draw(
        st.one_of(
            st.builds(lambda b: base64.b64encode(b).decode(), st.binary(max_size=64)),
            st.text(max_size=40),
        )
    )
    return {
        "metadata": {
            "name": "edge-keys",
            "annotations": {agent_contract.ANNOTATION_KEYS_HASH: draw(words)},
        },
        "data": {agent_contract.KEYS_DATA_KEY: data},
    }


@settings(max_examples=500)
@given(st.lists(configmaps(), max_size=4), st.one_of(st.none(), secrets()))
def test_any_configmaps_and_secret_assemble_without_raising(
    objects: list[dict[str, Any]], secret: dict[str, Any] | None
) -> None:
    shards = [shard_from_configmap(obj) for obj in objects]
    key_secret = secret_from_object(secret) if secret is not None else None
    result = assemble(shards, key_secret)
    assert isinstance(result, DesiredConfig | Pending | Invalid)
    if isinstance(result, DesiredConfig):
        # Only a configuration whose root is what its hash says is ever applied.
        roots = [
            join_parts((shard.name, key, value) for key, value in shard.data.items())
            for shard in shards
            if shard.is_root and shard.config_hash == result.config_hash
        ]
        assert any(
            isinstance(files, dict) and config_hash(files) == result.config_hash for files in roots
        )


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda v: json.dumps(v).encode(),
            st.recursive(
                st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4)
                ),
                max_leaves=20,
            ),
        ),
    )
)
def test_any_zones_answer_parses_or_is_none(data: bytes) -> None:
    document = agent_contract.ZonesDocument.parse(data)
    assert document is None or isinstance(document, agent_contract.ZonesDocument)


@given(st.text(max_size=200))
def test_any_zones_and_retransfer_file_parse_or_say_why(text: str) -> None:
    zones = agent_contract.parse_zones_file(text)
    assert isinstance(zones, tuple | str)
    requests = agent_contract.parse_retransfer_file(text)
    assert isinstance(requests, dict | str)
