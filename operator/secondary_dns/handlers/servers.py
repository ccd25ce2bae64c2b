"""Reconciling one SecondaryServer: read -> render -> apply -> observe, one idempotent path.

Called for every reason a server may need work (its own events, a Zone or
Secret it uses, the resync timer), so there is no chain of phases through
status fields (kopf docs/reconciliation.rst). Decisions live in `render` and
`status` (pure); this module moves data between the API and those functions,
with one apply path: server-side apply of every child, owned by the server.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from secondary_dns.api import (
    IPNetwork,
    ObjectRef,
    SecondaryServerSpec,
    SecretKeyRef,
    SpecError,
    TsigKey,
    agent_contract,
    parse_secondary_server,
    parse_tsig_secret,
)
from secondary_dns.handlers.events import EventPoster
from secondary_dns.handlers.server_status import ServerStatusWriter
from secondary_dns.handlers.state import ServerState
from secondary_dns.k8s.api import Cluster
from secondary_dns.render import RenderedConfig, RenderError, RenderRequest, children, renderer_for
from secondary_dns.render.engine import DEFAULT_RELAY_KEY_NAME
from secondary_dns.render.inputs import ServedZones, select_zones, tsig_keys

log = logging.getLogger(__name__)


class ServerReconciler:
    def __init__(
        self,
        cluster: Cluster,
        post_event: EventPoster,
        status: ServerStatusWriter,
        on_change: Callable[[], None],
        refused_primary_networks: tuple[IPNetwork, ...] = (),
        default_image: str | None = None,
    ) -> None:
        self.cluster = cluster
        # The DNS pods' image when a spec names none (`secondary-dns operator --image`).
        self.default_image = default_image or children.DEFAULT_IMAGE
        # An operator setting: ranges no Zone's primary may be in (RenderRequest).
        self.refused_primary_networks = refused_primary_networks
        self.post_event = post_event
        self.status = status
        # Called when what a server serves changed (the serial monitor looks now).
        self.on_change = on_change

    def reconcile(self, obj: Mapping[str, Any], previous: ServerState | None) -> ServerState | None:
        """The server's new state, or None when nothing could be rendered (status says why).

        Raises SpecError for a spec the operator must not act on, after writing
        Stalled with the field and the fix.
        """
        ref = ObjectRef.of(obj)
        try:
            spec = parse_secondary_server(obj)
        except SpecError as error:
            self.status.invalid_spec(obj, error)
            raise
        identity = children.ServerIdentity(
            ref, obj["metadata"]["uid"], dict(obj["metadata"].get("labels") or {})
        )
        served = self._served_zones(identity)
        relay_key = self._relay_key(identity)
        try:
            rendered = self._render(identity, spec, served, relay_key)
        except RenderError as error:
            self.status.render_failed(obj, spec, previous.pods if previous else (), error)
            return None
        apply_error = self._apply(obj, identity, spec, rendered, relay_key, previous is None)
        if previous is None or previous.rendered.config_hash != rendered.config_hash:
            self.on_change()
        pods = self.status.observe(
            obj, spec, rendered, apply_error, previous.replicas if previous else None
        )
        return ServerState(
            ref=ref,
            rendered=rendered,
            relay_key=relay_key,
            zones=frozenset(zone for zone, _ in served.selected),
            secrets=served.secret_names,
            pods=pods,
            replicas=spec.replicas,
        )

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

    def _served_zones(self, identity: children.ServerIdentity) -> ServedZones:
        zones = self.cluster.list_zones(identity.namespace)
        return select_zones(
            ((ObjectRef.of(zone), zone) for zone in zones), identity.ref, identity.labels
        )

    def _render(
        self,
        identity: children.ServerIdentity,
        spec: SecondaryServerSpec,
        served: ServedZones,
        relay_key: TsigKey,
    ) -> RenderedConfig:
        # Zones select servers of their own namespace, so their Secrets are there too.
        secrets_read = {
            name: self.cluster.get_secret(identity.namespace, name) for name in served.secret_names
        }
        return renderer_for(spec.engine.type).render(
            RenderRequest(
                server=spec,
                zones=served.selected,
                tsig_keys=tsig_keys(served, identity.namespace, secrets_read),
                relay_key_name=relay_key.name,
                paths=children.POD_PATHS,
                created=served.created,
                refused_primary_networks=self.refused_primary_networks,
            )
        )

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

    def _apply(
        self,
        obj: Mapping[str, Any],
        identity: children.ServerIdentity,
        spec: SecondaryServerSpec,
        rendered: RenderedConfig,
        relay_key: TsigKey,
        first: bool,
    ) -> str | None:
        """Apply every child (server-side apply); the error text when the API refused one."""
        renderer = renderer_for(rendered.engine)
        key_file = renderer.render_key_file([*rendered.tsig_keys, relay_key])
        created = False
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
            statefulset = children.build_statefulset(
                identity,
                spec,
                children.engine_hash(rendered),
                default_image=self.default_image,
            )
            created = (
                first
                and self.cluster.get_child(
                    "apps/v1",
                    "StatefulSet",
                    identity.namespace,
                    children.statefulset_name(identity),
                )
                is None
            )
            self.cluster.apply(statefulset)
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
                f"{spec.replicas} replicas serving {len(rendered.plan.zones)} zone(s)",
            )
        return None

    def _delete_stale_shards(self, identity: children.ServerIdentity, keep: set[str]) -> None:
        selector = agent_contract.config_selector(identity.name)
        for config_map in self.cluster.list_children(
            "v1", "ConfigMap", identity.namespace, selector
        ):
            name = config_map["metadata"]["name"]
            if name not in keep:
                self.cluster.delete("v1", "ConfigMap", identity.namespace, name)
