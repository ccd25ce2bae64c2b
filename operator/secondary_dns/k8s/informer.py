"""Watch caches: the current objects of a kind, kept by list and watch (an informer).

The operator reads SecondaryServers, Zones, its children and their Pods from
here instead of asking the API server on every event: one paginated list,
then a watch from its resourceVersion, with bookmarks so a quiet watch can be
resumed where it stopped; when the API server says the version is too old
(410 Gone) the kind is listed again and what changed meanwhile is reported as
events, so nothing is missed. Each watch request has its own timeout on both
sides (the server ends it, the client gives up a little later).

Objects are kept trimmed: managedFields and kubectl's last-applied annotation
are dropped (they double an object's size and nothing here reads them), and
every mapping key and string value is interned: each object is decoded from
its own JSON, so 10,000 Zones would otherwise hold 10,000 copies of
"lastTransitionTime", "True", "Synced", every other field name and reason and
the condition messages most zones share ("every replica in sync"). Entries
of lists that are flat mappings (a status's conditions and replicas, a spec's
primaries and allowTransfer entries) are shared whole between objects when
equal to one seen recently (api/sharing.py): each Zone's 14 condition and
replica entries, 4 KB, were two thirds of the Zone cache, and Zones that
converge together have many of them equal (the same message and, to the
second, the same lastTransitionTime). An object in the cache is read, never
changed in place (every status is computed anew), so a shared entry is no
different from a copy.

The handler of an informer is called in the informer's thread with
(event type, old object, new object) for every change of the cache; it must
be quick (the operator's marks work for its queue and returns). Kinds without
an informer (Secrets, whose list the operator is not allowed; Nodes) are read
by name once and kept until `ObjectCache.expire()`, which the resync calls.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from secondary_dns.api.sharing import RecentValues
from secondary_dns.k8s.resources import Resource, resource_of

log = logging.getLogger(__name__)

# The API server ends a watch after this long (the client's read timeout is longer).
WATCH_SECONDS = 270
PAGE_SIZE = 500
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"

# (event type, object before, object after): one of them is None for ADDED / DELETED.
EventHandler = Callable[[str, Mapping[str, Any] | None, Mapping[str, Any] | None], None]
Key = tuple[str, str]


class ApiTransport(Protocol):
    """One request to the API server: the JSON answer, or ApiException with its status;
    and a watch that yields decoded events.

    The seam between the operator and the wire: the operator uses the kubernetes
    client (k8s/api.py `KubernetesTransport`); unit tests use an in-memory API
    server (tests/fake_cluster.py) with the same resourceVersion, server-side
    apply, status-subresource and watch rules.
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

    def watch(
        self, path: str, *, query: Sequence[tuple[str, str]], timeout_seconds: int
    ) -> Iterator[Mapping[str, Any]]: ...


class WatchExpired(Exception):
    """The API server no longer has the version the watch asked for (410 Gone)."""


def trim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object without managedFields and kubectl's last-applied annotation, its
    strings interned."""
    result = dict(obj)
    metadata = dict(result.get("metadata") or {})
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        metadata["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    result["metadata"] = metadata
    shared: dict[str, Any] = _interned(result)
    return shared


# Flat list entries seen last, by (key, value, type) of their items (the type too:
# True == 1, and JSON tells them apart); bounded, see api/sharing.py.
_shared_entries: RecentValues[tuple[tuple[str, Any, type], ...], dict[str, Any]] = RecentValues()
_SCALARS = (str, int, float, bool, type(None))


def _shared(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry equal to `entry` (interned already, same key order) that other
    objects already hold, if one was seen recently; else `entry`, remembered."""
    if not all(isinstance(value, _SCALARS) for value in entry.values()):
        return entry
    return _shared_entries.one(tuple((k, v, type(v)) for k, v in entry.items()), entry)


def _interned(value: Any) -> Any:
    """`value` with every dict key and string interned (new dicts and lists), and
    flat list entries shared (`_shared`).

    Interned strings are freed when nothing refers to them any more, so one
    zone's own message costs no more than it did.
    """
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {sys.intern(k) if isinstance(k, str) else k: _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_interned(item) for item in value]
        return [_shared(item) if isinstance(item, dict) else item for item in items]
    return value


def object_key(obj: Mapping[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def _version(obj: Mapping[str, Any] | None) -> int | None:
    # resourceVersion is opaque by contract, but every API server in use (etcd
    # revisions) makes it an integer; only then is one object's newer copy told.
    text = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isascii() and text.isdigit() else None


def _newer(candidate: Mapping[str, Any], known: Mapping[str, Any] | None) -> bool:
    new, old = _version(candidate), _version(known)
    return known is None or new is None or old is None or new >= old


def _noop(event: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
    return None


class Informer:
    """The objects of one kind (in one namespace or all, by label selector)."""

    def __init__(
        self,
        transport: ApiTransport,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        handler: EventHandler = _noop,
        page_size: int = PAGE_SIZE,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.transport = transport
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.handler = handler
        self.page_size = page_size
        self.watch_seconds = watch_seconds
        self.synced = threading.Event()
        self._lock = threading.Lock()
        self._by_namespace: dict[str, dict[str, dict[str, Any]]] = {}
        self._resource_version: str | None = None

    def __repr__(self) -> str:
        where = self.namespace or "all namespaces"
        selector = f" {self.label_selector}" if self.label_selector else ""
        return f"<Informer {self.resource.kind} in {where}{selector}>"

    # ---- reads -------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._by_namespace.get(namespace, {}).get(name)

    def items(self, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if namespace is not None:
                return list(self._by_namespace.get(namespace, {}).values())
            return [obj for objects in self._by_namespace.values() for obj in objects.values()]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(objects) for objects in self._by_namespace.values())

    def covers(self, namespace: str) -> bool:
        return self.namespace is None or self.namespace == namespace

    # ---- keeping it current ---------------------------------------------------

    def _query(self) -> list[tuple[str, str]]:
        return [("labelSelector", self.label_selector)] if self.label_selector else []

    def _store(self, event: str, obj: Mapping[str, Any], notify: bool = True) -> None:
        """Apply one change to the cache, then tell the handler (outside the lock)."""
        namespace, name = object_key(obj)
        with self._lock:
            objects = self._by_namespace.setdefault(namespace, {})
            old = objects.get(name)
            if event == DELETED:
                objects.pop(name, None)
                if not objects:
                    del self._by_namespace[namespace]
                new = None
            else:
                if old is not None and not _newer(obj, old):
                    return  # an older copy than the one kept (our own write came first)
                new = trim(obj)
                objects[name] = new
        if not notify:
            return
        if event == DELETED:
            if old is not None:
                self.handler(DELETED, old, None)
        elif old is None:
            self.handler(ADDED, None, new)
        elif _version(old) != _version(new) or _version(new) is None:
            self.handler(MODIFIED, old, new)

    def observe(self, obj: Mapping[str, Any]) -> None:
        """What an API write of ours returned: kept at once when newer than the cached copy.

        The handler is not told: our own writes are not news to us. The watch's
        event for the same version then changes nothing; a later write by
        someone else does.
        """
        self._store(MODIFIED, obj, notify=False)

    def forget(self, namespace: str, name: str) -> None:
        """We deleted it: gone from the cache before the watch says so (handler not told)."""
        self._store(DELETED, {"metadata": {"namespace": namespace, "name": name}}, notify=False)

    def relist(self) -> None:
        """List every page; what changed since the last list is reported as events."""
        listed: dict[Key, dict[str, Any]] = {}
        token = ""
        while True:
            query = [*self._query(), ("limit", str(self.page_size))]
            if token:
                query.append(("continue", token))
            page = (
                self.transport.request("GET", self.resource.path(self.namespace), query=query) or {}
            )
            for item in page.get("items") or []:
                # A list's items carry neither apiVersion nor kind.
                item = {"apiVersion": self.resource.api_version, "kind": self.resource.kind, **item}
                listed[object_key(item)] = item
            metadata = page.get("metadata") or {}
            token = str(metadata.get("continue") or "")
            if not token:
                resource_version = str(metadata.get("resourceVersion") or "")
                break
        with self._lock:
            known = {
                (namespace, name): obj
                for namespace, objects in self._by_namespace.items()
                for name, obj in objects.items()
            }
        for key, obj in known.items():
            if key not in listed:
                self._store(DELETED, obj)
        for obj in listed.values():
            self._store(ADDED if object_key(obj) not in known else MODIFIED, obj)
        self._resource_version = resource_version
        self.synced.set()

    def watch_once(self) -> None:
        """One watch request from the last version seen, until the server ends it."""
        if self._resource_version is None:
            self.relist()
        query = [
            *self._query(),
            ("resourceVersion", self._resource_version or ""),
            ("allowWatchBookmarks", "true"),
        ]
        for event in self.transport.watch(
            self.resource.path(self.namespace), query=query, timeout_seconds=self.watch_seconds
        ):
            kind = str(event.get("type"))
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    self._resource_version = None
                    raise WatchExpired(str(obj.get("message", "")))
                raise ApiException(status=obj.get("code"), reason=str(obj.get("message", "")))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if kind != "BOOKMARK":
                obj = {"apiVersion": self.resource.api_version, "kind": self.resource.kind, **obj}
                self._store(kind, obj)
            if version:
                self._resource_version = version

    def run(self, stop: threading.Event) -> None:
        """List and watch until `stop` is set; an informer thread's body."""
        backoff = BACKOFF_INITIAL_SECONDS
        while not stop.is_set():
            try:
                self.watch_once()
                backoff = BACKOFF_INITIAL_SECONDS
                continue
            except WatchExpired:
                log.info("%s: the watch expired; listing again", self)
                continue
            except ApiException as error:
                if error.status == 410:
                    self._resource_version = None
                    continue
                log.warning("%s failed: %s %s", self, error.status, error.reason)
            except Exception as error:  # any I/O failure: back off, then list again
                log.warning("%s failed: %s", self, error)
            self._resource_version = None
            # Jitter: informers of a restarted API server do not all come back at once.
            stop.wait(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)


class ObjectCache:
    """What the operator knows of the cluster's objects: informers, and reads by name.

    `get` answers from the informer of the kind when one covers the namespace,
    else from an object read by name earlier (kept until `expire`), else reads
    it now.
    """

    def __init__(self, transport: ApiTransport) -> None:
        self.transport = transport
        self.informers: list[Informer] = []
        self._lock = threading.Lock()
        # (api_version, kind, namespace, name) -> object or None (read and absent)
        self._read: dict[tuple[str, str, str, str], dict[str, Any] | None] = {}

    def add(self, informer: Informer) -> Informer:
        self.informers.append(informer)
        return informer

    def informer(self, resource: Resource, namespace: str) -> Informer | None:
        for informer in self.informers:
            if informer.resource == resource and informer.covers(namespace):
                return informer
        return None

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self.informer(resource, namespace)
        if informer is not None:
            return informer.get(namespace, name)
        key = (resource.api_version, resource.kind, namespace, name)
        with self._lock:
            if key in self._read:
                return self._read[key]
        try:
            found = self.transport.request("GET", resource.path(namespace, name))
        except ApiException as error:
            if error.status != 404:
                raise
            found = None
        obj = trim(found) if found else None
        with self._lock:
            self._read[key] = obj
        return obj

    def items(
        self, resource: Resource, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]] | None:
        """A namespace's cached objects matching `label_selector`; None without an informer."""
        informer = self.informer(resource, namespace)
        if informer is None:
            return None
        items = informer.items(namespace)
        if label_selector:
            items = [item for item in items if selected(item, label_selector)]
        return items

    def all_items(self, resource: Resource) -> list[dict[str, Any]]:
        """Every cached object of a kind, across the informers that hold it."""
        return [
            item
            for informer in self.informers
            if informer.resource == resource
            for item in informer.items()
        ]

    def observe(self, obj: Mapping[str, Any]) -> None:
        """An object an API write of ours returned."""
        resource = resource_of(str(obj.get("apiVersion")), str(obj.get("kind")))
        namespace, name = object_key(obj)
        informer = self.informer(resource, namespace)
        if informer is not None:
            informer.observe(obj)
            return
        with self._lock:
            self._read[(resource.api_version, resource.kind, namespace, name)] = trim(obj)

    def forget(self, resource: Resource, namespace: str, name: str) -> None:
        """We deleted the object."""
        informer = self.informer(resource, namespace)
        if informer is not None:
            informer.forget(namespace, name)
        with self._lock:
            self._read[(resource.api_version, resource.kind, namespace, name)] = None

    def expire(
        self,
        resource: Resource | None = None,
        namespace: str | None = None,
        names: Iterable[str] | None = None,
    ) -> None:
        """Objects read by name are read again when next needed: all of them (the
        resync), or those of one kind, namespace and names (a Secret event)."""
        with self._lock:
            if resource is None:
                self._read.clear()
                return
            wanted = None if names is None else set(names)
            for key in [
                key
                for key in self._read
                if key[:2] == resource.key
                and (namespace is None or key[2] == namespace)
                and (wanted is None or key[3] in wanted)
            ]:
                del self._read[key]

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        threads = []
        for informer in self.informers:
            thread = threading.Thread(
                target=informer.run, args=(stop,), name=f"informer-{informer.resource.plural}",
                daemon=True,
            )  # fmt: skip
            thread.start()
            threads.append(thread)
        return threads

    def wait_synced(self, timeout: float | None = None) -> bool:
        return all(informer.synced.wait(timeout) for informer in self.informers)


def selected(obj: Mapping[str, Any], label_selector: str) -> bool:
    """Equality (`k=v`) and existence (`k`) terms, comma-separated: what the operator uses."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in label_selector.split(","):
        if not term:
            continue
        key, equals, value = term.partition("=")
        if equals and labels.get(key) != value:
            return False
        if not equals and key not in labels:
            return False
    return True
