"""The relay's inputs: plans derived from the render plan, Secrets, Pods, the Service address."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import pytest

from secondary_dns.api import ObjectRef
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.relay.routes import ReplicaPod, relay_routes, replica_pods
from secondary_dns.render import renderer_for
from secondary_dns.render.relay import (
    LABEL_RELAY_PLAN,
    RelayPlan,
    RelayPlanError,
    RelayZone,
    build_relay_plan_secret,
    notify_address,
    parse_relay_plan_secret,
    relay_plan,
    relay_plan_document,
    relay_plan_secret_name,
)
from tests.unit.render_cases import full_request, key, name

SERVER = ObjectRef("dns", "edge")
RELAY_KEY = key("secondary-dns-relay.", b"r")


def _plan() -> Any:
    request = full_request()
    rendered = renderer_for("bind9").render(request)
    return rendered.plan, relay_plan(SERVER, rendered.plan, RELAY_KEY)


def test_the_relay_plan_is_the_render_plan_s_served_zones_only() -> None:
    zone_plan, plan = _plan()
    assert [z.ref for z in plan.zones] == sorted(z.ref for z in zone_plan.zones)
    assert zone_plan.rejected, "full_request leaves a zone out: it must not reach the relay"
    assert not {z.ref for z in plan.zones} & set(zone_plan.rejected)
    planned_zones = sorted(zone_plan.zones, key=lambda z: z.ref)
    for relay_zone, planned in zip(plan.zones, planned_zones, strict=True):
        assert relay_zone.notify_sources == planned.notify_sources
        assert [k.name for k in relay_zone.primary_keys] == [
            p.key_name for p in planned.primaries if p.key_name
        ]


def test_a_plan_survives_its_secret_and_is_labelled_for_the_relay() -> None:
    _, plan = _plan()
    secret = build_relay_plan_secret(plan, "secondary-dns", {"app.kubernetes.io/part-of": "x"})
    assert secret["metadata"]["namespace"] == "secondary-dns"
    assert secret["metadata"]["labels"][LABEL_RELAY_PLAN] == "true"
    assert secret["metadata"]["name"] == relay_plan_secret_name(SERVER)
    assert parse_relay_plan_secret(secret) == plan
    # Deterministic: an unchanged plan is an unchanged object (no write).
    assert build_relay_plan_secret(plan, "secondary-dns", {}) == build_relay_plan_secret(
        plan, "secondary-dns", {}
    )


def test_secret_names_are_unique_per_server_and_short() -> None:
    long = ObjectRef("a" * 63, "b" * 48)
    assert len(relay_plan_secret_name(long)) <= 63
    assert relay_plan_secret_name(ObjectRef("x", "edge")) != relay_plan_secret_name(
        ObjectRef("y", "edge")
    )


@pytest.mark.parametrize(
    "data",
    [{}, {"plan.json": "not base64!"}, {"plan.json": base64.b64encode(b'{"version": 9}').decode()}],
)
def test_an_unreadable_plan_is_an_error_not_a_crash(data: dict[str, str]) -> None:
    with pytest.raises(RelayPlanError):
        parse_relay_plan_secret({"metadata": {"name": "relay-plan-x"}, "data": data})


def _pod(namespace: str, name_: str, server: str, ip: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": namespace,
            "name": name_,
            "labels": {"secondarydns.io/server": server},
            **extra,
        },
        "status": {"podIP": ip, "phase": "Running"} if ip else {"phase": "Pending"},
    }


def test_routes_fan_out_to_the_server_s_pods_with_its_key() -> None:
    _, plan = _plan()
    pods = replica_pods(
        [
            _pod("dns", "edge-0", "edge", "10.244.1.2"),
            _pod("dns", "edge-1", "edge", "10.244.2.2"),
            _pod("dns", "edge-2", "edge", None),  # no address yet
            _pod("dns", "edge-3", "edge", "10.244.3.2", deletionTimestamp="2026-01-01T00:00:00Z"),
            _pod("other", "edge-0", "edge", "10.244.4.2"),  # same name, another namespace
        ]
    )
    assert [p.name for p in pods] == ["edge-0", "edge-1", "edge-0"]
    routes = relay_routes([plan], pods)
    assert [route.ref for route in routes] == [z.ref for z in plan.zones]
    for route in routes:
        assert route.targets == (
            (ProbeTarget("10.244.1.2", 53), RELAY_KEY),
            (ProbeTarget("10.244.2.2", 53), RELAY_KEY),
        )


def test_a_zone_on_two_servers_reaches_the_replicas_of_both() -> None:
    _, plan = _plan()
    other_key = key("secondary-dns-relay.", b"o")
    other = type(plan)(server=ObjectRef("dns", "core"), relay_key=other_key, zones=plan.zones[:1])
    pods = [
        ReplicaPod(SERVER, "edge-0", "10.244.1.2"),
        ReplicaPod(other.server, "core-0", "10.244.9.2"),
    ]
    (route,) = [r for r in relay_routes([plan, other], pods) if r.ref == plan.zones[0].ref]
    assert route.targets == (
        (ProbeTarget("10.244.9.2", 53), other_key),
        (ProbeTarget("10.244.1.2", 53), RELAY_KEY),
    )
    assert route.allowed_sources and route.zone == plan.zones[0].zone


def _service(type_: str = "ClusterIP", port: int = 53, **status: Any) -> dict[str, Any]:
    return {
        "spec": {
            "type": type_,
            "clusterIP": "10.96.7.7",
            "ports": [{"name": "dns-udp", "port": port, "protocol": "UDP"}],
        },
        "status": status,
    }


def test_the_notify_address_is_the_load_balancer_s_else_the_cluster_ip() -> None:
    assert notify_address(None) is None
    assert notify_address(_service()) == "10.96.7.7"
    assert notify_address(_service(port=5353)) == "10.96.7.7:5353"
    assert notify_address(_service("LoadBalancer")) == "10.96.7.7"  # no ingress yet
    balanced = _service("LoadBalancer", loadBalancer={"ingress": [{"ip": "192.0.2.53"}]})
    assert notify_address(balanced) == "192.0.2.53"
    named = _service("LoadBalancer", loadBalancer={"ingress": [{"hostname": "lb.example"}]})
    assert notify_address(named) == "lb.example"
    v6 = _service(port=5353)
    v6["spec"]["clusterIP"] = "fd00::7"
    assert notify_address(v6) == "[fd00::7]:5353"
    headless = _service()
    headless["spec"]["clusterIP"] = "None"
    assert notify_address(headless) is None


def test_sources_keep_their_networks() -> None:
    _, plan = _plan()
    parsed = parse_relay_plan_secret(build_relay_plan_secret(plan, "ns", {}))
    for zone in parsed.zones:
        assert all(
            isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network)
            for n in zone.notify_sources
        )
    assert name("secondary-dns-relay.") == parsed.relay_key.name


def _plan_of(zones: int) -> RelayPlan:
    primary_key = key("transfer.example.com.")
    return RelayPlan(
        server=SERVER,
        relay_key=RELAY_KEY,
        zones=tuple(
            RelayZone(
                ref=ObjectRef("dns", f"zone-{index:05d}"),
                zone=name(f"z{index:05d}.scale.example."),
                notify_sources=(ipaddress.ip_network("192.0.2.1/32"),),
                primary_keys=(primary_key,),
            )
            for index in range(zones)
        ),
    )


def test_the_plan_of_10000_zones_fits_in_a_secret() -> None:
    # A Secret's data is at most 1 MiB (the API server refuses more); uncompressed
    # this plan is about 2.5 MB, which stopped the 10,000-Zone benchmark.
    plan = _plan_of(10_000)
    secret = build_relay_plan_secret(plan, "secondary-dns", {})
    assert sum(len(value) for value in secret["data"].values()) < 1024 * 1024 // 2
    assert parse_relay_plan_secret(secret) == plan


def test_a_plan_written_uncompressed_by_an_earlier_operator_is_read() -> None:
    plan = _plan_of(3)
    document = relay_plan_document(plan).encode()
    secret = {
        "metadata": {"name": "relay-plan-x"},
        "data": {"plan.json": base64.b64encode(document).decode()},
    }
    assert parse_relay_plan_secret(secret) == plan


def test_a_truncated_compressed_plan_is_an_error() -> None:
    secret = build_relay_plan_secret(_plan_of(3), "secondary-dns", {})
    whole = base64.b64decode(secret["data"]["plan.json.gz"])
    truncated = {"plan.json.gz": base64.b64encode(whole[: len(whole) // 2]).decode()}
    with pytest.raises(RelayPlanError, match="relay-plan-x"):
        parse_relay_plan_secret({"metadata": {"name": "relay-plan-x"}, "data": truncated})
