"""Invalid Zone and SecondaryServer manifests: the API server and the Python models must agree.

Each case is one mistake a user could make in Git, the field path both the API
server and `secondary_dns.api` name for it, and words the API server's message
must contain. tests/unit/test_api_cases.py runs the table through the models;
tests/cluster/test_crds.py runs it through a real API server with
`kubectl create --dry-run=server --validate=strict`.

TSIG algorithms (hmac-md5 refused, unknown names) are not here: they live in
Secrets, which the API server does not validate; tests/unit/test_api_tsig.py
covers them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]


@dataclass(frozen=True)
class InvalidManifest:
    id: str
    manifest: Manifest
    # The field path of SpecError.field; the API server's message names it too.
    field: str
    # Words of the API server's message (from the CRD's rule messages where ours).
    api_message: str

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])


def valid_zone() -> Manifest:
    return {
        "apiVersion": "secondarydns.io/v1alpha1",
        "kind": "Zone",
        "metadata": {"name": "example-com"},
        "spec": {
            "zone": "example.com",
            "primaries": [{"address": "192.0.2.1"}],
            "servers": ["secondary-dns"],
        },
    }


def valid_secondary_server() -> Manifest:
    return {
        "apiVersion": "secondarydns.io/v1alpha1",
        "kind": "SecondaryServer",
        "metadata": {"name": "secondary-dns"},
        "spec": {},
    }


def _zone(change: Callable[[Manifest], None]) -> Manifest:
    manifest = valid_zone()
    change(manifest["spec"])
    return manifest


def _server(change: Callable[[Manifest], None]) -> Manifest:
    manifest = valid_secondary_server()
    change(manifest["spec"])
    return manifest


def _set(**fields: Any) -> Callable[[Manifest], None]:
    def change(spec: Manifest) -> None:
        spec.update(copy.deepcopy(fields))

    return change


def _primary(**fields: Any) -> Callable[[Manifest], None]:
    def change(spec: Manifest) -> None:
        spec["primaries"][0].update(copy.deepcopy(fields))

    return change


def _delete(name: str) -> Callable[[Manifest], None]:
    def change(spec: Manifest) -> None:
        del spec[name]

    return change


def _zone_name(name: str) -> Manifest:
    return _zone(_set(zone=name))


_LABEL_WORDS = "every label of spec.zone must have 1 to 63 characters"
_CHARACTER_WORDS = "labels of spec.zone may only contain letters, digits"
_NOT_IP = "must be an IPv4 or IPv6 address"
_NOT_UNICAST = "must be a unicast address"
_NOT_A_PRIMARY = "must be the global unicast address of a primary"
_NOT_CIDR = "must be a network in CIDR notation"

CASES: tuple[InvalidManifest, ...] = (
    # --- Zone: the zone's name -------------------------------------------------
    InvalidManifest("zone-empty-label", _zone_name("example..com"), "spec.zone", _LABEL_WORDS),
    InvalidManifest("zone-leading-dot", _zone_name(".example.com"), "spec.zone", _LABEL_WORDS),
    InvalidManifest("zone-root", _zone_name("."), "spec.zone", _LABEL_WORDS),
    InvalidManifest("zone-empty", _zone_name(""), "spec.zone", _LABEL_WORDS),
    InvalidManifest(
        "zone-label-64-characters", _zone_name("a" * 64 + ".example"), "spec.zone", _LABEL_WORDS
    ),
    InvalidManifest(
        "zone-name-254-characters",
        _zone_name(".".join(["a" * 63] * 3 + ["b" * 62])),
        "spec.zone",
        "must have at most 253 characters",
    ),
    InvalidManifest(
        "zone-wildcard", _zone_name("*.example.com"), "spec.zone", "must not be a wildcard"
    ),
    InvalidManifest("zone-space", _zone_name("exa mple.com"), "spec.zone", _CHARACTER_WORDS),
    InvalidManifest(
        "zone-hyphen-at-label-end", _zone_name("example-.com"), "spec.zone", _CHARACTER_WORDS
    ),
    InvalidManifest(
        "zone-classless-slash",
        _zone_name("0/25.2.0.192.in-addr.arpa"),
        "spec.zone",
        _CHARACTER_WORDS,
    ),
    InvalidManifest("zone-missing", _zone(_delete("zone")), "spec.zone", "Required value"),
    InvalidManifest(
        "zone-not-a-string", _zone(_set(zone=42)), "spec.zone", "must be of type string"
    ),
    # --- Zone: primaries -------------------------------------------------------
    InvalidManifest(
        "primaries-missing", _zone(_delete("primaries")), "spec.primaries", "Required value"
    ),
    InvalidManifest("primaries-empty", _zone(_set(primaries=[])), "spec.primaries", "at least 1"),
    InvalidManifest(
        "primaries-nine",
        _zone(_set(primaries=[{"address": f"192.0.2.{n}"} for n in range(1, 10)])),
        "spec.primaries",
        "must have at most 8 items",
    ),
    InvalidManifest(
        "primaries-duplicate",
        _zone(_set(primaries=[{"address": "192.0.2.1"}, {"address": "192.0.2.1", "port": 53}])),
        "spec.primaries",
        "must have a distinct address and port",
    ),
    InvalidManifest(
        "primaries-duplicate-ipv6-spelling",
        _zone(_set(primaries=[{"address": "2001:db8::1"}, {"address": "2001:DB8:0::1"}])),
        "spec.primaries",
        "must have a distinct address and port",
    ),
    InvalidManifest(
        "primary-address-host-name",
        _zone(_primary(address="ns1.example.com")),
        "spec.primaries[0].address",
        _NOT_IP,
    ),
    InvalidManifest(
        "primary-address-ipv4-leading-zero",
        _zone(_primary(address="192.0.2.010")),
        "spec.primaries[0].address",
        _NOT_IP,
    ),
    InvalidManifest(
        "primary-address-ipv6-scope",
        _zone(_primary(address="fe80::1%eth0")),
        "spec.primaries[0].address",
        _NOT_IP,
    ),
    InvalidManifest(
        "primary-address-ipv4-mapped",
        _zone(_primary(address="::ffff:192.0.2.1")),
        "spec.primaries[0].address",
        _NOT_IP,
    ),
    InvalidManifest(
        "primary-address-unspecified",
        _zone(_primary(address="0.0.0.0")),
        "spec.primaries[0].address",
        _NOT_A_PRIMARY,
    ),
    InvalidManifest(
        "primary-address-multicast",
        _zone(_primary(address="ff02::1")),
        "spec.primaries[0].address",
        _NOT_A_PRIMARY,
    ),
    InvalidManifest(
        "primary-address-broadcast",
        _zone(_primary(address="255.255.255.255")),
        "spec.primaries[0].address",
        _NOT_A_PRIMARY,
    ),
    # A replica's loopback is the replica itself; link-local reaches the node's
    # neighbours and 169.254.169.254, a cloud's metadata service (issue 13, item 9).
    InvalidManifest(
        "primary-address-loopback",
        _zone(_primary(address="127.0.0.1", port=1)),
        "spec.primaries[0].address",
        _NOT_A_PRIMARY,
    ),
    InvalidManifest(
        "primary-address-loopback-ipv6",
        _zone(_set(primaries=[{"address": "192.0.2.1"}, {"address": "::1"}])),
        "spec.primaries[1].address",
        _NOT_A_PRIMARY,
    ),
    InvalidManifest(
        "primary-address-link-local-metadata",
        _zone(_primary(address="169.254.169.254", port=80)),
        "spec.primaries[0].address",
        _NOT_A_PRIMARY,
    ),
    InvalidManifest(
        "primary-address-link-local-ipv6",
        _zone(_primary(address="fe80::1")),
        "spec.primaries[0].address",
        _NOT_A_PRIMARY,
    ),
    InvalidManifest(
        "primary-address-missing",
        _zone(_set(primaries=[{"port": 53}])),
        "spec.primaries[0].address",
        "Required value",
    ),
    InvalidManifest(
        "primary-port-zero",
        _zone(_primary(port=0)),
        "spec.primaries[0].port",
        "greater than or equal to 1",
    ),
    InvalidManifest(
        "primary-port-65536",
        _zone(_primary(port=65536)),
        "spec.primaries[0].port",
        "less than or equal to 65535",
    ),
    InvalidManifest(
        "primary-port-quoted",
        _zone(_primary(port="53")),
        "spec.primaries[0].port",
        "must be of type integer",
    ),
    InvalidManifest(
        "primary-tsig-secret-name-invalid",
        _zone(_primary(tsigKeySecretRef={"name": "Tsig_Key"})),
        "spec.primaries[0].tsigKeySecretRef.name",
        "must be the name of a Secret",
    ),
    InvalidManifest(
        "primary-tsig-secret-name-missing",
        _zone(_primary(tsigKeySecretRef={"key": "primary-a"})),
        "spec.primaries[0].tsigKeySecretRef.name",
        "Required value",
    ),
    InvalidManifest(
        "primary-tsig-key-prefix-invalid",
        _zone(_primary(tsigKeySecretRef={"name": "tsig", "key": "primary/a"})),
        "spec.primaries[0].tsigKeySecretRef.key",
        "must prefix Secret data keys",
    ),
    # --- Zone: which servers ---------------------------------------------------
    InvalidManifest(
        "servers-and-selector",
        _zone(_set(serverSelector={"matchLabels": {"tier": "public"}})),
        "spec.serverSelector",
        "cannot be combined with spec.servers",
    ),
    InvalidManifest(
        "servers-neither",
        _zone(_delete("servers")),
        "spec.servers",
        "set exactly one of spec.servers",
    ),
    InvalidManifest("servers-empty", _zone(_set(servers=[])), "spec.servers", "at least 1"),
    InvalidManifest(
        "servers-duplicate",
        _zone(_set(servers=["secondary-dns", "secondary-dns"])),
        "spec.servers[1]",
        "Duplicate value",
    ),
    InvalidManifest(
        "servers-name-invalid",
        _zone(_set(servers=["Secondary_DNS"])),
        "spec.servers[0]",
        "must be the name of a SecondaryServer",
    ),
    InvalidManifest(
        "server-selector-in-without-values",
        _zone(
            lambda spec: (
                spec.pop("servers"),
                spec.update(
                    serverSelector={"matchExpressions": [{"key": "tier", "operator": "In"}]}
                ),
            )
        ),
        "spec.serverSelector.matchExpressions[0].values",
        "must list at least one label value",
    ),
    InvalidManifest(
        "server-selector-operator-unknown",
        _zone(
            lambda spec: (
                spec.pop("servers"),
                spec.update(
                    serverSelector={
                        "matchExpressions": [{"key": "tier", "operator": "Equals", "values": ["a"]}]
                    }
                ),
            )
        ),
        "spec.serverSelector.matchExpressions[0].operator",
        "Unsupported value",
    ),
    InvalidManifest(
        "server-selector-label-key-invalid",
        _zone(
            lambda spec: (
                spec.pop("servers"),
                spec.update(serverSelector={"matchLabels": {"-tier": "a"}}),
            )
        ),
        "spec.serverSelector.matchLabels",
        "label keys must be an optional DNS subdomain prefix",
    ),
    # --- Zone: transfer ACL, NOTIFY, timers ------------------------------------
    InvalidManifest(
        "allow-transfer-entry-empty",
        _zone(_set(allowTransfer=[{}])),
        "spec.allowTransfer[0]",
        "needs cidr, tsigKeySecretRef or both",
    ),
    InvalidManifest(
        "allow-transfer-prefix-33",
        _zone(_set(allowTransfer=[{"cidr": "192.0.2.0/33"}])),
        "spec.allowTransfer[0].cidr",
        _NOT_CIDR,
    ),
    InvalidManifest(
        "allow-transfer-host-bits",
        _zone(_set(allowTransfer=[{"cidr": "10.0.0.1/8"}])),
        "spec.allowTransfer[0].cidr",
        "has host bits set",
    ),
    InvalidManifest(
        "allow-transfer-bare-address",
        _zone(_set(allowTransfer=[{"cidr": "192.0.2.1"}])),
        "spec.allowTransfer[0].cidr",
        _NOT_CIDR,
    ),
    InvalidManifest(
        "notify-allow-from-not-cidr",
        _zone(_set(notify={"allowFrom": ["primary.example.com"]})),
        "spec.notify.allowFrom[0]",
        _NOT_CIDR,
    ),
    InvalidManifest(
        "timers-refresh-min-above-max",
        _zone(_set(timers={"minRefreshSeconds": 3600, "maxRefreshSeconds": 300})),
        "spec.timers.minRefreshSeconds",
        "must not exceed spec.timers.maxRefreshSeconds",
    ),
    InvalidManifest(
        "timers-retry-min-above-max",
        _zone(_set(timers={"minRetrySeconds": 600, "maxRetrySeconds": 60})),
        "spec.timers.minRetrySeconds",
        "must not exceed spec.timers.maxRetrySeconds",
    ),
    InvalidManifest(
        "timers-zero",
        _zone(_set(timers={"minRetrySeconds": 0})),
        "spec.timers.minRetrySeconds",
        "greater than or equal to 1",
    ),
    InvalidManifest(
        "retransfer-request-too-long",
        _zone(_set(retransferRequest="x" * 254)),
        "spec.retransferRequest",
        "Too long",
    ),
    # --- Zone: unknown fields (typos) ------------------------------------------
    InvalidManifest(
        "zone-unknown-spec-field",
        _zone(_set(primary=[{"address": "192.0.2.2"}])),
        "spec.primary",
        'unknown field "spec.primary"',
    ),
    InvalidManifest(
        "zone-unknown-primary-field",
        _zone(_primary(tsigKey="tsig")),
        "spec.primaries[0].tsigKey",
        'unknown field "spec.primaries[0].tsigKey"',
    ),
    InvalidManifest(
        "zone-unknown-top-level-field",
        {**valid_zone(), "specs": {}},
        "specs",
        'unknown field "specs"',
    ),
    # --- SecondaryServer -------------------------------------------------------
    InvalidManifest(
        "server-name-too-long",
        {**valid_secondary_server(), "metadata": {"name": "s" * 49}},
        "metadata.name",
        "Too long",
    ),
    InvalidManifest(
        "server-name-starts-with-digit",
        {**valid_secondary_server(), "metadata": {"name": "1-secondary"}},
        "metadata.name",
        "metadata.name of a SecondaryServer must be",
    ),
    InvalidManifest(
        "replicas-zero", _server(_set(replicas=0)), "spec.replicas", "greater than or equal to 1"
    ),
    InvalidManifest(
        "replicas-quoted", _server(_set(replicas="3")), "spec.replicas", "must be of type integer"
    ),
    InvalidManifest(
        "engine-unknown",
        _server(_set(engine={"type": "nsd"})),
        "spec.engine.type",
        'Unsupported value: "nsd"',
    ),
    InvalidManifest(
        "engine-image-blank",
        _server(_set(engine={"image": ""})),
        "spec.engine.image",
        "must be an image reference",
    ),
    InvalidManifest(
        "engine-resources-quantity",
        _server(_set(engine={"resources": {"limits": {"cpu": "1 core"}}})),
        "spec.engine.resources.limits.cpu",
        "should match",
    ),
    InvalidManifest(
        "spread-min-domains-with-schedule-anyway",
        _server(_set(spread={"minDomains": 3, "whenUnsatisfiable": "ScheduleAnyway"})),
        "spec.spread.minDomains",
        "only applies with whenUnsatisfiable: DoNotSchedule",
    ),
    InvalidManifest(
        "spread-min-domains-zero",
        _server(_set(spread={"minDomains": 0})),
        "spec.spread.minDomains",
        "greater than or equal to 1",
    ),
    InvalidManifest(
        "spread-topology-key-invalid",
        _server(_set(spread={"topologyKey": "failure zone"})),
        "spec.spread.topologyKey",
        "must be a node label key",
    ),
    InvalidManifest(
        "service-external-name",
        _server(_set(service={"type": "ExternalName"})),
        "spec.service.type",
        'Unsupported value: "ExternalName"',
    ),
    InvalidManifest(
        "service-load-balancer-ip-on-cluster-ip",
        _server(_set(service={"loadBalancerIP": "192.0.2.10"})),
        "spec.service.loadBalancerIP",
        "only applies to type LoadBalancer",
    ),
    InvalidManifest(
        "service-source-range-not-cidr",
        _server(_set(service={"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.0"]})),
        "spec.service.loadBalancerSourceRanges[0]",
        _NOT_CIDR,
    ),
    InvalidManifest(
        "storage-size-zero",
        _server(_set(storage={"size": "0Gi"})),
        "spec.storage.size",
        "must be more than zero",
    ),
    InvalidManifest(
        "storage-size-not-quantity",
        _server(_set(storage={"size": "ten gigs"})),
        "spec.storage.size",
        "must be a quantity",
    ),
    InvalidManifest(
        "stealth-quoted", _server(_set(stealth="yes")), "spec.stealth", "must be of type boolean"
    ),
    InvalidManifest(
        "limits-max-records-zero",
        _server(_set(limits={"maxRecords": 0})),
        "spec.limits.maxRecords",
        "greater than or equal to 1",
    ),
    InvalidManifest(
        "limits-transfer-timeout-seconds-under-a-minute",
        _server(_set(limits={"transferTimeoutSeconds": 30})),
        "spec.limits.transferTimeoutSeconds",
        "greater than or equal to 60",
    ),
    InvalidManifest(
        "toleration-exists-with-value",
        _server(
            _set(podTemplate={"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]})
        ),
        "spec.podTemplate.tolerations[0].value",
        "must be empty when operator is Exists",
    ),
    InvalidManifest(
        "pod-label-value-invalid",
        _server(_set(podTemplate={"labels": {"tier": "public dns"}})),
        "spec.podTemplate.labels",
        "label keys must be an optional DNS subdomain prefix",
    ),
    InvalidManifest(
        "server-unknown-spec-field",
        _server(_set(replica=3)),
        "spec.replica",
        'unknown field "spec.replica"',
    ),
    InvalidManifest(
        "server-unknown-nested-field",
        _server(_set(service={"type": "ClusterIP", "port": 53})),
        "spec.service.port",
        'unknown field "spec.service.port"',
    ),
)


@dataclass(frozen=True)
class ValidManifest:
    """An edge both sides must accept: the other half of "the same verdict"."""

    id: str
    manifest: Manifest

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])


def _selector(selector: Manifest) -> Callable[[Manifest], None]:
    def change(spec: Manifest) -> None:
        del spec["servers"]
        spec["serverSelector"] = copy.deepcopy(selector)

    return change


VALID_CASES: tuple[ValidManifest, ...] = (
    ValidManifest("zone-absolute-mixed-case", _zone_name("Example.COM.")),
    ValidManifest("zone-service-label", _zone_name("_msdcs.example.com")),
    ValidManifest("zone-reverse-ipv4", _zone_name("2.0.192.in-addr.arpa")),
    ValidManifest("zone-classless-hyphen", _zone_name("0-25.2.0.192.in-addr.arpa.")),
    ValidManifest("zone-single-label", _zone_name("internal")),
    ValidManifest("zone-label-63", _zone_name("a" * 63 + ".example")),
    ValidManifest("zone-name-253", _zone_name(".".join(["a" * 63] * 3 + ["b" * 61]))),
    ValidManifest(
        "zone-name-253-absolute", _zone_name(".".join(["a" * 63] * 3 + ["b" * 61]) + ".")
    ),
    ValidManifest(
        "primaries-eight-ipv6-and-ports",
        _zone(
            _set(
                primaries=[{"address": "2001:db8::53"}, {"address": "2001:db8::53", "port": 5353}]
                + [{"address": f"198.51.100.{n}", "port": 65535} for n in range(1, 7)]
            )
        ),
    ),
    # Private and unique-local addresses are fine: hidden primaries often have them.
    ValidManifest("primary-private", _zone(_primary(address="10.1.2.3"))),
    ValidManifest("primary-unique-local-ipv6", _zone(_primary(address="fd00::53"))),
    ValidManifest("primary-shared-address-space", _zone(_primary(address="100.64.0.53"))),
    ValidManifest(
        "selector-everything-and-expressions",
        _zone(
            _selector(
                {
                    "matchLabels": {"example.com/tier": "public"},
                    "matchExpressions": [
                        {"key": "region", "operator": "NotIn", "values": ["lab"]},
                        {"key": "retired", "operator": "DoesNotExist"},
                    ],
                }
            )
        ),
    ),
    ValidManifest("selector-empty-selects-all", _zone(_selector({}))),
    ValidManifest(
        "allow-transfer-key-only-and-host-route",
        _zone(
            _set(
                allowTransfer=[
                    {"tsigKeySecretRef": {"name": "tsig.partners", "key": "partner_a.v2"}},
                    {"cidr": "198.51.100.7/32"},
                    {"cidr": "2001:db8::/32"},
                    {"cidr": "0.0.0.0/0"},
                ]
            )
        ),
    ),
    ValidManifest(
        "timers-min-equals-max",
        _zone(
            _set(
                timers={
                    "minRefreshSeconds": 2419200,
                    "maxRefreshSeconds": 2419200,
                    "minRetrySeconds": 1,
                }
            )
        ),
    ),
    ValidManifest(
        "timers-at-the-maxima",
        _zone(
            _set(
                timers={
                    "minRefreshSeconds": 2419200,
                    "maxRefreshSeconds": 2419200,
                    "minRetrySeconds": 2419200,
                    "maxRetrySeconds": 2419200,
                }
            )
        ),
    ),
    ValidManifest("server-name-48", {**valid_secondary_server(), "metadata": {"name": "s" * 48}}),
    ValidManifest(
        "server-knot-with-limits",
        _server(
            _set(
                engine={"type": "knot"},
                limits={"maxRecords": 4294967295, "transferTimeoutSeconds": 2419200},
            )
        ),
    ),
    ValidManifest(
        "server-everything",
        _server(
            _set(
                replicas=1,
                engine={
                    "type": "bind9",
                    "image": "registry.example/dns:1.0",
                    "resources": {"requests": {"cpu": "100m", "memory": 1073741824}},
                },
                spread={
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                },
                service={
                    "type": "LoadBalancer",
                    "annotations": {"metallb.universe.tf/address-pool": "dns"},
                    "loadBalancerIP": "2001:db8::53",
                    "loadBalancerSourceRanges": ["192.0.2.0/24"],
                },
                storage={"size": "500Mi", "storageClassName": "fast-ssd"},
                stealth=True,
                limits={"maxRecords": 4294967295, "transferTimeoutSeconds": 60},
                podTemplate={
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [
                        {"operator": "Exists"},
                        {
                            "key": "k",
                            "operator": "Equal",
                            "value": "v",
                            "effect": "NoExecute",
                            "tolerationSeconds": 30,
                        },
                    ],
                    "affinity": {"nodeAffinity": {"anything": ["the StatefulSet validates it"]}},
                    "priorityClassName": "dns-critical",
                    "labels": {"team": "dns", "empty": ""},
                    "annotations": {"example.com/note": "free text, spaces and all"},
                },
            )
        ),
    ),
)
