"""Every numeric bound of the CRDs is one constant of `secondary_dns.api.limits`.

The API server applies the CRDs' bounds, the models and the renderer the
constants; these tests walk the CRDs' OpenAPI schemas so that a bound changed
on one side only fails here, and check that a number the API server accepts is
also accepted by the models and served by the renderer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from manifest_cases import valid_secondary_server, valid_zone
from secondary_dns.api import ObjectRef, SpecError, limits, parse_secondary_server, parse_zone
from secondary_dns.render import RenderRequest, render_bind9
from secondary_dns.render.engine import DEFAULT_RELAY_KEY_NAME

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
BOUNDS = (
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
)
# Counts in status: nothing to share, they only cannot be negative.
COUNT = 0

CONDITIONS = {
    ("status.conditions[].type", "maxLength"): limits.MAX_CONDITION_TYPE,
    ("status.conditions[].observedGeneration", "minimum"): COUNT,
    ("status.conditions[].reason", "minLength"): 1,
    ("status.conditions[].reason", "maxLength"): limits.MAX_CONDITION_REASON,
    ("status.conditions[].message", "maxLength"): limits.MAX_CONDITION_MESSAGE,
}


def _secret_ref(path: str) -> dict[tuple[str, str], int]:
    return {
        (f"{path}.name", "maxLength"): limits.MAX_OBJECT_NAME,
        (f"{path}.key", "maxLength"): limits.MAX_SECRET_KEY_PREFIX,
    }


def _timers() -> dict[tuple[str, str], int]:
    bounds: dict[tuple[str, str], int] = {}
    for name in ("minRefreshSeconds", "maxRefreshSeconds", "minRetrySeconds", "maxRetrySeconds"):
        bounds[(f"spec.timers.{name}", "minimum")] = limits.MIN_TIMER_SECONDS
        bounds[(f"spec.timers.{name}", "maximum")] = limits.MAX_TIMER_SECONDS
    return bounds


EXPECTED: dict[str, dict[tuple[str, str], int]] = {
    "SecondaryServer": {
        ("metadata.name", "maxLength"): limits.MAX_SERVER_NAME,
        ("spec.replicas", "minimum"): limits.MIN_REPLICAS,
        ("spec.engine.image", "maxLength"): limits.MAX_IMAGE,
        ("spec.engine.resources.limits", "maxProperties"): limits.MAX_RESOURCE_QUANTITIES,
        ("spec.engine.resources.requests", "maxProperties"): limits.MAX_RESOURCE_QUANTITIES,
        ("spec.spread.topologyKey", "maxLength"): limits.MAX_LABEL_KEY,
        ("spec.spread.minDomains", "minimum"): limits.MIN_DOMAINS,
        ("spec.service.annotations", "maxProperties"): limits.MAX_LABELS,
        ("spec.service.loadBalancerIP", "maxLength"): limits.MAX_ADDRESS_LENGTH,
        ("spec.service.loadBalancerSourceRanges", "maxItems"): limits.MAX_SOURCE_RANGES,
        ("spec.service.loadBalancerSourceRanges[]", "maxLength"): limits.MAX_ADDRESS_LENGTH,
        ("spec.storage.size", "maxLength"): limits.MAX_QUANTITY_LENGTH,
        ("spec.storage.storageClassName", "maxLength"): limits.MAX_OBJECT_NAME,
        ("spec.limits.maxRecords", "minimum"): limits.MIN_RECORDS,
        ("spec.limits.maxRecords", "maximum"): limits.MAX_RECORDS,
        ("spec.limits.transferTimeoutSeconds", "minimum"): limits.MIN_TRANSFER_TIMEOUT,
        ("spec.limits.responsesPerSecond", "minimum"): limits.MIN_RESPONSES_PER_SECOND,
        ("spec.limits.responsesPerSecond", "maximum"): limits.MAX_RESPONSES_PER_SECOND,
        ("spec.limits.transferTimeoutSeconds", "maximum"): limits.MAX_TRANSFER_TIMEOUT,
        ("spec.podTemplate.nodeSelector", "maxProperties"): limits.MAX_LABELS,
        ("spec.podTemplate.nodeSelector.*", "maxLength"): limits.MAX_LABEL_VALUE,
        ("spec.podTemplate.tolerations", "maxItems"): limits.MAX_TOLERATIONS,
        ("spec.podTemplate.tolerations[].key", "maxLength"): limits.MAX_LABEL_KEY,
        ("spec.podTemplate.tolerations[].value", "maxLength"): limits.MAX_LABEL_VALUE,
        ("spec.podTemplate.priorityClassName", "maxLength"): limits.MAX_OBJECT_NAME,
        ("spec.podTemplate.labels", "maxProperties"): limits.MAX_LABELS,
        ("spec.podTemplate.labels.*", "maxLength"): limits.MAX_LABEL_VALUE,
        ("spec.podTemplate.annotations", "maxProperties"): limits.MAX_LABELS,
        **CONDITIONS,
        ("status.replicas", "minimum"): COUNT,
        ("status.readyReplicas", "minimum"): COUNT,
        ("status.failureDomains.*", "minimum"): COUNT,
        ("status.domains", "minimum"): COUNT,
        ("status.zones", "minimum"): COUNT,
    },
    "Zone": {
        # With a trailing dot; the CEL rule beside it allows 253 without one.
        ("spec.zone", "maxLength"): limits.MAX_NAME_LENGTH + 1,
        ("spec.primaries", "minItems"): limits.MIN_PRIMARIES,
        ("spec.primaries", "maxItems"): limits.MAX_PRIMARIES,
        ("spec.primaries[].address", "maxLength"): limits.MAX_ADDRESS_LENGTH,
        ("spec.primaries[].port", "minimum"): limits.MIN_PORT,
        ("spec.primaries[].port", "maximum"): limits.MAX_PORT,
        **_secret_ref("spec.primaries[].tsigKeySecretRef"),
        ("spec.servers", "minItems"): 1,
        ("spec.servers", "maxItems"): limits.MAX_SERVERS,
        ("spec.servers[]", "maxLength"): limits.MAX_SERVER_NAME,
        ("spec.serverSelector.matchLabels", "maxProperties"): limits.MAX_LABELS,
        ("spec.serverSelector.matchLabels.*", "maxLength"): limits.MAX_LABEL_VALUE,
        ("spec.serverSelector.matchExpressions", "maxItems"): limits.MAX_MATCH_EXPRESSIONS,
        ("spec.serverSelector.matchExpressions[].key", "maxLength"): limits.MAX_LABEL_KEY,
        ("spec.serverSelector.matchExpressions[].values", "maxItems"): limits.MAX_SELECTOR_VALUES,
        ("spec.serverSelector.matchExpressions[].values[]", "maxLength"): limits.MAX_LABEL_VALUE,
        ("spec.allowTransfer", "maxItems"): limits.MAX_ALLOW_TRANSFER,
        ("spec.allowTransfer[].cidr", "maxLength"): limits.MAX_ADDRESS_LENGTH,
        **_secret_ref("spec.allowTransfer[].tsigKeySecretRef"),
        ("spec.notify.allowFrom", "maxItems"): limits.MAX_NOTIFY_ALLOW_FROM,
        ("spec.notify.allowFrom[]", "maxLength"): limits.MAX_ADDRESS_LENGTH,
        **_timers(),
        ("spec.retransferRequest", "maxLength"): limits.MAX_RETRANSFER_REQUEST,
        **CONDITIONS,
        ("status.primarySerial", "minimum"): COUNT,
        ("status.primarySerial", "maximum"): limits.MAX_SERIAL,
        ("status.servedSerial", "minimum"): COUNT,
        ("status.servedSerial", "maximum"): limits.MAX_SERIAL,
        ("status.replicasInSync", "minimum"): COUNT,
        ("status.replicasTotal", "minimum"): COUNT,
        ("status.retransferRequest", "maxLength"): limits.MAX_RETRANSFER_REQUEST,
        ("status.replicas[].serial", "minimum"): COUNT,
        ("status.replicas[].serial", "maximum"): limits.MAX_SERIAL,
    },
}


def _bounds(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[tuple[str, str], int]]:
    """(path, keyword) -> value of every bound; `[]` is a list item, `.*` a map value."""
    for keyword in BOUNDS:
        if keyword in schema:
            yield (path, keyword), schema[keyword]
    for name, child in (schema.get("properties") or {}).items():
        yield from _bounds(child, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), Mapping):
        yield from _bounds(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from _bounds(schema["additionalProperties"], f"{path}.*")


def _crd_bounds() -> dict[str, dict[tuple[str, str], int]]:
    found: dict[str, dict[tuple[str, str], int]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        (version,) = crd["spec"]["versions"]
        found[crd["spec"]["names"]["kind"]] = dict(_bounds(version["schema"]["openAPIV3Schema"]))
    return found


def test_every_crd_bound_is_a_constant_of_the_models() -> None:
    found = _crd_bounds()
    assert set(found) == set(EXPECTED)
    for kind, bounds in found.items():
        expected = EXPECTED[kind]
        unlisted = sorted(set(bounds) - set(expected))
        assert not unlisted, f"{kind}: bounds without a constant in api/limits.py: {unlisted}"
        gone = sorted(set(expected) - set(bounds))
        assert not gone, f"{kind}: bounds the CRD no longer has: {gone}"
        differ = {
            key: (bounds[key], expected[key]) for key in bounds if bounds[key] != expected[key]
        }
        assert not differ, f"{kind}: CRD value != api.limits value: {differ}"


# ---- the numbers themselves: what the API server takes, the models take and the renderer serves

Manifest = dict[str, Any]


def _zone_with(**spec: Any) -> Manifest:
    manifest = valid_zone()
    manifest["spec"].update(copy.deepcopy(spec))
    return manifest


def _server_with(**spec: Any) -> Manifest:
    manifest = valid_secondary_server()
    manifest["spec"].update(copy.deepcopy(spec))
    return manifest


TIMERS = ("minRefreshSeconds", "maxRefreshSeconds", "minRetrySeconds", "maxRetrySeconds")


def _timer(name: str) -> Callable[[int], Manifest]:
    return lambda value: _zone_with(timers={name: value})


# (builder of a manifest with `value` at the field, field path, lowest, highest)
NUMBERS: list[tuple[Callable[[int], Manifest], str, int, int]] = [
    *(
        (_timer(name), f"spec.timers.{name}", limits.MIN_TIMER_SECONDS, limits.MAX_TIMER_SECONDS)
        for name in TIMERS
    ),
    (
        lambda value: _zone_with(primaries=[{"address": "192.0.2.1", "port": value}]),
        "spec.primaries[0].port",
        limits.MIN_PORT,
        limits.MAX_PORT,
    ),
    (
        lambda value: _server_with(limits={"maxRecords": value}),
        "spec.limits.maxRecords",
        limits.MIN_RECORDS,
        limits.MAX_RECORDS,
    ),
    (
        lambda value: _server_with(limits={"transferTimeoutSeconds": value}),
        "spec.limits.transferTimeoutSeconds",
        limits.MIN_TRANSFER_TIMEOUT,
        limits.MAX_TRANSFER_TIMEOUT,
    ),
]


def _parse(manifest: Manifest) -> object:
    return (parse_zone if manifest["kind"] == "Zone" else parse_secondary_server)(manifest)


@pytest.mark.parametrize(("build", "field", "low", "high"), NUMBERS, ids=[n[1] for n in NUMBERS])
def test_the_models_take_exactly_the_crds_range(
    build: Callable[[int], Manifest], field: str, low: int, high: int
) -> None:
    _parse(build(low))
    _parse(build(high))
    for outside in (low - 1, high + 1):
        with pytest.raises(SpecError) as caught:
            _parse(build(outside))
        assert caught.value.field == field


@pytest.mark.parametrize(("build", "field", "low", "high"), NUMBERS, ids=[n[1] for n in NUMBERS])
def test_the_renderer_serves_what_the_api_accepts(
    build: Callable[[int], Manifest], field: str, low: int, high: int
) -> None:
    """The bug this caught: a maxRetrySeconds above 2 weeks passed the API, not the renderer."""
    for value in (low, high):
        manifest = build(value)
        zone = parse_zone(manifest if manifest["kind"] == "Zone" else valid_zone())
        server = parse_secondary_server(
            manifest if manifest["kind"] == "SecondaryServer" else valid_secondary_server()
        )
        ref = ObjectRef("dns", "example-com")
        rendered = render_bind9(
            RenderRequest(
                server=server,
                zones=[(ref, zone)],
                tsig_keys={},
                relay_key_name=DEFAULT_RELAY_KEY_NAME,
            )
        )
        assert ref not in rendered.rejected, rendered.rejected
        assert [zone.ref for zone in rendered.plan.zones] == [ref]
