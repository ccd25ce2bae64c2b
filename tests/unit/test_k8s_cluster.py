"""k8s.api.Cluster against the in-memory API server: one apply path, status only when changed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from secondary_dns import cli
from secondary_dns.api import ZONE_PLURAL
from secondary_dns.handlers.monitor import STATUS_WRITERS
from secondary_dns.handlers.watches import WATCHED_CHILDREN
from secondary_dns.k8s.api import FIELD_MANAGER, Cluster, new_api_client, written_resource
from tests.fake_cluster import FakeApiServer, custom_resource

NS = "dns"


def config_map(data: Mapping[str, str], labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "edge-config", "namespace": NS, "labels": dict(labels or {})},
        "data": dict(data),
    }


def test_apply_creates_then_an_identical_apply_writes_nothing() -> None:
    server = FakeApiServer()
    assert Cluster(server).apply(config_map({"a": "1"}))
    created = server.get("v1", "ConfigMap", NS, "edge-config")
    assert created is not None and created["data"] == {"a": "1"}
    # Another process (an operator restart) sends the same object: the API server
    # keeps the object as it is, resourceVersion included.
    Cluster(server).apply(config_map({"a": "1"}))
    again = server.get("v1", "ConfigMap", NS, "edge-config")
    assert again == created
    # The same process does not even send it.
    cluster = Cluster(server)
    cluster.apply(config_map({"a": "1"}))
    requests = len(server.requests)
    assert not cluster.apply(config_map({"a": "1"}))
    assert len(server.requests) == requests


def test_apply_removes_what_the_manager_dropped_and_keeps_other_managers_fields() -> None:
    server = FakeApiServer()
    cluster = Cluster(server)
    cluster.apply(config_map({"a": "1", "b": "2"}))
    # Someone else (kubectl) adds a label of their own.
    server.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "edge-config", "namespace": NS, "labels": {"team": "dns"}},
        },
        "kubectl",
    )
    cluster.apply(config_map({"a": "1"}))
    current = server.get("v1", "ConfigMap", NS, "edge-config")
    assert current is not None
    assert current["data"] == {"a": "1"}
    assert current["metadata"]["labels"] == {"team": "dns"}
    managers = server.objects[("v1", "configmaps", NS, "edge-config")].managed
    assert set(managers) == {FIELD_MANAGER, "kubectl"}


def test_a_field_of_another_manager_is_taken_only_with_force() -> None:
    server = FakeApiServer()
    server.apply(config_map({"a": "kubectl's"}), "kubectl")
    with pytest.raises(ApiException) as caught:
        server.apply(config_map({"a": "ours"}), FIELD_MANAGER, force=False)
    assert caught.value.status == 409
    # The operator applies with force: its desired state wins (drift is corrected).
    Cluster(server).apply(config_map({"a": "ours"}))
    current = server.get("v1", "ConfigMap", NS, "edge-config")
    assert current is not None and current["data"] == {"a": "ours"}


def test_status_is_written_only_when_it_changed() -> None:
    server = FakeApiServer()
    server.apply(custom_resource("Zone", NS, "example", {"zone": "example.com"}))
    cluster = Cluster(server)
    assert cluster.update_status(ZONE_PLURAL, NS, "example", lambda _: {"zone": "example.com."})
    version = server.versions()
    assert not cluster.update_status(ZONE_PLURAL, NS, "example", lambda _: {"zone": "example.com."})
    assert server.versions() == version
    # A field no longer computed is removed, not left behind.
    assert cluster.update_status(ZONE_PLURAL, NS, "example", lambda _: {"synced": "0/0"})
    zone = server.get("secondarydns.io/v1alpha1", "Zone", NS, "example")
    assert zone is not None and zone["status"] == {"synced": "0/0"}
    # Each under the operator's name, as its applies are (managedFields tell it apart).
    assert server.status_managers == [FIELD_MANAGER, FIELD_MANAGER]


def test_status_computed_from_a_stale_copy_is_recomputed_after_a_conflict() -> None:
    server = FakeApiServer()
    server.apply(custom_resource("Zone", NS, "example", {"zone": "example.com"}))
    stale = server.get("secondarydns.io/v1alpha1", "Zone", NS, "example")
    assert stale is not None
    # Another writer (the serial monitor) writes first.
    server.set_status(stale, {"primarySerial": 7})
    seen: list[Mapping[str, Any]] = []

    def compute(current: Mapping[str, Any]) -> Mapping[str, Any]:
        seen.append(dict(current.get("status") or {}))
        return {**(current.get("status") or {}), "zone": "example.com."}

    assert Cluster(server).update_status(ZONE_PLURAL, NS, "example", compute, cached=stale)
    # First from the stale copy (409), then from the object as it is now.
    assert seen == [{}, {"primarySerial": 7}]
    zone = server.get("secondarydns.io/v1alpha1", "Zone", NS, "example")
    assert zone is not None and zone["status"] == {"primarySerial": 7, "zone": "example.com."}


def test_missing_objects_are_none_and_deleting_them_twice_is_harmless() -> None:
    server = FakeApiServer()
    cluster = Cluster(server)
    assert cluster.get_zone(NS, "nosuch") is None
    assert not cluster.update_status(ZONE_PLURAL, NS, "nosuch", lambda _: {"a": 1})
    cluster.apply(config_map({"a": "1"}))
    cluster.delete("v1", "ConfigMap", NS, "edge-config")
    cluster.delete("v1", "ConfigMap", NS, "edge-config")
    assert server.get("v1", "ConfigMap", NS, "edge-config") is None


def test_lists_are_filtered_by_namespace_and_labels() -> None:
    server = FakeApiServer()
    cluster = Cluster(server)
    cluster.apply(config_map({"a": "1"}, {"secondarydns.io/server": "edge"}))
    other = config_map({"b": "2"}, {"secondarydns.io/server": "core"})
    other["metadata"]["name"] = "core-config"
    cluster.apply(other)
    found = cluster.list_children("v1", "ConfigMap", NS, "secondarydns.io/server=edge")
    assert [c["metadata"]["name"] for c in found] == ["edge-config"]
    assert cluster.list_children("v1", "ConfigMap", "other", "secondarydns.io/server=edge") == []


def test_the_api_server_s_own_addresses_come_from_the_kubernetes_endpoint_slices() -> None:
    server = FakeApiServer()
    cluster = Cluster(server)
    assert cluster.api_server_endpoints() == []
    for name, service, address in (
        ("kubernetes", "kubernetes", "10.0.0.1"),
        ("other-abc", "other", "10.9.9.9"),  # another Service's slice: not the API server
    ):
        server.apply(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": name,
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [address]}],
                "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
            }
        )
    assert cluster.api_server_endpoints() == [("10.0.0.1", 6443)]


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/api/v1/namespaces/dns/configmaps/edge-config", "configmaps"),
        ("/api/v1/namespaces/dns/events", "events"),
        ("/apis/secondarydns.io/v1alpha1/namespaces/dns/zones/z/status", "zones/status"),
        (
            "/apis/secondarydns.io/v1alpha1/namespaces/dns/secondaryservers/s/status",
            "secondaryservers/status",
        ),
        ("/apis/apps/v1/namespaces/dns/statefulsets/edge", "statefulsets"),
        ("/api/v1/nodes/node-a", "nodes"),
        ("/api/v1/namespaces/dns", "namespaces"),
    ],
)
def test_a_write_is_counted_by_the_resource_its_path_names(path: str, resource: str) -> None:
    assert written_resource(path) == resource


def test_the_api_client_keeps_a_connection_for_every_request_under_way_at_once(
    tmp_path: Path,
) -> None:
    """A watch per kind, the serial monitor's status writers and the workers each hold a
    connection; a request beyond the pool opens (and then closes) one of its own, a TLS
    handshake each (the client's default pool is 5 per CPU: 10 on 2 cores)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://192.0.2.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    client = new_api_client(str(kubeconfig))
    watches = 3 + len(WATCHED_CHILDREN)  # SecondaryServers, Zones, Pods and the children
    under_way = watches + STATUS_WRITERS + int(cli.build_parser().parse_args(["operator"]).workers)
    assert client.rest_client.pool_manager.connection_pool_kw["maxsize"] >= under_way
