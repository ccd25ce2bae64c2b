"""Kubernetes Events: what the operator tells people about an object, beside its status."""

from __future__ import annotations

import logging
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


def api_event_poster(cluster: Cluster) -> EventPoster:
    """Events created with the operator's own API client, from any thread.

    An Event that cannot be created is logged and dropped: it never fails the
    reconcile that told it (the status says the same).
    """

    def post(obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        body = event_body(obj, event_type, reason, message, timestamp_text(time.time()))
        try:
            cluster.create_event(body)
        except Exception as error:
            log.warning("Event %s for %s not posted: %s", reason, obj["metadata"]["name"], error)

    return post
