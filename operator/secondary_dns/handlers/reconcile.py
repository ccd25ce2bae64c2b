"""Level-triggered reconciliation: read -> render -> apply -> status.

One idempotent `reconcile_server()` is called for every reason a
SecondaryServer may need work (its own events, a Zone or Secret it uses, a
resync timer), so there is no chain of phases through status fields (kopf
docs/reconciliation.rst). Pod and StatefulSet events only recompute status.
Decisions live in `render` (pure); this module only moves data between the
API and those functions.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import dns.name
from kubernetes.client.exceptions import ApiException

from secondary_dns import metrics
from secondary_dns.api import (
    SECONDARY_SERVER_PLURAL,
    IPNetwork,
    ObjectRef,
    SecondaryServerSpec,
    SecretKeyRef,
    SpecError,
    TsigKey,
    agent_contract,
    parse_secondary_server,
    parse_tsig_secret,
    parse_zone,
)
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.handlers.events import EventPoster
from secondary_dns.handlers.zone_status import ZoneStatusWriter
from secondary_dns.k8s.api import Cluster
from secondary_dns.render import (
    RenderedConfig,
    RenderError,
    RenderRequest,
    children,
    renderer_for,
)
from secondary_dns.render.engine import DEFAULT_RELAY_KEY_NAME
from secondary_dns.render.inputs import select_zones, tsig_keys
from secondary_dns.status import server as status_rules
from secondary_dns.status.serial import ReplicaTarget
from secondary_dns.status.zone import ZoneConfig, verdict_for

log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class MonitoredZone:
    ref: ObjectRef
    name: dns.name.Name
    primaries: tuple[ProbeTarget, ...]
    primary_keys: tuple[TsigKey, ...] = field(repr=False)
    # Where a NOTIFY for this zone may come from: its primaries and notify.allowFrom.
    notify_sources: tuple[IPNetwork, ...]
    # Every replica of every server that serves the zone, with that server's relay key.
    replicas: tuple[tuple[ReplicaTarget, TsigKey], ...] = field(repr=False)


@dataclass
class _ServerMemory:
    """What the last reconcile of one server learned; rebuilt from the API after a restart."""

    rendered: RenderedConfig | None = None
    zones: frozenset[ObjectRef] = frozenset()
    relay_key: TsigKey | None = field(default=None, repr=False)
    secrets: frozenset[str] = frozenset()
    pods: tuple[status_rules.ObservedPod, ...] = ()
    replicas: int = 0
    seen_applied: dict[str, str] = field(default_factory=dict)
    seen_errors: dict[str, str] = field(default_factory=dict)


class Reconciler:
    def __init__(
        self,
        cluster: Cluster,
        post_event: EventPoster,
        now: Callable[[], str] = utc_now,
        notify_address: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.post_event = post_event
        self.now = now
        self.notify_address = notify_address
        self._memory: dict[ObjectRef, _ServerMemory] = {}
        # Called after a reconcile changed what is served (the monitor probes fast).
        self.on_change: Callable[[], None] = lambda: None
        self._locks: dict[ObjectRef, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._seen: dict[tuple[str, ObjectRef], tuple[Any, ...]] = {}
        self.zone_status = ZoneStatusWriter(cluster, post_event, now)

    def _lock(self, ref: ObjectRef) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault(ref, threading.RLock())

    def memory(self, ref: ObjectRef) -> _ServerMemory:
        return self._memory.setdefault(ref, _ServerMemory())

    def worth_reconciling(self, event_type: str | None, obj: Mapping[str, Any]) -> bool:
        """False for events that only carry a status change (most of them are ours).

        Without this, every status write would come back as a watch event and
        cause a full reconcile. What selects zones and servers is the spec
        (generation), the labels, and deletion.
        """
        meta = obj.get("metadata") or {}
        ref = ObjectRef(meta.get("namespace", ""), meta.get("name", ""))
        key = (
            obj.get("kind", ""),
            meta.get("uid"),
            meta.get("generation"),
            tuple(sorted((meta.get("labels") or {}).items())),
            bool(meta.get("deletionTimestamp")),
        )
        with self._locks_guard:
            if event_type == "DELETED":
                self._seen.pop((key[0], ref), None)
                return True
            if self._seen.get((key[0], ref)) == key:
                return False
            self._seen[(key[0], ref)] = key
            return True

    # ---- SecondaryServer ---------------------------------------------------

    def reconcile_server(self, namespace: str, name: str) -> None:
        ref = ObjectRef(namespace, name)
        affected: set[ObjectRef] = set()
        started = time.monotonic()
        result = "ok"
        with self._lock(ref):
            obj = self.cluster.get_server(namespace, name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                # Going away: its children follow by garbage collection; recreating
                # any of them now would only race the namespace's termination.
                affected |= self.memory(ref).zones
                self._memory.pop(ref, None)
            else:
                try:
                    affected |= self._reconcile_server(obj)
                except SpecError:
                    result = "invalid_spec"
                except Exception:
                    result = "error"
                    raise
                finally:
                    metrics.RECONCILES.labels(result=result).inc()
                    metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        for zone_ref in sorted(affected):
            self.refresh_zone(zone_ref.namespace, zone_ref.name)

    def _reconcile_server(self, obj: Mapping[str, Any]) -> set[ObjectRef]:
        ref = ObjectRef.of(obj)
        memory = self.memory(ref)
        try:
            spec = parse_secondary_server(obj)
        except SpecError as error:
            observation = status_rules.ServerObservation(
                generation=int(obj["metadata"].get("generation", 0)),
                replicas=0,
                topology_key="",
                pods=(),
                config_hash=None,
                zones=0,
                rollout_complete=False,
                spec_error=error,
            )
            self._write_server_status(obj, observation, "Warning", "InvalidSpec", str(error))
            raise
        identity = children.ServerIdentity(
            ref, obj["metadata"]["uid"], dict(obj["metadata"].get("labels") or {})
        )
        served = select_zones(
            ((ObjectRef.of(zone), zone) for zone in self.cluster.list_zones(ref.namespace)),
            ref,
            identity.labels,
        )
        secrets = {
            name: self.cluster.get_secret(ref.namespace, name) for name in served.secret_names
        }
        keys = tsig_keys(served, ref.namespace, secrets)
        relay_key = self._relay_key(identity)
        renderer = renderer_for(spec.engine.type)
        apply_error: str | None = None
        try:
            rendered = renderer.render(
                RenderRequest(
                    server=spec,
                    zones=served.selected,
                    tsig_keys=keys,
                    relay_key_name=relay_key.name,
                    paths=children.POD_PATHS,
                    created=served.created,
                )
            )
        except RenderError as error:
            observation = status_rules.ServerObservation(
                generation=int(obj["metadata"].get("generation", 0)),
                replicas=spec.replicas,
                topology_key=spec.spread.topology_key,
                pods=memory.pods,
                config_hash=None,
                zones=0,
                rollout_complete=False,
                apply_error=f"the configuration cannot be rendered: {error}",
            )
            self._write_server_status(obj, observation, "Warning", "RenderFailed", str(error))
            return set()
        key_file = renderer.render_key_file([*rendered.tsig_keys, relay_key])
        created_now = False
        try:
            self.cluster.apply(children.build_keys_secret(identity, key_file))
            config_maps = children.build_config_maps(
                identity, rendered, children.text_hash(key_file)
            )
            for config_map in config_maps:
                self.cluster.apply(config_map)
            self._delete_stale_shards(identity, {c["metadata"]["name"] for c in config_maps})
            for rbac in children.build_agent_rbac(identity, spec.replicas):
                self.cluster.apply(rbac)
            self.cluster.apply(children.build_headless_service(identity))
            self.cluster.apply(children.build_client_service(identity, spec))
            self.cluster.apply(children.build_pod_disruption_budget(identity))
            self.cluster.apply(children.build_network_policy(identity, rendered.plan.zones))
            statefulset = children.build_statefulset(identity, spec, children.engine_hash(rendered))
            created_now = (
                memory.rendered is None
                and self.cluster.get_child(
                    "apps/v1", "StatefulSet", ref.namespace, children.statefulset_name(identity)
                )
                is None
            )
            self.cluster.apply(statefulset)
        except ApiException as error:
            apply_error = f"applying children failed: {error.status} {error.reason}: {error.body}"
            log.warning("%s: %s", ref, apply_error)
        if created_now:
            self.post_event(
                obj,
                "Normal",
                "Created",
                f"created StatefulSet {children.statefulset_name(identity)} with "
                f"{spec.replicas} replicas serving {len(rendered.plan.zones)} zone(s)",
            )
        previous_zones = memory.zones
        if memory.rendered is None or memory.rendered.config_hash != rendered.config_hash:
            self.on_change()
        self._observe_and_write(obj, spec, rendered, apply_error)
        # Published after the pods were observed, `rendered` last: the serial
        # monitor reads this memory from another thread and starts on a server
        # once `rendered` is set, so it must never see a server without its pods.
        memory.zones = frozenset(r for r, _ in served.selected)
        memory.relay_key = relay_key
        memory.secrets = served.secret_names
        memory.rendered = rendered
        return set(previous_zones | memory.zones)

    def refresh_server_status(self, namespace: str, name: str) -> None:
        """Pods or the StatefulSet changed: recompute status only (no render, no apply)."""
        ref = ObjectRef(namespace, name)
        with self._lock(ref):
            obj = self.cluster.get_server(namespace, name)
            memory = self.memory(ref)
            if obj is None:
                return
            if memory.rendered is None:
                # Nothing rendered in this process yet (a restart): the full reconcile.
                pass
            else:
                try:
                    spec = parse_secondary_server(obj)
                except SpecError:
                    return
                before = (memory.pods, memory.replicas)
                self._observe_and_write(obj, spec, memory.rendered, None)
                if before == (memory.pods, memory.replicas):
                    return
                # A replica came, went or changed address: look at serials now.
                self.on_change()
                zones = set(memory.zones)
        if memory.rendered is None:
            self.reconcile_server(namespace, name)
            return
        for zone_ref in sorted(zones):
            self.refresh_zone(zone_ref.namespace, zone_ref.name)

    def _observe_and_write(
        self,
        obj: Mapping[str, Any],
        spec: SecondaryServerSpec,
        rendered: RenderedConfig,
        apply_error: str | None,
    ) -> None:
        ref = ObjectRef.of(obj)
        memory = self.memory(ref)
        identity_labels = children.selector_labels(
            children.ServerIdentity(ref, obj["metadata"]["uid"], {})
        )
        selector = ",".join(f"{k}={v}" for k, v in sorted(identity_labels.items()))
        pods = self.cluster.list_pods(ref.namespace, selector)
        nodes = self.cluster.node_labels(
            p["spec"]["nodeName"] for p in pods if (p.get("spec") or {}).get("nodeName")
        )
        observed = tuple(
            sorted(
                (
                    status_rules.ObservedPod.from_object(
                        p, nodes.get(p["spec"].get("nodeName", ""), {}), spec.spread.topology_key
                    )
                    for p in pods
                ),
                key=lambda p: p.name,
            )
        )
        statefulset = self.cluster.get_child("apps/v1", "StatefulSet", ref.namespace, ref.name)
        rollout_complete = _rollout_complete(statefulset, spec.replicas)
        previous_replicas = memory.replicas
        memory.pods = observed
        memory.replicas = spec.replicas
        if previous_replicas and previous_replicas != spec.replicas:
            self.post_event(
                obj,
                "Normal",
                "Scaled",
                f"scaled from {previous_replicas} to {spec.replicas} replicas",
            )
        self._pod_events(obj, memory, rendered)
        observation = status_rules.ServerObservation(
            generation=int(obj["metadata"].get("generation", 0)),
            replicas=spec.replicas,
            topology_key=spec.spread.topology_key,
            pods=observed,
            config_hash=rendered.config_hash,
            zones=len(rendered.plan.zones),
            rollout_complete=rollout_complete,
            notify_address=self.notify_address,
            apply_error=apply_error,
        )
        self._write_server_status(obj, observation, None, "", "")

    def _pod_events(
        self, obj: Mapping[str, Any], memory: _ServerMemory, rendered: RenderedConfig
    ) -> None:
        for pod in memory.pods:
            applied = pod.applied_config_hash or ""
            if applied and memory.seen_applied.get(pod.name) not in (None, applied):
                self.post_event(
                    obj,
                    "Normal",
                    "ConfigReloaded",
                    f"pod {pod.name} reloaded configuration {applied[:12]} without a restart",
                )
            memory.seen_applied[pod.name] = applied
            error = pod.config_error or ""
            if error and memory.seen_errors.get(pod.name) != error:
                self.post_event(
                    obj,
                    "Warning",
                    "ConfigRejected",
                    f"pod {pod.name} rejected a configuration and keeps its last good one: {error}",
                )
            memory.seen_errors[pod.name] = error

    def _write_server_status(
        self,
        obj: Mapping[str, Any],
        observation: status_rules.ServerObservation,
        event_type: str | None,
        reason: str,
        message: str,
    ) -> None:
        now = self.now()
        ref = ObjectRef.of(obj)

        def compute(current: Mapping[str, Any]) -> Mapping[str, Any]:
            return status_rules.server_status(observation, dict(current.get("status") or {}), now)

        written = self.cluster.update_status(
            SECONDARY_SERVER_PLURAL, ref.namespace, ref.name, compute, cached=obj
        )
        if written and event_type:
            self.post_event(obj, event_type, reason, message)

    def _delete_stale_shards(self, identity: children.ServerIdentity, keep: set[str]) -> None:
        selector = agent_contract.config_selector(identity.name)
        for config_map in self.cluster.list_children(
            "v1", "ConfigMap", identity.namespace, selector
        ):
            name = config_map["metadata"]["name"]
            if name not in keep:
                self.cluster.delete("v1", "ConfigMap", identity.namespace, name)

    # ---- inputs ------------------------------------------------------------

    def _relay_key(self, identity: children.ServerIdentity) -> TsigKey:
        """The internal NOTIFY relay key: generated once per server, then read back."""
        name = children.relay_key_secret_name(identity)
        secret = self.cluster.get_secret(identity.namespace, name)
        if secret is None:
            material = base64.b64encode(secrets.token_bytes(32)).decode()
            self.cluster.apply(children.build_relay_key_secret(identity, material))
            secret = self.cluster.get_secret(identity.namespace, name)
            assert secret is not None
        key = parse_tsig_secret(secret, SecretKeyRef(name))
        return TsigKey(DEFAULT_RELAY_KEY_NAME, key.algorithm, key.secret)

    # ---- serial monitoring ---------------------------------------------------

    def monitored_zones(self) -> list[MonitoredZone]:
        """What the serial monitor and the NOTIFY relay work from, as of the last reconciles."""
        zones: dict[ObjectRef, MonitoredZone] = {}
        with self._locks_guard:
            memories = list(self._memory.items())
        for server_ref, memory in sorted(memories, key=lambda item: item[0]):
            rendered = memory.rendered
            if rendered is None or memory.relay_key is None:
                continue
            by_name = {p.name: p for p in memory.pods}
            # Every replica the StatefulSet should have, also one whose Pod is gone
            # for the moment: status shows it missing rather than forgetting it.
            names = sorted(
                set(by_name) | {f"{server_ref.name}-{i}" for i in range(memory.replicas)}
            )
            replicas = tuple(
                (
                    ReplicaTarget(
                        pod=name,
                        server=server_ref.name,
                        failure_domain=by_name[name].failure_domain if name in by_name else None,
                        address=by_name[name].address if name in by_name else None,
                    ),
                    memory.relay_key,
                )
                for name in names
            )
            for planned in rendered.plan.zones:
                existing = zones.get(planned.ref)
                if existing is not None:
                    zones[planned.ref] = replace(existing, replicas=existing.replicas + replicas)
                    continue
                zones[planned.ref] = MonitoredZone(
                    ref=planned.ref,
                    name=planned.zone,
                    primaries=tuple(ProbeTarget(str(p.address), p.port) for p in planned.primaries),
                    primary_keys=tuple(
                        rendered.plan.key(p.key_name) for p in planned.primaries if p.key_name
                    ),
                    notify_sources=planned.notify_sources,
                    replicas=replicas,
                )
        return [zones[ref] for ref in sorted(zones)]

    # ---- Zone --------------------------------------------------------------

    def zone_changed(self, namespace: str, name: str) -> None:
        """A Zone was added, changed or deleted: reconcile every server it is or was on."""
        zone_ref = ObjectRef(namespace, name)
        servers = {ref for ref, memory in self._memory.items() if zone_ref in memory.zones}
        zone = self.cluster.get_zone(namespace, name)
        if zone is not None:
            try:
                spec = parse_zone(zone)
            except SpecError:
                spec = None
            if spec is not None:
                for server in self.cluster.list_servers(namespace):
                    labels = dict(server["metadata"].get("labels") or {})
                    if spec.serves_on(server["metadata"]["name"], labels):
                        servers.add(ObjectRef.of(server))
        for server_ref in sorted(servers):
            self.reconcile_server(server_ref.namespace, server_ref.name)
        if zone is not None:
            self.refresh_zone(namespace, name)

    def secret_changed(self, namespace: str, name: str) -> None:
        for ref in sorted(self._memory):
            if ref.namespace == namespace and name in self._memory[ref].secrets:
                self.reconcile_server(ref.namespace, ref.name)

    def uses_secret(self, namespace: str, name: str) -> bool:
        return any(
            ref.namespace == namespace and name in memory.secrets
            for ref, memory in list(self._memory.items())
        )

    def refresh_zone(self, namespace: str, name: str) -> None:
        zone = self.cluster.get_zone(namespace, name)
        if zone is None:
            self.zone_status.forget(ObjectRef(namespace, name))
            return
        zone_ref = ObjectRef.of(zone)
        generation = int(zone["metadata"].get("generation", 0))
        try:
            spec = parse_zone(zone)
        except SpecError as error:
            self.zone_status.write_config(zone, ZoneConfig(generation, None, spec_error=error))
            return
        servers = self.cluster.list_servers(namespace)
        names = {s["metadata"]["name"] for s in servers}
        missing = tuple(sorted(set(spec.servers or ()) - names))
        verdicts = []
        for server in sorted(servers, key=lambda s: s["metadata"]["name"]):
            server_ref = ObjectRef.of(server)
            labels = dict(server["metadata"].get("labels") or {})
            if not spec.serves_on(server_ref.name, labels):
                continue
            memory = self._memory.get(server_ref)
            if memory is None or memory.rendered is None:
                continue  # not reconciled yet; its reconcile refreshes this zone
            verdicts.append(
                verdict_for(
                    zone_ref, server_ref.name, memory.rendered, memory.pods, memory.replicas
                )
            )
        observation = ZoneConfig(
            generation,
            spec.zone.to_text(),
            missing_servers=missing,
            verdicts=tuple(verdicts),
            notify_address=self.notify_address,
            retransfer_request=spec.retransfer_request,
        )
        self.zone_status.write_config(zone, observation)


def _rollout_complete(statefulset: Mapping[str, Any] | None, replicas: int) -> bool:
    if statefulset is None:
        return False
    status = statefulset.get("status") or {}
    generation = statefulset["metadata"].get("generation", 0)
    return (
        status.get("observedGeneration", 0) >= generation
        and status.get("updatedReplicas", 0) == replicas
        and status.get("currentRevision") == status.get("updateRevision")
    )
