"""One server's configuration as a root and shards, built incrementally (pure).

Zones go to one of SHARD_COUNT shards by a stable hash of their name, so a
Zone's change touches its shard alone: its part is rendered again, its
shard's file and hash are rebuilt, and the root (the engine's main file, the
zones include naming every shard's file, and the manifest of shard hashes) is
rebuilt from what is kept. Nothing else is rendered again, so the work for one
changed Zone does not grow with the number of zones a server has. The same
builder renders a whole configuration at once for `secondary-dns render`.

Only shards that hold a zone exist; the root's hash covers every shard through
the manifest (a Merkle root), and is the configuration's hash the agents
report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import dns.name

from secondary_dns.api import ObjectRef, ZoneSpec, agent_contract
from secondary_dns.render.engine import (
    ZONES_INCLUDE,
    EngineRenderer,
    PlanContext,
    PlannedZone,
    RenderedConfig,
    RenderedShard,
    RenderedZone,
    RenderRequest,
    RenderSettings,
    TsigKeyLookup,
    ZonePlanner,
    check_server,
    config_hash,
)

# Two hex digits. A shard of 10,000 zones' BIND statements is about 20 KB, of
# 100,000 about 200 KB: far below a ConfigMap's 1 MiB.
SHARD_COUNT = 256


def every_shard() -> list[str]:
    """Every shard name shard_of can give (the agent's Role names their ConfigMaps)."""
    return [f"{index:02x}" for index in range(SHARD_COUNT)]


def shard_of(zone: dns.name.Name) -> str:
    """The shard a zone name belongs to: stable across restarts, versions and hosts."""
    digest = hashlib.sha256(zone.canonicalize().to_text().encode()).digest()
    return f"{digest[0] % SHARD_COUNT:02x}"


class ConfigBuilder:
    """The configuration of one server, kept current Zone by Zone.

    `update` takes the Zones that changed (and the keys), `rendered` the
    configuration as it is now. A change of the server's own spec needs a new
    builder (its settings are in every part).
    """

    def __init__(
        self, renderer: EngineRenderer, settings: RenderSettings, context: PlanContext
    ) -> None:
        check_server(settings.server)
        self.renderer = renderer
        self.settings = settings
        self.planner = ZonePlanner(context)
        self.main_files, self.server_limitations = renderer.main_files(settings)
        # shard -> Zone object -> (its planned zone, its rendered part)
        self._members: dict[str, dict[ObjectRef, tuple[PlannedZone, RenderedZone]]] = {}
        self._shard_of: dict[ObjectRef, str] = {}
        self._shards: dict[str, RenderedShard] = {}
        self._limitations: dict[ObjectRef, tuple[str, ...]] = {}
        self._rendered: RenderedConfig | None = None

    def update(
        self,
        zones: Mapping[ObjectRef, tuple[ZoneSpec, str | None] | None],
        keys: TsigKeyLookup | None = None,
    ) -> set[ObjectRef]:
        """Changed Zones (None: gone, or no longer selecting the server) and the keys.

        Returns the Zones whose outcome changed (served differently, left out,
        or served again), which are the only ones whose part was rendered.
        """
        changed = self.planner.update(zones, keys)
        dirty: set[str] = set()
        for ref in changed:
            shard = self._shard_of.pop(ref, None)
            if shard is not None:
                del self._members[shard][ref]
                dirty.add(shard)
            self._limitations.pop(ref, None)
            outcome = self.planner.outcomes.get(ref)
            if isinstance(outcome, PlannedZone):
                part = self.renderer.zone_part(outcome, self.settings)
                shard = shard_of(outcome.zone)
                self._members.setdefault(shard, {})[ref] = (outcome, part)
                self._shard_of[ref] = shard
                dirty.add(shard)
                if part.limitations:
                    self._limitations[ref] = part.limitations
        for shard in dirty:
            self._rebuild(shard)
        self._rendered = None
        return changed

    def _rebuild(self, shard: str) -> None:
        members = self._members.get(shard)
        if not members:
            self._members.pop(shard, None)
            self._shards.pop(shard, None)
            return
        ordered = sorted(members.values(), key=lambda member: member[0].zone)
        files = {
            agent_contract.shard_file_name(shard): self.renderer.shard_text(
                [part for _, part in ordered]
            ),
            agent_contract.ZONES_FILE: agent_contract.encode_zones_file(
                zone.zone for zone, _ in ordered
            ),
        }
        retransfers = agent_contract.encode_retransfer_file(
            {zone.zone: zone.retransfer_request for zone, _ in ordered if zone.retransfer_request}
        )
        if retransfers is not None:
            files[agent_contract.RETRANSFER_FILE] = retransfers
        self._shards[shard] = RenderedShard(files, config_hash(files))

    def rendered(self) -> RenderedConfig:
        """The configuration as it is now (a snapshot; the builder may change on)."""
        if self._rendered is not None:
            return self._rendered
        shards = dict(sorted(self._shards.items()))
        files = {
            **self.main_files,
            ZONES_INCLUDE: self.renderer.zones_include(
                [agent_contract.shard_file_name(shard) for shard in shards], self.settings
            ),
            agent_contract.SHARDS_FILE: agent_contract.encode_shards_file(
                {shard: rendered.config_hash for shard, rendered in shards.items()}
            ),
        }
        self._rendered = RenderedConfig(
            engine=self.renderer.engine,
            files=files,
            config_hash=config_hash(files),
            plan=self.planner.plan(),
            shards=shards,
            server_limitations=self.server_limitations,
            zone_limitations=dict(self._limitations),
        )
        return self._rendered


def render_at_once(renderer: EngineRenderer, request: RenderRequest) -> RenderedConfig:
    """A whole configuration from a request (`secondary-dns render`, tests)."""
    builder = ConfigBuilder(
        renderer,
        RenderSettings(request.server, request.relay_key_name, request.paths),
        PlanContext.of(request),
    )
    zones: dict[ObjectRef, tuple[ZoneSpec, str | None] | None] = {}
    for ref, spec in request.zones:
        zones.setdefault(ref, (spec, request.created.get(ref)))
    builder.update(zones, request.tsig_keys)
    return builder.rendered()
