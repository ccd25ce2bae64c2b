"""The operator against a real control plane: children, spread, zones, faults, quiet resyncs."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crdutil import install_crds
from localcluster.cluster import LocalCluster
from localcluster.scenario import tree_image
from localcluster.waiting import wait_for
from tests.cluster.operator_fixture import (
    OperatorProcess,
    Written,
    apply,
    condition,
    get_json,
    run_operator,
    written_objects,
)

API = "secondarydns.io/v1alpha1"
# Primary addresses exist only inside the test's network namespace; the
# operator sends them nothing in these tests (no serial probes yet).
PRIMARY = "10.253.0.1"
TSIG_SECRET = base64.b64encode(b"k" * 32).decode()


@pytest.fixture(scope="module")
def operator(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with run_operator(cluster, log) as running:
        yield running
        print(f"operator log (the leading pod's): {running.log}")


def server(name: str, replicas: int = 3, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "SecondaryServer",
        "metadata": {"name": name, "labels": {"tier": "public"}},
        "spec": {"replicas": replicas, **spec},
    }


def zone(
    name: str, zone_name: str, servers: list[str], secret: str | None = None
) -> dict[str, Any]:
    primary: dict[str, Any] = {"address": PRIMARY}
    if secret:
        primary["tsigKeySecretRef"] = {"name": secret}
    return {
        "apiVersion": API,
        "kind": "Zone",
        "metadata": {"name": name},
        "spec": {"zone": zone_name, "primaries": [primary], "servers": servers},
    }


def tsig_secret(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"algorithm": "hmac-sha256", "secret": TSIG_SECRET, "name": "transfer-key"},
    }


def pods_by_zone(cluster: LocalCluster, namespace: str, server_name: str) -> Counter[str]:
    nodes = get_json(cluster, "nodes")["items"]
    zone_of = {
        n["metadata"]["name"]: n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes
    }
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"secondarydns.io/server={server_name}")
    return Counter(
        zone_of[p["spec"]["nodeName"]]
        for p in pods["items"]
        if p["status"].get("phase") == "Running" and p["spec"].get("nodeName")
    )


def server_status(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    obj = get_json(cluster, "secondaryservers", "-n", namespace, name) or {}
    return dict(obj.get("status") or {})


def config_text(cluster: LocalCluster, namespace: str, server_name: str) -> str:
    """Every file of the server's configuration: the root and its zone shards."""
    selector = f"secondarydns.io/server={server_name},secondarydns.io/role=config"
    found = get_json(cluster, "configmap", "-n", namespace, "-l", selector) or {}
    return "\n".join(
        text for cm in found.get("items") or [] for text in (cm.get("data") or {}).values()
    )


def test_children_are_built_and_owned(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, namespace, server("ns1"))
    sts = wait_for(
        "the StatefulSet", lambda: get_json(cluster, "statefulset", "-n", namespace, "ns1")
    )
    pod = sts["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["engine", "agent"]
    engine = pod["containers"][0]["securityContext"]
    assert engine["readOnlyRootFilesystem"] is True
    assert engine["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The operator names the image of the tree under test (its --image), not `:<version>`.
    assert {c["image"] for c in pod["containers"]} == {tree_image()}
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone" and spread["maxSkew"] == 1
    for kind, name in [
        ("service", "ns1"),
        ("service", "ns1-pods"),
        ("configmap", "ns1-config"),
        ("secret", "ns1-keys"),
        ("poddisruptionbudget", "ns1"),
        ("networkpolicy", "ns1"),
        ("serviceaccount", "ns1-agent"),
        ("role", "ns1-agent"),
        ("rolebinding", "ns1-agent"),
    ]:
        obj = wait_for(
            f"{kind}/{name}", lambda k=kind, n=name: get_json(cluster, k, "-n", namespace, n)
        )
        owners = obj["metadata"]["ownerReferences"]
        assert owners[0]["kind"] == "SecondaryServer" and owners[0]["name"] == "ns1", (kind, owners)
    headless = get_json(cluster, "service", "-n", namespace, "ns1-pods")
    assert headless["spec"]["clusterIP"] == "None"
    pdb = get_json(cluster, "poddisruptionbudget", "-n", namespace, "ns1")
    assert pdb["spec"]["maxUnavailable"] == 1

    # Deleting the server removes every child (garbage collection by owner references).
    cluster.kubectl("delete", "secondaryserver", "-n", namespace, "ns1")
    wait_for(
        "children to be garbage-collected",
        lambda: (
            get_json(cluster, "statefulset", "-n", namespace, "ns1") is None
            and get_json(cluster, "configmap", "-n", namespace, "ns1-config") is None
            and get_json(cluster, "service", "-n", namespace, "ns1") is None
        ),
        timeout=90,
    )


def test_replicas_spread_over_failure_zones_and_status_tells(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, namespace, server("spread", replicas=3))
    placed = wait_for(
        "3 pods on 3 zones",
        lambda: (c := pods_by_zone(cluster, namespace, "spread")).total() == 3 and c,
        timeout=90,
    )
    assert placed == {"zone-a": 1, "zone-b": 1, "zone-c": 1}
    status = wait_for(
        "status with 3 ready replicas",
        lambda: (s := server_status(cluster, namespace, "spread")).get("readyReplicas") == 3 and s,
    )
    assert status["failureDomains"] == {"zone-a": 1, "zone-b": 1, "zone-c": 1}
    spread = condition({"status": status}, "Spread")
    assert spread is not None and spread["status"] == "True", spread

    cluster.kubectl(
        "patch", "secondaryserver", "spread", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"replicas": 6}}),
    )  # fmt: skip
    placed = wait_for(
        "6 pods, 2 per zone",
        lambda: (c := pods_by_zone(cluster, namespace, "spread")).total() == 6 and c,
        timeout=90,
    )
    assert placed == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    status = wait_for(
        "status with 6 ready replicas",
        lambda: (s := server_status(cluster, namespace, "spread")).get("readyReplicas") == 6 and s,
    )
    assert status["failureDomains"] == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    events = get_json(cluster, "events", "-n", namespace)["items"]
    assert any(e["reason"] == "Scaled" for e in events), [e["reason"] for e in events]


def test_spread_condition_false_when_only_one_zone_is_schedulable(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    cordoned = [f"kwok-{z}-{n}" for z in ("zone-b", "zone-c") for n in (1, 2)]
    for node in cordoned:
        cluster.kubectl("cordon", node)
    try:
        apply(
            cluster,
            namespace,
            server("onezone", replicas=3, spread={"whenUnsatisfiable": "ScheduleAnyway"}),
        )
        placed = wait_for(
            "3 pods",
            lambda: (c := pods_by_zone(cluster, namespace, "onezone")).total() == 3 and c,
            timeout=90,
        )
        assert placed == {"zone-a": 3}
        status = wait_for(
            "status with 3 ready replicas",
            lambda: (
                (s := server_status(cluster, namespace, "onezone")).get("readyReplicas") == 3 and s
            ),
        )
        spread = condition({"status": status}, "Spread")
        assert spread is not None and spread["status"] == "False"
        assert spread["reason"] == "TooFewFailureDomains"
        assert "RFC 2182" in spread["message"] and "zone-a=3" in spread["message"]
    finally:
        for node in cordoned:
            cluster.kubectl("uncordon", node)


def test_zones_follow_into_config_and_a_resync_writes_nothing(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(
        cluster,
        namespace,
        tsig_secret("transfer"),
        server("cfg", replicas=3),
        zone("example", "example.com", ["cfg"], secret="transfer"),
        zone("other", "other.example", ["cfg"]),
    )
    wait_for(
        "both zones in the ConfigMap",
        lambda: (
            'zone "example.com"' in (t := config_text(cluster, namespace, "cfg"))
            and 'zone "other.example"' in t
        ),
    )
    keys = get_json(cluster, "secret", "-n", namespace, "cfg-keys")
    key_file = base64.b64decode(keys["data"]["tsig-keys.conf"]).decode()
    assert 'key "transfer-key"' in key_file and TSIG_SECRET in key_file
    assert TSIG_SECRET not in config_text(cluster, namespace, "cfg")  # never in a ConfigMap
    ready = wait_for(
        "Zone ConfigValid",
        lambda: (
            (c := condition(get_json(cluster, "zone", "-n", namespace, "example"), "ConfigValid"))
            and c["status"] == "True"
            and c
        ),
    )
    assert ready["reason"] == "Rendered"
    zone_obj = get_json(cluster, "zone", "-n", namespace, "example")
    assert zone_obj["status"]["zone"] == "example.com."

    # Updated Zone: the config follows.
    cluster.kubectl(
        "patch", "zone", "other", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"primaries": [{"address": "10.253.0.2", "port": 5353}]}}),
    )  # fmt: skip
    wait_for(
        "the new primary in the config",
        lambda: "10.253.0.2 port 5353" in config_text(cluster, namespace, "cfg"),
    )
    # Deleted Zone: it leaves the config; the other stays.
    cluster.kubectl("delete", "zone", "other", "-n", namespace)
    wait_for(
        "other.example to leave the config",
        lambda: (
            'zone "other.example"' not in (t := config_text(cluster, namespace, "cfg"))
            and 'zone "example.com"' in t
        ),
    )

    # Quiet: once settled, several resyncs (every 3 s here) write nothing at all.
    # (The pods run but never become Ready: their zones' primary does not exist,
    # and a replica is Ready only once it has loaded every zone.)
    wait_for(
        "pods running",
        lambda: pods_by_zone(cluster, namespace, "cfg").total() == 3,
        timeout=90,
    )

    def versions() -> Written:
        return written_objects(cluster, namespace)

    # What kept moving, for the failure message: whether something writes
    # periodically (a bug) or a slow machine is still rolling pods out.
    moved: list[str] = []

    def settled() -> bool:
        before = (versions(), operator.metric("secondarydns_api_writes_total"))
        time.sleep(4)
        after = (versions(), operator.metric("secondarydns_api_writes_total"))
        if after != before:
            changed = sorted(
                k for k in {*before[0], *after[0]} if before[0].get(k) != after[0].get(k)
            )
            moved.append(f"{changed} writes {before[1]:.0f}->{after[1]:.0f}")
        return after == before

    try:
        wait_for("the operator to settle", settled, timeout=90, every=0)
    except TimeoutError as error:
        raise AssertionError(f"{error}; what moved, last rounds: {moved[-4:]}") from None
    resyncs_before = operator.metric("secondarydns_reconciles_total")
    before = versions()
    writes = operator.metric("secondarydns_api_writes_total")
    time.sleep(10)
    assert operator.metric("secondarydns_reconciles_total") > resyncs_before  # resyncs ran
    assert operator.metric("secondarydns_api_writes_total") == writes
    assert versions() == before


def test_children_changed_out_of_band_are_put_back(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    """Issue 13, item 1: drift is repaired from the child's own watch event."""
    apply(cluster, namespace, server("drift"), zone("drifty", "drift.example", ["drift"]))
    role = wait_for(
        "the agent Role", lambda: get_json(cluster, "role", "-n", namespace, "drift-agent")
    )
    rules = role["rules"]
    wait_for(
        "the NetworkPolicy",
        lambda: get_json(cluster, "networkpolicy", "-n", namespace, "drift"),
    )
    sts = wait_for(
        "the StatefulSet", lambda: get_json(cluster, "statefulset", "-n", namespace, "drift")
    )

    # Someone widens the agent's Role by hand: narrowed again.
    widened = [*rules, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]
    cluster.kubectl(
        "patch", "role", "drift-agent", "-n", namespace, "--type=merge",
        "-p", json.dumps({"rules": widened}),
    )  # fmt: skip
    wait_for(
        "the Role's rules put back",
        lambda: (
            (get_json(cluster, "role", "-n", namespace, "drift-agent") or {}).get("rules") == rules
        ),
    )
    # Someone deletes the NetworkPolicy and the StatefulSet: created again.
    cluster.kubectl("delete", "networkpolicy", "drift", "-n", namespace, "--wait=false")
    cluster.kubectl(
        "delete", "statefulset", "drift", "-n", namespace, "--wait=false", "--cascade=orphan"
    )
    wait_for(
        "the NetworkPolicy back",
        lambda: get_json(cluster, "networkpolicy", "-n", namespace, "drift"),
    )
    back = wait_for(
        "the StatefulSet back",
        lambda: (
            (found := get_json(cluster, "statefulset", "-n", namespace, "drift"))
            and found["metadata"]["uid"] != sts["metadata"]["uid"]
            and found
        ),
    )
    assert back["spec"]["replicas"] == sts["spec"]["replicas"]


def test_missing_secret_and_unknown_server_are_reported_then_heal(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(
        cluster,
        namespace,
        server("heal", replicas=3),
        zone("needs-key", "needs-key.example", ["heal"], secret="later"),
        zone("fine", "fine.example", ["heal"]),
        zone("lost", "lost.example", ["heal", "nosuch"]),
    )

    def config_valid(name: str) -> dict[str, Any] | None:
        return condition(get_json(cluster, "zone", "-n", namespace, name), "ConfigValid")

    missing = wait_for(
        "SecretNotFound", lambda: (c := config_valid("needs-key")) and c["status"] == "False" and c
    )
    assert missing["reason"] == "SecretNotFound" and "later" in missing["message"]
    lost = wait_for(
        "ServerNotFound", lambda: (c := config_valid("lost")) and c["status"] == "False" and c
    )
    assert lost["reason"] == "ServerNotFound" and "nosuch" in lost["message"]
    # Nothing else is affected: the good zone is valid and in the config.
    assert wait_for(
        "fine zone valid", lambda: (c := config_valid("fine")) and c["status"] == "True"
    )
    assert 'zone "fine.example"' in config_text(cluster, namespace, "heal")
    assert "needs-key.example" not in config_text(cluster, namespace, "heal")

    apply(cluster, namespace, tsig_secret("later"))
    healed = wait_for(
        "the zone to heal", lambda: (c := config_valid("needs-key")) and c["status"] == "True" and c
    )
    assert healed["reason"] == "Rendered"
    wait_for(
        "the healed zone in the config",
        lambda: 'zone "needs-key.example"' in config_text(cluster, namespace, "heal"),
    )


def test_object_stored_with_invalid_spec_stalls_without_crashing(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    """An object stored before the schema existed: Stalled, named field, no crash-loop."""
    crd = get_json(cluster, "crd", "zones.secondarydns.io")
    permissive = json.loads(json.dumps(crd))
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        permissive["metadata"].pop(key, None)
    permissive.pop("status", None)
    version = permissive["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    cluster.kubectl("replace", "-f", "-", input=json.dumps(permissive))
    try:
        apply(
            cluster,
            namespace,
            server("strict", replicas=3),
            {
                "apiVersion": API,
                "kind": "Zone",
                "metadata": {"name": "old"},
                "spec": {
                    "zone": "bad..name",
                    "primaries": [{"address": PRIMARY}],
                    "servers": ["strict"],
                },
            },
        )
    finally:
        install_crds(cluster)
    stalled = wait_for(
        "Stalled on the invalid Zone",
        lambda: (
            (c := condition(get_json(cluster, "zone", "-n", namespace, "old"), "Stalled"))
            and c["status"] == "True"
            and c
        ),
    )
    assert stalled["reason"] == "InvalidSpec" and "spec.zone" in stalled["message"]
    apply(cluster, namespace, zone("good", "good.example", ["strict"]))
    wait_for(
        "the good zone served beside it",
        lambda: 'zone "good.example"' in config_text(cluster, namespace, "strict"),
    )
    assert operator.alive()


def test_a_zone_pointing_at_the_clusters_own_services_is_left_out(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    """The operator runs with --refused-primary-networks 10.96.0.0/16 (scenario.run_operator):
    10.96.0.1:443 is the cluster's kubernetes Service (issue 13, item 9)."""
    kube_api = zone("kube-api", "kube.example", ["guard"])
    kube_api["spec"]["primaries"] = [{"address": "10.96.0.1", "port": 443}]
    open_zone = zone("open", "open.example", ["guard"])
    open_zone["spec"]["allowTransfer"] = [{"cidr": "::/0"}]
    apply(cluster, namespace, server("guard", replicas=1), kube_api, open_zone)

    def zone_condition(name: str, type_: str) -> dict[str, Any] | None:
        return condition(get_json(cluster, "zone", "-n", namespace, name), type_)

    refused = wait_for(
        "PrimaryNotAllowed",
        lambda: (c := zone_condition("kube-api", "ConfigValid")) and c["status"] == "False" and c,
    )
    assert refused["reason"] == "PrimaryNotAllowed"
    assert "spec.primaries[0].address 10.96.0.1 is inside 10.96.0.0/16" in refused["message"]
    assert "kube.example" not in config_text(cluster, namespace, "guard")
    # A zone open to every address is served, with a warning.
    warning = wait_for("TransferOpen", lambda: (c := zone_condition("open", "TransferOpen")) and c)
    assert (warning["status"], warning["reason"]) == ("True", "OpenToAnyAddress")
    assert wait_for(
        "the open zone valid",
        lambda: (c := zone_condition("open", "ConfigValid")) and c["status"] == "True",
    )
