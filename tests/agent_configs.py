"""Real rendered configurations for agent tests, shaped as the operator ships them.

Shared by the unit, dataplane and cluster tiers (so it lives in none of them).

The renderer of the engine (BIND 9 or Knot DNS) turns Zone manifests into its
main file (named.conf, knot.conf) and zones.conf for the pod layout
(`render.children.engine_paths(layout)` under a temporary directory); these
helpers wrap the result as config ConfigMaps (optionally split into parts and
shards) and the key Secret, with the annotations of api/agent_contract.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

import dns.name
import dns.tsig

from secondary_dns.agent.assemble import ConfigShard, KeySecret
from secondary_dns.api import (
    API_VERSION,
    ObjectRef,
    SecretKeyRef,
    TsigKey,
    agent_contract,
    parse_secondary_server,
    parse_zone,
)
from secondary_dns.api.agent_contract import PodLayout
from secondary_dns.render import RenderRequest, config_hash, renderer_for
from secondary_dns.render.children import engine_paths
from secondary_dns.render.engine import DEFAULT_RELAY_KEY_NAME, TsigKeyLookup
from secondary_dns.render.tokens import IPAddress

NAMESPACE = "dns"
SERVER = "edge"
KEY_SECRET = "transfer-key"
# The operator's NOTIFY relay key: every zone names it in allow-notify.
RELAY_KEY = TsigKey(
    DEFAULT_RELAY_KEY_NAME, dns.tsig.HMAC_SHA256, b"relay-key-for-tests-0123456789ab"
)


@dataclass(frozen=True)
class PrimaryZone:
    zone: str
    address: str
    port: int = 53
    retransfer_request: str | None = None


@dataclass(frozen=True)
class Bundle:
    """One configuration as the operator would publish it."""

    files: dict[str, str]
    config_hash: str
    zones: tuple[str, ...]
    key_file: str
    keys_hash: str

    def with_file(self, name: str, text: str) -> Bundle:
        """The same bundle with one file replaced (and the hash that goes with it)."""
        files = {**self.files, name: text}
        return replace(self, files=files, config_hash=config_hash(files))


def render_bundle(
    layout: PodLayout,
    zones: list[PrimaryZone],
    key_name: dns.name.Name,
    key_secret: bytes,
    *,
    listen: IPAddress,
    port: int = 53,
    control_port: int = 953,
    statistics_port: int = 8053,
    engine: str = agent_contract.ENGINE_BIND9,
) -> Bundle:
    server = parse_secondary_server(
        {
            "apiVersion": API_VERSION,
            "kind": "SecondaryServer",
            "metadata": {"name": SERVER, "namespace": NAMESPACE},
            "spec": {"replicas": 3, "engine": {"type": engine}},
        }
    )
    parsed = []
    for index, item in enumerate(zones):
        manifest = {
            "apiVersion": API_VERSION,
            "kind": "Zone",
            "metadata": {"name": f"zone-{index}", "namespace": NAMESPACE},
            "spec": {
                "zone": item.zone,
                "primaries": [
                    {
                        "address": item.address,
                        "port": item.port,
                        "tsigKeySecretRef": {"name": KEY_SECRET},
                    }
                ],
                "servers": [SERVER],
                **(
                    {"retransferRequest": item.retransfer_request}
                    if item.retransfer_request
                    else {}
                ),
            },
        }
        parsed.append((ObjectRef(NAMESPACE, f"zone-{index}"), parse_zone(manifest)))
    key = TsigKey(key_name, dns.tsig.HMAC_SHA256, key_secret)
    lookup: TsigKeyLookup = {(NAMESPACE, SecretKeyRef(KEY_SECRET)): key}
    paths = replace(
        engine_paths(layout),
        listen_addresses=(listen,),
        port=port,
        control_port=control_port,
        statistics_port=statistics_port,
    )
    renderer = renderer_for(engine)
    rendered = renderer.render(
        RenderRequest(
            server=server,
            zones=parsed,
            tsig_keys=lookup,
            relay_key_name=DEFAULT_RELAY_KEY_NAME,
            paths=paths,
        )
    )
    assert not rendered.rejected, rendered.rejected
    key_file = renderer.render_key_file([*rendered.tsig_keys, RELAY_KEY])
    return Bundle(
        files=dict(rendered.files),
        config_hash=rendered.config_hash,
        zones=tuple(sorted(zone.zone.to_text() for zone in rendered.plan.zones)),
        key_file=key_file,
        keys_hash=hashlib.sha256(key_file.encode()).hexdigest(),
    )


def configmap_data(
    bundle: Bundle, shards: int = 1, part_bytes: int | None = None
) -> list[dict[str, str]]:
    """The data of `shards` ConfigMaps; files longer than part_bytes go in parts."""
    entries: list[tuple[str, str]] = []
    for name, text in sorted(
        {**bundle.files, agent_contract.ZONES_FILE: zones_json(bundle)}.items()
    ):
        if part_bytes is None or len(text) <= part_bytes:
            entries.append((name, text))
            continue
        for index, start in enumerate(range(0, len(text), part_bytes)):
            entries.append((f"{name}.part-{index:04d}", text[start : start + part_bytes]))
    # Round robin, so consecutive parts land in different ConfigMaps.
    data: list[dict[str, str]] = [{} for _ in range(shards)]
    for index, (key, value) in enumerate(entries):
        data[index % shards][key] = value
    return data


def zones_json(bundle: Bundle) -> str:
    return json.dumps(list(bundle.zones)) + "\n"


def shards_of(
    bundle: Bundle, shards: int = 1, part_bytes: int | None = None, server: str = SERVER
) -> list[ConfigShard]:
    return [
        ConfigShard(
            name=f"{server}-config-{index}",
            config_hash=bundle.config_hash,
            shards=shards,
            keys_hash=bundle.keys_hash,
            data=data,
        )
        for index, data in enumerate(configmap_data(bundle, shards, part_bytes))
    ]


def key_secret_of(bundle: Bundle, server: str = SERVER) -> KeySecret:
    return KeySecret(agent_contract.keys_secret_name(server), bundle.keys_hash, bundle.key_file)


def configmap_manifests(
    bundle: Bundle, namespace: str, shards: int = 1, server: str = SERVER
) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{server}-config-{index}",
                "namespace": namespace,
                "labels": {
                    agent_contract.LABEL_SERVER: server,
                    agent_contract.LABEL_ROLE: agent_contract.ROLE_CONFIG,
                },
                "annotations": {
                    agent_contract.ANNOTATION_CONFIG_HASH: bundle.config_hash,
                    agent_contract.ANNOTATION_CONFIG_SHARDS: str(shards),
                    agent_contract.ANNOTATION_KEYS_HASH: bundle.keys_hash,
                },
            },
            "data": data,
        }
        for index, data in enumerate(configmap_data(bundle, shards))
    ]


def key_secret_manifest(bundle: Bundle, namespace: str, server: str = SERVER) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": agent_contract.keys_secret_name(server),
            "namespace": namespace,
            "annotations": {agent_contract.ANNOTATION_KEYS_HASH: bundle.keys_hash},
        },
        "data": {
            agent_contract.KEYS_DATA_KEY: base64.b64encode(bundle.key_file.encode()).decode("ascii")
        },
    }
