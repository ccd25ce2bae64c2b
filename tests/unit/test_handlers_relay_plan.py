"""The relay plan Secret the operator publishes stays the plan of what is served,
while each zone's entry is formatted only when that zone (or its keys) changed."""

from __future__ import annotations

import base64

from secondary_dns.api import ObjectRef
from secondary_dns.render.relay import parse_relay_plan_secret, relay_plan, relay_plan_secret_name
from tests.fake_cluster import FakeApiServer
from tests.handlers_harness import NS, Operator, server_manifest, start_operator, zone_manifest

PLANS = "secondary-dns-system"
SERVER = ObjectRef(NS, "edge")


def keyed_zone(name: str, primary: str = "192.0.2.1") -> dict[str, object]:
    return zone_manifest(
        name,
        f"{name}.example",
        primaries=[{"address": primary, "tsigKeySecretRef": {"name": "transfer"}}],
    )


def transfer_secret(secret: bytes) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "transfer", "namespace": NS},
        "stringData": {
            "secret": base64.b64encode(secret).decode(),
            "algorithm": "hmac-sha256",
            "name": "transfer-key",
        },
    }


def published_matches_served(api: FakeApiServer, operator: Operator) -> None:
    operator.catch_up()
    secret = api.get("v1", "Secret", PLANS, relay_plan_secret_name(SERVER))
    assert secret is not None
    state = operator.controller.states.get(SERVER)
    assert state is not None
    published = parse_relay_plan_secret(secret)
    assert published == relay_plan(SERVER, state.rendered.plan, published.relay_key)


def test_the_relay_plan_follows_zone_and_key_changes() -> None:
    api = FakeApiServer()
    api.apply(transfer_secret(b"a" * 32))
    api.apply(server_manifest())
    for index in range(5):
        api.apply(keyed_zone(f"z{index}"))
    operator = start_operator(api, relay_plans_namespace=PLANS)
    published_matches_served(api, operator)

    api.apply(keyed_zone("z2", primary="192.0.2.7"))  # one zone's primaries
    published_matches_served(api, operator)
    api.apply(keyed_zone("z9"))  # a zone added
    published_matches_served(api, operator)
    api.delete(*("secondarydns.io/v1alpha1", "Zone"), NS, "z0")  # one deleted
    published_matches_served(api, operator)
    # The key Secret rotated in place (the resync picks that up): no Zone changed,
    # every entry carries the new key.
    api.apply(transfer_secret(b"b" * 32))
    operator.resync()
    published_matches_served(api, operator)
    plan = parse_relay_plan_secret(
        api.get("v1", "Secret", PLANS, relay_plan_secret_name(SERVER)) or {}
    )
    assert {key.secret for zone in plan.zones for key in zone.primary_keys} == {b"b" * 32}
    assert [zone.ref.name for zone in plan.zones] == ["z1", "z2", "z3", "z4", "z9"]
