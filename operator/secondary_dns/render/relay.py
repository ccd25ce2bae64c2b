"""What the NOTIFY relay needs of one SecondaryServer, from its render plan (pure).

The relay runs as its own Deployment (`secondary-dns relay`, docs/notify-relay.md)
so that it keeps working while the operator's leader is replaced. It must not
render anything itself: that would need every Zone's TSIG Secrets, in every
namespace. So the operator derives, from the same ZonePlan that produced a
server's configuration and NetworkPolicy, a `RelayPlan`: for each zone served,
who may notify (the primaries' addresses and keys) and the server's relay key.
It publishes that as one Secret per server in its own namespace
(`build_relay_plan_secret`), and the relay reads those Secrets and nothing else
secret; it takes the replicas' addresses from its own watch of their Pods. A
Zone the planner left out reaches no relay plan.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import ipaddress
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.name

from secondary_dns.api import IPNetwork, ObjectRef, TsigKey
from secondary_dns.render.engine import PlannedZone, ZonePlan

# The label the relay selects its Secrets by, in the operator's namespace.
LABEL_RELAY_PLAN = "secondarydns.io/relay-plan"
# Which SecondaryServer a relay plan belongs to (Secrets cannot be owned across
# namespaces, so the operator deletes them itself when the server goes away).
ANNOTATION_SERVER = "secondarydns.io/server"
# The plan, gzip-compressed: a Secret holds at most 1 MiB, and the plan of 10,000
# zones is about 2.5 MB of JSON (each zone repeats its primaries' keys), about
# 0.2 MB compressed. PLAN_DATA_KEY_UNCOMPRESSED is what earlier operators wrote;
# the relay still reads it.
PLAN_DATA_KEY = "plan.json.gz"
PLAN_DATA_KEY_UNCOMPRESSED = "plan.json"
# A plan larger than this once decompressed is refused (the Secret's 1 MiB of
# gzip could otherwise expand without bound).
MAX_PLAN_BYTES = 256 * 1024 * 1024
# On the operator's Lease, written by its holder: where the relay forwards the
# NOTIFYs it accepts (HOST:PORT), so the leader's serial monitor probes fast.
ANNOTATION_WAKEUP_ADDRESS = "secondarydns.io/wakeup-address"
PLAN_VERSION = 1
DNS_PORT = 53


@dataclass(frozen=True)
class RelayZone:
    ref: ObjectRef
    zone: dns.name.Name
    # The zone's primaries as /32 or /128, plus spec.notify.allowFrom.
    notify_sources: tuple[IPNetwork, ...]
    # A NOTIFY signed with one of these is accepted from any address.
    primary_keys: tuple[TsigKey, ...] = field(repr=False)


@dataclass(frozen=True)
class RelayPlan:
    """One SecondaryServer's zones as the relay routes them."""

    server: ObjectRef
    # The key the relay signs its NOTIFYs to this server's replicas with.
    relay_key: TsigKey = field(repr=False)
    zones: tuple[RelayZone, ...]
    # The port the replicas serve DNS on.
    port: int = DNS_PORT


def relay_zone(plan: ZonePlan, planned: PlannedZone) -> RelayZone:
    """What the relay needs of one planned zone, its keys resolved in `plan`."""
    return RelayZone(
        ref=planned.ref,
        zone=planned.zone,
        notify_sources=planned.notify_sources,
        primary_keys=tuple(
            plan.key(p.key_name) for p in planned.primaries if p.key_name is not None
        ),
    )


def relay_plan(server: ObjectRef, plan: ZonePlan, relay_key: TsigKey) -> RelayPlan:
    return RelayPlan(
        server=server,
        relay_key=relay_key,
        zones=tuple(relay_zone(plan, planned) for planned in plan.zones),
    )


def relay_plan_secret_name(server: ObjectRef) -> str:
    """A DNS subdomain of at most 63 characters, unique per server, readable enough."""
    digest = hashlib.sha256(f"{server.namespace}/{server.name}".encode()).hexdigest()[:10]
    return f"relay-plan-{server.name[:40]}-{digest}"


def _key_document(key: TsigKey) -> dict[str, str]:
    return {
        "name": key.name.to_text(),
        "algorithm": key.algorithm.to_text(),
        "secret": key.secret_base64,
    }


def relay_zone_document(zone: RelayZone) -> str:
    """One zone's entry of the plan document (sorted JSON)."""
    return json.dumps(
        {
            "namespace": zone.ref.namespace,
            "name": zone.ref.name,
            "zone": zone.zone.to_text(),
            "notifySources": [str(network) for network in zone.notify_sources],
            "primaryKeys": [_key_document(key) for key in zone.primary_keys],
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def relay_plan_document(plan: RelayPlan) -> str:
    """The plan as sorted JSON: identical plans give identical Secrets (no write)."""
    return relay_plan_document_of(
        plan.server, plan.relay_key, [relay_zone_document(zone) for zone in plan.zones], plan.port
    )


def relay_plan_document_of(
    server: ObjectRef, relay_key: TsigKey, zone_documents: Sequence[str], port: int = DNS_PORT
) -> str:
    """The plan document from its zones' entries (`relay_zone_document`, in the
    plan's order): the operator keeps each zone's entry while its planned zone and
    keys stay the same, so a change of one zone among 10,000 formats one entry."""
    head = json.dumps(
        {
            "version": PLAN_VERSION,
            "server": {"namespace": server.namespace, "name": server.name},
            "port": port,
            "relayKey": _key_document(relay_key),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    # "zones" sorts last of the document's keys, so it closes the object.
    return f'{head[:-1]},"zones":[{",".join(zone_documents)}]}}'


def build_relay_plan_secret(
    plan: RelayPlan, namespace: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The Secret, in the operator's namespace, the relay reads the plan from."""
    return build_relay_plan_secret_of(plan.server, relay_plan_document(plan), namespace, labels)


def build_relay_plan_secret_of(
    server: ObjectRef, document: str, namespace: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The Secret holding a plan document (`relay_plan_document_of`)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": relay_plan_secret_name(server),
            "namespace": namespace,
            "labels": {**labels, LABEL_RELAY_PLAN: "true"},
            "annotations": {ANNOTATION_SERVER: f"{server.namespace}/{server.name}"},
        },
        "type": "Opaque",
        "data": {
            # mtime=0: identical plans give identical bytes (no write). Level 1: the
            # plan repeats itself so much that it compresses as well as at level 9
            # (56 KB of 2.4 MB at 10,000 zones), in a third of the time.
            PLAN_DATA_KEY: base64.b64encode(
                gzip.compress(document.encode(), compresslevel=1, mtime=0)
            ).decode("ascii")
        },
    }


def secret_server(secret: Mapping[str, Any]) -> ObjectRef | None:
    """The server a relay plan Secret belongs to, from its annotation."""
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    namespace, _, name = str(annotations.get(ANNOTATION_SERVER, "")).partition("/")
    return ObjectRef(namespace, name) if namespace and name else None


class RelayPlanError(ValueError):
    """A relay plan Secret that cannot be read (written by another version, or by hand)."""


def _parse_key(document: Any) -> TsigKey:
    return TsigKey(
        name=dns.name.from_text(str(document["name"])),
        algorithm=dns.name.from_text(str(document["algorithm"])),
        secret=base64.b64decode(str(document["secret"]), validate=True),
    )


def _gunzip(data: bytes) -> bytes:
    inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)  # gzip framing
    text = inflate.decompress(data, MAX_PLAN_BYTES)
    if inflate.unconsumed_tail or not inflate.eof:
        raise ValueError(f"the plan is truncated or larger than {MAX_PLAN_BYTES} bytes")
    return text


def parse_relay_plan_secret(secret: Mapping[str, Any]) -> RelayPlan:
    """The plan in a Secret built by build_relay_plan_secret, or RelayPlanError."""
    name = (secret.get("metadata") or {}).get("name", "?")
    try:
        data = secret.get("data") or {}
        if PLAN_DATA_KEY in data:
            text = _gunzip(base64.b64decode(data[PLAN_DATA_KEY], validate=True))
        else:
            text = base64.b64decode(data[PLAN_DATA_KEY_UNCOMPRESSED], validate=True)
        document = json.loads(text)
        if document.get("version") != PLAN_VERSION:
            raise RelayPlanError(f"Secret {name}: plan version {document.get('version')!r}")
        return RelayPlan(
            server=ObjectRef(document["server"]["namespace"], document["server"]["name"]),
            relay_key=_parse_key(document["relayKey"]),
            port=int(document["port"]),
            zones=tuple(
                RelayZone(
                    ref=ObjectRef(zone["namespace"], zone["name"]),
                    zone=dns.name.from_text(zone["zone"]),
                    notify_sources=tuple(
                        ipaddress.ip_network(text) for text in zone["notifySources"]
                    ),
                    primary_keys=tuple(_parse_key(key) for key in zone["primaryKeys"]),
                )
                for zone in document["zones"]
            ),
        )
    except RelayPlanError:
        raise
    except Exception as error:  # anything unreadable: the relay skips this one Secret
        raise RelayPlanError(f"Secret {name}: {type(error).__name__}: {error}") from None


# ---- the address primaries notify ---------------------------------------------------


def notify_address(service: Mapping[str, Any] | None) -> str | None:
    """The relay Service's address for primaries, as `status.notifyAddress` shows it.

    A LoadBalancer's ingress (what primaries outside the cluster reach) once the
    load balancer has one, else the ClusterIP; `ADDRESS` when the Service's DNS
    port is 53, `ADDRESS:PORT` (IPv6 `[ADDRESS]:PORT`) otherwise. None while the
    Service does not exist or has no address yet.
    """
    if not service:
        return None
    spec = service.get("spec") or {}
    address: str | None = None
    if spec.get("type") == "LoadBalancer":
        for ingress in ((service.get("status") or {}).get("loadBalancer") or {}).get(
            "ingress"
        ) or []:
            address = ingress.get("ip") or ingress.get("hostname")
            if address:
                break
    if not address:
        cluster_ip = spec.get("clusterIP")
        address = cluster_ip if cluster_ip and cluster_ip != "None" else None
    if not address:
        return None
    ports = spec.get("ports") or []
    udp = [p for p in ports if (p.get("protocol") or "TCP") == "UDP"] or ports
    port = int(udp[0].get("port", DNS_PORT)) if udp else DNS_PORT
    if port == DNS_PORT:
        return str(address)
    return f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"
