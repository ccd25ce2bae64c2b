"""Does a live object already hold what an apply would set (k8s/drift.py), and API timeouts."""

from __future__ import annotations

import socket
import threading
from fractions import Fraction
from typing import Any

import kubernetes
import pytest

from secondary_dns.api import ObjectRef, parse_secondary_server
from secondary_dns.api.quantity import value as quantity
from secondary_dns.k8s.api import KubernetesTransport
from secondary_dns.k8s.drift import matches
from secondary_dns.render import children
from tests.handlers_harness import server_manifest

SERVER = children.ServerIdentity(ObjectRef("dns", "edge"), "uid-1", {})


def statefulset() -> dict[str, Any]:
    spec = parse_secondary_server({**server_manifest(), "metadata": {"name": "edge"}})
    return children.build_statefulset(SERVER, spec, "abc")


def as_live(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server would store: defaults added, fields of other managers too."""
    live = {**desired, "metadata": {**desired["metadata"], "uid": "x", "resourceVersion": "7"}}
    spec = dict(live["spec"])
    template = dict(spec["template"])
    pod = dict(template["spec"])
    pod["containers"] = [
        {**container, "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "X"}
        for container in pod["containers"]
    ] + [{"name": "injected-sidecar", "image": "mesh"}]
    pod["dnsPolicy"] = "ClusterFirst"
    template["spec"] = pod
    spec["template"] = template
    spec["revisionHistoryLimit"] = 10
    live["spec"] = spec
    live["status"] = {"replicas": 3}
    return live


def test_defaults_and_other_managers_fields_are_not_drift() -> None:
    desired = statefulset()
    assert matches(desired, as_live(desired))


def test_a_changed_or_missing_field_of_ours_is_drift() -> None:
    desired = statefulset()
    live = as_live(desired)
    live["spec"] = {**live["spec"], "replicas": 5}
    assert not matches(desired, live)
    assert not matches(desired, None)
    live = as_live(desired)
    containers = live["spec"]["template"]["spec"]["containers"]
    live["spec"]["template"]["spec"]["containers"] = [c for c in containers if c["name"] != "agent"]
    assert not matches(desired, live)


def test_rules_are_atomic_lists_a_widened_role_is_drift() -> None:
    role = next(obj for obj in children.build_agent_rbac(SERVER, 3) if obj["kind"] == "Role")
    live = {**role, "metadata": {**role["metadata"], "resourceVersion": "3"}}
    assert matches(role, live)
    widened = [*role["rules"], {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert not matches(role, {**live, "rules": widened})


def test_config_map_data_is_compared_whole_and_secrets_as_stored() -> None:
    desired = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "dns"},
        "data": {"a": "1"},
    }
    assert matches(desired, {**desired, "metadata": {"name": "c", "namespace": "dns", "uid": "u"}})
    assert not matches(desired, {**desired, "data": {"a": "1", "stale": "2"}})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "dns"},
        "stringData": {"k": "v"},
    }
    stored = {"metadata": {"name": "s", "namespace": "dns", "uid": "u"}, "type": "Opaque"}
    assert matches(secret, {**stored, "data": {"k": "dg=="}})
    assert not matches(secret, {**stored, "data": {"k": "dw=="}})


def test_quantities_compare_by_value() -> None:
    assert quantity("0.5") == quantity("500m")
    assert quantity("1Gi") == quantity(str(2**30))
    assert quantity("1e3") == quantity("1k")
    assert quantity("abc") is None and quantity(True) is None
    assert quantity("1e1.5") is None and quantity("Mi") is None and quantity(".") is None
    assert quantity("100m") == Fraction(1, 10) and quantity("1.5Ki") == 1536
    desired = {"kind": "Pod", "spec": {"cpu": "0.5", "on": True}}
    assert matches(desired, {"spec": {"cpu": "500m", "on": True}})
    assert not matches(desired, {"spec": {"cpu": "500m", "on": "true"}})


def test_an_api_server_that_never_answers_fails_the_call_instead_of_hanging() -> None:
    """Issue 13, item 6: every request has a read timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{listener.getsockname()[1]}"
    configuration.retries = False
    transport = KubernetesTransport(kubernetes.client.ApiClient(configuration), timeout=(1, 0.2))
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            transport.request("GET", "/api/v1/namespaces/dns/configmaps/x")
        except BaseException as error:  # noqa: BLE001 - what the call ended with
            outcome.append(error)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    # A guard so a regression fails here instead of hanging the suite (not a speed check).
    caller.join(60)
    listener.close()
    for connection in accepted:
        connection.close()
    assert not caller.is_alive(), "the request hung"
    assert outcome and "timed out" in str(outcome[0]).lower(), outcome


@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_every_request_passes_its_timeout_to_the_client(method: str) -> None:
    seen: dict[str, Any] = {}

    class Response:
        status = 200
        reason = "OK"

        def read(self) -> bytes:
            return b"{}"

    class Client:
        def param_serialize(self, **kwargs: Any) -> tuple[str, str, dict[str, str], None, None]:
            return kwargs["method"], "http://x" + kwargs["resource_path"], {}, None, None

        def call_api(self, *args: Any, **kwargs: Any) -> Response:
            seen.update(kwargs)
            return Response()

    transport = KubernetesTransport(Client(), timeout=(5.0, 30.0))  # type: ignore[arg-type]
    transport.request(method, "/api/v1/namespaces/dns/configmaps/x")
    assert seen["_request_timeout"] == (5.0, 30.0)
