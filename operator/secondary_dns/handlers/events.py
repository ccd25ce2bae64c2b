"""Kubernetes Events: what the operator tells people about an object, beside its status."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf

# (object, event type, reason, message): posted as a Kubernetes Event.
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]

# An Event's message is cut here: longer ones are refused by some clusters.
MAX_EVENT_MESSAGE = 1024


def post_kopf_event(obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
    """Post through kopf (its queue batches Events off the handler's thread)."""
    body: kopf.RawBody = {
        "apiVersion": str(obj.get("apiVersion")),
        "kind": str(obj.get("kind")),
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
        },
    }
    kopf.event(kopf.Body(body), type=event_type, reason=reason, message=message[:MAX_EVENT_MESSAGE])
