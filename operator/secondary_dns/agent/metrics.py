"""The agent's own metrics (a registry of its own, served on /metrics)."""

from __future__ import annotations

from collections.abc import Mapping

import dns.name
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RELOAD_RESULTS = ("success", "rejected", "failed")
RETRANSFER_RESULTS = ("requested", "refused")


class AgentMetrics:
    def __init__(self, engine: str = "bind9") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        Gauge(
            "secondarydns_agent_engine_info",
            "The DNS engine this agent drives (spec.engine.type): 1 for its name.",
            ["engine"],
            registry=self.registry,
        ).labels(engine=engine).set(1)
        self.reloads = Counter(
            "secondarydns_agent_reloads",
            "Configuration applies by result: success (checked, swapped, reconfigured), "
            "rejected (the engine or its checker refused it), failed (could not be written).",
            ["result"],
            registry=self.registry,
        )
        for result in RELOAD_RESULTS:
            self.reloads.labels(result=result)
        self.retransfers = Counter(
            "secondarydns_agent_retransfers",
            "Full retransfers asked of the engine (rndc retransfer, knotc zone-retransfer) "
            "because a Zone's spec.retransferRequest changed, by result: requested, refused.",
            ["result"],
            registry=self.registry,
        )
        for result in RETRANSFER_RESULTS:
            self.retransfers.labels(result=result)
        self.refreshes = Counter(
            "secondarydns_agent_refreshes",
            "Zones the engine was asked to refresh (rndc refresh, knotc zone-refresh) after "
            "a configuration changed their shard, by result: requested, refused.",
            ["result"],
            registry=self.registry,
        )
        for result in RETRANSFER_RESULTS:
            self.refreshes.labels(result=result)
        self.failed_looks = Counter(
            "secondarydns_agent_zone_state_reads_failed",
            "Reads of the engine's zones and serials (named's statistics channel, knotc "
            "zone-status) that got no answer in time while the engine answered queries; "
            "/zones and readiness keep what the last read said.",
            registry=self.registry,
        )
        self.apply_seconds = Histogram(
            "secondarydns_agent_apply_duration_seconds",
            "Seconds per step of a successful configuration apply: check (the engine's "
            "checker on the changed shards, or on everything), write (swap the files in), "
            "reload (rndc reconfig, knotc reload), refresh (rndc refresh, knotc zone-refresh of "
            "the zones of changed shards, after the reload).",
            ["step"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.config_applied = Gauge(
            "secondarydns_agent_config_applied_info",
            "The configuration the engine serves: 1 for its config hash.",
            ["config_hash"],
            registry=self.registry,
        )
        self.config_rejected = Gauge(
            "secondarydns_agent_config_rejected",
            "1 while the newest configuration is rejected and the last good one serves.",
            registry=self.registry,
        )
        self.zones_configured = Gauge(
            "secondarydns_agent_zones_configured",
            "Zones in the applied configuration.",
            registry=self.registry,
        )
        self.zones_loaded = Gauge(
            "secondarydns_agent_zones_loaded",
            "Zones of the applied configuration that the engine has loaded at least once.",
            registry=self.registry,
        )
        self.last_reload = Gauge(
            "secondarydns_agent_last_reload_timestamp_seconds",
            "Unix time of the last successful configuration apply.",
            registry=self.registry,
        )
        self.ready = Gauge(
            "secondarydns_agent_ready",
            "1 when the replica reports Ready (the engine answers, zones loaded).",
            registry=self.registry,
        )
        self.zone_expires = Gauge(
            "secondarydns_agent_zone_expires_timestamp_seconds",
            "Unix time at which the engine stops answering for the zone unless a refresh "
            "from a primary succeeds first (the engine's own expire timer; it moves forward "
            "at every successful refresh). Alert when it comes within a fraction of SOA "
            "expire.",
            ["zone"],
            registry=self.registry,
        )
        self._applied_hash: str | None = None
        self._expiry_zones: set[str] = set()

    def set_zone_expiry(self, expires: Mapping[dns.name.Name, float]) -> None:
        zones = {zone.to_text(): value for zone, value in expires.items()}
        for gone in self._expiry_zones - set(zones):
            self.zone_expires.remove(gone)
        for zone, value in zones.items():
            self.zone_expires.labels(zone=zone).set(value)
        self._expiry_zones = set(zones)

    def set_applied(self, config_hash: str | None) -> None:
        if config_hash == self._applied_hash:
            return
        if self._applied_hash is not None:
            self.config_applied.remove(self._applied_hash)
        if config_hash is not None:
            self.config_applied.labels(config_hash=config_hash).set(1)
        self._applied_hash = config_hash
