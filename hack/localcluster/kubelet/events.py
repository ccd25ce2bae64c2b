"""Events about a pod, as kubelet records them (`kubectl describe pod` shows them).

Same reasons and messages as kubelet (Pulled, Failed, BackOff, Created,
Started, Killing, Unhealthy, FailedMount, Evicted...); a repeat of the same
event updates its count and lastTimestamp, as client-go's recorder does, at
most every REPEAT_WRITE_SECONDS (a pod retrying every second would otherwise
write an event a second).
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("pod-runner")
NORMAL, WARNING = "Normal", "Warning"
REPEAT_WRITE_SECONDS = 30.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, core: Any) -> None:
        self.core = core
        # key: (event name, count, when it was last written)
        self._seen: dict[tuple[str, ...], tuple[str, int, float]] = {}
        self._lock = threading.Lock()

    def event(
        self,
        pod: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        container: str | None = None,
    ) -> None:
        metadata = pod["metadata"]
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        key = (str(metadata["uid"]), container or "", type_, reason, message)
        now = _now()
        with self._lock:
            seen = self._seen.get(key)
            count = seen[1] + 1 if seen else 1
            name = seen[0] if seen else f"{metadata['name']}.{secrets.token_hex(8)}"
            written = seen[2] if seen else 0.0
            if seen and time.monotonic() - written < REPEAT_WRITE_SECONDS:
                self._seen[key] = (name, count, written)
                return
            self._seen[key] = (name, count, time.monotonic())
        try:
            if seen:
                self.core.patch_namespaced_event(
                    name, metadata["namespace"], {"count": count, "lastTimestamp": now}
                )
                return
            involved: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            }
            if container:
                involved["fieldPath"] = f"spec.containers{{{container}}}"
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": metadata["namespace"]},
                "involvedObject": involved,
                "type": type_,
                "reason": reason,
                "message": message,
                "source": {"component": "kubelet", "host": node},
                "reportingComponent": "kubelet",
                "reportingInstance": node,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            self.core.create_namespaced_event(metadata["namespace"], body)
        except Exception as error:  # noqa: BLE001 - an event is best effort, as in kubelet
            log.debug("event %s: %s", json.dumps(key), error)
