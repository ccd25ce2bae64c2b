"""Events: created with the operator's own client, off the caller's thread, never failing work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException

from secondary_dns.handlers.events import MAX_EVENT_MESSAGE, ApiEventPoster, event_body
from secondary_dns.k8s.api import Cluster

ZONE = {
    "apiVersion": "secondarydns.io/v1alpha1",
    "kind": "Zone",
    "metadata": {"name": "example", "namespace": "dns", "uid": "u-1"},
}


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[tuple[str, str, Any]] = []

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> Any:
        if self.fail:
            raise ApiException(403, "Forbidden")
        self.sent.append((method, path, body))
        return body

    def watch(self, path: str, *, query: Any, timeout_seconds: int) -> Any:
        return iter(())


def test_an_event_names_the_object_and_is_cut_to_the_limit() -> None:
    body = event_body(ZONE, "Warning", "SecretNotFound", "x" * 5000, "2026-01-01T00:00:00Z")
    assert body["involvedObject"] == {
        "apiVersion": "secondarydns.io/v1alpha1",
        "kind": "Zone",
        "name": "example",
        "namespace": "dns",
        "uid": "u-1",
    }
    assert body["metadata"] == {"generateName": "example.", "namespace": "dns"}
    assert len(body["message"]) == MAX_EVENT_MESSAGE
    assert (body["type"], body["reason"], body["count"]) == ("Warning", "SecretNotFound", 1)


def test_events_are_posted_and_a_refused_one_is_only_logged() -> None:
    transport = Recorder()
    poster = ApiEventPoster(Cluster(transport))
    poster(ZONE, "Normal", "Rendered", "served")
    poster.flush()
    ((method, path, body),) = transport.sent
    assert (method, path, body["reason"]) == ("POST", "/api/v1/namespaces/dns/events", "Rendered")
    refusing = ApiEventPoster(Cluster(Recorder(fail=True)))
    refusing(ZONE, "Normal", "Rendered", "served")
    refusing.flush()
