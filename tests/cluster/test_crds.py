"""The CRDs on a real API server: examples accepted, the invalid table rejected naming the
field, the same verdicts as the Python models, defaults and printer columns as documented."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from crdutil import install_crds
from localcluster.cluster import LocalCluster
from manifest_cases import (
    CASES,
    VALID_CASES,
    InvalidManifest,
    ValidManifest,
    valid_secondary_server,
    valid_zone,
)
from secondary_dns.api import (
    SpecError,
    conditions,
    parse_secondary_server,
    parse_tsig_secret,
    parse_zone,
)
from secondary_dns.status.conditions import Condition, set_condition

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PARSERS: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "Zone": parse_zone,
    "SecondaryServer": parse_secondary_server,
}


@pytest.fixture(scope="session")
def crds(cluster: LocalCluster) -> LocalCluster:
    install_crds(cluster)
    return cluster


def dry_run_create(cluster: LocalCluster, namespace: str, manifest: Mapping[str, Any]) -> Any:
    # --validate=strict makes the server refuse unknown fields instead of pruning
    # them silently, which is what a user's typo deserves.
    return cluster.kubectl(
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(manifest),
        check=False,
    )


def get_json(cluster: LocalCluster, namespace: str, *what: str) -> Any:
    return json.loads(cluster.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)


def test_install_is_idempotent(crds: LocalCluster) -> None:
    install_crds(crds)
    names = crds.kubectl("get", "customresourcedefinitions", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/zones.secondarydns.io" in names


def test_examples_are_accepted_and_read_back_as_written(crds: LocalCluster, namespace: str) -> None:
    paths = sorted(EXAMPLES.glob("*.yaml"))
    for path in paths:
        crds.kubectl(
            "apply", "--server-side", "--validate=strict", "-n", namespace, "-f", str(path)
        )
    documents = [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]
    secrets = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Secret"}
    for document in documents:
        kind, name = document["kind"], document["metadata"]["name"]
        if kind not in PARSERS:
            continue
        stored = get_json(crds, namespace, f"{kind.lower()}/{name}")
        # Defaults the server added change nothing the models see.
        assert PARSERS[kind](stored) == PARSERS[kind](document)
        if kind != "Zone":
            continue
        spec = parse_zone(stored)
        refs = [p.tsig_key_secret_ref for p in spec.primaries]
        refs += [entry.tsig_key_secret_ref for entry in spec.allow_transfer]
        for ref in filter(None, refs):
            # The server turns stringData into base64 data: both read as the same key.
            stored_secret = get_json(crds, namespace, f"secret/{ref.name}")
            assert "stringData" not in stored_secret
            assert parse_tsig_secret(stored_secret, ref) == parse_tsig_secret(
                secrets[ref.name], ref
            )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_invalid_manifest_is_rejected_by_both(
    crds: LocalCluster, namespace: str, case: InvalidManifest
) -> None:
    result = dry_run_create(crds, namespace, case.manifest)
    assert result.returncode != 0, f"the API server accepted {case.id}"
    assert case.api_message in result.stderr, result.stderr
    assert case.field in result.stderr, result.stderr
    with pytest.raises(SpecError) as caught:
        PARSERS[case.kind](case.manifest)
    assert caught.value.field == case.field


@pytest.mark.parametrize("case", VALID_CASES, ids=[case.id for case in VALID_CASES])
def test_valid_edge_is_accepted_by_both(
    crds: LocalCluster, namespace: str, case: ValidManifest
) -> None:
    result = dry_run_create(crds, namespace, case.manifest)
    assert result.returncode == 0, result.stderr
    PARSERS[case.kind](case.manifest)


def test_defaults_appear_on_created_objects(crds: LocalCluster, namespace: str) -> None:
    server = valid_secondary_server()
    del server["spec"]  # the CRD defaults spec itself to {}
    zone = valid_zone()
    for manifest in (server, zone):
        crds.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    stored_server = get_json(crds, namespace, "secondaryserver/secondary-dns")
    assert stored_server["spec"] == {
        "replicas": 3,
        "engine": {"type": "bind9"},
        "spread": {
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
        },
        "service": {"type": "ClusterIP"},
        "stealth": False,
    }
    assert parse_secondary_server(stored_server) == parse_secondary_server(server)
    stored_zone = get_json(crds, namespace, "zone/example-com")
    assert stored_zone["spec"]["primaries"] == [{"address": "192.0.2.1", "port": 53}]
    assert parse_zone(stored_zone) == parse_zone(zone)

    with_storage = {**valid_secondary_server(), "metadata": {"name": "persistent"}}
    with_storage["spec"] = {"storage": {}}
    created = crds.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(with_storage)
    )
    stored = json.loads(created.stdout)
    assert stored["spec"]["storage"] == {"size": "1Gi"}
    spec = parse_secondary_server(stored)
    assert spec.storage is not None and spec.storage.size == "1Gi"


def test_status_shape_and_printer_columns(crds: LocalCluster, namespace: str) -> None:
    crds.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(valid_zone()))
    crds.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(valid_secondary_server()))
    now = "2024-05-01T10:00:00Z"
    ready = set_condition(
        [],
        Condition(
            conditions.READY,
            conditions.TRUE,
            conditions.IN_SYNC,
            "3 of 3 replicas serve serial 2024050101",
        ),
        1,
        now,
    )
    zone_status = {
        "zone": "example.com.",
        "observedGeneration": 1,
        "conditions": ready,
        "primarySerial": 2024050101,
        "servedSerial": 2024050101,
        "replicasInSync": 3,
        "replicasTotal": 3,
        "synced": "3/3",
        "notifyAddress": "10.96.0.53",
        "replicas": [
            {
                "pod": f"secondary-dns-{n}",
                "server": "secondary-dns",
                "failureDomain": f"zone-{'abc'[n]}",
                "address": f"10.244.{n + 1}.5",
                "serial": 4294967295 if n == 2 else 2024050101,
                "inSync": n != 2,
                "lastChange": now,
            }
            for n in range(3)
        ],
    }
    server_status = {
        "observedGeneration": 1,
        "conditions": ready,
        "replicas": 3,
        "readyReplicas": 3,
        "failureDomains": {"zone-a": 1, "zone-b": 1, "zone-c": 1},
        "domains": 3,
        "notifyAddress": "10.96.0.53",
        "transferSourceAddresses": ["10.244.1.5", "10.244.2.5", "10.244.3.5"],
        "zones": 1,
    }
    for what, status in (("zone/example-com", zone_status), ("sdns/secondary-dns", server_status)):
        crds.kubectl(
            "patch",
            "-n",
            namespace,
            what,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
        # Nothing was pruned: the status schema holds the whole shape.
        assert get_json(crds, namespace, what)["status"] == status

    zones = crds.kubectl("get", "dz", "-n", namespace).stdout.splitlines()
    assert zones[0].split() == ["NAME", "ZONE", "SERIAL", "SYNCED", "READY", "AGE"]
    assert zones[1].split()[:5] == ["example-com", "example.com", "2024050101", "3/3", "True"]
    servers = crds.kubectl("get", "sdns", "-n", namespace).stdout.splitlines()
    assert servers[0].split() == ["NAME", "REPLICAS", "READY", "DOMAINS", "ZONES", "AGE"]
    assert servers[1].split()[:5] == ["secondary-dns", "3", "3", "3", "1"]
    # The category lists both kinds; so do the plural names.
    both = crds.kubectl("get", "secondarydns", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(both) == [
        "secondaryserver.secondarydns.io/secondary-dns",
        "zone.secondarydns.io/example-com",
    ]


def test_spec_is_not_writable_through_status(crds: LocalCluster, namespace: str) -> None:
    crds.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(valid_zone()))
    crds.kubectl(
        "patch",
        "-n",
        namespace,
        "zone/example-com",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"zone": "other.example"}, "status": {"synced": "0/3"}}),
    )
    stored = get_json(crds, namespace, "zone/example-com")
    assert stored["spec"]["zone"] == "example.com"
    assert stored["status"]["synced"] == "0/3"
    # And the generation moves with spec changes only (observedGeneration's meaning).
    assert stored["metadata"]["generation"] == 1
