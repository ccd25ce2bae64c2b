"""What every engine renderer does alike, run against BIND 9's and Knot DNS's.

Which zones are served and why not is decided once (render/engine.py
`plan_zones`), so both renderers must leave out the same zones with the same
reasons, hash the same way and keep key material out of the configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import dns.name
import pytest

from secondary_dns.api import ObjectRef, SecretKeyRef, ZoneTimers, conditions
from secondary_dns.api.agent_contract import RETRANSFER_FILE, parse_retransfer_file
from secondary_dns.render import RenderError, RenderRequest, config_hash, render_bind9, render_knot
from secondary_dns.render.children import engine_hash
from secondary_dns.render.engine import DEFAULT_RELAY_KEY_NAME, RenderedConfig
from secondary_dns.render.shards import shard_of
from tests.unit.render_cases import NS, full_request, key, minimal_request, name, primary, zone

Render = Callable[[RenderRequest], RenderedConfig]
ZONES_CONF = "zones.conf"


@pytest.fixture(params=[render_bind9, render_knot], ids=["bind9", "knot"])
def render(request: pytest.FixtureRequest) -> Render:
    renderer: Render = request.param
    return renderer


def test_zones_that_cannot_be_served_are_left_out_with_reasons(render: Render) -> None:
    rendered = render(full_request())
    reasons = {ref.name: rejection.reason for ref, rejection in rendered.rejected.items()}
    assert reasons == {
        "a-duplicate": conditions.ZONE_CONFLICT,
        "broken-key": conditions.INVALID_TSIG_KEY,
        "clash": conditions.INVALID_TSIG_KEY,
        "missing-key": conditions.SECRET_NOT_FOUND,
    }
    messages = {ref.name: rejection.message for ref, rejection in rendered.rejected.items()}
    assert "Zone dns/example-com, which claimed it first" in messages["a-duplicate"]
    assert "Secret nope" in messages["missing-key"]
    assert "is not base64" in messages["broken-key"]
    assert "already used by another Secret" in messages["clash"]
    served = {zone.ref.name for zone in rendered.plan.zones}
    assert served == {"example-com", "reverse", "service-labels"}
    zones_conf = rendered.files[ZONES_CONF]
    for left_out in ("missing.example", "broken.example", "clash.example", "192.0.2.7"):
        assert left_out not in zones_conf


def test_without_timestamps_the_lexically_first_object_keeps_a_duplicate_zone(
    render: Render,
) -> None:
    request = dataclasses.replace(
        minimal_request(),
        zones=[
            (ObjectRef(NS, "zz"), zone("example.com.", primary("192.0.2.2"))),
            (ObjectRef(NS, "aa"), zone("EXAMPLE.com.", primary("192.0.2.1"))),
        ],
    )
    rendered = render(request)
    assert [zone.ref.name for zone in rendered.plan.zones] == ["aa"]
    assert rendered.rejected[ObjectRef(NS, "zz")].reason == conditions.ZONE_CONFLICT


def test_unsafe_data_past_admission_is_rejected_not_written(render: Render) -> None:
    hostile = [
        (ObjectRef(NS, "quote"), zone('evil"; allow-transfer { any; }; ".', primary("192.0.2.1"))),
        (ObjectRef(NS, "space"), zone("a\\032b.example.", primary("192.0.2.1"))),
        (ObjectRef(NS, "root"), zone(".", primary("192.0.2.1"))),
        (ObjectRef(NS, "no-primary"), zone("lonely.example.")),
        (ObjectRef(NS, "multicast"), zone("m.example.", primary("224.0.0.1"))),
        (
            ObjectRef(NS, "timers"),
            zone(
                "t.example.",
                primary("192.0.2.1"),
                timers=ZoneTimers(min_refresh_seconds=900, max_refresh_seconds=60),
            ),
        ),
    ]
    rendered = render(dataclasses.replace(minimal_request(), zones=hostile))
    assert rendered.plan.zones == ()
    assert {r.reason for r in rendered.rejected.values()} == {conditions.INVALID_SPEC}
    assert len(rendered.rejected) == len(hostile)
    assert "evil" not in rendered.files[ZONES_CONF]


def test_reserved_key_names_are_refused(render: Render) -> None:
    request = dataclasses.replace(
        minimal_request(),
        zones=[(ObjectRef(NS, "z"), zone("example.com.", primary("192.0.2.1", secret="s")))],
        tsig_keys={(NS, SecretKeyRef("s")): key(DEFAULT_RELAY_KEY_NAME.to_text())},
    )
    rejection = render(request).rejected[ObjectRef(NS, "z")]
    assert rejection.reason == conditions.INVALID_TSIG_KEY
    assert "reserved" in rejection.message


def test_keys_are_looked_up_in_the_zones_namespace(render: Render) -> None:
    request = dataclasses.replace(
        minimal_request(),
        zones=[(ObjectRef("other", "z"), zone("example.com.", primary("192.0.2.1", secret="s")))],
        tsig_keys={(NS, SecretKeyRef("s")): key("k.example.")},
    )
    assert render(request).rejected[ObjectRef("other", "z")].reason == (conditions.SECRET_NOT_FOUND)


def test_identical_input_identical_hash_and_order_does_not_matter(render: Render) -> None:
    first = render(full_request())
    again = render(full_request())
    reordered = render(dataclasses.replace(full_request(), zones=full_request().zones[::-1]))
    assert first.config_hash == again.config_hash == reordered.config_hash
    assert first.files == reordered.files
    assert first.config_hash == config_hash(first.files)


def test_key_material_never_appears_in_the_config_files(render: Render) -> None:
    request = full_request()
    rendered = render(request)
    secrets = {k.secret_base64 for k in rendered.tsig_keys}
    assert secrets
    for text in rendered.files.values():
        assert not any(secret in text for secret in secrets)
        assert "secret" not in text
    assert not any(secret in repr(rendered) for secret in secrets)


def test_server_limits_out_of_range_stop_the_render(render: Render) -> None:
    request = minimal_request()
    server = dataclasses.replace(
        request.server, limits=dataclasses.replace(request.server.limits, max_records=0)
    )
    with pytest.raises(RenderError, match="maxRecords"):
        render(dataclasses.replace(request, server=server))


def test_relay_key_name_must_be_safe(render: Render) -> None:
    with pytest.raises(RenderError):
        render(dataclasses.replace(minimal_request(), relay_key_name=dns.name.from_text("a b.")))


def test_a_retransfer_request_is_a_file_of_its_own_and_part_of_the_hash(render: Render) -> None:
    def rendered(request: str | None) -> RenderedConfig:
        spec = zone("example.com.", primary("192.0.2.1"), retransfer_request=request)
        return render(
            dataclasses.replace(minimal_request(), zones=[(ObjectRef(NS, "example"), spec)])
        )

    shard = shard_of(name("example.com."))
    without = rendered(None)
    assert RETRANSFER_FILE not in without.shards[shard].files
    first, second = rendered("2024-01-01"), rendered("ticket-42")
    # In the zone's shard, not the root: one request rewrites that shard alone.
    assert parse_retransfer_file(first.shards[shard].files[RETRANSFER_FILE]) == {
        name("example.com."): "2024-01-01"
    }
    # The engine's own files do not change; the configuration (its hash) does, so
    # the agent applies it and sees the request.
    for other in (first, second):
        assert other.engine_files() == without.engine_files()
    assert len({without.config_hash, first.config_hash, second.config_hash}) == 3
    assert engine_hash(first) == engine_hash(without)


def _with_limits(**values: int) -> RenderRequest:
    request = minimal_request()
    server_limits = dataclasses.replace(request.server.limits, **values)
    return dataclasses.replace(
        request, server=dataclasses.replace(request.server, limits=server_limits)
    )


def test_public_defaults_rate_limit_and_bound_every_zone(render: Render) -> None:
    """Item 10 of issue 13: rate limiting on, and a zone size bound, unless the spec says."""
    rendered = render(minimal_request())
    text = "\n".join(
        [
            *rendered.files.values(),
            *(t for shard in rendered.shards.values() for t in shard.files.values()),
        ]
    )
    rate_limit = "responses-per-second 20;" if rendered.engine == "bind9" else "rate-limit: 20"
    assert rate_limit in text
    # A default bound, quietly: no EngineLimitations note for a value nobody wrote.
    assert ("max-records 1000000;" if rendered.engine == "bind9" else "zone-max-size:") in text
    assert not rendered.server_limitations
    off = "\n".join(render(_with_limits(responses_per_second=0)).files.values())
    assert "rate-limit" not in off and "rrl" not in off
    with pytest.raises(RenderError, match="responsesPerSecond"):
        render(_with_limits(responses_per_second=1001))
