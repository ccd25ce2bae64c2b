"""Models parsed from the examples and minimal objects; CRD and models agree on shape."""

from __future__ import annotations

import base64
import copy
import ipaddress
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import dns.name
import pytest
import yaml

from manifest_cases import valid_secondary_server, valid_zone
from secondary_dns.api import (
    API_VERSION,
    CATEGORY,
    SECONDARY_SERVER_PLURAL,
    ZONE_PLURAL,
    LabelSelector,
    LabelSelectorRequirement,
    ObjectRef,
    Primary,
    SecondaryServerSpec,
    SecretKeyRef,
    SpecError,
    ZoneTimers,
    parse_secondary_server,
    parse_tsig_secret,
    parse_zone,
)
from secondary_dns.api import server as server_module
from secondary_dns.api import zone as zone_module

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRDS = REPO / "crds"


def load_examples() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def crd(plural: str) -> dict[str, Any]:
    document = yaml.safe_load((CRDS / f"secondarydns.io_{plural}.yaml").read_text())
    assert isinstance(document, dict)
    return document


def crd_schema(plural: str) -> dict[str, Any]:
    schema = crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def test_examples_parse() -> None:
    documents = load_examples()
    kinds = [document["kind"] for document in documents]
    assert kinds.count("Zone") >= 1 and kinds.count("SecondaryServer") >= 1
    secrets = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Secret"}
    for document in documents:
        if document["kind"] == "SecondaryServer":
            parse_secondary_server(document)
        elif document["kind"] == "Zone":
            spec = parse_zone(document)
            refs = [p.tsig_key_secret_ref for p in spec.primaries] + [
                entry.tsig_key_secret_ref for entry in spec.allow_transfer
            ]
            # Every Secret an example Zone names is an example too, and holds a usable key.
            for ref in filter(None, refs):
                key = parse_tsig_secret(secrets[ref.name], ref)
                assert key.secret


def test_example_zone_in_detail() -> None:
    zone = next(d for d in load_examples() if d["kind"] == "Zone")
    spec = parse_zone(zone)
    assert spec.zone == dns.name.from_text("example.com.")
    assert spec.primaries[0] == Primary(
        ipaddress.IPv4Address("192.0.2.53"), 53, SecretKeyRef("tsig-primary")
    )
    assert spec.primaries[1].address == ipaddress.IPv6Address("2001:db8::53")
    assert spec.servers == ("secondary-dns",)
    assert spec.server_selector is None
    assert spec.allow_transfer[1].tsig_key_secret_ref == SecretKeyRef("tsig-partners", "partner-a")
    assert spec.timers == ZoneTimers(300, 86400, 60, 3600)


def test_zone_defaults() -> None:
    spec = parse_zone(valid_zone())
    assert spec.primaries == (Primary(ipaddress.IPv4Address("192.0.2.1")),)
    assert spec.primaries[0].port == 53
    assert spec.allow_transfer == ()  # RFC 5936 §6: nobody unless allowed
    assert spec.notify_allow_from == ()
    assert spec.timers == ZoneTimers(None, None, None, None)
    assert spec.retransfer_request is None


def test_zone_name_is_normalised_absolute_and_lowercase() -> None:
    for written in ("Example.COM", "example.com.", "EXAMPLE.com."):
        manifest = valid_zone()
        manifest["spec"]["zone"] = written
        name = parse_zone(manifest).zone
        assert name.is_absolute()
        assert name.to_text() == "example.com."


def test_secondary_server_defaults_follow_rfc_2182() -> None:
    spec = parse_secondary_server(valid_secondary_server())
    assert spec == SecondaryServerSpec()
    assert spec.replicas == 3
    assert spec.engine.type == "bind9"
    assert spec.spread.topology_key == "topology.kubernetes.io/zone"
    assert spec.spread.when_unsatisfiable == "DoNotSchedule"
    assert spec.service.type == "ClusterIP"
    assert spec.storage is None
    assert spec.stealth is False
    # No spec at all is the same as an empty one (the CRD defaults spec to {}).
    without_spec = valid_secondary_server()
    del without_spec["spec"]
    assert parse_secondary_server(without_spec) == spec


def test_storage_size_defaults_to_one_gibibyte() -> None:
    manifest = valid_secondary_server()
    manifest["spec"]["storage"] = {}
    spec = parse_secondary_server(manifest)
    assert spec.storage is not None and spec.storage.size == "1Gi"


def test_null_means_absent_as_on_the_api_server() -> None:
    manifest = valid_zone()
    manifest["spec"]["primaries"][0]["port"] = None
    assert parse_zone(manifest).primaries[0].port == 53


def test_boolean_is_not_an_integer() -> None:
    manifest = valid_zone()
    manifest["spec"]["primaries"][0]["port"] = True
    with pytest.raises(SpecError, match="must be an integer"):
        parse_zone(manifest)


def test_wrong_kind_and_api_version_are_refused() -> None:
    manifest = valid_zone()
    manifest["apiVersion"] = "secondarydns.io/v1"
    with pytest.raises(SpecError) as caught:
        parse_zone(manifest)
    assert caught.value.field == "apiVersion" and API_VERSION in caught.value.message
    with pytest.raises(SpecError) as caught:
        parse_zone(valid_secondary_server())
    assert caught.value.field == "kind"


def test_label_selector_semantics() -> None:
    manifest = valid_zone()
    del manifest["spec"]["servers"]
    manifest["spec"]["serverSelector"] = {
        "matchLabels": {"tier": "public"},
        "matchExpressions": [
            {"key": "region", "operator": "In", "values": ["eu", "us"]},
            {"key": "retired", "operator": "DoesNotExist"},
        ],
    }
    spec = parse_zone(manifest)
    selector = spec.server_selector
    assert selector is not None and spec.servers is None
    assert selector.matches({"tier": "public", "region": "eu"})
    assert not selector.matches({"tier": "public", "region": "ap"})
    assert not selector.matches({"tier": "public", "region": "eu", "retired": "yes"})
    assert not selector.matches({"region": "eu"})
    assert spec.serves_on("anything", {"tier": "public", "region": "us"})
    # The empty selector selects every SecondaryServer, as in Kubernetes.
    assert LabelSelector().matches({})
    not_in = LabelSelectorRequirement("tier", "NotIn", ("internal",))
    assert not_in.matches({}) and not not_in.matches({"tier": "internal"})


def test_servers_by_name() -> None:
    spec = parse_zone(valid_zone())
    assert spec.serves_on("secondary-dns", {})
    assert not spec.serves_on("other", {"tier": "public"})


def test_object_ref_orders_by_namespace_then_name() -> None:
    refs = [ObjectRef("b", "a"), ObjectRef("a", "z"), ObjectRef("a", "b")]
    assert sorted(refs) == [ObjectRef("a", "b"), ObjectRef("a", "z"), ObjectRef("b", "a")]
    assert str(ObjectRef("dns", "example-com")) == "dns/example-com"


def test_spec_error_pickles_with_field() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(SpecError("spec.zone", "is wrong; write example.com")))
    assert error.field == "spec.zone" and str(error) == "spec.zone: is wrong; write example.com"


def test_parsing_does_not_change_the_object() -> None:
    zone = next(d for d in load_examples() if d["kind"] == "Zone")
    before = copy.deepcopy(zone)
    parse_zone(zone)
    assert zone == before


# --- the CRDs and the models describe the same resources ----------------------


def walk_schema(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk_schema(child, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from walk_schema(schema["items"], f"{path}[]")


@pytest.mark.parametrize("plural", [ZONE_PLURAL, SECONDARY_SERVER_PLURAL])
def test_crd_names(plural: str) -> None:
    document = crd(plural)
    names = document["spec"]["names"]
    assert document["metadata"]["name"] == f"{plural}.secondarydns.io"
    assert names["plural"] == plural
    assert names["categories"] == [CATEGORY]
    assert names["shortNames"] == {ZONE_PLURAL: ["dz"], SECONDARY_SERVER_PLURAL: ["sdns"]}[plural]
    version = document["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert document["spec"]["scope"] == "Namespaced"
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    expected = {
        ZONE_PLURAL: ["Zone", "Serial", "Synced", "Ready", "Age"],
        SECONDARY_SERVER_PLURAL: ["Replicas", "Ready", "Domains", "Zones", "Age"],
    }[plural]
    default_columns = [
        column["name"]
        for column in version["additionalPrinterColumns"]
        if column.get("priority", 0) == 0
    ]
    assert default_columns == expected, columns


@pytest.mark.parametrize("plural", [ZONE_PLURAL, SECONDARY_SERVER_PLURAL])
def test_crd_schema_is_structural(plural: str) -> None:
    # Structural (apiextensions): every node has a type, except int-or-string ones.
    for path, node in walk_schema(crd_schema(plural), ""):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert "$ref" not in node, path
        additional = node.get("additionalProperties")
        if isinstance(additional, dict):
            assert "type" in additional or additional.get("x-kubernetes-int-or-string"), path


def test_crd_spec_fields_are_the_models_fields() -> None:
    zone_spec = crd_schema(ZONE_PLURAL)["properties"]["spec"]["properties"]
    assert tuple(zone_spec) == zone_module.SPEC_FIELDS
    server_spec = crd_schema(SECONDARY_SERVER_PLURAL)["properties"]["spec"]["properties"]
    assert tuple(server_spec) == server_module.SPEC_FIELDS


def crd_defaults(plural: str) -> dict[str, Any]:
    return {
        path: node["default"]
        for path, node in walk_schema(crd_schema(plural), "")
        if "default" in node
    }


def test_crd_defaults_are_the_models_defaults() -> None:
    spec = SecondaryServerSpec()
    storage = server_module.StorageSpec()
    models = {
        "spec": {},
        "spec.replicas": spec.replicas,
        "spec.engine": {},
        "spec.engine.type": spec.engine.type,
        "spec.spread": {},
        "spec.spread.topologyKey": spec.spread.topology_key,
        "spec.spread.whenUnsatisfiable": spec.spread.when_unsatisfiable,
        "spec.service": {},
        "spec.service.type": spec.service.type,
        "spec.storage.size": storage.size,
        "spec.stealth": spec.stealth,
        "spec.limits.responsesPerSecond": spec.limits.responses_per_second,
        **UNOBSERVED,
    }
    assert crd_defaults(SECONDARY_SERVER_PLURAL) == models
    # A default read from the field: Primary has slots (no class attribute holds it).
    port = next(field.default for field in fields(Primary) if field.name == "port")
    assert crd_defaults(ZONE_PLURAL) == {"spec.primaries[].port": port, **UNOBSERVED}


# Until the operator writes a status, both kinds read back observedGeneration 0:
# kstatus (Flux's wait) then says InProgress, not Current, for an object nobody
# has looked at (tests/cluster/test_flux.py shows it on the API server).
UNOBSERVED = {"status": {"observedGeneration": 0}}


def test_example_secret_is_base64_of_a_key() -> None:
    secret = next(d for d in load_examples() if d["kind"] == "Secret")
    assert base64.b64decode(secret["stringData"]["secret"], validate=True)
