"""Kubernetes Events: what the operator tells people about an object, beside its status."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from secondary_dns.k8s.api import Cluster
from secondary_dns.status.times import timestamp_text

log = logging.getLogger(__name__)

# (object, event type, reason, message): posted as a Kubernetes Event.
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]

# An Event's message is cut here: longer ones are refused by some clusters.
MAX_EVENT_MESSAGE = 1024
COMPONENT = "secondary-dns-operator"
# Events waiting to be sent; more are dropped (and logged).
QUEUE_CAPACITY = 10_000


def event_body(
    obj: Mapping[str, Any], event_type: str, reason: str, message: str, now: str
) -> dict[str, Any]:
    """A core/v1 Event about `obj`, as `kubectl describe` shows it."""
    meta = obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": str(obj.get("apiVersion")),
            "kind": str(obj.get("kind")),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "type": event_type,
        "reason": reason,
        "message": message[:MAX_EVENT_MESSAGE],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
    }


class ApiEventPoster:
    """Events created with the operator's own API client, off the caller's thread.

    A reconcile that tells 3,000 Zones they are served must not wait for 3,000
    POSTs: Events go into a bounded queue that one thread sends. An Event that
    cannot be created (or finds the queue full) is logged and dropped: it never
    fails the work that told it (the status says the same).
    """

    def __init__(self, cluster: Cluster, capacity: int = QUEUE_CAPACITY) -> None:
        self.cluster = cluster
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(capacity)
        self._thread = threading.Thread(target=self._send, name="events", daemon=True)
        self._thread.start()

    def __call__(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        body = event_body(obj, event_type, reason, message, timestamp_text(time.time()))
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            log.warning(
                "Event %s for %s dropped: too many waiting", reason, obj["metadata"]["name"]
            )

    def _send(self) -> None:
        while True:
            body = self._queue.get()
            try:
                self.cluster.create_event(body)
            except Exception as error:
                name = body["involvedObject"]["name"]
                log.warning("Event %s for %s not posted: %s", body["reason"], name, error)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every Event queued so far was sent or dropped (tests)."""
        self._queue.join()
