"""List, then watch: the current objects of one kind, kept in a thread.

Used by the pod agent (its ConfigMaps and key Secret) and by the NOTIFY relay
(its plans and the replicas' Pods). A watch that expires (410 Gone) or fails
is re-listed after a backoff, so a restarting API server costs a few seconds
of delay, not the process.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

# Untyped parts of the client, used through Any so strict mypy accepts the calls.
_watch_module: Any = kubernetes.watch

WATCH_TIMEOUT_SECONDS = 300
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 30.0


def object_key(obj: Mapping[str, Any]) -> str:
    """`namespace/name` (a list across namespaces has one name several times)."""
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


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
            self.objects = {object_key(item): item for item in document.get("items") or []}
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
                        self.objects.pop(object_key(obj), None)
                    else:
                        self.objects[object_key(obj)] = obj
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
