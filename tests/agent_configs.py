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
from dataclasses import dataclass, replace
from typing import Any

import dns.name
import dns.tsig

from secondary_dns.agent.assemble import ConfigShard, KeySecret
from secondary_dns.agent.kube import shard_from_configmap
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
from secondary_dns.render import RenderedConfig, RenderRequest, config_hash, renderer_for
from secondary_dns.render.children import (
    MAX_SHARD_BYTES,
    ServerIdentity,
    build_root_config_map,
    build_shard_config_maps,
    engine_paths,
)
from secondary_dns.render.engine import (
    DEFAULT_RELAY_KEY_NAME,
    RenderedShard,
    TsigKeyLookup,
    ZonePlan,
)
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
    """One configuration as the operator would publish it: a root and its shards."""

    # The root's files (the engine's main file, the zones include, SHARDS_FILE).
    root: dict[str, str]
    # shard -> its files (the engine's include file, ZONES_FILE, RETRANSFER_FILE).
    shards: dict[str, dict[str, str]]
    zones: tuple[str, ...]
    key_file: str
    keys_hash: str

    @property
    def config_hash(self) -> str:
        return config_hash(self.root)

    @property
    def files(self) -> dict[str, str]:
        """The engine's files, as the agent writes them to the configuration directory."""
        return dict(self.rendered().engine_files())

    def rendered(self) -> RenderedConfig:
        shards = {
            shard: RenderedShard(files, config_hash(files)) for shard, files in self.shards.items()
        }
        return RenderedConfig(
            engine="",
            files=self.root,
            config_hash=self.config_hash,
            plan=ZonePlan(by_ref={}, rejected={}, tsig_keys=()),
            shards=shards,
        )

    def with_file(self, name: str, text: str) -> Bundle:
        """The same bundle with one file replaced (and the hashes that go with it)."""
        if name in self.root:
            return replace(self, root={**self.root, name: text})
        shard = next(shard for shard, files in self.shards.items() if name in files)
        shards = {**self.shards, shard: {**self.shards[shard], name: text}}
        manifest = {key: config_hash(files) for key, files in shards.items()}
        root = {
            **self.root,
            agent_contract.SHARDS_FILE: agent_contract.encode_shards_file(manifest),
        }
        return replace(self, root=root, shards=shards)


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
            "spec": {
                "replicas": 3,
                "engine": {"type": engine},
                # No response rate limit in the agent harness: its pollers and the
                # serial monitor under test query from one /24 and share one
                # budget (and one error budget while 40 zones load), which starved
                # them in a test of the monitor. The limit has its own tests
                # (tests/dataplane/test_public_defaults.py).
                "limits": {"responsesPerSecond": 0},
            },
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
        root=dict(rendered.files),
        shards={shard: dict(files.files) for shard, files in rendered.shards.items()},
        zones=tuple(sorted(zone.zone.to_text() for zone in rendered.plan.zones)),
        key_file=key_file,
        keys_hash=hashlib.sha256(key_file.encode()).hexdigest(),
    )


def configmaps(
    bundle: Bundle, namespace: str = NAMESPACE, part_bytes: int | None = None, server: str = SERVER
) -> list[dict[str, Any]]:
    """The ConfigMaps the operator writes for `bundle` (render/children.py), shards first.

    Files longer than `part_bytes` are cut in parts, as a shard above a ConfigMap's
    limit is; without ownerReferences (no SecondaryServer owns them in tests).
    """
    identity = ServerIdentity(ObjectRef(namespace, server), "uid", {})
    limit = MAX_SHARD_BYTES if part_bytes is None else part_bytes + 256
    rendered = bundle.rendered()
    built = [
        configmap
        for shard, files in sorted(rendered.shards.items())
        for configmap in build_shard_config_maps(identity, shard, files, limit)
    ]
    built.append(build_root_config_map(identity, rendered, bundle.keys_hash))
    for configmap in built:
        configmap["metadata"].pop("ownerReferences", None)
    return built


def shards_of(
    bundle: Bundle, part_bytes: int | None = None, server: str = SERVER
) -> list[ConfigShard]:
    """The ConfigMaps of `bundle` as the agent reads them."""
    return [
        shard_from_configmap(configmap)
        for configmap in configmaps(bundle, NAMESPACE, part_bytes, server)
    ]


def key_secret_of(bundle: Bundle, server: str = SERVER) -> KeySecret:
    return KeySecret(agent_contract.keys_secret_name(server), bundle.keys_hash, bundle.key_file)


def configmap_manifests(
    bundle: Bundle, namespace: str, server: str = SERVER
) -> list[dict[str, Any]]:
    return configmaps(bundle, namespace, server=server)


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
