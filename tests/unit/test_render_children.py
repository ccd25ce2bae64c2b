"""The Kubernetes objects a SecondaryServer owns, built without a cluster."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

import dns.name

from secondary_dns.agent.assemble import DesiredConfig, KeySecret, assemble
from secondary_dns.agent.kube import shard_from_configmap
from secondary_dns.api import ObjectRef, agent_contract, parse_secondary_server
from secondary_dns.api.agent_contract import PodLayout
from secondary_dns.render import RenderedConfig, children, config_hash, render_bind9
from secondary_dns.render.engine import PlannedPrimary, PlannedZone, RenderedShard, ZonePlan
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


def _rendered(files: dict[str, str], zones: int = 1, zones_text: str = "") -> RenderedConfig:
    """A configuration of `files` (the root's engine files) and one shard "00" of `zones`."""
    planned = {
        ObjectRef("dns", f"z{i}"): PlannedZone(
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
    }
    shard_files = {
        "zones-00.conf": zones_text,
        agent_contract.ZONES_FILE: agent_contract.encode_zones_file(
            zone.zone for zone in planned.values()
        ),
    }
    shard = RenderedShard(shard_files, config_hash(shard_files))
    root = {
        **files,
        agent_contract.SHARDS_FILE: agent_contract.encode_shards_file({"00": shard.config_hash}),
    }
    return RenderedConfig(
        engine="bind9",
        files=root,
        config_hash=config_hash(root),
        plan=ZonePlan(by_ref=planned, rejected={}, tsig_keys=()),
        shards={"00": shard},
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


def test_a_large_shard_is_split_under_the_object_limit_and_reassembles() -> None:
    zone_text = "".join(f'zone "z{i}.example" {{ type secondary; }};\n' for i in range(60_000))
    files = {"named.conf": "options { };\n", "zones.conf": 'include "zones-00.conf";\n'}
    rendered = _rendered(files, zones_text=zone_text)
    maps = children.build_config_maps(SERVER, rendered, keys_hash="kh", limit=256 * 1024)
    *shard_maps, root = maps
    assert len(shard_maps) > 4
    for cm in maps:
        size = sum(len(key) + len(value.encode()) for key, value in cm["data"].items())
        assert size <= 256 * 1024
        assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    for cm in shard_maps:
        annotations = cm["metadata"]["annotations"]
        assert annotations[agent_contract.ANNOTATION_SHARD] == "00"
        assert (
            annotations[agent_contract.ANNOTATION_SHARD_HASH] == rendered.shards["00"].config_hash
        )
        assert annotations[agent_contract.ANNOTATION_SHARD_CONFIGMAPS] == str(len(shard_maps))
    assert [cm["metadata"]["name"] for cm in shard_maps[:2]] == ["edge-zones-00", "edge-zones-00-1"]
    # The root is written last and names the configuration's hash, which covers every shard.
    assert root["metadata"]["name"] == "edge-config"
    assert root["metadata"]["annotations"][agent_contract.ANNOTATION_CONFIG_HASH] == (
        rendered.config_hash
    )
    assert any(".part-0001" in key for cm in maps for key in cm["data"])

    # The agent's own assembly (from the objects, in any order) gives back the engine files.
    result = assemble(
        [shard_from_configmap(cm) for cm in reversed(maps)],
        KeySecret("edge-keys", "kh", "key file"),
    )
    assert isinstance(result, DesiredConfig), result
    assert dict(result.files) == {**files, "zones-00.conf": zone_text}
    assert [z.to_text() for z in result.zones] == ["z0.example."]
    assert dict(result.shards) == {"00": rendered.shards["00"].config_hash}


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
        # No capability at all: an added one would not reach a non-root process
        # under containerd (kubernetes/kubernetes#56374).
        assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    # named binds port 53 and its control channel on 953 through the pod's
    # network namespace, a safe sysctl, instead.
    assert pod["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}
    ]
    # Only the agent holds an API token; the engine parses untrusted packets.
    assert pod["automountServiceAccountToken"] is False
    engine, agent = pod["containers"]
    token_mounts = [m for m in agent["volumeMounts"] if m["name"] == children.TOKEN_VOLUME]
    assert token_mounts == [
        {"name": children.TOKEN_VOLUME, "mountPath": children.TOKEN_MOUNT_PATH, "readOnly": True}
    ]
    assert all(m["name"] != children.TOKEN_VOLUME for m in engine["volumeMounts"])
    # Probes have time beyond what /readyz takes (docs/local-cluster.md).
    assert agent["readinessProbe"]["timeoutSeconds"] == children.PROBE_TIMEOUT_SECONDS
    assert agent["livenessProbe"]["timeoutSeconds"] == children.PROBE_TIMEOUT_SECONDS
    # Every pod of the project carries the label the local cluster's pod runner selects.
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert labels[agent_contract.LABEL_PART_OF] == agent_contract.PART_OF
    assert (
        sts["spec"]["template"]["metadata"]["annotations"][agent_contract.ANNOTATION_ENGINE_HASH]
        == "abc"
    )


def test_the_operator_s_image_is_used_unless_the_spec_names_one() -> None:
    def images(spec: Any, **kwargs: str) -> set[str]:
        sts = children.build_statefulset(SERVER, spec, "abc", **kwargs)
        return {c["image"] for c in sts["spec"]["template"]["spec"]["containers"]}

    assert images(_server()) == {children.DEFAULT_IMAGE}
    assert images(_server(), default_image="registry.test/sdns:1-abc") == {
        "registry.test/sdns:1-abc"
    }
    named = _server(engine={"type": "bind9", "image": "mirror.test/sdns:1"})
    assert images(named, default_image="registry.test/sdns:1-abc") == {"mirror.test/sdns:1"}


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
    base = _rendered({"named.conf": "options { a; };\n"}, 1, "zone a;\n")
    more_zones = _rendered({"named.conf": "options { a; };\n"}, 2, "zone a; zone b;\n")
    new_options = _rendered({"named.conf": "options { b; };\n"}, 1, "zone a;\n")
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
    api_server = [("10.0.0.2", 6443), ("10.0.0.1", 6443), ("fd00::1", 6443)]
    policy = children.build_network_policy(
        SERVER, rendered.plan.primary_ports, api_server, "sdns-system"
    )
    egress = policy["spec"]["egress"]
    # The API server by its own addresses and port (issue 13, item 10), not any
    # address on 443/6443.
    assert [rule.get("to") for rule in egress] == [
        [{"ipBlock": {"cidr": "192.0.2.1/32"}}],
        [{"ipBlock": {"cidr": "2001:db8::1/128"}}],
        [
            {"ipBlock": {"cidr": "10.0.0.1/32"}},
            {"ipBlock": {"cidr": "10.0.0.2/32"}},
            {"ipBlock": {"cidr": "fd00::1/128"}},
        ],
    ]
    assert egress[2]["ports"] == [{"protocol": "TCP", "port": 6443}]
    assert {"protocol": "TCP", "port": 5353} in egress[1]["ports"]
    # Without the API server's addresses (not readable), its ports, so agents keep working.
    (*_, fallback) = children.build_network_policy(SERVER, rendered.plan.primary_ports)["spec"][
        "egress"
    ]
    assert "to" not in fallback and {"protocol": "TCP", "port": 6443} in fallback["ports"]


def test_network_policy_lets_only_the_operator_and_monitoring_reach_the_agent() -> None:
    policy = children.build_network_policy(SERVER, [], (), "sdns-system")
    dns_rule, agent_rule = policy["spec"]["ingress"]
    # DNS from anywhere; the agent's port not among those.
    assert "from" not in dns_rule
    assert {p["port"] for p in dns_rule["ports"]} == {children.DNS_PORT}
    assert agent_rule["ports"] == [{"protocol": "TCP", "port": children.AGENT_PORT}]
    operator, monitoring = agent_rule["from"]
    assert operator["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "sdns-system"}
    }
    assert operator["podSelector"]["matchLabels"][agent_contract.LABEL_COMPONENT] == "operator"
    assert monitoring == {
        "namespaceSelector": {"matchLabels": {children.MONITORING_NAMESPACE_LABEL: "true"}}
    }
    # An operator outside the cluster (development): monitoring only.
    policy = children.build_network_policy(SERVER, [])
    assert policy["spec"]["ingress"][1]["from"] == [monitoring]


def test_agent_rbac_is_limited_to_its_own_objects() -> None:
    _, role, binding = children.build_agent_rbac(SERVER, replicas=2)
    rules = {r["resources"][0]: r for r in role["rules"]}
    root, shards = (r for r in role["rules"] if r["resources"] == ["configmaps"])
    # The root is watched by name (one name: a field selector RBAC can authorize);
    # the shards it names are read by name; no ConfigMap is listed by label.
    assert root == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["edge-config"],
        "verbs": ["get", "list", "watch"],
    }
    # list: by name as of the root's resourceVersion (agent/kube.py); never watched.
    assert shards["verbs"] == ["get", "list"]
    assert len(shards["resourceNames"]) == 256
    assert shards["resourceNames"][:2] == ["edge-zones-00", "edge-zones-01"]
    # A further part of a big shard, once it exists.
    _, role, _ = children.build_agent_rbac(
        SERVER, replicas=2, config_maps=["edge-config", "edge-zones-00", "edge-zones-00-1"]
    )
    assert role["rules"][1]["resourceNames"][:3] == [
        "edge-zones-00",
        "edge-zones-00-1",
        "edge-zones-01",
    ]
    assert rules["secrets"]["resourceNames"] == ["edge-keys"]
    # get only: granting list/watch would need the operator to list every Secret.
    assert rules["secrets"]["verbs"] == ["get"]
    assert rules["pods"]["resourceNames"] == ["edge-0", "edge-1"]
    assert "watch" not in rules["pods"]["verbs"]
    assert binding["subjects"][0]["name"] == "edge-agent"


def test_pods_are_bounded_by_default_and_the_engine_s_resources_can_be_replaced() -> None:
    """Issue 13, item 10: resources and emptyDir sizes, so a pod cannot take a node."""
    pod = children.build_statefulset(SERVER, _server(), "abc")["spec"]["template"]["spec"]
    engine, agent = pod["containers"]
    assert engine["resources"] == children.ENGINE_RESOURCES
    assert agent["resources"] == children.AGENT_RESOURCES
    for container in (engine, agent):
        assert container["resources"]["limits"]["memory"]
        assert container["resources"]["requests"]["memory"]
    empty_dirs = {v["name"]: v["emptyDir"] for v in pod["volumes"] if "emptyDir" in v}
    assert set(empty_dirs) == {"run", "tmp", "data"}
    assert all(v.get("sizeLimit") for v in empty_dirs.values()), empty_dirs
    assert empty_dirs["data"]["sizeLimit"] == "1Gi"

    custom = {"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}}
    spec = _server(engine={"resources": custom})
    engine, _ = children.build_statefulset(SERVER, spec, "abc")["spec"]["template"]["spec"][
        "containers"
    ]
    assert engine["resources"] == custom


def test_a_replica_leaves_the_service_before_its_engine_stops() -> None:
    """Issue 13, item 11: preStop keeps named answering while the endpoint goes away."""
    pod = children.build_statefulset(SERVER, _server(), "abc")["spec"]["template"]["spec"]
    engine, agent = pod["containers"]
    assert engine["lifecycle"]["preStop"] == {"sleep": {"seconds": children.PRE_STOP_SECONDS}}
    # The engine still has time to stop cleanly after the hook.
    assert pod["terminationGracePeriodSeconds"] > children.PRE_STOP_SECONDS + 10
    # One slow /readyz (or a reload's moment) does not take a replica out.
    readiness = agent["readinessProbe"]
    assert readiness["failureThreshold"] > 1
    assert readiness["timeoutSeconds"] < readiness["periodSeconds"] * readiness["failureThreshold"]
