"""The reconcile paths against an in-memory API server: what a user would see in the cluster.

The cluster tier proves the same paths against a real API server; these run in
seconds without one, so every branch of the reconciler gets a test.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import dns.name
import pytest
from kubernetes.client.exceptions import ApiException

from secondary_dns.api import ObjectRef, ZoneSpec
from secondary_dns.render.shards import shard_of
from tests.fake_cluster import FakeApiServer, run_statefulset
from tests.handlers_harness import (
    API,
    NS,
    TSIG_SECRET,
    Operator,
    condition,
    declared_namespace,
    server_manifest,
    start_operator,
    tsig_secret,
    zone_manifest,
)


def served_zones(server: FakeApiServer, name: str = "edge") -> list[str]:
    """The zones of every shard the root ConfigMap names."""
    root = server.get("v1", "ConfigMap", NS, f"{name}-config")
    assert root is not None
    zones: list[str] = []
    for shard in json.loads(root["data"]["shards.json"]):
        config = server.get("v1", "ConfigMap", NS, f"{name}-zones-{shard}")
        assert config is not None
        zones += json.loads(config["data"]["zones.json"])
    return sorted(zones)


def configured_text(server: FakeApiServer, name: str = "edge") -> str:
    """The engine's zone statements: every shard's file the root names."""
    root = server.get("v1", "ConfigMap", NS, f"{name}-config")
    assert root is not None
    text = ""
    for shard in json.loads(root["data"]["shards.json"]):
        config = server.get("v1", "ConfigMap", NS, f"{name}-zones-{shard}")
        assert config is not None
        text += config["data"][f"zones-{shard}.conf"]
    return text


@pytest.fixture
def api() -> FakeApiServer:
    return declared_namespace()


@pytest.fixture
def operator(api: FakeApiServer) -> Operator:
    return start_operator(api)


def zone(api: FakeApiServer, name: str = "example-com") -> dict[str, Any] | None:
    return api.get(API, "Zone", NS, name)


def test_a_server_gets_its_children_owned_and_a_status(
    api: FakeApiServer, operator: Operator
) -> None:
    owner = api.get(API, "SecondaryServer", NS, "edge")
    assert owner is not None
    operator.reconcile_server("edge")

    owned = sorted(
        (obj["kind"], obj["metadata"]["name"])
        for obj in (stored.obj for stored in api.objects.values())
        if [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or []]
        == [owner["metadata"]["uid"]]
    )
    assert owned == [
        ("ConfigMap", "edge-config"),
        ("ConfigMap", f"edge-zones-{shard_of(dns.name.from_text('example.com.'))}"),
        ("NetworkPolicy", "edge"),
        ("PodDisruptionBudget", "edge"),
        ("Role", "edge-agent"),
        ("RoleBinding", "edge-agent"),
        ("Secret", "edge-keys"),
        ("Secret", "edge-relay-key"),
        ("Service", "edge"),
        ("Service", "edge-pods"),
        ("ServiceAccount", "edge-agent"),
        ("StatefulSet", "edge"),
    ]
    assert served_zones(api) == ["example.com."]
    statefulset = api.get("apps/v1", "StatefulSet", NS, "edge")
    assert statefulset is not None and statefulset["spec"]["replicas"] == 3
    server = api.get(API, "SecondaryServer", NS, "edge")
    assert condition(server, "Ready")["reason"] == "ReplicasNotReady"
    assert condition(server, "Reconciling")["status"] == "True"
    assert condition(zone(api), "ConfigValid")["reason"] == "Rendered"
    assert condition(zone(api), "Ready")["reason"] == "Progressing"
    assert ("SecondaryServer", "edge", "Normal", "Created") in operator.events


def test_ready_replicas_make_the_server_ready_and_the_zone_await_serials(
    api: FakeApiServer, operator: Operator
) -> None:
    operator.reconcile_server("edge")
    run_statefulset(api, NS, "edge")
    operator.pods_changed("edge")

    server = api.get(API, "SecondaryServer", NS, "edge")
    assert condition(server, "Ready")["status"] == "True"
    assert server is not None and server["status"]["failureDomains"] == {
        "zone-a": 1,
        "zone-b": 1,
        "zone-c": 1,
    }
    assert condition(server, "Spread")["reason"] == "SpreadSatisfied"
    ready = condition(zone(api), "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "AwaitingSerials")


def test_a_new_notify_address_reaches_the_server_and_every_zone(
    api: FakeApiServer, operator: Operator
) -> None:
    operator.reconcile_server("edge")
    run_statefulset(api, NS, "edge")
    operator.pods_changed("edge")
    operator.probe("example.com.", 5, [5, 5, 5], 1.0)
    operator.catch_up()
    assert condition(zone(api), "Synced")["status"] == "True"
    # In sync, the Zone's status follows nothing a server's resync reads: only the
    # address itself makes it written (a LoadBalancer got its ingress, found by
    # tests/cluster/test_chart.py).
    operator.controller.set_notify_address("192.0.2.53")
    operator.controller.drain()

    server = api.get(API, "SecondaryServer", NS, "edge")
    assert server is not None and server["status"]["notifyAddress"] == "192.0.2.53"
    assert (zone(api) or {})["status"]["notifyAddress"] == "192.0.2.53"


def test_a_zone_with_a_missing_secret_is_left_out_until_the_secret_appears(
    api: FakeApiServer, operator: Operator
) -> None:
    keyed = zone_manifest(
        "signed",
        "signed.example",
        primaries=[{"address": "192.0.2.2", "tsigKeySecretRef": {"name": "tsig"}}],
    )
    api.apply(keyed)
    operator.reconcile_server("edge")

    missing = condition(zone(api, "signed"), "ConfigValid")
    assert (missing["status"], missing["reason"]) == ("False", "SecretNotFound")
    assert "tsig" in missing["message"]
    assert condition(zone(api, "signed"), "Ready")["reason"] == "SecretNotFound"
    assert served_zones(api) == ["example.com."]  # the other zone is served
    assert ("Zone", "signed", "Warning", "SecretNotFound") in operator.events

    api.apply(tsig_secret())
    operator.secret_retry()
    assert condition(zone(api, "signed"), "ConfigValid")["reason"] == "Rendered"
    assert served_zones(api) == ["example.com.", "signed.example."]
    assert ("Zone", "signed", "Normal", "Rendered") in operator.events
    keys = api.get("v1", "Secret", NS, "edge-keys")
    assert keys is not None
    key_file = base64.b64decode(keys["data"]["tsig-keys.conf"]).decode()
    assert 'key "tsig"' in key_file and TSIG_SECRET in key_file


def test_a_changed_zone_reaches_the_configuration_and_the_network_policy(
    api: FakeApiServer, operator: Operator
) -> None:
    operator.reconcile_server("edge")
    before = api.get("v1", "ConfigMap", NS, "edge-config")
    assert before is not None

    api.apply(zone_manifest(primaries=[{"address": "2001:db8::53", "port": 5353}]))
    operator.zone_changed("example-com")

    after = api.get("v1", "ConfigMap", NS, "edge-config")
    assert after is not None
    assert "2001:db8::53 port 5353" in configured_text(api)
    hash_key = "secondarydns.io/config-hash"
    assert after["metadata"]["annotations"][hash_key] != before["metadata"]["annotations"][hash_key]
    policy = api.get("networking.k8s.io/v1", "NetworkPolicy", NS, "edge")
    assert policy is not None
    blocks = [rule["to"][0]["ipBlock"]["cidr"] for rule in policy["spec"]["egress"] if "to" in rule]
    assert blocks == ["2001:db8::53/128"]
    updated = zone(api)
    assert updated is not None and updated["metadata"]["generation"] == 2
    assert updated["status"]["observedGeneration"] == 2
    assert condition(updated, "ConfigValid")["observedGeneration"] == 2


def test_a_deleted_zone_leaves_the_configuration(api: FakeApiServer, operator: Operator) -> None:
    api.apply(zone_manifest("other", "other.example"))
    operator.reconcile_server("edge")
    assert served_zones(api) == ["example.com.", "other.example."]

    api.delete(API, "Zone", NS, "other")
    operator.zone_changed("other")
    assert served_zones(api) == ["example.com."]
    server = api.get(API, "SecondaryServer", NS, "edge")
    assert server is not None and server["status"]["zones"] == 1


def test_nothing_is_written_when_nothing_changed_also_after_a_restart(
    api: FakeApiServer, operator: Operator
) -> None:
    operator.reconcile_server("edge")
    run_statefulset(api, NS, "edge")
    operator.pods_changed("edge")
    versions, writes = api.versions(), len(api.writes)

    # A resync, an event for the zone and for the pods: the world is as declared.
    operator.reconcile_server("edge")
    operator.zone_changed("example-com")
    operator.pods_changed("edge")
    assert api.writes[writes:] == []
    assert api.versions() == versions

    # A new operator process: its watch caches show every child as it should be, so
    # it sends no apply at all; no status is rewritten.
    restarted = start_operator(api)
    requests = len(api.requests)
    restarted.reconcile_server("edge")
    restarted.zone_changed("example-com")
    assert [r for r in api.requests[requests:] if r[0] not in ("GET", "WATCH")] == []
    assert api.writes[writes:] == []
    assert api.versions() == versions
    assert not [event for event in restarted.events if event[3] == "Created"]


def test_a_resync_that_changes_nothing_keeps_the_published_states_and_targets(
    api: FakeApiServer, operator: Operator
) -> None:
    operator.reconcile_server("edge")
    run_statefulset(api, NS, "edge")
    operator.pods_changed("edge")
    states, targets = operator.controller.states.all(), operator.controller.monitored_zones()
    operator.resync()
    operator.reconcile_server("edge")
    # The same objects: the monitor rebuilds no routes or schedule for nothing.
    assert operator.controller.states.all() is states
    assert operator.controller.monitored_zones() is targets
    # A change is published anew.
    api.apply(zone_manifest("other", "other.example"))
    operator.zone_changed("other")
    assert operator.controller.states.all() is not states
    assert len(operator.controller.monitored_zones()) == 2


def test_a_zone_seen_before_its_new_server_is_reconciled_is_not_a_fault(
    api: FakeApiServer, operator: Operator
) -> None:
    """Server and Zone applied together: the Zone's work may run first. It must not
    say NoServersSelected (Stalled: Flux would fail at once) while the server's
    reconcile is on its way (found by tests/cluster/test_operator.py)."""
    operator.sync_caches()
    operator.controller.zones.refresh(NS, "example-com")
    for type_, status in (("ConfigValid", "Unknown"), ("Stalled", "False")):
        found = condition(zone(api), type_)
        assert (found["status"], found["reason"]) == (status, "ServerNotReconciled")
    operator.catch_up()
    assert condition(zone(api), "ConfigValid")["reason"] == "Rendered"


def test_a_new_leader_listing_zones_before_their_servers_writes_no_zone_status(
    api: FakeApiServer, operator: Operator
) -> None:
    """A Zone seen before its server must not look served by none for a moment:
    ConfigValid would flap False and back (a takeover or restart, issue 12)."""
    operator.reconcile_server("edge")
    run_statefulset(api, NS, "edge")
    operator.pods_changed("edge")
    versions, writes = api.versions(), len(api.writes)

    restarted = start_operator(api)
    restarted.controller.listing = True  # as handlers/operator.py starts the caches
    # The Zones' cache lists first, then every other one.
    zones_first = sorted(restarted.informers, key=lambda i: i.resource.kind != "Zone")
    for informer in zones_first:
        informer.watch_once()
    restarted.controller.caches_synced()
    restarted.controller.drain()
    restarted.resync()
    assert api.writes[writes:] == []
    assert api.versions() == versions
    assert condition(zone(api), "ConfigValid")["status"] == "True"


def test_caches_synced_gives_a_zone_served_by_no_server_its_status(api: FakeApiServer) -> None:
    api.apply(zone_manifest("orphan", "orphan.example.", servers=["nowhere"]))
    fresh = start_operator(api)
    fresh.controller.listing = True
    fresh.sync_caches()
    fresh.controller.drain()
    assert (zone(api, "orphan") or {}).get("status") is None  # nothing decided while listing
    fresh.controller.caches_synced()
    fresh.controller.drain()
    assert condition(zone(api, "orphan"), "ConfigValid")["status"] == "False"


def test_status_is_written_only_when_it_changes(api: FakeApiServer, operator: Operator) -> None:
    operator.reconcile_server("edge")
    status_writes = [path for _, path in api.writes if path.endswith("/status")]
    # One status write per object: the server's, the zone's.
    assert sorted(status_writes) == [
        f"/apis/{API}/namespaces/{NS}/secondaryservers/edge/status",
        f"/apis/{API}/namespaces/{NS}/zones/example-com/status",
    ]
    # Pods that are not ready change nothing a status shows.
    run_statefulset(api, NS, "edge", ready=False)
    operator.pods_changed("edge")
    assert [path for _, path in api.writes if path.endswith("/status")] == status_writes
    # Ready ones do: the server is Ready, the zone awaits serials; once each.
    run_statefulset(api, NS, "edge")
    operator.pods_changed("edge")
    operator.pods_changed("edge")
    later = [path for _, path in api.writes if path.endswith("/status")]
    assert sorted(later[len(status_writes) :]) == sorted(status_writes)


def test_an_invalid_stored_zone_stalls_alone(api: FakeApiServer, operator: Operator) -> None:
    # Stored before the schema existed: the API server never checked it.
    api.apply(zone_manifest("old", "bad..name"))
    operator.reconcile_server("edge")
    operator.zone_changed("old")

    stalled = condition(zone(api, "old"), "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert "spec.zone" in stalled["message"]
    assert condition(zone(api, "old"), "Ready")["status"] == "False"
    assert served_zones(api) == ["example.com."]


def test_a_zone_naming_an_unknown_server_says_so(api: FakeApiServer, operator: Operator) -> None:
    api.apply(zone_manifest(servers=["edge", "nosuch"]))
    operator.zone_changed("example-com")
    missing = condition(zone(api), "ConfigValid")
    assert (missing["status"], missing["reason"]) == ("False", "ServerNotFound")
    assert "nosuch" in missing["message"]


def test_a_deleted_server_is_left_to_garbage_collection(
    api: FakeApiServer, operator: Operator
) -> None:
    operator.reconcile_server("edge")
    api.delete(API, "SecondaryServer", NS, "edge")
    writes = len(api.writes)
    operator.reconcile_server("edge")
    # Nothing recreated; the Zone says its server is gone.
    assert [w for w in api.writes[writes:] if not w[1].endswith("/status")] == []
    assert condition(zone(api), "ConfigValid")["reason"] == "ServerNotFound"
    api.collect_garbage()
    assert api.get("apps/v1", "StatefulSet", NS, "edge") is None


def test_an_invalid_server_is_stalled_and_nothing_is_applied(
    api: FakeApiServer, operator: Operator
) -> None:
    api.apply(server_manifest(replicas=0))
    operator.reconcile_server("edge")
    server = api.get(API, "SecondaryServer", NS, "edge")
    stalled = condition(server, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert "spec.replicas" in stalled["message"]
    assert api.all("StatefulSet", NS) == []
    assert ("SecondaryServer", "edge", "Warning", "InvalidSpec") in operator.events


def test_a_zone_the_planner_left_out_reaches_no_policy_probe_or_relay_route(
    api: FakeApiServer, operator: Operator
) -> None:
    # Valid for the API server, left out by the planner: its key's Secret is missing.
    api.apply(
        zone_manifest(
            "signed",
            "signed.example",
            primaries=[{"address": "198.51.100.9", "tsigKeySecretRef": {"name": "tsig"}}],
        )
    )
    operator.reconcile_server("edge")
    assert condition(zone(api, "signed"), "ConfigValid")["reason"] == "SecretNotFound"

    policy = api.get("networking.k8s.io/v1", "NetworkPolicy", NS, "edge")
    assert policy is not None
    blocks = [rule["to"][0]["ipBlock"]["cidr"] for rule in policy["spec"]["egress"] if "to" in rule]
    assert blocks == ["192.0.2.1/32"]
    monitored = operator.monitored_zones()
    assert sorted(monitored) == ["example.com."]
    assert [str(p) for p in monitored["example.com."].primaries] == ["192.0.2.1:53"]
    assert [str(n) for n in monitored["example.com."].notify_sources] == ["192.0.2.1/32"]


def test_a_zone_whose_primary_is_in_the_refused_networks_is_left_out(api: FakeApiServer) -> None:
    """--refused-primary-networks (the cluster's Service range): that Zone only (issue 13)."""
    operator = start_operator(api, refused_primary_networks=("10.96.0.0/12",))
    api.apply(
        zone_manifest("kube-api", "kube.example", primaries=[{"address": "10.96.0.1", "port": 443}])
    )
    operator.reconcile_server("edge")
    found = condition(zone(api, "kube-api"), "ConfigValid")
    assert (found["status"], found["reason"]) == ("False", "PrimaryNotAllowed")
    assert "spec.primaries[0].address 10.96.0.1 is inside 10.96.0.0/12" in found["message"]
    assert condition(zone(api), "ConfigValid")["status"] == "True"
    # Neither probed nor relayed.
    assert sorted(operator.monitored_zones()) == ["example.com."]


def test_a_zone_open_to_any_address_gets_transfer_open(
    api: FakeApiServer, operator: Operator
) -> None:
    operator.reconcile_server("edge")
    assert condition(zone(api), "TransferOpen")["status"] == "False"
    api.apply(zone_manifest(allowTransfer=[{"cidr": "0.0.0.0/0"}]))
    operator.zone_changed("example-com")
    found = condition(zone(api), "TransferOpen")
    assert (found["status"], found["reason"]) == ("True", "OpenToAnyAddress")
    assert condition(zone(api), "ConfigValid")["status"] == "True"


def test_children_changed_out_of_band_are_put_back_and_nothing_else_is_written(
    api: FakeApiServer, operator: Operator
) -> None:
    """Issue 13, item 1: drift is repaired from the child's watch event and by the resync."""
    operator.reconcile_server("edge")
    run_statefulset(api, NS, "edge")
    operator.pods_changed("edge")
    rbac = "rbac.authorization.k8s.io/v1"
    role = api.get(rbac, "Role", NS, "edge-agent")
    policy = api.get("networking.k8s.io/v1", "NetworkPolicy", NS, "edge")
    statefulset = api.get("apps/v1", "StatefulSet", NS, "edge")
    assert role is not None and policy is not None and statefulset is not None

    # Nothing drifted: neither an event nor a resync sends a single write.
    requests = len(api.requests)
    operator.resync()
    assert [r for r in api.requests[requests:] if r[0] not in ("GET", "WATCH")] == []

    # Someone widens the agent's Role by hand: narrowed again at the Role's event.
    widened = {
        "apiVersion": rbac,
        "kind": "Role",
        "metadata": {"name": "edge-agent", "namespace": NS},
        "rules": [*role["rules"], {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
    }
    api.apply(widened)
    operator.catch_up()
    assert (api.get(rbac, "Role", NS, "edge-agent") or {})["rules"] == role["rules"]

    # Someone deletes the NetworkPolicy and the StatefulSet: created again.
    api.delete("networking.k8s.io/v1", "NetworkPolicy", NS, "edge")
    api.delete("apps/v1", "StatefulSet", NS, "edge")
    operator.catch_up()
    assert (api.get("networking.k8s.io/v1", "NetworkPolicy", NS, "edge") or {}).get(
        "spec"
    ) == policy["spec"]
    back = api.get("apps/v1", "StatefulSet", NS, "edge")
    assert back is not None and back["spec"] == statefulset["spec"]

    # A Secret it owns (not watched) deleted by hand: put back at the next resync.
    api.delete("v1", "Secret", NS, "edge-keys")
    operator.resync()
    assert api.get("v1", "Secret", NS, "edge-keys") is not None


def test_one_zones_failing_status_write_keeps_neither_the_others_nor_the_monitor_back(
    api: FakeApiServer, operator: Operator
) -> None:
    """Issue 13, item 6: each Zone's write on its own; an API error is not a stopped round."""
    api.apply(zone_manifest("other", "other.example"))
    api.fail("PATCH", "/zones/example-com/status", ApiException(500, "etcd timeout"), times=1)
    operator.catch_up()
    # The other Zone was written although example-com's write failed first.
    assert condition(zone(api, "other"), "ConfigValid")["reason"] == "Rendered"
    assert "status" not in (zone(api) or {})
    # The failed work is tried again (here: by hand, as its retry timer would).
    operator.reconcile_server("edge")
    assert condition(zone(api), "ConfigValid")["reason"] == "Rendered"

    # The serial monitor: a failing status write still gives the evaluation (its
    # repairs go out), and the next zone of the round is written.
    run_statefulset(api, NS, "edge")
    operator.pods_changed("edge")
    api.fail("PATCH", "/zones/example-com/status", TimeoutError("read timed out"), times=1)
    target = operator.monitored_zones()["example.com."]
    assert operator.monitor.record(target, [], [], 0.0) is not None
    operator.probe("other.example.", 5, [5, 5, 5], 1.0)
    assert condition(zone(api, "other"), "Synced")["status"] == "True"


def test_the_monitor_is_told_of_a_new_zone_once_the_state_that_serves_it_is_published(
    api: FakeApiServer, operator: Operator
) -> None:
    """The serial monitor reads what to probe when it is poked; a poke before the
    server's new state was published showed it the old one, and a new Zone waited
    for the monitor's next report round (up to 10 s) to be probed at all."""
    operator.reconcile_server("edge")
    seen: list[set[str]] = []
    operator.controller.on_change = lambda: seen.append(
        {zone.ref.name for zone in operator.controller.monitored_zones()}
    )
    api.apply(zone_manifest("new-zone", "new.example"))
    operator.zone_changed("new-zone")
    assert seen and "new-zone" in seen[-1]


def test_a_publish_writes_its_shards_at_once_and_the_root_after_every_one(
    api: FakeApiServer, operator: Operator
) -> None:
    """A burst of new Zones touches many shards: they are written concurrently (each
    a round trip to the API server), and the root that names them only once all are."""
    names = [f"z{index}.example" for index in range(24)]
    for index, name in enumerate(names):
        api.apply(zone_manifest(f"z{index}", name))
    assert len({shard_of(dns.name.from_text(name)) for name in names}) > 8
    in_flight, most, order = [0], [0], []
    lock = threading.Lock()
    forward = api.request

    def request(method: str, path: str, **kwargs: Any) -> Any:
        shard = method == "PATCH" and "/configmaps/edge-zones-" in path
        if shard:
            with lock:
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])
            time.sleep(0.05)  # the round trip a real API server takes
        try:
            return forward(method, path, **kwargs)
        finally:
            if method == "PATCH" and "/configmaps/edge-" in path:
                with lock:
                    order.append(path.rsplit("/", 1)[1])
                    in_flight[0] -= shard

    api.request = request  # type: ignore[method-assign]
    operator.reconcile_server("edge")

    assert most[0] > 1
    assert order[-1] == "edge-config"
    assert len(order) - 1 == len(
        {shard_of(dns.name.from_text(name)) for name in [*names, "example.com"]}
    )
    assert served_zones(api) == sorted([f"{name}." for name in names] + ["example.com."])


def test_zones_naming_the_same_key_secret_share_what_the_planner_keeps_of_it() -> None:
    """The Secrets each Zone names are kept (to redraft its users when one changes): one
    set for all the Zones that name the same ones, and each is still served with it."""
    api = declared_namespace()
    api.apply(tsig_secret())
    for name, zone in (("example-com", "example.com"), ("example-org", "example.org")):
        primaries = [{"address": "192.0.2.2", "tsigKeySecretRef": {"name": "tsig"}}]
        api.apply(zone_manifest(name, zone, primaries=primaries))
    operator = start_operator(api)
    operator.reconcile_server("edge")
    planner = operator.controller.servers.models[ObjectRef(NS, "edge")].builder.planner
    com, org = (planner._secrets_of[ObjectRef(NS, name)] for name in ("example-com", "example-org"))
    assert com and com is org
    assert sorted(served_zones(api)) == ["example.com.", "example.org."]


def test_zones_with_equal_primaries_share_them_in_what_the_reconciler_keeps() -> None:
    """Each Zone's parsed spec and plan are kept; equal parts (the same primaries,
    ACL, servers) are one object for all of them, and every Zone is still served."""
    api = declared_namespace()
    acl = [{"cidr": "192.0.2.0/24"}]
    api.apply(zone_manifest(allowTransfer=acl))
    api.apply(zone_manifest("example-org", "example.org", allowTransfer=acl))
    operator = start_operator(api)
    operator.reconcile_server("edge")
    model = operator.controller.servers.models[ObjectRef(NS, "edge")]
    com, org = (model.parsed[ObjectRef(NS, name)][2] for name in ("example-com", "example-org"))
    assert isinstance(com, ZoneSpec) and isinstance(org, ZoneSpec)
    assert com.primaries is org.primaries and com.allow_transfer is org.allow_transfer
    assert com.servers is org.servers
    drafts = model.builder.planner.drafts
    planned = [drafts[ObjectRef(NS, name)].planned for name in ("example-com", "example-org")]
    assert planned[0] is not None and planned[1] is not None
    assert planned[0].primaries is planned[1].primaries
    assert planned[0].allow_transfer is planned[1].allow_transfer
    assert sorted(served_zones(api)) == ["example.com.", "example.org."]
