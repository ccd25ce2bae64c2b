"""The SecondaryServer custom resource: a fleet of secondary name-server pods."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from secondary_dns.api.agent_contract import ENGINE_BIND9, ENGINE_CONFIG_FILES
from secondary_dns.api.common import check_root, check_server_name
from secondary_dns.api.errors import SpecError
from secondary_dns.api.fields import (
    IPAddress,
    IPNetwork,
    check_label_key,
    check_labels,
    check_object_name,
    check_quantity,
    child,
    json_type,
    parse_cidr,
    parse_ip_address,
    read_boolean,
    read_integer,
    read_list,
    read_object,
    read_string,
    read_string_list,
    read_string_map,
)
from secondary_dns.api.limits import (
    DEFAULT_RESPONSES_PER_SECOND,
    MAX_IMAGE,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_QUANTITY_LENGTH,
    MAX_RECORDS,
    MAX_RESOURCE_QUANTITIES,
    MAX_RESPONSES_PER_SECOND,
    MAX_SOURCE_RANGES,
    MAX_TOLERATIONS,
    MAX_TRANSFER_TIMEOUT,
    MIN_DOMAINS,
    MIN_RECORDS,
    MIN_REPLICAS,
    MIN_RESPONSES_PER_SECOND,
    MIN_TRANSFER_TIMEOUT,
)
from secondary_dns.api.meta import SECONDARY_SERVER_KIND

# RFC 2182 §5: at least three name servers, dispersed; one replica is allowed for
# tests and small labs, and the Spread condition says what that costs.
DEFAULT_REPLICAS = 3
ENGINE_TYPES = tuple(ENGINE_CONFIG_FILES)
DEFAULT_ENGINE = ENGINE_BIND9
DEFAULT_TOPOLOGY_KEY = "topology.kubernetes.io/zone"
WHEN_UNSATISFIABLE = ("DoNotSchedule", "ScheduleAnyway")
SERVICE_TYPES = ("ClusterIP", "LoadBalancer", "NodePort")
DEFAULT_STORAGE_SIZE = "1Gi"
TOLERATION_OPERATORS = ("Exists", "Equal")
TAINT_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")

SPEC_FIELDS = (
    "replicas",
    "engine",
    "spread",
    "service",
    "storage",
    "stealth",
    "limits",
    "podTemplate",
)
_QUANTITY_ZERO = re.compile(r"[+]?0*\.?0*([eE].*|[A-Za-z]*)")


@dataclass(frozen=True)
class EngineSpec:
    type: str = DEFAULT_ENGINE
    image: str | None = None
    # corev1.ResourceRequirements as written: {"limits": {...}, "requests": {...}}.
    resources: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpreadSpec:
    """How replicas spread over failure domains (RFC 2182 §3.1: no single point of failure)."""

    topology_key: str = DEFAULT_TOPOLOGY_KEY
    min_domains: int | None = None
    when_unsatisfiable: str = "DoNotSchedule"


@dataclass(frozen=True)
class ServiceSpec:
    type: str = "ClusterIP"
    annotations: Mapping[str, str] = field(default_factory=dict)
    load_balancer_ip: IPAddress | None = None
    load_balancer_source_ranges: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class StorageSpec:
    size: str = DEFAULT_STORAGE_SIZE
    storage_class_name: str | None = None


@dataclass(frozen=True)
class Limits:
    """Protection from a hostile or broken primary, and of others from this server.

    None for max_records renders limits.DEFAULT_RECORDS; None for the timeout
    leaves the engine's default (no limit).
    """

    max_records: int | None = None
    transfer_timeout_seconds: int | None = None
    # Response rate limiting; 0 turns it off.
    responses_per_second: int = DEFAULT_RESPONSES_PER_SECOND


@dataclass(frozen=True)
class PodTemplateSpec:
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None
    priority_class_name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SecondaryServerSpec:
    replicas: int = DEFAULT_REPLICAS
    engine: EngineSpec = EngineSpec()
    spread: SpreadSpec = SpreadSpec()
    service: ServiceSpec = ServiceSpec()
    storage: StorageSpec | None = None
    # RFC 2182 §5.1: a stealth server is not in the zone's NS set; it still serves.
    stealth: bool = False
    limits: Limits = Limits()
    pod_template: PodTemplateSpec = PodTemplateSpec()


def parse_secondary_server(obj: Mapping[str, Any]) -> SecondaryServerSpec:
    """The SecondaryServer's spec with the CRD's defaults and rules applied, or a SpecError."""
    root = check_root(obj, SECONDARY_SERVER_KIND)
    metadata = root.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
        check_server_name(metadata["name"], "metadata.name")
    spec = read_object(root.get("spec", {}), "spec", SPEC_FIELDS)
    replicas = read_integer(
        spec,
        "replicas",
        "spec",
        default=DEFAULT_REPLICAS,
        minimum=MIN_REPLICAS,
        what=" (RFC 2182: 3 or more)",
    )
    assert replicas is not None
    return SecondaryServerSpec(
        replicas=replicas,
        engine=_parse_engine(spec.get("engine", {})),
        spread=_parse_spread(spec.get("spread", {})),
        service=_parse_service(spec.get("service", {})),
        storage=_parse_storage(spec["storage"]) if "storage" in spec else None,
        stealth=read_boolean(spec, "stealth", "spec", default=False),
        limits=_parse_limits(spec.get("limits", {})),
        pod_template=_parse_pod_template(spec.get("podTemplate", {})),
    )


def _parse_engine(value: object) -> EngineSpec:
    path = "spec.engine"
    engine = read_object(value, path, ("type", "image", "resources"))
    engine_type = read_string(engine, "type", path, default=DEFAULT_ENGINE, enum=ENGINE_TYPES)
    assert engine_type is not None
    image = read_string(engine, "image", path, max_length=MAX_IMAGE)
    if image is not None and (not image or image != image.strip()):
        raise SpecError(
            child(path, "image"), "must be an image reference such as registry/dns:1.0, not blank"
        )
    resources: dict[str, Any] = {}
    if "resources" in engine:
        resources_path = child(path, "resources")
        requirements = read_object(engine["resources"], resources_path, ("limits", "requests"))
        for kind, quantities in requirements.items():
            kind_path = child(resources_path, kind)
            if not isinstance(quantities, Mapping):
                raise SpecError(
                    kind_path,
                    f"must be a map of quantities such as cpu: 500m, not {json_type(quantities)}",
                )
            if len(quantities) > MAX_RESOURCE_QUANTITIES:
                raise SpecError(
                    kind_path,
                    f"must have at most {MAX_RESOURCE_QUANTITIES} entries, has {len(quantities)}",
                )
            resources[kind] = {
                str(name): check_quantity(quantity, f"{kind_path}.{name}")
                for name, quantity in quantities.items()
            }
    return EngineSpec(type=engine_type, image=image, resources=resources)


def _parse_spread(value: object) -> SpreadSpec:
    path = "spec.spread"
    spread = read_object(value, path, ("topologyKey", "minDomains", "whenUnsatisfiable"))
    topology_key = read_string(spread, "topologyKey", path, default=DEFAULT_TOPOLOGY_KEY)
    assert topology_key is not None
    check_label_key(topology_key, child(path, "topologyKey"))
    min_domains = read_integer(spread, "minDomains", path, minimum=MIN_DOMAINS)
    when = read_string(
        spread, "whenUnsatisfiable", path, default="DoNotSchedule", enum=WHEN_UNSATISFIABLE
    )
    assert when is not None
    # Kubernetes only accepts minDomains with DoNotSchedule (TopologySpreadConstraint).
    if min_domains is not None and when != "DoNotSchedule":
        raise SpecError(
            child(path, "minDomains"),
            "is only meaningful with whenUnsatisfiable: DoNotSchedule; remove minDomains "
            "or set whenUnsatisfiable to DoNotSchedule",
        )
    return SpreadSpec(topology_key=topology_key, min_domains=min_domains, when_unsatisfiable=when)


def _parse_service(value: object) -> ServiceSpec:
    path = "spec.service"
    known = ("type", "annotations", "loadBalancerIP", "loadBalancerSourceRanges")
    service = read_object(value, path, known)
    service_type = read_string(service, "type", path, default="ClusterIP", enum=SERVICE_TYPES)
    assert service_type is not None
    annotations = read_string_map(service, "annotations", path, max_properties=MAX_LABELS) or {}
    for key in annotations:
        check_label_key(key, child(path, "annotations"))
    for name in ("loadBalancerIP", "loadBalancerSourceRanges"):
        if name in service and service_type != "LoadBalancer":
            raise SpecError(
                child(path, name),
                f"only applies to a Service of type LoadBalancer; remove {name} or set "
                "spec.service.type to LoadBalancer",
            )
    address = None
    if "loadBalancerIP" in service:
        address = parse_ip_address(service["loadBalancerIP"], child(path, "loadBalancerIP"))
    ranges = read_string_list(
        service, "loadBalancerSourceRanges", path, max_items=MAX_SOURCE_RANGES, unique=True
    )
    networks = tuple(
        parse_cidr(cidr, f"{path}.loadBalancerSourceRanges[{index}]")
        for index, cidr in enumerate(ranges or [])
    )
    return ServiceSpec(
        type=service_type,
        annotations=annotations,
        load_balancer_ip=address,
        load_balancer_source_ranges=networks,
    )


def _parse_storage(value: object) -> StorageSpec:
    path = "spec.storage"
    storage = read_object(value, path, ("size", "storageClassName"))
    # A string in the CRD (not int-or-string): "10Gi", as a PVC's storage request.
    size_text = read_string(
        storage, "size", path, default=DEFAULT_STORAGE_SIZE, max_length=MAX_QUANTITY_LENGTH
    )
    assert size_text is not None
    size = check_quantity(size_text, child(path, "size"))
    if size.startswith("-") or _QUANTITY_ZERO.fullmatch(size):
        raise SpecError(child(path, "size"), f'must be more than zero, e.g. 1Gi, not "{size}"')
    storage_class = read_string(storage, "storageClassName", path)
    if storage_class is not None:
        check_object_name(storage_class, child(path, "storageClassName"))
    return StorageSpec(size=size, storage_class_name=storage_class)


def _parse_limits(value: object) -> Limits:
    path = "spec.limits"
    limits = read_object(
        value, path, ("maxRecords", "transferTimeoutSeconds", "responsesPerSecond")
    )
    responses = read_integer(
        limits,
        "responsesPerSecond",
        path,
        default=DEFAULT_RESPONSES_PER_SECOND,
        minimum=MIN_RESPONSES_PER_SECOND,
        maximum=MAX_RESPONSES_PER_SECOND,
        what=" responses per second (0 turns rate limiting off)",
    )
    assert responses is not None  # a default is given
    return Limits(
        responses_per_second=responses,
        max_records=read_integer(
            limits, "maxRecords", path, minimum=MIN_RECORDS, maximum=MAX_RECORDS, what=" records"
        ),
        transfer_timeout_seconds=read_integer(
            limits,
            "transferTimeoutSeconds",
            path,
            minimum=MIN_TRANSFER_TIMEOUT,
            maximum=MAX_TRANSFER_TIMEOUT,
            what=" seconds (BIND counts whole minutes, up to 28 days)",
        ),
    )


def _parse_pod_template(value: object) -> PodTemplateSpec:
    path = "spec.podTemplate"
    known = (
        "nodeSelector",
        "tolerations",
        "affinity",
        "priorityClassName",
        "labels",
        "annotations",
    )
    template = read_object(value, path, known)
    node_selector = read_string_map(template, "nodeSelector", path, max_properties=MAX_LABELS) or {}
    check_labels(node_selector, child(path, "nodeSelector"))
    labels = read_string_map(template, "labels", path, max_properties=MAX_LABELS) or {}
    check_labels(labels, child(path, "labels"))
    annotations = read_string_map(template, "annotations", path, max_properties=MAX_LABELS) or {}
    for key in annotations:
        check_label_key(key, child(path, "annotations"))
    tolerations = tuple(
        _parse_toleration(item, f"{path}.tolerations[{index}]")
        for index, item in enumerate(
            read_list(template, "tolerations", path, max_items=MAX_TOLERATIONS) or []
        )
    )
    affinity = None
    if "affinity" in template:
        # corev1.Affinity is large and stable; the API server keeps it as written
        # (x-kubernetes-preserve-unknown-fields) and validates it in the StatefulSet.
        if not isinstance(template["affinity"], Mapping):
            raise SpecError(
                child(path, "affinity"),
                f"must be an object (corev1 Affinity), not {json_type(template['affinity'])}",
            )
        affinity = dict(template["affinity"])
    priority_class = read_string(template, "priorityClassName", path)
    if priority_class is not None:
        check_object_name(priority_class, child(path, "priorityClassName"))
    return PodTemplateSpec(
        node_selector=node_selector,
        tolerations=tolerations,
        affinity=affinity,
        priority_class_name=priority_class,
        labels=labels,
        annotations=annotations,
    )


def _parse_toleration(value: object, path: str) -> Mapping[str, Any]:
    known = ("key", "operator", "value", "effect", "tolerationSeconds")
    toleration = read_object(value, path, known)
    key = read_string(toleration, "key", path)
    if key:
        check_label_key(key, child(path, "key"))
    operator = read_string(toleration, "operator", path, enum=TOLERATION_OPERATORS)
    tolerated_value = read_string(toleration, "value", path, max_length=MAX_LABEL_VALUE)
    effect = read_string(toleration, "effect", path, enum=TAINT_EFFECTS)
    seconds = read_integer(toleration, "tolerationSeconds", path)
    # corev1 validation, checked here so the StatefulSet is not rejected later.
    if operator == "Exists" and tolerated_value:
        raise SpecError(child(path, "value"), "must be empty when operator is Exists; remove value")
    if not key and operator != "Exists":
        raise SpecError(
            child(path, "operator"),
            "must be Exists when key is empty (a toleration of every taint)",
        )
    if seconds is not None and effect != "NoExecute":
        raise SpecError(
            child(path, "tolerationSeconds"),
            "only applies to effect NoExecute; remove tolerationSeconds or set effect",
        )
    return dict(toleration)
