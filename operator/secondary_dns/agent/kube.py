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

log = logging.getLogger(__name__)

# Untyped parts of the client, used through Any so strict mypy accepts the calls.
_config_loader: Any = kubernetes.config
_watch_module: Any = kubernetes.watch

WATCH_TIMEOUT_SECONDS = 300
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 30.0


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


class ObjectWatch:
    """The current objects of one list+watch, by name, kept in a thread."""

    def __init__(
        self,
        what: str,
        list_function: Callable[..., Any],
        watch_arguments: Mapping[str, str],
        changed: Callable[[], None],
        stop: threading.Event,
    ) -> None:
        self.what = what
        self.list_function = list_function
        self.watch_arguments = dict(watch_arguments)
        self.changed = changed
        self.stop_event = stop
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = False
        self.lock = threading.Lock()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{what}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def _list(self) -> str:
        response = self.list_function(
            **self.watch_arguments,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
        document = json.loads(response.data)
        with self.lock:
            self.objects = {_name(item): item for item in document.get("items") or []}
            self.synced = True
        self.changed()
        return str(document.get("metadata", {}).get("resourceVersion", ""))

    def _watch_from(self, resource_version: str) -> None:
        while not self.stop_event.is_set():
            self._watch = _watch_module.Watch()
            for event in self._watch.stream(
                self.list_function,
                **self.watch_arguments,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_TIMEOUT_SECONDS,
                _request_timeout=WATCH_TIMEOUT_SECONDS + REQUEST_TIMEOUT_SECONDS,
            ):
                if self.stop_event.is_set():
                    return
                kind, obj = event["type"], event["raw_object"]
                resource_version = str(
                    (obj.get("metadata") or {}).get("resourceVersion", resource_version)
                )
                if kind == "BOOKMARK":
                    continue
                with self.lock:
                    if kind == "DELETED":
                        self.objects.pop(_name(obj), None)
                    else:
                        self.objects[_name(obj)] = obj
                self.changed()

    def _run(self) -> None:
        backoff = BACKOFF_INITIAL_SECONDS
        while not self.stop_event.is_set():
            try:
                resource_version = self._list()
                backoff = BACKOFF_INITIAL_SECONDS
                self._watch_from(resource_version)
            except ApiException as error:
                if error.status == 410:
                    log.info("watch of %s expired; listing again", self.what)
                    continue
                log.warning("watch of %s failed: %s %s", self.what, error.status, error.reason)
            except Exception as error:  # any I/O failure: back off, list again
                log.warning("watch of %s failed: %s", self.what, error)
            # Jitter so the replicas of a fleet do not hit a recovering API server together.
            self.stop_event.wait(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.objects.values())


class KubernetesConfigSource:
    """The config ConfigMaps (by label) and the `<server>-keys` Secret (by name)."""

    def __init__(self, api_client: Any, namespace: str, server: str) -> None:
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.namespace = namespace
        self.server = server
        self._stop = threading.Event()
        self._watches: list[ObjectWatch] = []

    def start(self, changed: Callable[[], None]) -> None:
        self._configmaps = ObjectWatch(
            "configmaps",
            self.core.list_namespaced_config_map,
            {
                "namespace": self.namespace,
                "label_selector": agent_contract.config_selector(self.server),
            },
            changed,
            self._stop,
        )
        # RBAC grants this Secret by resourceName only; list/watch are allowed
        # for a resourceName when the request selects exactly that name.
        self._secrets = ObjectWatch(
            "secret",
            self.core.list_namespaced_secret,
            {
                "namespace": self.namespace,
                "field_selector": f"metadata.name={agent_contract.keys_secret_name(self.server)}",
            },
            changed,
            self._stop,
        )
        self._watches = [self._configmaps, self._secrets]
        for watch in self._watches:
            watch.start()

    def snapshot(self) -> Snapshot:
        if not self._watches:
            return Snapshot((), None, synced=False)
        secrets = [secret_from_object(obj) for obj in self._secrets.items()]
        return Snapshot(
            shards=tuple(
                sorted(
                    (shard_from_configmap(obj) for obj in self._configmaps.items()),
                    key=lambda shard: shard.name,
                )
            ),
            secret=secrets[0] if secrets else None,
            synced=all(watch.synced for watch in self._watches),
        )

    def stop(self) -> None:
        self._stop.set()
        for watch in self._watches:
            watch.stop()


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
