"""The agent's edge to the Kubernetes API: watch its config, annotate its own Pod.

Watches run in threads, one per kind: list, then watch from the list's
resourceVersion; a watch that expires (410 Gone) or fails is re-listed after a
backoff, so a restarting API server costs a few seconds of delay, not the agent.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from secondary_dns.agent.assemble import ConfigShard, KeySecret
from secondary_dns.agent.source import Snapshot
from secondary_dns.api import agent_contract
from secondary_dns.k8s.watch import (
    BACKOFF_INITIAL_SECONDS,
    BACKOFF_MAX_SECONDS,
    REQUEST_TIMEOUT_SECONDS,
    ObjectWatch,
)

log = logging.getLogger(__name__)

# Untyped parts of the client, used through Any so strict mypy accepts the calls.
_config_loader: Any = kubernetes.config


def load_client_configuration(kubeconfig: str | None) -> Any:
    """In-cluster service-account config, or the given kubeconfig file."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig:
        _config_loader.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        _config_loader.load_incluster_config(client_configuration=configuration)
    return configuration


def api_client(configuration: Any) -> Any:
    """One client (connection pool) per user: watches and the Pod reporter do not share one."""
    return kubernetes.client.ApiClient(configuration)


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    metadata = obj.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    return annotations if isinstance(annotations, Mapping) else {}


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def shard_from_configmap(obj: Mapping[str, Any]) -> ConfigShard:
    annotations = _annotations(obj)
    count = annotations.get(agent_contract.ANNOTATION_SHARD_CONFIGMAPS, "")
    data = obj.get("data") or {}
    return ConfigShard(
        name=_name(obj),
        data={str(key): str(value) for key, value in data.items()},
        config_hash=annotations.get(agent_contract.ANNOTATION_CONFIG_HASH) or None,
        keys_hash=annotations.get(agent_contract.ANNOTATION_KEYS_HASH) or None,
        shard=annotations.get(agent_contract.ANNOTATION_SHARD) or None,
        shard_hash=annotations.get(agent_contract.ANNOTATION_SHARD_HASH) or None,
        # isascii: str.isdigit() also holds for "²", which int() refuses.
        shard_configmaps=int(count) if count.isascii() and count.isdigit() else None,
        resource_version=str((obj.get("metadata") or {}).get("resourceVersion", "")),
    )


def secret_from_object(obj: Mapping[str, Any]) -> KeySecret:
    encoded = (obj.get("data") or {}).get(agent_contract.KEYS_DATA_KEY)
    key_file: str | None = None
    if isinstance(encoded, str):
        try:
            key_file = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, ValueError):  # not base64, not ASCII, not UTF-8
            key_file = None
    return KeySecret(
        name=_name(obj),
        keys_hash=_annotations(obj).get(agent_contract.ANNOTATION_KEYS_HASH) or None,
        key_file=key_file,
    )


class KeysSecretByName:
    """The `<server>-keys` Secret, read by name when the ConfigMaps ask for another one.

    The agent's Role grants `get` on that one Secret and nothing else on Secrets:
    to grant list/watch (even by resourceName), the operator would have to hold
    list/watch on every Secret of the cluster (RBAC escalation prevention). The
    operator writes the Secret before the ConfigMaps that name its hash
    (`keys-hash`), so a ConfigMap announcing a hash the Secret held here does not
    carry means: read it again. Read once at start, again when asked, and at
    least every REFRESH_SECONDS (a failed read is retried with a backoff).
    """

    REFRESH_SECONDS = 60.0

    def __init__(
        self,
        core: Any,
        namespace: str,
        name: str,
        changed: Callable[[], None],
        stop: threading.Event,
    ) -> None:
        self.core = core
        self.namespace = namespace
        self.name = name
        self.changed = changed
        self.stop_event = stop
        self.synced = False
        self._secret: dict[str, Any] | None = None
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="get-keys-secret", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._wanted.set()

    def want(self, keys_hashes: set[str]) -> None:
        """The ConfigMaps name these key hashes: read the Secret again if it has another."""
        with self._lock:
            held = _annotations(self._secret or {}).get(agent_contract.ANNOTATION_KEYS_HASH)
        if keys_hashes and held not in keys_hashes:
            self._wanted.set()

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._secret] if self._secret is not None else []

    def _read(self) -> None:
        try:
            response = self.core.read_namespaced_secret(
                self.name,
                self.namespace,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
            secret: dict[str, Any] | None = json.loads(response.data)
        except ApiException as error:
            if error.status != 404:
                raise
            secret = None
        with self._lock:
            changed = secret != self._secret or not self.synced
            self._secret, self.synced = secret, True
        if changed:
            self.changed()

    def _run(self) -> None:
        backoff = BACKOFF_INITIAL_SECONDS
        while not self.stop_event.is_set():
            self._wanted.clear()
            try:
                self._read()
                backoff = BACKOFF_INITIAL_SECONDS
                wait = self.REFRESH_SECONDS
            except Exception as error:  # any I/O failure: back off, read again
                log.warning("reading Secret %s failed: %s", self.name, error)
                wait = backoff * random.uniform(0.5, 1.0)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            self._wanted.wait(wait)


class ShardConfigMapsByName:
    """The shard ConfigMaps the root's manifest names, each read by name.

    The agent's Role grants its ConfigMaps by name only (render/children.py
    build_agent_rbac): listing or watching by label would need every ConfigMap
    of the namespace, since RBAC authorizes a list or watch by resourceName only
    for a single name (a `metadata.name=` field selector). The operator writes a
    shard before the root that names its hash, so the root's manifest says which
    shards to read: a shard held at the named hash is not read again.

    A shard read at another hash than the root names is read again as it was
    when the root was written: a list of that one name (the same RBAC rule by
    resourceName, with `list`) at the root's resourceVersion, `Exact`. Every
    shard is written before the root that names it and after the one before,
    so at the root's revision each shard is at the named hash. Without this an
    agent chased the operator through a burst of changes: at 10,000 Zones
    created together the operator writes its shards back to back, each read
    found some shards already at the next root's hash, and an agent applied
    nothing for 70 s (bench/scale.py, "replicas serve"). A revision no longer
    kept (etcd compacts every few minutes) is read again by name after a backoff.
    """

    def __init__(
        self,
        core: Any,
        namespace: str,
        server: str,
        changed: Callable[[], None],
        stop: threading.Event,
    ) -> None:
        self.core = core
        self.namespace = namespace
        self.server = server
        self.changed = changed
        self.stop_event = stop
        self._manifest: dict[str, str] | None = None
        # The root's resourceVersion that named the manifest (None: read by name only).
        self._revision: str | None = None
        # shard -> its ConfigMaps (the first, then its further parts)
        self._shards: dict[str, list[dict[str, Any]]] = {}
        self._read_for: dict[str, str] | None = None
        # The root object that named the wanted manifest (the latest seen).
        self._root: dict[str, Any] | None = None
        # The last complete set: a manifest, the root that named it and its shards'
        # ConfigMaps, every one at the named hash. During a burst of changes the
        # root moves on while a pass reads (the operator publishes every few
        # seconds, a pass at 10,000 zones reads hundreds of shards): a pass that
        # completes for a root that is no longer the latest is still a consistent
        # configuration, and the agent applies it instead of waiting for a pass that
        # ends before the next root (at 10,000 Zones created together, none did
        # until the burst was over: no replica served a zone for 69 s).
        self._complete: (
            tuple[dict[str, str], dict[str, Any] | None, list[dict[str, Any]]] | None
        ) = None
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="get-shards", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._wanted.set()

    @property
    def synced(self) -> bool:
        """Every shard of the wanted manifest has been read once (at any hash)."""
        with self._lock:
            if self._complete is not None:
                return True
            return self._manifest is not None and self._read_for == self._manifest

    def want(
        self,
        manifest: Mapping[str, str],
        revision: str | None = None,
        root: dict[str, Any] | None = None,
    ) -> None:
        """The root (`root`, at resourceVersion `revision`) names these shards at these
        hashes ({} for no root or no shard)."""
        with self._lock:
            self._root = root
            if self._complete is not None and self._complete[0] == manifest:
                # A root naming the same shards (another part of it changed).
                self._complete = (self._complete[0], root, self._complete[2])
            if self._manifest == manifest:
                return
            self._manifest = dict(manifest)
            self._revision = revision or None
        self._wanted.set()

    def complete_root(self) -> tuple[bool, dict[str, Any] | None]:
        """(True, the root of the last complete set) once one is complete; else (False, None)."""
        with self._lock:
            if self._complete is None:
                return False, None
            return True, self._complete[1]

    def items(self) -> list[dict[str, Any]]:
        """The last complete set's shards; before one is complete, what was read."""
        with self._lock:
            if self._complete is not None:
                return list(self._complete[2])
            return [obj for shard in sorted(self._shards) for obj in self._shards[shard]]

    def _get(self, name: str) -> dict[str, Any] | None:
        try:
            response = self.core.read_namespaced_config_map(
                name,
                self.namespace,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status != 404:
                raise
            return None
        found: dict[str, Any] = json.loads(response.data)
        return found

    def _get_at(self, name: str, revision: str) -> dict[str, Any] | None:
        """The ConfigMap as it was at `revision` (None: it did not exist then).

        Raises ApiException 410 when etcd no longer keeps that revision."""
        response = self.core.list_namespaced_config_map(
            self.namespace,
            field_selector=f"metadata.name={name}",
            resource_version=revision,
            resource_version_match="Exact",
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
        items = json.loads(response.data).get("items") or []
        found: dict[str, Any] | None = items[0] if items else None
        return found

    def _read_shard(self, shard: str, revision: str | None = None) -> list[dict[str, Any]]:
        """The shard's ConfigMaps now, or at `revision`."""

        def read(name: str) -> dict[str, Any] | None:
            return self._get(name) if revision is None else self._get_at(name, revision)

        first = read(agent_contract.shard_config_map_name(self.server, shard))
        if first is None:
            return []
        count = _annotations(first).get(agent_contract.ANNOTATION_SHARD_CONFIGMAPS, "1")
        parts = int(count) if count.isascii() and count.isdigit() else 1
        found = [first]
        for part in range(1, parts):
            further = read(agent_contract.shard_config_map_name(self.server, shard, part))
            if further is not None:
                found.append(further)
        return found

    @staticmethod
    def _hash_of(objects: list[dict[str, Any]]) -> str | None:
        if not objects:
            return None
        return _annotations(objects[0]).get(agent_contract.ANNOTATION_SHARD_HASH)

    def _held_hash(self, shard: str) -> str | None:
        return self._hash_of(self._shards.get(shard) or [])

    def _pass(self) -> bool:
        """Read what the manifest names and is not held; True when all is at its hash."""
        with self._lock:
            manifest = dict(self._manifest or {})
            revision = self._revision
            root = self._root
            stale = [shard for shard, hash_ in manifest.items() if self._held_hash(shard) != hash_]
        read = {shard: self._read_shard(shard) for shard in sorted(stale)}
        if revision is not None:
            # Already at the next root's hash (or still at the last one's): as of this root.
            for shard in sorted(read):
                if self._hash_of(read[shard]) != manifest[shard]:
                    try:
                        read[shard] = self._read_shard(shard, revision)
                    except ApiException as error:
                        if error.status != 410:
                            raise
                        break  # compacted: by name again, after the backoff
        with self._lock:
            for shard in set(self._shards) - set(manifest):
                del self._shards[shard]
            self._shards.update(read)
            complete = all(self._held_hash(shard) == hash_ for shard, hash_ in manifest.items())
            newly_synced = self._read_for != manifest and self._manifest == manifest
            if self._manifest == manifest:
                self._read_for = manifest
            if complete and (self._complete is None or self._complete[0] != manifest):
                if self._manifest == manifest:
                    root = self._root  # the latest root naming these shards
                objects = [obj for shard in sorted(manifest) for obj in self._shards[shard]]
                self._complete = (manifest, root, objects)
                newly_synced = True
        if read or newly_synced:
            self.changed()
        return complete

    def _run(self) -> None:
        backoff = BACKOFF_INITIAL_SECONDS
        while not self.stop_event.is_set():
            self._wanted.wait()
            self._wanted.clear()
            if self.stop_event.is_set():
                return
            try:
                if self._pass():
                    backoff = BACKOFF_INITIAL_SECONDS
                    continue
                log.info("a shard ConfigMap is not at the root's hash yet; reading it again")
            except Exception as error:  # any I/O failure: back off, read again
                log.warning("reading shard ConfigMaps failed: %s", error)
            self.stop_event.wait(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            self._wanted.set()


def shards_of_root(root: Mapping[str, Any] | None) -> dict[str, str]:
    """{shard: hash} the root ConfigMap names; {} without a root or with a bad manifest
    (assembly reports that one)."""
    text = ((root or {}).get("data") or {}).get(agent_contract.SHARDS_FILE)
    if not isinstance(text, str):
        return {}
    parsed = agent_contract.parse_shards_file(text)
    return parsed if isinstance(parsed, dict) else {}


class KubernetesConfigSource:
    """The root ConfigMap (watched by name), its shards and the `<server>-keys` Secret (by name)."""

    def __init__(self, api_client: Any, namespace: str, server: str) -> None:
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.namespace = namespace
        self.server = server
        self._stop = threading.Event()
        self._watches: list[ObjectWatch] = []
        self._secret: KeysSecretByName | None = None
        self._shards: ShardConfigMapsByName

    def start(self, changed: Callable[[], None]) -> None:
        secret = KeysSecretByName(
            self.core,
            self.namespace,
            agent_contract.keys_secret_name(self.server),
            changed,
            self._stop,
        )

        shards = ShardConfigMapsByName(self.core, self.namespace, self.server, changed, self._stop)

        def root_changed() -> None:
            roots = self._root.items()
            secret.want(
                {root.keys_hash for root in map(shard_from_configmap, roots) if root.keys_hash}
            )
            if self._root.synced:
                revision = ((roots[0].get("metadata") or {}) if roots else {}).get(
                    "resourceVersion"
                )
                shards.want(
                    shards_of_root(roots[0] if roots else None),
                    revision if isinstance(revision, str) else None,
                    roots[0] if roots else None,
                )
            changed()

        root = agent_contract.root_config_map_name(self.server)
        self._root = ObjectWatch(
            "configmaps",
            self.core.list_namespaced_config_map,
            {"namespace": self.namespace, "field_selector": f"metadata.name={root}"},
            root_changed,
            self._stop,
        )
        self._watches = [self._root]
        self._secret = secret
        self._shards = shards
        secret.start()
        shards.start()
        self._root.start()

    def snapshot(self) -> Snapshot:
        if not self._watches or self._secret is None:
            return Snapshot((), None, synced=False)
        secrets = [secret_from_object(obj) for obj in self._secret.items()]
        # The root of the last complete set of shards (it may be older than the
        # latest root while the shards of that one are read); before one, the latest.
        complete, root = self._shards.complete_root()
        roots = ([root] if root is not None else []) if complete else self._root.items()
        return Snapshot(
            shards=tuple(
                sorted(
                    (shard_from_configmap(obj) for obj in [*roots, *self._shards.items()]),
                    key=lambda shard: shard.name,
                )
            ),
            secret=secrets[0] if secrets else None,
            synced=self._root.synced and self._shards.synced and self._secret.synced,
        )

    def stop(self) -> None:
        self._stop.set()
        for watch in self._watches:
            watch.stop()
        if self._secret is not None:
            self._secret.stop()
        self._shards.stop()


class PodAnnotationReporter:
    """Reads and merge-patches the reported annotations of the agent's own Pod."""

    def __init__(self, api_client: Any, namespace: str, pod: str) -> None:
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.namespace = namespace
        self.pod = pod

    def current(self) -> dict[str, str | None]:
        obj = self.core.read_namespaced_pod(
            self.pod, self.namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        annotations = (obj.metadata.annotations if obj.metadata else None) or {}
        return {key: annotations.get(key) for key in agent_contract.REPORTED_ANNOTATIONS}

    def patch(self, annotations: Mapping[str, str]) -> None:
        self.core.patch_namespaced_pod(
            self.pod,
            self.namespace,
            {"metadata": {"annotations": dict(annotations)}},
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
