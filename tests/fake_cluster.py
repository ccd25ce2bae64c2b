"""An in-memory Kubernetes API server for unit tests of k8s/ and handlers/.

It implements `secondary_dns.k8s.api.ApiTransport`, so the operator's real
`Cluster` runs on top of it, and keeps the rules the operator depends on
(as controller-runtime's fake client does for Go controllers):

- every write that changes an object gives it a new resourceVersion; a write
  that changes nothing (an identical apply, an identical status patch) does not;
- server-side apply per field manager: an apply creates the object or sets the
  fields in it, and removes the fields this manager set before but no longer
  sends (unless another manager also owns them); lists are atomic, as they are
  for every list the operator writes; without force, taking a field another
  manager set to another value is a 409 Conflict;
- `status` is a subresource for custom resources, Pods and StatefulSets: apply
  ignores it, and only PATCH .../status changes it; metadata.generation counts
  changes of everything else;
- a status merge patch that carries metadata.resourceVersion is refused with 409
  when the object has moved on; a missing object is 404;
- a Secret's stringData is stored base64-encoded in data, as the API server does;
- lists are paginated (limit, continue) and carry the current resourceVersion;
  a watch from a resourceVersion yields every change since (ADDED, MODIFIED,
  DELETED, then a BOOKMARK) and returns, so the operator's informers can be
  stepped by a test; a version older than `compact()` left is 410 Gone;
- `fail()` makes matching requests raise (an API error, or a timeout as a
  transport with a timeout would after waiting).

Garbage collection by owner references runs only when a test asks
(`collect_garbage`), as kube-controller-manager would some time later.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from secondary_dns.api import GROUP, VERSION

Path = tuple[str, ...]
# (API group/version as in apiVersion, plural, namespace ("" for cluster-scoped), name)
Key = tuple[str, str, str, str]

KINDS = {
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "services": "Service",
    "serviceaccounts": "ServiceAccount",
    "pods": "Pod",
    "nodes": "Node",
    "statefulsets": "StatefulSet",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "networkpolicies": "NetworkPolicy",
    "endpointslices": "EndpointSlice",
    "roles": "Role",
    "rolebindings": "RoleBinding",
    "zones": "Zone",
    "secondaryservers": "SecondaryServer",
}
PLURALS = {kind: plural for plural, kind in KINDS.items()}
WITH_STATUS = {"pods", "statefulsets", "zones", "secondaryservers"}
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?P<status>/status)?$"
)
# Set by the API server, never by an apply.
SERVER_FIELDS = ("resourceVersion", "uid", "generation", "creationTimestamp")


def _error(status: int, reason: str, message: str) -> ApiException:
    return ApiException(status=status, reason=reason, body=json.dumps({"message": message}))


def _leaves(value: Any, prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Leaf fields of an applied object: maps are walked, lists and scalars are atomic."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from _leaves(item, (*prefix, str(key)))
    else:
        yield prefix, value


def _get(obj: Mapping[str, Any], path: Path) -> Any:
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _set(obj: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    obj[path[-1]] = copy.deepcopy(value)


def _remove(obj: dict[str, Any], path: Path) -> None:
    parents: list[tuple[dict[str, Any], str]] = []
    current = obj
    for key in path[:-1]:
        if not isinstance(current.get(key), dict):
            return
        parents.append((current, key))
        current = current[key]
    current.pop(path[-1], None)
    # Maps left empty by the removal go too, as the API server prunes them.
    for parent, key in reversed(parents):
        if parent[key] == {}:
            del parent[key]


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _selected(obj: Mapping[str, Any], selector: str | None) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in (selector or "").split(","):
        if not term:
            continue
        key, equals, value = term.partition("=")
        if equals and labels.get(key) != value:
            return False
        if not equals and key not in labels:
            return False
    return True


def _content(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object without what the server sets: equal content means no new resourceVersion."""
    result = copy.deepcopy(dict(obj))
    for name in SERVER_FIELDS:
        result.get("metadata", {}).pop(name, None)
    return result


@dataclass
class StoredObject:
    obj: dict[str, Any]
    # field manager -> the leaf fields it set with its last apply
    managed: dict[str, set[Path]] = field(default_factory=dict)


@dataclass
class Fault:
    """Requests whose method is `method` and whose path contains `path` raise `error`."""

    method: str
    path: str
    error: Exception
    # How many more requests fail (None: every one).
    remaining: int | None = None


@dataclass
class FakeApiServer:
    objects: dict[Key, StoredObject] = field(default_factory=dict)
    # (method, path) of every request that changed something, in order.
    writes: list[tuple[str, str]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    # The fieldManager of every status patch, in order (None: the request named none).
    status_managers: list[str | None] = field(default_factory=list)
    # (resourceVersion, event type, key, object) of every change, for watches.
    events: list[tuple[int, str, Key, dict[str, Any]]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _uids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _current: int = 0
    _compacted: int = 0
    # One request at a time, as etcd orders writes: the operator writes from several
    # threads (status writers, shard writers), and a version must be recorded in order.
    _serialized: threading.RLock = field(default_factory=threading.RLock)

    def _next_version(self) -> str:
        self._current = next(self._versions)
        return str(self._current)

    def _record(self, event_type: str, key: Key, obj: Mapping[str, Any]) -> None:
        self.events.append((self._current, event_type, key, copy.deepcopy(dict(obj))))

    def fail(self, method: str, path: str, error: Exception, times: int | None = None) -> Fault:
        """From now on, `method` requests to a path containing `path` raise `error`."""
        fault = Fault(method, path, error, times)
        self.faults.append(fault)
        return fault

    def compact(self) -> None:
        """Forget the history: a watch from any version seen so far gets 410 Gone."""
        self._compacted = self._current
        self.events.clear()

    def _check_faults(self, method: str, path: str) -> None:
        for fault in self.faults:
            if fault.method == method and fault.path in path and fault.remaining != 0:
                if fault.remaining is not None:
                    fault.remaining -= 1
                raise fault.error

    # ---- ApiTransport ----------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> Any:
        with self._serialized:
            return self._request(method, path, body=body, query=query, content_type=content_type)

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        query: Sequence[tuple[str, str]],
        content_type: str,
    ) -> Any:
        self.requests.append((method, path))
        self._check_faults(method, path)
        match = _PATH.match(path)
        if match is None:
            raise _error(404, "Not Found", f"no route {path}")
        group_version = match["core"] or f"{match['group']}/{match['version']}"
        plural, name = match["plural"], match["name"]
        key = (group_version, plural, match["namespace"] or "", name or "")
        params = dict(query)
        if method == "GET" and name is None:
            return self._list(
                group_version,
                plural,
                key[2],
                params.get("labelSelector"),
                int(params.get("limit") or 0),
                int(params.get("continue") or 0),
            )
        if name is None:
            raise _error(405, "Method Not Allowed", f"{method} on a collection")
        if method == "GET":
            return copy.deepcopy(self._stored(key).obj)
        if method == "DELETE":
            self._remove_object(key)
            self.writes.append((method, path))
            return {"kind": "Status", "status": "Success"}
        if method == "PATCH" and match["status"]:
            if content_type != "application/merge-patch+json":
                raise _error(415, "Unsupported Media Type", content_type)
            self.status_managers.append(params.get("fieldManager"))
            return self._patch_status(key, body, path)
        if method == "PATCH" and content_type == "application/apply-patch+yaml":
            applied = json.loads(body) if isinstance(body, str) else body
            manager = params.get("fieldManager")
            if not manager:
                raise _error(400, "Bad Request", "fieldManager is required for apply")
            return self.apply(applied, manager, force=params.get("force") == "true", path=path)
        raise _error(405, "Method Not Allowed", f"{method} {content_type} {path}")

    # ---- what tests do as users, kubelet or controllers ------------------------

    def apply(
        self,
        obj: Mapping[str, Any],
        manager: str = "kubectl",
        *,
        force: bool = True,
        path: str | None = None,
    ) -> dict[str, Any]:
        """Server-side apply of `obj` by `manager` (default: a user with kubectl)."""
        applied = self._normalise(obj)
        key = self._key(applied)
        fields = {
            leaf
            for leaf, _ in _leaves(applied)
            if leaf[:1] not in (("apiVersion",), ("kind",), ("status",))
            and leaf[:2] not in (("metadata", "name"), ("metadata", "namespace"))
            and not (leaf[:1] == ("metadata",) and leaf[1:2] and leaf[1] in SERVER_FIELDS)
        }
        stored = self.objects.get(key)
        if stored is None:
            obj_new: dict[str, Any] = {
                "apiVersion": applied["apiVersion"],
                "kind": applied["kind"],
                "metadata": {
                    "name": applied["metadata"]["name"],
                    **({"namespace": applied["metadata"]["namespace"]} if key[2] else {}),
                    **self._identity(),
                    "generation": 1,
                },
            }
            stored = StoredObject(obj_new, {})
            managed_before: dict[str, set[Path]] = {}
            before: dict[str, Any] | None = None
        else:
            managed_before = {name: set(paths) for name, paths in stored.managed.items()}
            before = _content(stored.obj)
        result = copy.deepcopy(stored.obj)
        managed = {name: set(paths) for name, paths in managed_before.items()}
        for other, owned in managed.items():
            if other == manager:
                continue
            taken = {leaf for leaf in owned & fields if _get(result, leaf) != _get(applied, leaf)}
            if taken and not force:
                raise _error(409, "Conflict", f"conflict with {other!r}: {sorted(taken)}")
            owned -= fields
        for leaf in managed.get(manager, set()) - fields:
            if any(leaf in owned for name, owned in managed.items() if name != manager):
                continue  # another manager set it too
            if isinstance(_get(result, leaf), dict) and _get(result, leaf):
                continue  # a map this manager claimed empty: other managers' entries stay
            _remove(result, leaf)
        for leaf in fields:
            value = _get(applied, leaf)
            if value == {} and isinstance(_get(result, leaf), dict):
                continue  # a map claimed empty: its entries from others stay
            _set(result, leaf, value)
        managed[manager] = fields
        managed = {name: owned for name, owned in managed.items() if owned}
        changed = before is None or _content(result) != before or managed != managed_before
        if changed:
            if before is not None and self._spec_changed(before, _content(result)):
                result["metadata"]["generation"] = result["metadata"].get("generation", 1) + 1
            result["metadata"]["resourceVersion"] = self._next_version()
            self.objects[key] = StoredObject(result, managed)
            self._record("ADDED" if before is None else "MODIFIED", key, result)
            self.writes.append(("PATCH", path or self.path_of(result)))
        return copy.deepcopy(self.objects[key].obj)

    def set_status(self, obj: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
        """What a controller or the kubelet writes: the whole status of an existing object."""
        key = self._key(self._normalise(obj))
        stored = self._stored(key)
        stored.obj["status"] = copy.deepcopy(dict(status))
        stored.obj["metadata"]["resourceVersion"] = self._next_version()
        self._record("MODIFIED", key, stored.obj)
        return copy.deepcopy(stored.obj)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """What a user or a controller deletes (the operator's deletes are requests)."""
        self._remove_object((api_version, PLURALS[kind], namespace, name))

    def _remove_object(self, key: Key) -> None:
        stored = self._stored(key)
        del self.objects[key]
        stored.obj["metadata"]["resourceVersion"] = self._next_version()
        self._record("DELETED", key, stored.obj)

    def collect_garbage(self) -> None:
        """Delete every object whose controller owner is gone (kube-controller-manager's GC)."""
        while True:
            uids = {stored.obj["metadata"]["uid"] for stored in self.objects.values()}
            orphans = [
                key
                for key, stored in self.objects.items()
                if any(
                    ref.get("uid") not in uids
                    for ref in stored.obj["metadata"].get("ownerReferences") or []
                )
            ]
            if not orphans:
                return
            for key in orphans:
                self._remove_object(key)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        stored = self.objects.get((api_version, PLURALS[kind], namespace, name))
        return copy.deepcopy(stored.obj) if stored is not None else None

    def all(self, kind: str, namespace: str = "") -> list[dict[str, Any]]:
        return [
            copy.deepcopy(stored.obj)
            for (_, plural, ns, _), stored in sorted(self.objects.items())
            if plural == PLURALS[kind] and (not namespace or ns == namespace)
        ]

    def versions(self) -> dict[Key, str]:
        """resourceVersion of every object: equal before and after means nothing was written."""
        return {
            key: stored.obj["metadata"]["resourceVersion"] for key, stored in self.objects.items()
        }

    @staticmethod
    def path_of(obj: Mapping[str, Any]) -> str:
        api_version, kind = obj["apiVersion"], obj["kind"]
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        namespace = obj["metadata"].get("namespace")
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{prefix}{scope}/{PLURALS[kind]}/{obj['metadata']['name']}"

    # ---- internals --------------------------------------------------------------

    def _identity(self) -> dict[str, str]:
        number = next(self._uids)
        # Creation order sorts as text, as RFC 3339 timestamps do.
        hours, rest = divmod(number, 3600)
        minutes, seconds = divmod(rest, 60)
        created = f"2026-01-01T{hours:02d}:{minutes:02d}:{seconds:02d}Z"
        return {"uid": f"uid-{number}", "creationTimestamp": created}

    def _normalise(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        result = copy.deepcopy(dict(obj))
        if result["kind"] == "Secret" and "stringData" in result:
            data = dict(result.get("data") or {})
            for data_key, text in result.pop("stringData").items():
                data[data_key] = base64.b64encode(str(text).encode()).decode()
            result["data"] = data
        return result

    def _key(self, obj: Mapping[str, Any]) -> Key:
        return (
            obj["apiVersion"],
            PLURALS[obj["kind"]],
            obj["metadata"].get("namespace", ""),
            obj["metadata"]["name"],
        )

    def _stored(self, key: Key) -> StoredObject:
        stored = self.objects.get(key)
        if stored is None:
            raise _error(404, "Not Found", f'{key[1]} "{key[3]}" not found')
        return stored

    def _list(
        self,
        group_version: str,
        plural: str,
        namespace: str,
        selector: str | None,
        limit: int = 0,
        offset: int = 0,
    ) -> dict[str, Any]:
        items = [
            copy.deepcopy(stored.obj)
            for (gv, kind_plural, ns, _), stored in sorted(self.objects.items())
            if (gv, kind_plural) == (group_version, plural)
            and (not namespace or ns == namespace)
            and _selected(stored.obj, selector)
        ]
        metadata: dict[str, Any] = {"resourceVersion": str(self._current)}
        if limit:
            if offset + limit < len(items):
                metadata["continue"] = str(offset + limit)
            items = items[offset : offset + limit]
        # A list's items carry neither apiVersion nor kind, as the API server's do not.
        for item in items:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return {"items": items, "metadata": metadata}

    def watch(
        self, path: str, *, query: Sequence[tuple[str, str]], timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """Every change since the query's resourceVersion, then a bookmark; then it ends."""
        self.requests.append(("WATCH", path))
        self._check_faults("WATCH", path)
        match = _PATH.match(path)
        if match is None or match["name"]:
            raise _error(404, "Not Found", f"no watch route {path}")
        group_version = match["core"] or f"{match['group']}/{match['version']}"
        params = dict(query)
        since = int(params.get("resourceVersion") or 0)
        if since < self._compacted:
            yield {
                "type": "ERROR",
                "object": {"kind": "Status", "code": 410, "message": "too old resource version"},
            }
            return
        for version, event_type, key, obj in list(self.events):
            if (
                version > since
                and key[:2] == (group_version, match["plural"])
                and (not match["namespace"] or key[2] == match["namespace"])
                and _selected(obj, params.get("labelSelector"))
            ):
                event = copy.deepcopy(obj)
                event.pop("apiVersion", None)
                event.pop("kind", None)
                yield {"type": event_type, "object": event}
        if params.get("allowWatchBookmarks") == "true":
            yield {
                "type": "BOOKMARK",
                "object": {"metadata": {"resourceVersion": str(self._current)}},
            }

    def _patch_status(self, key: Key, body: Any, path: str) -> dict[str, Any]:
        stored = self._stored(key)
        if key[1] not in WITH_STATUS:
            raise _error(404, "Not Found", f"{key[1]} has no status subresource")
        patch = json.loads(body) if isinstance(body, str) else dict(body)
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        current = stored.obj["metadata"]["resourceVersion"]
        if wanted is not None and wanted != current:
            raise _error(
                409,
                "Conflict",
                f"the object has been modified (resourceVersion {wanted}, now {current}); "
                "please apply your changes to the latest version and try again",
            )
        status = _merge_patch(stored.obj.get("status") or {}, patch.get("status") or {})
        if status != (stored.obj.get("status") or {}):
            stored.obj["status"] = status
            stored.obj["metadata"]["resourceVersion"] = self._next_version()
            self._record("MODIFIED", key, stored.obj)
            self.writes.append(("PATCH", path))
        return copy.deepcopy(stored.obj)

    @staticmethod
    def _spec_changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
        def body(obj: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

        return body(before) != body(after)


def custom_resource(
    kind: str, namespace: str, name: str, spec: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": copy.deepcopy(dict(spec)),
    }


def run_statefulset(
    server: FakeApiServer,
    namespace: str,
    name: str,
    *,
    ready: bool = True,
    applied_hash: str | None = None,
    domains: Sequence[str] = ("zone-a", "zone-b", "zone-c"),
) -> list[dict[str, Any]]:
    """What the StatefulSet controller, the scheduler, the kubelet and each agent would do.

    One Pod per replica on a node of its own failure domain, Running and Ready
    (or not), with the agent's report of the configuration it applied (the
    StatefulSet's current one unless `applied_hash` says otherwise); the
    StatefulSet's status says the rollout is complete.
    """
    statefulset = server.get("apps/v1", "StatefulSet", namespace, name)
    assert statefulset is not None, f"no StatefulSet {namespace}/{name}"
    replicas = statefulset["spec"]["replicas"]
    template = statefulset["spec"]["template"]["metadata"]
    config = server.get("v1", "ConfigMap", namespace, f"{name}-config")
    assert config is not None
    current = config["metadata"]["annotations"]["secondarydns.io/config-hash"]
    pods = []
    for ordinal in range(replicas):
        node = f"node-{ordinal}"
        domain = domains[ordinal % len(domains)]
        server.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node, "labels": {"topology.kubernetes.io/zone": domain}},
            },
            "kwok",
        )
        pod = server.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{name}-{ordinal}",
                    "namespace": namespace,
                    "labels": dict(template["labels"]),
                    "annotations": {
                        "secondarydns.io/applied-config-hash": applied_hash or current,
                        "secondarydns.io/config-error": "",
                    },
                },
                "spec": {"nodeName": node},
            },
            "kube-controller-manager",
        )
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        pods.append(
            server.set_status(
                pod,
                {"phase": "Running", "podIP": f"10.244.{ordinal}.10", "conditions": [condition]},
            )
        )
    server.set_status(
        statefulset,
        {
            "observedGeneration": statefulset["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "currentRevision": "r1",
            "updateRevision": "r1",
        },
    )
    return pods
