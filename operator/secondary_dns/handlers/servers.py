"""Reconciling one SecondaryServer: read -> render -> apply -> observe, one idempotent path.

Called for every reason a server may need work (its own events, Zones that
changed, its Pods and children, the resync), with what changed merged into a
`ServerWork`; there is no chain of phases through status fields (kopf
docs/reconciliation.rst). Decisions live in `render` and `status` (pure);
this module moves data between the watch caches, those functions and the API,
with one apply path: server-side apply of every child, owned by the server,
skipped where the cache shows the child already as it should be.

The work per event does not grow with the number of Zones: each server keeps
a `ConfigBuilder` (render/shards.py) and its Zones parsed; a Zone event reads
and plans that Zone alone and rebuilds its shard and the root. Only a change
of the server itself, a first sight of it and the resync look at every Zone
of its namespace again (from the cache, their parse memoized).
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from secondary_dns.api import (
    IPNetwork,
    ObjectRef,
    SecondaryServerSpec,
    SecretKeyRef,
    SpecError,
    TsigKey,
    ZoneSpec,
    agent_contract,
    parse_secondary_server,
    parse_tsig_secret,
    parse_zone,
)
from secondary_dns.api.sharing import RecentValues, shared
from secondary_dns.handlers.events import EventPoster
from secondary_dns.handlers.queue import ServerWork
from secondary_dns.handlers.server_status import ServerStatusWriter
from secondary_dns.handlers.state import ServerState
from secondary_dns.k8s import resources
from secondary_dns.k8s.api import Cluster
from secondary_dns.render import RenderError, children, renderer_for
from secondary_dns.render.engine import (
    DEFAULT_RELAY_KEY_NAME,
    PlanContext,
    PlannedZone,
    RenderSettings,
    ZonePlan,
    secret_refs,
)
from secondary_dns.render.inputs import key_lookup
from secondary_dns.render.relay import (
    build_relay_plan_secret_of,
    relay_plan_document_of,
    relay_zone,
    relay_zone_document,
)
from secondary_dns.render.shards import ConfigBuilder

# On the relay plan Secrets, which have no owner to be garbage-collected with.
# Shard ConfigMaps written at once in one publish. A publish during a burst of new
# Zones rewrites most of the 256 shards; one after the other, each a round trip of
# 20-100 ms to a busy API server, that took 5-25 s, and the agents applied nothing
# new meanwhile (bench/scale.py at 10,000 Zones: roots 6-60 s apart while Zones were
# created). The root is written after all of them, as before.
SHARD_WRITERS = 8

RELAY_PLAN_LABELS = {
    "app.kubernetes.io/managed-by": "secondary-dns-operator",
    "app.kubernetes.io/part-of": "secondary-dns",
}

log = logging.getLogger(__name__)

ZoneInput = tuple[ZoneSpec, str | None]


@dataclass
class ServerModel:
    """What one server's reconciles keep between events (touched by one worker at a time)."""

    uid: str
    spec: SecondaryServerSpec
    labels: dict[str, str]
    builder: ConfigBuilder
    # The Zones that select the server, parsed, with their creationTimestamp.
    selected: dict[ObjectRef, ZoneInput] = field(default_factory=dict)
    # Zone object -> (uid, generation, its parsed spec or why it cannot be read).
    parsed: dict[ObjectRef, tuple[str, int, ZoneSpec | SpecError]] = field(default_factory=dict)
    # How many selected Zones reference each key Secret.
    secret_refs: dict[SecretKeyRef, int] = field(default_factory=dict)
    # shard -> (its hash, its ConfigMaps as last built)
    shard_objects: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)
    # Zone object -> (its planned zone, its relay plan entry) as last built: the plan
    # of 10,000 zones was formatted anew at every reconcile (0.3 s of CPU for one
    # Zone's change, bench/reconcile.py).
    relay_entries: dict[ObjectRef, tuple[PlannedZone, str]] = field(default_factory=dict)
    # The plan's keys those entries were formatted with.
    relay_keys: tuple[TsigKey, ...] = ()

    def relay_plan_document(self, server: ObjectRef, plan: ZonePlan, relay_key: TsigKey) -> str:
        """The relay plan's document, each zone's entry formatted only when its
        planned zone (the incremental planner keeps the object while the Zone and
        its keys are unchanged) changed, or when any key of the plan did."""
        known = self.relay_entries if plan.tsig_keys == self.relay_keys else {}
        entries: dict[ObjectRef, tuple[PlannedZone, str]] = {}
        documents = []
        for planned in plan.zones:  # in the order relay_plan gives them
            kept = known.get(planned.ref)
            if kept is None or kept[0] is not planned:
                kept = (planned, relay_zone_document(relay_zone(plan, planned)))
            entries[planned.ref] = kept
            documents.append(kept[1])
        self.relay_entries, self.relay_keys = entries, plan.tsig_keys
        return relay_plan_document_of(server, relay_key, documents)

    def count_secrets(self, value: ZoneInput | None, sign: int) -> None:
        if value is None:
            return
        for ref in secret_refs(value[0]):
            count = self.secret_refs.get(ref, 0) + sign
            if count > 0:
                self.secret_refs[ref] = count
            else:
                self.secret_refs.pop(ref, None)


@dataclass(frozen=True)
class Reconciled:
    """What one reconcile published, and which Zones' status may have changed with it."""

    state: ServerState
    zones: frozenset[ObjectRef]
    # The server's configuration was built anew (a first sight or a spec change).
    rebuilt: bool


class ServerReconciler:
    def __init__(
        self,
        cluster: Cluster,
        post_event: EventPoster,
        status: ServerStatusWriter,
        refused_primary_networks: tuple[IPNetwork, ...] = (),
        default_image: str | None = None,
        operator_namespace: str | None = None,
        relay_plans_namespace: str | None = None,
    ) -> None:
        self.cluster = cluster
        # Where the operator's pods run: they may reach the agents' port (NetworkPolicy).
        self.operator_namespace = operator_namespace
        # The DNS pods' image when a spec names none (`secondary-dns operator --image`).
        self.default_image = default_image or children.DEFAULT_IMAGE
        # An operator setting: ranges no Zone's primary may be in (RenderRequest).
        self.refused_primary_networks = refused_primary_networks
        self.post_event = post_event
        self.status = status
        # Where the NOTIFY relay reads its plans (the operator's namespace); None:
        # no relay Deployment to feed (a developer's operator without the chart).
        self.relay_plans_namespace = relay_plans_namespace
        self.models: dict[ObjectRef, ServerModel] = {}
        self._shard_writers = ThreadPoolExecutor(SHARD_WRITERS, thread_name_prefix="shards")
        # Parts of Zone specs parsed last, held once (api/sharing.py).
        self._parts: RecentValues[object, object] = RecentValues()

    def forget(self, ref: ObjectRef) -> None:
        self.models.pop(ref, None)

    def reconcile(
        self, obj: Mapping[str, Any], work: ServerWork, previous: ServerState | None
    ) -> Reconciled | None:
        """The server's new state, or None when nothing could be rendered (status says why).

        Raises SpecError for a spec the operator must not act on, after writing
        Stalled with the field and the fix.
        """
        ref = ObjectRef.of(obj)
        try:
            spec = parse_secondary_server(obj)
        except SpecError as error:
            self.forget(ref)
            self.status.invalid_spec(obj, error)
            raise
        identity = children.ServerIdentity(
            ref, obj["metadata"]["uid"], dict(obj["metadata"].get("labels") or {})
        )
        relay_key = self._relay_key(identity)
        model = self.models.get(ref)
        rebuilt = (
            model is None
            or model.uid != identity.uid
            or model.spec != spec
            or model.labels != identity.labels
        )
        if model is None or rebuilt:
            try:
                model = self._new_model(identity, spec)
            except RenderError as error:
                self.forget(ref)
                self.status.render_failed(obj, spec, previous.pods if previous else (), error)
                return None
            self.models[ref] = model
        rescan = rebuilt or work.spec or work.resync
        changes = self._zone_changes(model, identity, None if rescan else work.zones)
        if work.secrets or work.resync:
            self.cluster.cache.expire(
                resources.SECRETS, ref.namespace, {r.name for r in model.secret_refs}
            )
        keys = self._keys(model, ref.namespace)
        changed = model.builder.update(changes, keys)
        rendered = model.builder.rendered()
        apply_error = self._apply(obj, identity, spec, model, relay_key, previous is None)
        pods = self.status.observe(
            obj, spec, rendered, apply_error, previous.replicas if previous else None
        )
        state = ServerState(
            ref=ref,
            rendered=rendered,
            relay_key=relay_key,
            zones=frozenset(model.selected),
            secrets=frozenset(secret.name for secret in model.secret_refs),
            pods=pods,
            replicas=spec.replicas,
        )
        return Reconciled(state, frozenset(changed | set(changes) | work.zones), rebuilt)

    def observe(self, obj: Mapping[str, Any], state: ServerState) -> ServerState | None:
        """Pods or the StatefulSet changed: the state with the pods as they are now.

        No render, no apply; None when the spec can no longer be read (the next
        reconcile says why).
        """
        try:
            spec = parse_secondary_server(obj)
        except SpecError:
            return None
        pods = self.status.observe(obj, spec, state.rendered, None, state.replicas)
        return replace(state, pods=pods, replicas=spec.replicas)

    # ---- read and render -------------------------------------------------------

    def _new_model(
        self, identity: children.ServerIdentity, spec: SecondaryServerSpec
    ) -> ServerModel:
        renderer = renderer_for(spec.engine.type)
        builder = ConfigBuilder(
            renderer,
            RenderSettings(spec, DEFAULT_RELAY_KEY_NAME, children.POD_PATHS),
            PlanContext(
                relay_key_name=DEFAULT_RELAY_KEY_NAME,
                rndc_key_name=children.POD_PATHS.rndc_key_name,
                refused_primary_networks=self.refused_primary_networks,
            ),
        )
        return ServerModel(identity.uid, spec, dict(identity.labels), builder)

    def _parse(self, model: ServerModel, zone: Mapping[str, Any]) -> ZoneSpec | SpecError:
        ref = ObjectRef.of(zone)
        metadata = zone["metadata"]
        uid, generation = str(metadata.get("uid", "")), int(metadata.get("generation", 0))
        known = model.parsed.get(ref)
        if known is not None and known[:2] == (uid, generation):
            return known[2]
        try:
            parsed: ZoneSpec | SpecError = self._shared_parts(parse_zone(zone))
        except SpecError as error:
            parsed = error
        model.parsed[ref] = (uid, generation, parsed)
        return parsed

    def _shared_parts(self, spec: ZoneSpec) -> ZoneSpec:
        """The spec with its primaries, ACL, servers and timers as the equal ones other
        Zones' specs hold (Zones mostly share them; a spec is kept for every Zone)."""
        return replace(
            spec,
            primaries=shared(self._parts, spec.primaries),
            servers=shared(self._parts, spec.servers),
            allow_transfer=shared(self._parts, spec.allow_transfer),
            notify_allow_from=shared(self._parts, spec.notify_allow_from),
            timers=shared(self._parts, spec.timers),
        )

    def _zone_input(
        self, model: ServerModel, identity: children.ServerIdentity, zone: Mapping[str, Any] | None
    ) -> ZoneInput | None:
        """What the builder gets for a Zone: its spec if it selects this server, else None."""
        if zone is None or zone["metadata"].get("deletionTimestamp"):
            return None
        parsed = self._parse(model, zone)
        if isinstance(parsed, SpecError):
            return None  # never served; its own status says why
        if not parsed.serves_on(identity.name, identity.labels):
            return None
        created = zone["metadata"].get("creationTimestamp")
        return parsed, created if isinstance(created, str) and created else None

    def _zone_changes(
        self,
        model: ServerModel,
        identity: children.ServerIdentity,
        refs: Iterable[ObjectRef] | None,
    ) -> dict[ObjectRef, ZoneInput | None]:
        """The Zones whose input changed: those of `refs`, or every Zone of the namespace."""
        found: dict[ObjectRef, ZoneInput | None] = {}
        if refs is None:
            zones = self.cluster.list_zones(identity.namespace)
            for zone in zones:
                found[ObjectRef.of(zone)] = self._zone_input(model, identity, zone)
            for ref in set(model.selected) - set(found):
                found[ref] = None
            for ref in set(model.parsed) - set(found):
                del model.parsed[ref]
        else:
            for ref in refs:
                live = self.cluster.get_zone(ref.namespace, ref.name)
                found[ref] = self._zone_input(model, identity, live)
                if live is None:
                    model.parsed.pop(ref, None)
        changes: dict[ObjectRef, ZoneInput | None] = {}
        for ref, value in found.items():
            before = model.selected.get(ref)
            if before == value:
                continue
            changes[ref] = value
            model.count_secrets(before, -1)
            model.count_secrets(value, 1)
            if value is None:
                model.selected.pop(ref, None)
            else:
                model.selected[ref] = value
        return changes

    def _keys(self, model: ServerModel, namespace: str) -> Mapping[Any, Any]:
        # Zones select servers of their own namespace, so their Secrets are there too.
        names = {ref.name for ref in model.secret_refs}
        secrets_read = {name: self.cluster.get_secret(namespace, name) for name in names}
        return key_lookup(model.secret_refs, namespace, secrets_read)

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

    # ---- apply -----------------------------------------------------------------

    def _config_maps(
        self, identity: children.ServerIdentity, model: ServerModel, keys_hash: str
    ) -> list[dict[str, Any]]:
        """Every config ConfigMap, shards first (a shard's built again only when it changed)."""
        rendered = model.builder.rendered()
        built: list[dict[str, Any]] = []
        for shard, rendered_shard in rendered.shards.items():
            known = model.shard_objects.get(shard)
            if known is None or known[0] != rendered_shard.config_hash:
                objects = children.build_shard_config_maps(identity, shard, rendered_shard)
                known = (rendered_shard.config_hash, objects)
                model.shard_objects[shard] = known
            built += known[1]
        for shard in set(model.shard_objects) - set(rendered.shards):
            del model.shard_objects[shard]
        return [*built, children.build_root_config_map(identity, rendered, keys_hash)]

    def _apply(
        self,
        obj: Mapping[str, Any],
        identity: children.ServerIdentity,
        spec: SecondaryServerSpec,
        model: ServerModel,
        relay_key: TsigKey,
        first: bool,
    ) -> str | None:
        """Apply every child (server-side apply); the error text when the API refused one."""
        rendered = model.builder.rendered()
        renderer = renderer_for(rendered.engine)
        key_file = renderer.render_key_file([*rendered.tsig_keys, relay_key])
        created = False
        try:
            config_maps = self._config_maps(identity, model, children.text_hash(key_file))
            names = [c["metadata"]["name"] for c in config_maps]
            # The Role first: it names the agent's ConfigMaps (a new part of a big shard).
            for rbac in children.build_agent_rbac(identity, spec.replicas, names):
                self.cluster.apply(rbac)
            self.cluster.apply(children.build_keys_secret(identity, key_file))
            # Shards before the root that names them: an agent never sees a root
            # whose shards are not there yet for longer than the writes take. The
            # shards at once (SHARD_WRITERS), the root once every one is written: a
            # failed shard raises here, before the root.
            *shards, root = config_maps
            for _ in self._shard_writers.map(self.cluster.apply, shards):
                pass
            self.cluster.apply(root)
            self._delete_stale_config_maps(identity, set(names))
            self.cluster.apply(children.build_headless_service(identity))
            self.cluster.apply(children.build_client_service(identity, spec))
            self.cluster.apply(children.build_pod_disruption_budget(identity))
            self.cluster.apply(
                children.build_network_policy(
                    identity,
                    rendered.plan.primary_ports,
                    self.cluster.api_server_endpoints(),
                    self.operator_namespace,
                )
            )
            statefulset = children.build_statefulset(
                identity,
                spec,
                children.engine_hash(rendered),
                default_image=self.default_image,
            )
            created = first and self.cluster.live(statefulset) is None
            self.cluster.apply(statefulset)
            if self.relay_plans_namespace:
                document = model.relay_plan_document(identity.ref, rendered.plan, relay_key)
                self.cluster.apply(
                    build_relay_plan_secret_of(
                        identity.ref, document, self.relay_plans_namespace, RELAY_PLAN_LABELS
                    )
                )
        except ApiException as error:
            message = f"applying children failed: {error.status} {error.reason}: {error.body}"
            log.warning("%s: %s", identity.ref, message)
            return message
        if created:
            self.post_event(
                obj,
                "Normal",
                "Created",
                f"created StatefulSet {children.statefulset_name(identity)} with "
                f"{spec.replicas} replicas serving {len(rendered.plan)} zone(s)",
            )
        return None

    def _delete_stale_config_maps(self, identity: children.ServerIdentity, keep: set[str]) -> None:
        selector = agent_contract.config_selector(identity.name)
        for config_map in self.cluster.list_children(
            "v1", "ConfigMap", identity.namespace, selector
        ):
            name = config_map["metadata"]["name"]
            if name not in keep:
                self.cluster.delete("v1", "ConfigMap", identity.namespace, name)
