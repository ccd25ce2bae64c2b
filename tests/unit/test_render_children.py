"""Kubernetes objects and status of a SecondaryServer, built without a cluster."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

import dns.name
import pytest

from secondary_dns.agent.assemble import ConfigShard, DesiredConfig, KeySecret, assemble
from secondary_dns.api import ObjectRef, SpecError, agent_contract, parse_secondary_server
from secondary_dns.api.agent_contract import PodLayout
from secondary_dns.render import RenderedConfig, children, config_hash, render_bind9
from secondary_dns.render import status as s
from secondary_dns.render.engine import PlannedPrimary, PlannedZone, ZonePlan
from tests.unit.render_cases import minimal_request, primary, zone

SERVER = children.ServerIdentity(ObjectRef("dns", "edge"), "uid-1", {"tier": "public"})


def _server(**spec: Any) -> Any:
    return parse_secondary_server(
        {
            "apiVersion": "secondarydns.io/v1alpha1",
            "kind": "SecondaryServer",
            "metadata": {"name": "edge", "namespace": "dns"},
            "spec": spec,
        }
    )


def _rendered(files: dict[str, str], zones: int = 1) -> RenderedConfig:
    planned = tuple(
        PlannedZone(
            ref=ObjectRef("dns", f"z{i}"),
            zone=dns.name.from_text(f"z{i}.example."),
            primaries=(PlannedPrimary(ipaddress.ip_address("192.0.2.1"), 53, None),),
            allow_transfer=(),
            notify_allow_from=(),
            min_refresh_seconds=None,
            max_refresh_seconds=None,
            min_retry_seconds=None,
            max_retry_seconds=None,
        )
        for i in range(zones)
    )
    return RenderedConfig(
        engine="bind9",
        files=files,
        config_hash=config_hash(files),
        plan=ZonePlan(zones=planned, rejected={}, tsig_keys=()),
    )


def test_pod_paths_are_the_agents_layout() -> None:
    layout, paths = PodLayout(), children.POD_PATHS
    # named reads the configuration and keys where the agent writes them.
    assert (paths.config_dir, paths.tsig_key_file) == (layout.config_dir, layout.tsig_key_file)
    assert (paths.rndc_key_file, paths.data_dir) == (layout.rndc_key_file, layout.data_dir)
    mounts = {
        mount["mountPath"]
        for mount in children.build_statefulset(SERVER, _server(), "abc")["spec"]["template"][
            "spec"
        ]["containers"][0]["volumeMounts"]
    }
    assert {str(layout.run_dir), str(layout.data_dir)} <= mounts


def test_a_large_config_is_sharded_under_the_object_limit_and_reassembles() -> None:
    zone_text = "".join(f'zone "z{i}.example" {{ type secondary; }};\n' for i in range(60_000))
    files = {"named.conf": "options { };\n", "zones.conf": zone_text}
    rendered = _rendered(files)
    maps = children.build_config_maps(SERVER, rendered, keys_hash="kh", limit=256 * 1024)
    assert len(maps) > 4
    for cm in maps:
        size = sum(len(key) + len(value.encode()) for key, value in cm["data"].items())
        assert size <= 256 * 1024
        assert cm["metadata"]["annotations"][agent_contract.ANNOTATION_CONFIG_SHARDS] == str(
            len(maps)
        )
        assert (
            cm["metadata"]["annotations"][agent_contract.ANNOTATION_CONFIG_HASH]
            == rendered.config_hash
        )
        assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert maps[0]["metadata"]["name"] == "edge-config"
    assert any(".part-0001" in key for cm in maps for key in cm["data"])

    # The agent's own assembly gives back exactly the rendered files.
    shards = [
        ConfigShard(
            name=cm["metadata"]["name"],
            config_hash=cm["metadata"]["annotations"][agent_contract.ANNOTATION_CONFIG_HASH],
            shards=int(cm["metadata"]["annotations"][agent_contract.ANNOTATION_CONFIG_SHARDS]),
            keys_hash=cm["metadata"]["annotations"][agent_contract.ANNOTATION_KEYS_HASH],
            data=cm["data"],
        )
        for cm in reversed(maps)
    ]
    result = assemble(shards, KeySecret("edge-keys", "kh", "key file"))
    assert isinstance(result, DesiredConfig), result
    assert dict(result.files) == files
    assert [z.to_text() for z in result.zones] == ["z0.example."]


def test_statefulset_spreads_and_runs_unprivileged() -> None:
    sts = children.build_statefulset(SERVER, _server(replicas=3), "abc")
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == 3
    (spread,) = pod["topologySpreadConstraints"]
    assert spread == {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": children.selector_labels(SERVER)},
    }
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] and not ctx["allowPrivilegeEscalation"]
        assert ctx["capabilities"]["drop"] == ["ALL"]
    assert pod["containers"][0]["securityContext"]["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    assert "add" not in pod["containers"][1]["securityContext"]["capabilities"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (
        sts["spec"]["template"]["metadata"]["annotations"][agent_contract.ANNOTATION_ENGINE_HASH]
        == "abc"
    )


def test_min_domains_and_user_overrides() -> None:
    spec = _server(
        spread={"minDomains": 3},
        podTemplate={
            "nodeSelector": {"pool": "dns"},
            "labels": {"team": "net", agent_contract.LABEL_SERVER: "hijack"},
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}},
            "priorityClassName": "dns-critical",
        },
        storage={"size": "2Gi"},
    )
    sts = children.build_statefulset(SERVER, spec, "abc")
    pod = sts["spec"]["template"]
    assert pod["spec"]["topologySpreadConstraints"][0]["minDomains"] == 3
    assert pod["spec"]["nodeSelector"] == {"pool": "dns"}
    assert pod["spec"]["priorityClassName"] == "dns-critical"
    assert pod["spec"]["affinity"] == {
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}
    }
    # User labels join, but never replace the selector the StatefulSet relies on.
    assert pod["metadata"]["labels"]["team"] == "net"
    assert pod["metadata"]["labels"][agent_contract.LABEL_SERVER] == "edge"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "2Gi"
    }


def test_zone_changes_do_not_roll_pods_but_global_changes_do() -> None:
    base = _rendered({"named.conf": "options { a; };\n", "zones.conf": "zone a;\n"})
    more_zones = _rendered({"named.conf": "options { a; };\n", "zones.conf": "zone a; zone b;\n"})
    new_options = _rendered({"named.conf": "options { b; };\n", "zones.conf": "zone a;\n"})
    assert children.engine_hash(base) == children.engine_hash(more_zones)
    assert children.engine_hash(base) != children.engine_hash(new_options)


def test_keys_never_in_config_maps_and_builders_are_deterministic() -> None:
    rendered = _rendered({"named.conf": "x\n"})
    maps = children.build_config_maps(SERVER, rendered, "kh")
    secret = children.build_keys_secret(SERVER, 'key "k" { secret "c2VjcmV0"; };\n')
    assert "c2VjcmV0" not in json.dumps(maps)
    assert secret["stringData"][agent_contract.KEYS_DATA_KEY].startswith('key "k"')
    assert maps == children.build_config_maps(SERVER, rendered, "kh")


def test_network_policy_egress_only_to_the_served_zones_primaries_and_api() -> None:
    request = dataclasses.replace(
        minimal_request(),
        zones=[
            (ObjectRef("dns", "a"), zone("a.example.", primary("192.0.2.1"))),
            (ObjectRef("dns", "b"), zone("b.example.", primary("2001:db8::1", 5353))),
            # Left out by the planner (a key that does not exist): its primary is no egress.
            (ObjectRef("dns", "c"), zone("c.example.", primary("198.51.100.9", secret="nope"))),
        ],
    )
    rendered = render_bind9(request)
    assert ObjectRef("dns", "c") in rendered.rejected
    policy = children.build_network_policy(SERVER, rendered.plan.zones)
    egress = policy["spec"]["egress"]
    assert [rule.get("to") for rule in egress] == [
        [{"ipBlock": {"cidr": "192.0.2.1/32"}}],
        [{"ipBlock": {"cidr": "2001:db8::1/128"}}],
        None,  # the API server
    ]
    assert {"protocol": "TCP", "port": 5353} in egress[1]["ports"]


def test_agent_rbac_is_limited_to_its_own_objects() -> None:
    _, role, binding = children.build_agent_rbac(SERVER, replicas=2)
    rules = {r["resources"][0]: r for r in role["rules"]}
    assert rules["secrets"]["resourceNames"] == ["edge-keys"]
    assert rules["pods"]["resourceNames"] == ["edge-0", "edge-1"]
    assert "watch" not in rules["pods"]["verbs"]
    assert binding["subjects"][0]["name"] == "edge-agent"


# ---- status ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "domains", "status", "reason"),
    [
        (3, {"a": 1, "b": 1, "c": 1}, "True", "SpreadSatisfied"),
        (6, {"a": 2, "b": 2, "c": 2}, "True", "SpreadSatisfied"),
        (3, {"a": 2, "b": 1}, "True", "SpreadSatisfied"),
        (3, {"a": 3}, "False", "TooFewFailureDomains"),
        (3, {}, "False", "TooFewFailureDomains"),
        (2, {"a": 1, "b": 1}, "False", "TooFewReplicas"),
        (1, {"a": 1}, "False", "TooFewReplicas"),
    ],
)
def test_spread_condition_follows_rfc_2182(
    replicas: int, domains: dict[str, int], status: str, reason: str
) -> None:
    got_status, got_reason, message = s.spread_condition(replicas, domains)
    assert (got_status, got_reason) == (status, reason)
    if status == "False":
        assert "RFC 2182" in message


def _pod(name: str, domain: str, ready: bool = True, applied: str | None = "h1") -> s.ObservedPod:
    return s.ObservedPod(name, ready, f"10.244.0.{name[-1]}", domain, applied, None)


def _observation(**overrides: Any) -> s.ServerObservation:
    values: dict[str, Any] = {
        "generation": 2,
        "replicas": 3,
        "topology_key": "topology.kubernetes.io/zone",
        "pods": (_pod("edge-0", "a"), _pod("edge-1", "b"), _pod("edge-2", "c")),
        "config_hash": "h1",
        "zones": 4,
        "rollout_complete": True,
    }
    values.update(overrides)
    return s.ServerObservation(**values)


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_server_ready_and_unchanged_world_computes_identical_status() -> None:
    first = s.server_status(_observation(), {}, "2026-01-01T00:00:00Z")
    assert _cond(first, "Ready")["status"] == "True"
    assert _cond(first, "Reconciling")["status"] == "False"
    assert first["failureDomains"] == {"a": 1, "b": 1, "c": 1}
    assert first["readyReplicas"] == 3 and first["zones"] == 4 and first["domains"] == 3
    # An hour later nothing changed: byte for byte the same status, so no write.
    assert s.server_status(_observation(), first, "2026-01-01T01:00:00Z") == first


def test_server_reconciling_until_every_replica_serves_the_new_config() -> None:
    pods = (
        _pod("edge-0", "a"),
        _pod("edge-1", "b", applied="h0"),
        _pod("edge-2", "c", ready=False),
    )
    status = s.server_status(_observation(pods=pods), {}, "now")
    assert _cond(status, "Ready")["status"] == "False"
    reconciling = _cond(status, "Reconciling")
    assert reconciling["status"] == "True" and "2/3 replicas ready" in reconciling["message"]
    assert "1/3 serving" in reconciling["message"]


def test_invalid_server_spec_stalls_with_the_field() -> None:
    error = SpecError("spec.replicas", "must be at least 1: set 1 or more")
    status = s.server_status(_observation(spec_error=error), {"readyReplicas": 3}, "now")
    stalled = _cond(status, "Stalled")
    assert stalled["status"] == "True" and "spec.replicas" in stalled["message"]
    assert status["readyReplicas"] == 3  # the last observation of the fleet is kept


ZONE = ObjectRef("dns", "example")


def _verdict(**overrides: Any) -> s.ServerVerdict:
    values: dict[str, Any] = {
        "server": "edge",
        "config_hash": "h1",
        "served": True,
        "rejection": None,
        "replicas": 3,
        "replicas_current": 3,
    }
    values.update(overrides)
    return s.ServerVerdict(**values)


def test_zone_conditions_explain_themselves() -> None:
    ok = s.zone_status(s.ZoneObservation(1, "example.com.", verdicts=(_verdict(),)), {}, "now")
    assert _cond(ok, "ConfigValid")["status"] == "True"
    # Configured everywhere: Ready is for the serial monitor to decide.
    assert _cond(ok, "Ready")["status"] == "Unknown"
    assert _cond(ok, "Ready")["reason"] == "AwaitingSerials"
    assert ok["zone"] == "example.com."
    monitored = {
        **ok,
        "conditions": [
            {**c, "status": "True", "reason": "InSync"} if c["type"] == "Ready" else c
            for c in ok["conditions"]
        ],
    }
    again = s.zone_status(
        s.ZoneObservation(1, "example.com.", verdicts=(_verdict(),)), monitored, "t"
    )
    assert _cond(again, "Ready")["reason"] == "InSync"  # left to the monitor

    lagging = s.zone_status(
        s.ZoneObservation(1, "example.com.", verdicts=(_verdict(replicas_current=1),)), {}, "now"
    )
    assert _cond(lagging, "Ready")["status"] == "False"
    assert "1/3 replicas" in _cond(lagging, "Ready")["message"]

    missing = s.zone_status(
        s.ZoneObservation(1, "example.com.", missing_servers=("nosuch",)), {}, "now"
    )
    assert _cond(missing, "ConfigValid")["reason"] == "ServerNotFound"
    assert "nosuch" in _cond(missing, "ConfigValid")["message"]

    invalid = s.zone_status(
        s.ZoneObservation(1, None, spec_error=SpecError("spec.zone", "bad: use a.example")),
        {},
        "now",
    )
    assert _cond(invalid, "Stalled")["status"] == "True"
    assert "spec.zone" in _cond(invalid, "Stalled")["message"]

    none = s.zone_status(s.ZoneObservation(1, "example.com."), {}, "now")
    assert _cond(none, "ConfigValid")["reason"] == "NoServersSelected"

    # Serial status (written by the monitor) survives a configuration update.
    kept = s.zone_status(
        s.ZoneObservation(1, "example.com.", verdicts=(_verdict(),)),
        {"primarySerial": 7, "conditions": []},
        "now",
    )
    assert kept["primarySerial"] == 7


def test_status_shows_a_retransfer_request_once_every_replica_applied_it() -> None:
    def observe(verdicts: tuple[s.ServerVerdict, ...], request: str = "t2") -> s.ZoneObservation:
        return s.ZoneObservation(1, "example.com.", verdicts=verdicts, retransfer_request=request)

    previous = {"retransferRequest": "t1"}
    # One server still rolls the configuration out: the last request stays shown.
    rolling = s.zone_status(
        observe((_verdict(retransfer_request="t2"), _verdict(server="b", replicas_current=2))),
        previous,
        "now",
    )
    assert rolling["retransferRequest"] == "t1"
    # Every replica current, but one server's configuration still has the old request.
    stale = s.zone_status(
        observe((_verdict(retransfer_request="t2"), _verdict(server="b", retransfer_request="t1"))),
        previous,
        "now",
    )
    assert stale["retransferRequest"] == "t1"
    done = s.zone_status(
        observe((_verdict(retransfer_request="t2"), _verdict(server="b", retransfer_request="t2"))),
        previous,
        "now",
    )
    assert done["retransferRequest"] == "t2"


def test_verdict_reads_the_zones_request_from_the_rendered_configuration() -> None:
    request = minimal_request()
    ref, spec = request.zones[0]
    with_request = dataclasses.replace(spec, retransfer_request="ticket-9")
    rendered = render_bind9(dataclasses.replace(request, zones=[(ref, with_request)]))
    assert s.verdict_for(ref, "edge", rendered, (), 3).retransfer_request == "ticket-9"
    assert s.verdict_for(ref, "edge", render_bind9(request), (), 3).retransfer_request is None
