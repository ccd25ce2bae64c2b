"""The only place that talks to the Kubernetes API.

One apply path (cert-manager's `apply.go`): server-side apply under one field
manager, forced, for every child object; no get-then-create, which never
corrects drift. An apply is skipped only when the watch cache shows the live
object already holds what it would set (`k8s/drift.py`), never because this
process sent the same thing before: a child deleted or edited by hand is put
back by the next reconcile. Status is patched only when the computed status
differs from the stored one, so a resync with nothing to do writes nothing.

Every request has a timeout (connecting and reading); a watch has its own,
longer one (k8s/informer.py). A call that hangs fails after its timeout
instead of holding a server's reconcile or the serial monitor's round.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from secondary_dns import metrics
from secondary_dns.api import GROUP, SECONDARY_SERVER_PLURAL, VERSION, ZONE_PLURAL
from secondary_dns.k8s import resources
from secondary_dns.k8s.drift import matches
from secondary_dns.k8s.informer import ApiTransport, ObjectCache
from secondary_dns.k8s.resources import Resource, resource_of

log = logging.getLogger(__name__)

__all__ = ["ApiTransport", "Cluster", "KubernetesTransport", "new_api_client", "written_resource"]

FIELD_MANAGER = "secondary-dns-operator"
# Seconds to connect to the API server, and to wait for an answer once connected.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
# A watch's read timeout beyond the server-side timeoutSeconds it asked for.
WATCH_READ_MARGIN = 30.0
# Connections to the API server kept for reuse (see new_api_client).
API_CONNECTIONS = 48


def new_api_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """In-cluster credentials in a pod, else the given kubeconfig (or $KUBECONFIG)."""
    configuration = kubernetes.client.Configuration()
    # Connections kept open for reuse. The client's default (5 per CPU: 10 on 2 cores)
    # is fewer than the requests this process has under way at once: a watch per
    # kind (11), the serial monitor's status writers (16), the workers. A request
    # beyond the pool opens a connection of its own (TLS handshake) that is closed
    # afterwards.
    configuration.connection_pool_maxsize = API_CONNECTIONS
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return kubernetes.client.ApiClient(configuration)
        except kubernetes.config.ConfigException:
            pass
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, client_configuration=configuration
    )
    return client


def _object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    return resource_of(api_version, kind).path(namespace, name)


def written_resource(path: str) -> str:
    """The resource a request path names, with its subresource: `zones/status`, `configmaps`.

    `/api/v1/namespaces/N/configmaps/X`, `/apis/G/V/namespaces/N/zones/X/status`,
    `/api/v1/nodes/X`: the plural follows the namespace (or the version), then the
    name, then the subresource. The label of `secondarydns_api_writes_total` (a few
    values, never a name).
    """
    parts = [part for part in path.split("?", 1)[0].split("/") if part]
    # Drop the prefix: api/v1, or apis/GROUP/VERSION.
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(rest) >= 2 and rest[0] == "namespaces":
        rest = rest[2:]
    if not rest:
        return "namespaces"
    plural, subresource = rest[0], rest[2] if len(rest) > 2 else ""
    return f"{plural}/{subresource}" if subresource else plural


@dataclass(frozen=True)
class KubernetesTransport:
    api_client: kubernetes.client.ApiClient
    # Off for the leader election's Lease: secondarydns_api_writes_total counts
    # the writes reconciling makes, which a renewal every 2 s would drown.
    count_writes: bool = True
    # (connect, read) seconds for every request but a watch.
    timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)

    def _serialize(
        self, method: str, path: str, query: Sequence[tuple[str, str]], content_type: str
    ) -> tuple[str, str, dict[str, str]]:
        method, url, headers, _, _ = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        return method, url, headers

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> Any:
        method, url, headers = self._serialize(method, path, query, content_type)
        # The client JSON-encodes bodies for +json content types itself; apply
        # patches (YAML) go as text, which it sends unchanged.
        response = self.api_client.call_api(
            method, url, header_params=headers, body=body, _request_timeout=self.timeout
        )
        raw: bytes = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise ApiException(
                status=response.status, reason=response.reason, body=raw.decode(errors="replace")
            )
        if method != "GET" and self.count_writes:
            metrics.API_WRITES.labels(method=method, resource=written_resource(path)).inc()
            log.debug("API write: %s %s", method, path)
        return json.loads(raw) if raw else None

    def watch(
        self, path: str, *, query: Sequence[tuple[str, str]], timeout_seconds: int
    ) -> Iterator[Mapping[str, Any]]:
        """The events of one watch request, decoded, until the server ends it.

        The server ends it after `timeout_seconds`; the client's read timeout is a
        little longer, so a connection that went silent fails instead of hanging.
        """
        _, url, headers = self._serialize(
            "GET",
            path,
            [*query, ("watch", "true"), ("timeoutSeconds", str(timeout_seconds))],
            "application/json",
        )
        response = self.api_client.call_api(
            "GET",
            url,
            header_params=headers,
            _request_timeout=(self.timeout[0], timeout_seconds + WATCH_READ_MARGIN),
        )
        stream: Any = response.response
        try:
            if not 200 <= response.status < 300:
                raw: bytes = response.read()  # type: ignore[no-untyped-call]
                raise ApiException(
                    status=response.status,
                    reason=response.reason,
                    body=raw.decode(errors="replace"),
                )
            pending = b""
            for chunk in stream.stream(64 * 1024, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            stream.release_conn()


class Cluster:
    """A typed, minimal facade over the API for the reconciler.

    Reads come from `cache` (informers, or objects read by name); writes go to
    the API server and what it answers is kept in the cache at once.
    """

    def __init__(self, transport: ApiTransport, cache: ObjectCache | None = None) -> None:
        self.transport = transport
        self.cache = cache if cache is not None else ObjectCache(transport)
        # (apiVersion, kind, namespace, name) -> (the live resourceVersion, the desired
        # object found to match it). The same desired object (a shard's ConfigMap the
        # reconciler kept) against the same live version needs no comparison; any change
        # of the live object, by anyone, changes its version, so drift is still seen.
        self._verified: dict[tuple[str, str, str, str], tuple[str, Mapping[str, Any]]] = {}
        self._verified_lock = threading.Lock()

    # ---- raw calls -------------------------------------------------------

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            result = self.transport.request("GET", path)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(result) if result is not None else None

    def list_items(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        result = self.transport.request("GET", path, query=query)
        return list(result.get("items", [])) if result else []

    def _cached_list(
        self, resource: Resource, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        cached = self.cache.items(resource, namespace, label_selector)
        if cached is not None:
            return cached
        # A list's items carry neither apiVersion nor kind.
        return [
            {"apiVersion": resource.api_version, "kind": resource.kind, **item}
            for item in self.list_items(resource.path(namespace), label_selector)
        ]

    # ---- children --------------------------------------------------------

    def live(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """The cached live copy of the object `obj` describes (None: there is none)."""
        meta = obj["metadata"]
        resource = resource_of(obj["apiVersion"], obj["kind"])
        return self.cache.get(resource, meta.get("namespace", ""), meta["name"])

    def _verify(self, obj: Mapping[str, Any], live: Mapping[str, Any] | None) -> None:
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        version = str(((live or {}).get("metadata") or {}).get("resourceVersion") or "")
        with self._verified_lock:
            if version:
                self._verified[key] = (version, obj)
            else:
                self._verified.pop(key, None)

    def _known_match(self, obj: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
        if live is None:
            return False
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        with self._verified_lock:
            verified = self._verified.get(key)
        version = str((live.get("metadata") or {}).get("resourceVersion") or "")
        return verified is not None and verified[1] is obj and verified[0] == version

    def apply(self, obj: Mapping[str, Any]) -> bool:
        """Server-side apply `obj`; False when the live object already holds all of it."""
        live = self.live(obj)
        if self._known_match(obj, live):
            return False
        if matches(obj, live):
            self._verify(obj, live)
            return False
        meta = obj["metadata"]
        path = _object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        result = self.transport.request(
            "PATCH",
            path,
            # JSON is YAML; sent as text so the client does not re-encode it.
            body=json.dumps(obj),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        if isinstance(result, Mapping) and result.get("metadata"):
            self.cache.observe(result)
            self._verify(obj, result)
        return True

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self.transport.request("DELETE", _object_path(api_version, kind, namespace, name))
        except ApiException as error:
            if error.status != 404:
                raise
        self.cache.forget(resource_of(api_version, kind), namespace, name)

    def list_children(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        return self._cached_list(resource_of(api_version, kind), namespace, label_selector)

    def get_child(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return self.cache.get(resource_of(api_version, kind), namespace, name)

    # ---- custom resources ------------------------------------------------

    def _custom_path(self, plural: str, namespace: str, name: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
        return f"{path}/{name}" if name else path

    def get_server(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cache.get(resources.SECONDARY_SERVERS, namespace, name)

    def cached_servers(self) -> list[dict[str, Any]]:
        """Every SecondaryServer the watch caches hold (none without an informer)."""
        return self.cache.all_items(resources.SECONDARY_SERVERS)

    def list_servers(self, namespace: str) -> list[dict[str, Any]]:
        return self._cached_list(resources.SECONDARY_SERVERS, namespace)

    def get_zone(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cache.get(resources.ZONES, namespace, name)

    def list_zones(self, namespace: str) -> list[dict[str, Any]]:
        return self._cached_list(resources.ZONES, namespace)

    def update_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        compute: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        cached: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write compute(object) as the status when it differs; True when it wrote.

        Optimistic concurrency: the patch carries the resourceVersion the status
        was computed from, so two writers (configuration and serial monitoring)
        never overwrite each other's conditions with a stale copy; on a conflict
        the object is read again and the status recomputed.
        """
        obj = cached
        if obj is None and plural in (ZONE_PLURAL, SECONDARY_SERVER_PLURAL):
            resource = resources.ZONES if plural == ZONE_PLURAL else resources.SECONDARY_SERVERS
            obj = self.cache.get(resource, namespace, name)
            if obj is None:
                return False
        for _ in range(5):
            if obj is None:
                obj = self.get(self._custom_path(plural, namespace, name))
                if obj is None:
                    return False  # deleted meanwhile: nothing to report on
            status = dict(compute(obj))
            previous = dict(obj.get("status") or {})
            if previous == status:
                return False
            # A merge patch replaces lists whole (conditions, replicas), and the
            # top-level keys no longer computed are removed with null.
            body: dict[str, Any] = {key: None for key in previous if key not in status}
            body.update(status)
            patch = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "status": body,
            }
            try:
                result = self.transport.request(
                    "PATCH",
                    self._custom_path(plural, namespace, name) + "/status",
                    body=patch,
                    # Under the operator's own name in managedFields (else the
                    # client's user agent, "OpenAPI-Generator"): who wrote what is
                    # how a GitOps user tells the operator from their controller.
                    query=[("fieldManager", FIELD_MANAGER)],
                    content_type="application/merge-patch+json",
                )
            except ApiException as error:
                if error.status == 404:
                    return False
                if error.status == 409:
                    obj = None  # someone else wrote first: recompute from theirs
                    continue
                raise
            if isinstance(result, Mapping) and result.get("metadata"):
                self.cache.observe(result)
            return True
        raise RuntimeError(f"status of {plural}/{namespace}/{name} kept changing under us")

    # ---- events ----------------------------------------------------------

    def create_event(self, body: Mapping[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        self.transport.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)

    # ---- reads for status ------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret read by name (kept until the cache expires: the operator may not watch them)."""
        return self.cache.get(resources.SECRETS, namespace, name)

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return self._cached_list(resources.PODS, namespace, label_selector)

    def api_server_endpoints(self) -> list[tuple[str, int]]:
        """The API server's own (address, port)s: the `kubernetes` Service's EndpointSlices.

        The port is the server's (6443 commonly), not the Service's 443: a
        NetworkPolicy sees packets after the Service's translation.
        """
        found: set[tuple[str, int]] = set()
        try:
            slices = self.list_items(
                "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                "kubernetes.io/service-name=kubernetes",
            )
        except ApiException as error:
            if error.status not in (403, 404):
                raise
            # Not granted (an older chart): the caller falls back to the ports.
            log.warning("cannot read the API server's EndpointSlices: %s", error.reason)
            return []
        for endpoint_slice in slices:
            ports = [int(p["port"]) for p in endpoint_slice.get("ports") or [] if p.get("port")]
            for endpoint in endpoint_slice.get("endpoints") or []:
                for address in endpoint.get("addresses") or []:
                    found.update((str(address), port) for port in ports)
        return sorted(found)

    def node_labels(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        """Nodes' labels (failure domains), read by name and kept until the cache expires."""
        labels: dict[str, dict[str, str]] = {}
        for name in sorted(set(names)):
            node = self.cache.get(resources.NODES, "", name)
            if node is not None:
                labels[name] = dict(node["metadata"].get("labels") or {})
        return labels
