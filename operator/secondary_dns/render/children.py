"""The Kubernetes objects a SecondaryServer owns (its children), built as plain dicts.

Pure: no client, no clock. Everything a SecondaryServer owns is built here from
its spec and its rendered engine configuration, so what the operator applies
can be read, diffed and golden-tested without a cluster (CloudNativePG
`pkg/specs`, dask-kubernetes `build_*_spec`). The reconciler applies these with
server-side apply under one field manager; owner references make garbage
collection remove them with the server. Names the agent reads too (labels,
annotations, data keys, paths) come from `api.agent_contract`.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from secondary_dns import __version__
from secondary_dns.api import (
    API_VERSION,
    SECONDARY_SERVER_KIND,
    ObjectRef,
    SecondaryServerSpec,
    StorageSpec,
)
from secondary_dns.api.agent_contract import (
    AGENT_PORT,
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_ENGINE_HASH,
    ANNOTATION_KEYS_HASH,
    ANNOTATION_SHARD,
    ANNOTATION_SHARD_CONFIGMAPS,
    ANNOTATION_SHARD_HASH,
    HEALTHZ_PATH,
    KEYS_DATA_KEY,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_ROLE,
    LABEL_SERVER,
    PART_OF,
    PART_SEPARATOR,
    READYZ_PATH,
    ROLE_CONFIG,
    ROLE_KEYS,
    PodLayout,
    keys_secret_name,
    root_config_map_name,
    shard_config_map_name,
)
from secondary_dns.render.engine import EnginePaths, RenderedConfig, RenderedShard
from secondary_dns.render.shards import every_shard
from secondary_dns.render.tokens import IPNetwork

APP_NAME = "secondary-dns"
DEFAULT_IMAGE = f"ghcr.io/secondary-dns-operator/secondary-dns:{__version__}"
DNS_PORT = 53
# A ConfigMap holds at most 1 MiB in total (etcd's request limit); keys and
# metadata count too, so each shard stays well below it.
MAX_SHARD_BYTES = 900 * 1024
# The pod runs as this unprivileged user; the image owns no files it must write.
RUN_AS_USER = 65532
# named binds port 53 (and its control channel on 953) as that user, with no
# capability: the pod's network namespace lets unprivileged processes bind from
# port 53 up. `capabilities.add: [NET_BIND_SERVICE]` would not do it: under
# containerd an added capability lands in the bounding, effective and permitted
# sets but not the ambient one, so a non-root process loses it at execve
# (kubernetes/kubernetes#56374). The sysctl is namespaced and on kubelet's safe
# list, so no cluster setting is needed.
UNPRIVILEGED_PORT_SYSCTL = {"name": "net.ipv4.ip_unprivileged_port_start", "value": str(53)}
# Only the agent talks to the API: its token is a projected volume mounted in
# the agent container alone, at the path in-cluster clients read it from. The
# engine, which parses untrusted packets, has none.
TOKEN_VOLUME = "agent-api-token"
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3600
# The agent's check behind /readyz takes up to 2 s (a DNS query and a
# statistics-channel call to named, 1 s timeout each) but runs in its own loop;
# the endpoint answers from the last result: 1.4 ms p50, 101 ms at most over
# 1,752 probes on a busy 2-core machine (docs/local-cluster.md). 5 s is above
# both, where kubelet's default of 1 s is not above the check.
PROBE_TIMEOUT_SECONDS = 5
# Readiness probes every 2 s; 3 failures in a row (6 s) make a replica unready,
# so one slow answer on a busy node or the moment of a reload does not take a
# replica, or every replica reloading the same change, out of the Service.
# A replica that lost its engine is still out within 6 s.
READINESS_PERIOD_SECONDS = 2
READINESS_FAILURE_THRESHOLD = 3
# A deleted pod keeps answering this long before its engine gets SIGTERM.
# Meanwhile the agent fails /readyz (--drain-seconds, the same time), kubelet
# sees READINESS_FAILURE_THRESHOLD failures (at most 6 s), the pod stops being a
# *serving* endpoint and kube-proxy deletes the UDP conntrack entries still
# pinned to it (it keeps those of a terminating endpoint that is serving:
# pkg/proxy/conntrack/cleanup.go). A client that reuses its source port
# (dnsperf, a forwarder) is moved to another replica then, not when named has
# stopped: with 5 s here it lost its queries for about 0.5 s (docs/local-cluster.md,
# "A pod leaving a Service"). 6 s + the EndpointSlice and kube-proxy's sync
# (about 1 s) + margin; load balancers' health checks can take longer (raise it
# where one sits in front). Within the grace period.
PRE_STOP_SECONDS = 10
TERMINATION_GRACE_SECONDS = 30
# Bounded pods by default (issue 13, item 10): a node's other tenants must not
# pay for a hostile primary or a leak. The engine's defaults hold a few zones of
# the default maxRecords (1 000 000, api/limits.py) in memory, about 300 MiB for
# named; spec.engine.resources replaces them as a whole. The agent (Python, the
# API client and the assembled configuration) stays near 60 MiB.
ENGINE_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "1Gi"},
}
AGENT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "10m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}
# emptyDir sizes: the run directory (tmpfs, counted in the pod's memory) holds
# the assembled configuration, keys and sockets; /tmp is scratch; the zone
# copies get what a volume gets by default (spec.storage.size).
RUN_SIZE_LIMIT = "64Mi"
TMP_SIZE_LIMIT = "64Mi"


def engine_paths(layout: PodLayout) -> EnginePaths:
    """The paths the engine's configuration is rendered for, in a pod with this layout."""
    return EnginePaths(
        config_dir=layout.config_dir,
        data_dir=layout.data_dir,
        run_dir=layout.run_dir,
        tsig_key_file=layout.tsig_key_file,
        rndc_key_file=layout.rndc_key_file,
    )


POD_PATHS = engine_paths(PodLayout())


@dataclass(frozen=True)
class ServerIdentity:
    """What children need to know about their owner."""

    ref: ObjectRef
    uid: str
    labels: Mapping[str, str]

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def namespace(self) -> str:
        return self.ref.namespace


def selector_labels(server: ServerIdentity) -> dict[str, str]:
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: server.name, LABEL_SERVER: server.name}


def common_labels(server: ServerIdentity, component: str) -> dict[str, str]:
    return {
        **selector_labels(server),
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: "secondary-dns-operator",
        LABEL_PART_OF: PART_OF,
    }


def owner_reference(server: ServerIdentity) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": SECONDARY_SERVER_KIND,
        "name": server.name,
        "uid": server.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(
    server: ServerIdentity,
    name: str,
    component: str,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": server.namespace,
        "labels": {**common_labels(server, component), **(labels or {})},
        "ownerReferences": [owner_reference(server)],
    }
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return meta


# ---- names ------------------------------------------------------------------


def statefulset_name(server: ServerIdentity) -> str:
    return server.name


def headless_service_name(server: ServerIdentity) -> str:
    return f"{server.name}-pods"


def client_service_name(server: ServerIdentity) -> str:
    return server.name


def keys_secret(server: ServerIdentity) -> str:
    return keys_secret_name(server.name)


def relay_key_secret_name(server: ServerIdentity) -> str:
    return f"{server.name}-relay-key"


def agent_service_account_name(server: ServerIdentity) -> str:
    return f"{server.name}-agent"


def config_map_name(server: ServerIdentity) -> str:
    """The root ConfigMap of the configuration (the shards: api.agent_contract)."""
    return root_config_map_name(server.name)


# ---- configuration ----------------------------------------------------------


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _split_lines(text: str, limit: int) -> list[str]:
    """Chunks of at most `limit` bytes, cut at line ends where a line allows it."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        encoded = len(line.encode())
        if current and size + encoded > limit:
            chunks.append("".join(current))
            current, size = [], 0
        while encoded > limit:  # one line longer than a chunk: cut it anywhere
            chunks.append(line[:limit])
            line = line[limit:]
            encoded = len(line.encode())
        current.append(line)
        size += encoded
    if current or not chunks:
        chunks.append("".join(current))
    return chunks


def config_entries(files: Mapping[str, str], limit: int = MAX_SHARD_BYTES) -> list[tuple[str, str]]:
    """Data entries for the config ConfigMaps: whole files, or `<file>.part-NNNN` chunks."""
    entries: list[tuple[str, str]] = []
    for name in sorted(files):
        text = files[name]
        if len(text.encode()) <= limit:
            entries.append((name, text))
            continue
        for index, chunk in enumerate(_split_lines(text, limit)):
            entries.append((f"{name}{PART_SEPARATOR}{index:04d}", chunk))
    return entries


def _config_map(
    server: ServerIdentity, name: str, annotations: Mapping[str, str], data: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            server, name, "config", labels={LABEL_ROLE: ROLE_CONFIG}, annotations=annotations
        ),
        "data": dict(data),
    }


def _pack(entries: Iterable[tuple[str, str]], limit: int) -> list[dict[str, str]]:
    """Data entries in as few maps as keep each under `limit` bytes (keys counted)."""
    packed: list[dict[str, str]] = [{}]
    size = 0
    for key, value in entries:
        encoded = len(key.encode()) + len(value.encode())
        if packed[-1] and size + encoded > limit:
            packed.append({})
            size = 0
        packed[-1][key] = value
        size += encoded
    return packed


def build_shard_config_maps(
    server: ServerIdentity, shard: str, rendered: RenderedShard, limit: int = MAX_SHARD_BYTES
) -> list[dict[str, Any]]:
    """One shard of the configuration: one ConfigMap, more only above a ConfigMap's limit.

    Named by the shard, not by its content, so a changed shard is one patch;
    its hash annotation is what the root's manifest names.
    """
    # Chunks leave room for their own key names within a ConfigMap's limit.
    data = _pack(config_entries(rendered.files, limit - 256), limit)
    annotations = {
        ANNOTATION_SHARD: shard,
        ANNOTATION_SHARD_HASH: rendered.config_hash,
        ANNOTATION_SHARD_CONFIGMAPS: str(len(data)),
    }
    return [
        _config_map(server, shard_config_map_name(server.name, shard, part), annotations, part_data)
        for part, part_data in enumerate(data)
    ]


def build_root_config_map(
    server: ServerIdentity, rendered: RenderedConfig, keys_hash: str, limit: int = MAX_SHARD_BYTES
) -> dict[str, Any]:
    """The root of the configuration: the engine's main file, the zones include, the manifest.

    Its config hash covers every shard (the manifest names their hashes), so
    the agent applies a configuration only when it has every shard the root
    names, never a mix of two.
    """
    data = _pack(config_entries(rendered.files, limit - 256), limit)
    if len(data) > 1:
        # The root holds no zone: it grows with the number of shards (at most
        # SHARD_COUNT), not of zones.
        raise ValueError(f"the root configuration of {server.ref} is above {limit} bytes")
    annotations = {ANNOTATION_CONFIG_HASH: rendered.config_hash, ANNOTATION_KEYS_HASH: keys_hash}
    return _config_map(server, config_map_name(server), annotations, data[0])


def build_config_maps(
    server: ServerIdentity,
    rendered: RenderedConfig,
    keys_hash: str,
    limit: int = MAX_SHARD_BYTES,
) -> list[dict[str, Any]]:
    """The whole configuration as ConfigMaps: every shard, then the root (apply order)."""
    shards = [
        config_map
        for shard, rendered_shard in sorted(rendered.shards.items())
        for config_map in build_shard_config_maps(server, shard, rendered_shard, limit)
    ]
    return [*shards, build_root_config_map(server, rendered, keys_hash, limit)]


def build_keys_secret(server: ServerIdentity, key_file: str) -> dict[str, Any]:
    """The TSIG key file the engine includes; key material lives only in Secrets."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(
            server,
            keys_secret(server),
            "config",
            labels={LABEL_ROLE: ROLE_KEYS},
            annotations={ANNOTATION_KEYS_HASH: text_hash(key_file)},
        ),
        "stringData": {KEYS_DATA_KEY: key_file},
    }


def build_relay_key_secret(server: ServerIdentity, secret_b64: str) -> dict[str, Any]:
    """The internal key the NOTIFY relay signs with; made once, then kept."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(server, relay_key_secret_name(server), "relay"),
        "stringData": {"algorithm": "hmac-sha256", "secret": secret_b64},
    }


# ---- workload ---------------------------------------------------------------


def engine_hash(rendered: RenderedConfig) -> str:
    """Hash of what only a restart applies: the engine and its global configuration.

    Zones live in their own include and reach named by `rndc reconfig`, so
    adding or changing a Zone never rolls the pods; a change of the global
    options (an operator upgrade) does.
    """
    global_files = {n: t for n, t in rendered.files.items() if n == rendered.main_file}
    return text_hash(rendered.engine + json.dumps(global_files, sort_keys=True))


def _merge_affinity(ours: dict[str, Any], theirs: Mapping[str, Any] | None) -> dict[str, Any]:
    # A user's nodeAffinity / podAffinity / podAntiAffinity replaces ours key by
    # key: merging half of an anti-affinity with half of another is never what
    # someone who wrote one meant.
    return {**ours, **dict(theirs or {})}


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _token_volume() -> dict[str, Any]:
    """What kubelet would mount for automountServiceAccountToken, as a volume of our own."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }


def build_statefulset(
    server: ServerIdentity,
    spec: SecondaryServerSpec,
    engine_config_hash: str,
    paths: EnginePaths = POD_PATHS,
    default_image: str = DEFAULT_IMAGE,
) -> dict[str, Any]:
    """The DNS pods; `default_image` is the operator's when the spec names none."""
    image = spec.engine.image or default_image
    selector = selector_labels(server)
    pod_labels = {**dict(spec.pod_template.labels), **common_labels(server, "dns")}
    pod_annotations = {
        **dict(spec.pod_template.annotations),
        ANNOTATION_ENGINE_HASH: engine_config_hash,
    }
    spread: dict[str, Any] = {
        "maxSkew": 1,
        "topologyKey": spec.spread.topology_key,
        "whenUnsatisfiable": spec.spread.when_unsatisfiable,
        "labelSelector": {"matchLabels": selector},
    }
    # The API server accepts minDomains only with DoNotSchedule.
    if spec.spread.min_domains is not None and spec.spread.when_unsatisfiable == "DoNotSchedule":
        spread["minDomains"] = spec.spread.min_domains
    affinity = _merge_affinity(
        {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": selector},
                        },
                    }
                ]
            }
        },
        spec.pod_template.affinity,
    )
    mounts = [
        {"name": "run", "mountPath": str(paths.run_dir)},
        {"name": "data", "mountPath": str(paths.data_dir)},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    downward_env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SDNS_SERVER", "value": server.name},
    ]
    engine_container: dict[str, Any] = {
        "name": "engine",
        "image": image,
        "command": [
            "secondary-dns",
            "engine",
            "--engine",
            spec.engine.type,
            "--run-dir",
            str(paths.run_dir),
        ],
        "ports": [
            {"name": "dns-udp", "containerPort": DNS_PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": DNS_PORT, "protocol": "TCP"},
        ],
        "securityContext": _security_context(),
        "volumeMounts": mounts,
        # Leave the Service before the engine stops (kubelet's sleep action:
        # no binary needed in the container).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
    }
    engine_container["resources"] = copy.deepcopy(
        dict(spec.engine.resources) if spec.engine.resources else ENGINE_RESOURCES
    )
    agent_container: dict[str, Any] = {
        "name": "agent",
        "image": image,
        "command": [
            "secondary-dns",
            "agent",
            "--engine",
            spec.engine.type,
            "--run-dir",
            str(paths.run_dir),
            "--data-dir",
            str(paths.data_dir),
            "--listen",
            f"0.0.0.0:{AGENT_PORT}",
            "--drain-seconds",
            str(PRE_STOP_SECONDS),
        ],
        "env": downward_env,
        "ports": [{"name": "agent", "containerPort": AGENT_PORT, "protocol": "TCP"}],
        # Ready = the engine answers and every assigned zone has been loaded once, so
        # a fresh replica never gets queries for zones it does not have yet.
        "readinessProbe": {
            "httpGet": {"path": READYZ_PATH, "port": "agent"},
            "periodSeconds": READINESS_PERIOD_SECONDS,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "failureThreshold": READINESS_FAILURE_THRESHOLD,
        },
        "livenessProbe": {
            "httpGet": {"path": HEALTHZ_PATH, "port": "agent"},
            "periodSeconds": 10,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "failureThreshold": 6,
        },
        "securityContext": _security_context(),
        "resources": copy.deepcopy(AGENT_RESOURCES),
        "volumeMounts": [
            *mounts,
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": True},
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": RUN_SIZE_LIMIT}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
        _token_volume(),
    ]
    claims: list[dict[str, Any]] = []
    if spec.storage is None:
        volumes.append({"name": "data", "emptyDir": {"sizeLimit": StorageSpec().size}})
    else:
        claim_spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage.size}},
        }
        if spec.storage.storage_class_name:
            claim_spec["storageClassName"] = spec.storage.storage_class_name
        claims.append({"metadata": {"name": "data"}, "spec": claim_spec})
    pod_spec: dict[str, Any] = {
        "serviceAccountName": agent_service_account_name(server),
        # The agent reads its ConfigMaps and key Secret through the API (faster
        # than kubelet's volume refresh) and reports on its Pod: it needs a
        # token, and gets it from TOKEN_VOLUME. Automounting would give one to
        # every container, the engine included.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [dict(UNPRIVILEGED_PORT_SYSCTL)],
        },
        "topologySpreadConstraints": [spread],
        "affinity": affinity,
        "containers": [engine_container, agent_container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
    }
    if spec.pod_template.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(spec.pod_template.node_selector.items()))
    if spec.pod_template.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.pod_template.tolerations]
    if spec.pod_template.priority_class_name:
        pod_spec["priorityClassName"] = spec.pod_template.priority_class_name
    statefulset: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(server, statefulset_name(server), "dns"),
        "spec": {
            "replicas": spec.replicas,
            "serviceName": headless_service_name(server),
            # Replicas are independent secondaries: start and replace them in
            # parallel rather than one after another.
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }
    if claims:
        statefulset["spec"]["volumeClaimTemplates"] = claims
    return statefulset


def _dns_ports() -> list[dict[str, Any]]:
    return [
        {"name": "dns-udp", "port": DNS_PORT, "targetPort": "dns-udp", "protocol": "UDP"},
        {"name": "dns-tcp", "port": DNS_PORT, "targetPort": "dns-tcp", "protocol": "TCP"},
    ]


def build_headless_service(server: ServerIdentity) -> dict[str, Any]:
    """Stable per-pod DNS names (`<pod>.<server>-pods`), also for pods not yet ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(server, headless_service_name(server), "dns"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(server),
            "ports": _dns_ports(),
        },
    }


def build_client_service(server: ServerIdentity, spec: SecondaryServerSpec) -> dict[str, Any]:
    service_spec: dict[str, Any] = {
        "type": spec.service.type,
        "selector": selector_labels(server),
        "ports": _dns_ports(),
    }
    if spec.service.type == "LoadBalancer":
        if spec.service.load_balancer_ip is not None:
            service_spec["loadBalancerIP"] = str(spec.service.load_balancer_ip)
        if spec.service.load_balancer_source_ranges:
            service_spec["loadBalancerSourceRanges"] = [
                str(r) for r in spec.service.load_balancer_source_ranges
            ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            server,
            client_service_name(server),
            "dns",
            annotations=dict(spec.service.annotations),
        ),
        "spec": service_spec,
    }


def build_pod_disruption_budget(server: ServerIdentity) -> dict[str, Any]:
    # At most one replica down by choice: with the RFC 2182 minimum of three,
    # two keep answering during a drain.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(server, server.name, "dns"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(server)}},
    }


# Who may reach the agent's HTTP port (/metrics, /zones): the operator's pods
# (the chart's labels, in the operator's namespace) and any pod of a namespace an
# administrator labelled for monitoring. Tenants cannot label namespaces.
MONITORING_NAMESPACE_LABEL = "secondarydns.io/monitoring"
OPERATOR_COMPONENT = "operator"


def _agent_clients(operator_namespace: str | None) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = []
    if operator_namespace:
        peers.append(
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
                },
                "podSelector": {
                    "matchLabels": {LABEL_PART_OF: PART_OF, LABEL_COMPONENT: OPERATOR_COMPONENT}
                },
            }
        )
    peers.append({"namespaceSelector": {"matchLabels": {MONITORING_NAMESPACE_LABEL: "true"}}})
    return peers


def build_network_policy(
    server: ServerIdentity,
    primary_ports: Iterable[tuple[IPNetwork, int]],
    api_server: Iterable[tuple[str, int]] = (),
    operator_namespace: str | None = None,
) -> dict[str, Any]:
    """DNS in from anywhere, the agent's port from the operator and monitoring; out only
    to the served zones' primaries and the API server.

    Queries, NOTIFY and transfer requests all arrive on port 53, so the engine's
    ACLs (allow-notify, allow-transfer) decide those; the policy narrows what
    the pods can reach: the primaries of the zones the plan serves (not of a
    Zone it left out), and the API server's own addresses for the agent
    (`api_server`, from the `kubernetes` Service's EndpointSlices). Without
    them (not readable), any address on 443 and 6443, as before: an agent
    that cannot reach the API would keep its replica unready.
    """
    ports: dict[IPNetwork, set[int]] = {}
    for network, port in primary_ports:
        ports.setdefault(network, set()).add(port)
    egress: list[dict[str, Any]] = []
    for network in sorted(ports, key=lambda n: (n.version, n.network_address)):
        egress.append(
            {
                "to": [{"ipBlock": {"cidr": network.compressed}}],
                "ports": [
                    {"protocol": protocol, "port": port}
                    for port in sorted(ports[network])
                    for protocol in ("UDP", "TCP")
                ],
            }
        )
    api_ports: dict[int, set[str]] = {}
    for address, port in api_server:
        api_ports.setdefault(port, set()).add(ipaddress.ip_network(address).compressed)
    for port in sorted(api_ports):
        egress.append(
            {
                "to": [{"ipBlock": {"cidr": cidr}} for cidr in sorted(api_ports[port])],
                "ports": [{"protocol": "TCP", "port": port}],
            }
        )
    if not api_ports:
        egress.append(
            {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(server, server.name, "dns"),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(server)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "ports": [
                        {"protocol": "UDP", "port": DNS_PORT},
                        {"protocol": "TCP", "port": DNS_PORT},
                    ]
                },
                {
                    "from": _agent_clients(operator_namespace),
                    "ports": [{"protocol": "TCP", "port": AGENT_PORT}],
                },
            ],
            "egress": egress,
        },
    }


def agent_config_map_names(server: ServerIdentity, present: Iterable[str] = ()) -> list[str]:
    """The shard ConfigMaps the agent may read: the first of every possible shard, and
    the `present` ones (further parts of a shard above a ConfigMap's size).

    Every shard is named up front, so the Role does not change as zones fill shards;
    the further parts exist only for a shard above 1 MiB (half a million zones).
    """
    first = {shard_config_map_name(server.name, shard) for shard in every_shard()}
    return sorted(first | set(present) - {config_map_name(server)})


def build_agent_rbac(
    server: ServerIdentity, replicas: int, config_maps: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Least privilege for the agent: its own ConfigMaps, key Secret and Pods.

    `config_maps`: the config ConfigMaps that exist (build_config_maps), so that
    a further part of a big shard is readable before the root names it.
    """
    name = agent_service_account_name(server)
    pods = [f"{statefulset_name(server)}-{ordinal}" for ordinal in range(replicas)]
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(server, name, "agent"),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(server, name, "agent"),
            "rules": [
                # The root is watched by name: RBAC authorizes a list or watch by
                # resourceName for one name (a metadata.name field selector) only.
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [config_map_name(server)],
                    "verbs": ["get", "list", "watch"],
                },
                # The shards the root names are read by name, and by name as of
                # the root's resourceVersion when one has moved on since
                # (agent/kube.py): a list with a metadata.name field selector.
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": agent_config_map_names(server, config_maps),
                    "verbs": ["get", "list"],
                },
                # get only: granting list/watch would need the operator to hold
                # list/watch on every Secret (agent/kube.py KeysSecretByName).
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": [keys_secret(server)],
                    "verbs": ["get"],
                },
                {
                    "apiGroups": [""],
                    "resources": ["pods"],
                    "resourceNames": pods,
                    "verbs": ["get", "patch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(server, name, "agent"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": server.namespace}],
        },
    ]
