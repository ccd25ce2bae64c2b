"""The only place that talks to the Kubernetes API.

One apply path (cert-manager's `apply.go`): server-side apply under one field
manager, forced, for every child object; no get-then-create, which never
corrects drift. An object whose desired content has not changed since this
process last applied it is not sent again, and status is patched only when
the computed status differs from the stored one, so a resync with nothing to
do writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import kubernetes
from kubernetes.client.exceptions import ApiException

from secondary_dns import metrics
from secondary_dns.api import GROUP, SECONDARY_SERVER_PLURAL, VERSION, ZONE_PLURAL

FIELD_MANAGER = "secondary-dns-operator"

# apiVersion/kind -> (API path prefix, plural): the children this operator owns.
_RESOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("apps/v1", "StatefulSet"): ("/apis/apps/v1", "statefulsets"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1",
        "rolebindings",
    ),
}


def new_api_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """In-cluster credentials in a pod, else the given kubeconfig (or $KUBECONFIG)."""
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
            return kubernetes.client.ApiClient()
        except kubernetes.config.ConfigException:
            pass
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig
    )
    return client


def _digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    try:
        prefix, plural = _RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {api_version} {kind}") from None
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class ApiTransport(Protocol):
    """One request to the API server: the JSON answer, or ApiException with its status.

    The seam between the typed facade and the wire: the operator uses the
    kubernetes client (`KubernetesTransport`); unit tests use an in-memory API
    server (tests/fake_cluster.py) with the same resourceVersion, server-side
    apply and status-subresource rules.
    """

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> Any: ...


@dataclass(frozen=True)
class KubernetesTransport:
    api_client: kubernetes.client.ApiClient

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> Any:
        method, url, headers, _, _ = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        # The client JSON-encodes bodies for +json content types itself; apply
        # patches (YAML) go as text, which it sends unchanged.
        response = self.api_client.call_api(method, url, header_params=headers, body=body)
        raw: bytes = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise ApiException(
                status=response.status, reason=response.reason, body=raw.decode(errors="replace")
            )
        if method != "GET":
            metrics.API_WRITES.labels(method=method).inc()
        return json.loads(raw) if raw else None


@dataclass
class Cluster:
    """A typed, minimal facade over the API for the reconciler."""

    transport: ApiTransport
    _applied: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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

    # ---- children --------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> bool:
        """Server-side apply `obj`; False when it was skipped as unchanged since the last apply."""
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        digest = _digest(obj)
        with self._lock:
            if self._applied.get(key) == digest:
                return False
        path = _object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        self.transport.request(
            "PATCH",
            path,
            # JSON is YAML; sent as text so the client does not re-encode it.
            body=json.dumps(obj),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        with self._lock:
            self._applied[key] = digest
        return True

    def forget_applied(self, namespace: str, name_prefix: str = "") -> None:
        with self._lock:
            stale = [k for k in self._applied if k[2] == namespace and k[3].startswith(name_prefix)]
            for key in stale:
                del self._applied[key]

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self.transport.request("DELETE", _object_path(api_version, kind, namespace, name))
        except ApiException as error:
            if error.status != 404:
                raise
        with self._lock:
            self._applied.pop((api_version, kind, namespace, name), None)

    def list_children(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        return self.list_items(_object_path(api_version, kind, namespace), label_selector)

    def get_child(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return self.get(_object_path(api_version, kind, namespace, name))

    # ---- custom resources ------------------------------------------------

    def _custom_path(self, plural: str, namespace: str, name: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
        return f"{path}/{name}" if name else path

    def get_server(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(self._custom_path(SECONDARY_SERVER_PLURAL, namespace, name))

    def list_servers(self, namespace: str) -> list[dict[str, Any]]:
        return self.list_items(self._custom_path(SECONDARY_SERVER_PLURAL, namespace))

    def get_zone(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(self._custom_path(ZONE_PLURAL, namespace, name))

    def list_zones(self, namespace: str) -> list[dict[str, Any]]:
        return self.list_items(self._custom_path(ZONE_PLURAL, namespace))

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
                self.transport.request(
                    "PATCH",
                    self._custom_path(plural, namespace, name) + "/status",
                    body=patch,
                    content_type="application/merge-patch+json",
                )
            except ApiException as error:
                if error.status == 404:
                    return False
                if error.status == 409:
                    obj = None  # someone else wrote first: recompute from theirs
                    continue
                raise
            return True
        raise RuntimeError(f"status of {plural}/{namespace}/{name} kept changing under us")

    # ---- reads for status ------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return self.list_items(f"/api/v1/namespaces/{namespace}/pods", label_selector)

    def node_labels(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        labels: dict[str, dict[str, str]] = {}
        for name in sorted(set(names)):
            node = self.get(f"/api/v1/nodes/{name}")
            if node is not None:
                labels[name] = dict(node["metadata"].get("labels") or {})
        return labels
