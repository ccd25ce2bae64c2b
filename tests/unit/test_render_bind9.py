"""The BIND 9 renderer: golden files, named-checkconf, rejections, hashing."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import dns.name
import pytest

from secondary_dns.api import ObjectRef, SecretKeyRef, ZoneTimers, conditions
from secondary_dns.api.agent_contract import RETRANSFER_FILE, parse_retransfer_file
from secondary_dns.render import (
    RenderError,
    config_hash,
    render_bind9,
    render_key_file,
    renderer_for,
)
from secondary_dns.render.bind9 import NAMED_CONF, ZONES_CONF
from secondary_dns.render.children import engine_hash
from secondary_dns.render.engine import DEFAULT_RELAY_KEY_NAME, RenderedConfig
from tests.unit.render_cases import (
    CASES,
    GOLDEN,
    NS,
    assert_golden,
    full_request,
    install_tree,
    key,
    minimal_request,
    name,
    named_checkconf,
    primary,
    zone,
)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_config_matches_golden(case: str) -> None:
    rendered = render_bind9(CASES[case]())
    assert sorted(rendered.files) == [NAMED_CONF, ZONES_CONF]
    assert_golden(rendered.files[NAMED_CONF], f"{case}.named.conf")
    assert_golden(rendered.files[ZONES_CONF], f"{case}.zones.conf")
    keys = [*rendered.tsig_keys, key(DEFAULT_RELAY_KEY_NAME.to_text(), b"r")]
    assert_golden(render_key_file(keys), f"{case}.tsig-keys.conf")


def _install_golden(case: str, root: Path, *, zones_twice: bool = False) -> Path:
    """The golden files of `case`, relocated under `root`, as named would read them."""
    paths = CASES[case]().paths
    key_text = (GOLDEN / f"{case}.tsig-keys.conf").read_text()
    zones_text = (GOLDEN / f"{case}.zones.conf").read_text()
    files = {
        paths.config_dir / NAMED_CONF: (GOLDEN / f"{case}.named.conf").read_text(),
        paths.config_dir / ZONES_CONF: zones_text * 2 if zones_twice else zones_text,
        paths.tsig_key_file: key_text,
        paths.rndc_key_file: render_key_file([key(paths.rndc_key_name.to_text(), b"c")]),
    }
    install_tree(root, files, [paths.data_dir, paths.run_dir])
    return root / (paths.config_dir / NAMED_CONF).relative_to("/")


@pytest.mark.parametrize("case", sorted(CASES))
def test_named_checkconf_accepts_every_golden(case: str, tmp_path: Path) -> None:
    result = named_checkconf(_install_golden(case, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_named_checkconf_is_a_real_check(tmp_path: Path) -> None:
    # What the renderer's duplicate rule prevents: one zone twice fails the whole
    # config. (named-checkconf does not notice undefined keys in ACLs, which is why
    # the key file is rendered from the same plan as the zones.)
    result = named_checkconf(_install_golden("full", tmp_path, zones_twice=True))
    assert result.returncode != 0
    assert "already exists" in result.stdout + result.stderr


def test_zones_that_cannot_be_served_are_left_out_with_reasons() -> None:
    rendered = render_bind9(full_request())
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


def test_without_timestamps_the_lexically_first_object_keeps_a_duplicate_zone() -> None:
    request = dataclasses.replace(
        minimal_request(),
        zones=[
            (ObjectRef(NS, "zz"), zone("example.com.", primary("192.0.2.2"))),
            (ObjectRef(NS, "aa"), zone("EXAMPLE.com.", primary("192.0.2.1"))),
        ],
    )
    rendered = render_bind9(request)
    assert [zone.ref.name for zone in rendered.plan.zones] == ["aa"]
    assert rendered.rejected[ObjectRef(NS, "zz")].reason == conditions.ZONE_CONFLICT


def test_unsafe_data_past_admission_is_rejected_not_written() -> None:
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
    rendered = render_bind9(dataclasses.replace(minimal_request(), zones=hostile))
    assert rendered.plan.zones == ()
    assert {r.reason for r in rendered.rejected.values()} == {conditions.INVALID_SPEC}
    assert len(rendered.rejected) == len(hostile)
    assert "evil" not in rendered.files[ZONES_CONF]


def test_reserved_key_names_are_refused() -> None:
    request = dataclasses.replace(
        minimal_request(),
        zones=[(ObjectRef(NS, "z"), zone("example.com.", primary("192.0.2.1", secret="s")))],
        tsig_keys={(NS, SecretKeyRef("s")): key(DEFAULT_RELAY_KEY_NAME.to_text())},
    )
    rejection = render_bind9(request).rejected[ObjectRef(NS, "z")]
    assert rejection.reason == conditions.INVALID_TSIG_KEY
    assert "reserved" in rejection.message


def test_keys_are_looked_up_in_the_zones_namespace() -> None:
    request = dataclasses.replace(
        minimal_request(),
        zones=[(ObjectRef("other", "z"), zone("example.com.", primary("192.0.2.1", secret="s")))],
        tsig_keys={(NS, SecretKeyRef("s")): key("k.example.")},
    )
    assert render_bind9(request).rejected[ObjectRef("other", "z")].reason == (
        conditions.SECRET_NOT_FOUND
    )


def test_identical_input_identical_hash_and_order_does_not_matter() -> None:
    first = render_bind9(full_request())
    again = render_bind9(full_request())
    reordered = render_bind9(dataclasses.replace(full_request(), zones=full_request().zones[::-1]))
    assert first.config_hash == again.config_hash == reordered.config_hash
    assert first.files == reordered.files
    assert first.config_hash == config_hash(first.files)


def test_hash_changes_when_content_changes() -> None:
    base = render_bind9(minimal_request())
    changed_zone = minimal_request().zones[0][1]
    changed = dataclasses.replace(changed_zone, timers=ZoneTimers(max_refresh_seconds=600))
    other = render_bind9(
        dataclasses.replace(minimal_request(), zones=[(ObjectRef(NS, "example"), changed)])
    )
    assert other.files != base.files
    assert other.config_hash != base.config_hash
    # Moving text from one file to another changes the hash, too.
    moved = {NAMED_CONF: base.files[NAMED_CONF] + "x", ZONES_CONF: base.files[ZONES_CONF]}
    moved_back = {NAMED_CONF: base.files[NAMED_CONF], ZONES_CONF: "x" + base.files[ZONES_CONF]}
    assert config_hash(moved) != config_hash(moved_back)


def test_key_material_never_appears_in_the_config_files() -> None:
    request = full_request()
    rendered = render_bind9(request)
    secrets = {k.secret_base64 for k in rendered.tsig_keys}
    assert secrets
    for text in rendered.files.values():
        assert not any(secret in text for secret in secrets)
        assert "secret" not in text
    assert not any(secret in repr(rendered) for secret in secrets)


def test_key_file_deduplicates_and_refuses_conflicts() -> None:
    same = key("transfer.example.")
    text = render_key_file([same, key("a.example.", b"a"), same])
    assert text.count('key "transfer.example"') == 1
    assert text.index('key "a.example"') < text.index('key "transfer.example"')
    with pytest.raises(RenderError, match="defined twice"):
        render_key_file([same, key("transfer.example.", b"z")])


def test_server_limits_out_of_range_stop_the_render() -> None:
    request = minimal_request()
    server = dataclasses.replace(
        request.server, limits=dataclasses.replace(request.server.limits, max_records=0)
    )
    with pytest.raises(RenderError, match="maxRecords"):
        render_bind9(dataclasses.replace(request, server=server))


def test_engine_lookup() -> None:
    assert renderer_for("bind9").engine == "bind9"
    with pytest.raises(RenderError, match="supported: bind9"):
        renderer_for("knot")


def test_relay_key_name_must_be_safe() -> None:
    with pytest.raises(RenderError):
        render_bind9(
            dataclasses.replace(minimal_request(), relay_key_name=dns.name.from_text("a b."))
        )


def test_a_retransfer_request_is_a_file_of_its_own_and_part_of_the_hash() -> None:
    def rendered(request: str | None) -> RenderedConfig:
        spec = zone("example.com.", primary("192.0.2.1"), retransfer_request=request)
        return render_bind9(
            dataclasses.replace(minimal_request(), zones=[(ObjectRef(NS, "example"), spec)])
        )

    without = rendered(None)
    assert RETRANSFER_FILE not in without.files
    first, second = rendered("2024-01-01"), rendered("ticket-42")
    assert parse_retransfer_file(first.files[RETRANSFER_FILE]) == {
        name("example.com."): "2024-01-01"
    }
    # named's own files do not change; the configuration (its hash) does, so the
    # agent applies it and sees the request.
    for other in (first, second):
        assert {n: t for n, t in other.files.items() if n != RETRANSFER_FILE} == without.files
    assert len({without.config_hash, first.config_hash, second.config_hash}) == 3
    assert engine_hash(first) == engine_hash(without)


def test_a_malformed_retransfer_file_is_an_error_not_an_exception() -> None:
    assert parse_retransfer_file(None) == {}
    assert "not JSON" in str(parse_retransfer_file("{"))
    assert "JSON object" in str(parse_retransfer_file("[]"))
    assert "non-empty string" in str(parse_retransfer_file('{"a.test.": 7}'))
    assert "zone" in str(parse_retransfer_file('{"a..test.": "x"}'))


def test_primaries_in_the_refused_networks_are_left_out_naming_the_field() -> None:
    """The cluster's own Service range, set by the operator (issue 13, item 9)."""
    request = dataclasses.replace(
        minimal_request(),
        zones=[
            (ObjectRef(NS, "outside"), zone("example.com.", primary("192.0.2.1"))),
            (
                ObjectRef(NS, "inside"),
                zone("internal.example.", primary("192.0.2.1"), primary("10.96.0.10")),
            ),
            (ObjectRef(NS, "inside-v6"), zone("v6.example.", primary("fd00:10:96::a"))),
        ],
        refused_primary_networks=(
            ipaddress.ip_network("10.96.0.0/12"),
            ipaddress.ip_network("fd00:10:96::/112"),
        ),
    )
    rendered = render_bind9(request)
    assert [z.ref.name for z in rendered.plan.zones] == ["outside"]
    inside = rendered.rejected[ObjectRef(NS, "inside")]
    assert inside.reason == conditions.PRIMARY_NOT_ALLOWED
    assert inside.message.startswith("spec.primaries[1].address 10.96.0.10 is inside 10.96.0.0/12")
    assert rendered.rejected[ObjectRef(NS, "inside-v6")].reason == conditions.PRIMARY_NOT_ALLOWED
    assert "10.96.0.10" not in rendered.files[ZONES_CONF]
    # Without the setting (the default), nothing is refused for its range.
    plain = render_bind9(dataclasses.replace(request, refused_primary_networks=()))
    assert len(plain.plan.zones) == 3


def test_loopback_and_link_local_primaries_past_admission_are_left_out() -> None:
    """Stored before the CRD refused them: the planner refuses them as the models do."""
    hostile = [
        (ObjectRef(NS, "loopback"), zone("a.example.", primary("127.0.0.1"))),
        (ObjectRef(NS, "metadata"), zone("b.example.", primary("169.254.169.254", 80))),
        (ObjectRef(NS, "link-local"), zone("c.example.", primary("fe80::1"))),
    ]
    rendered = render_bind9(dataclasses.replace(minimal_request(), zones=hostile))
    assert rendered.plan.zones == ()
    assert {r.reason for r in rendered.rejected.values()} == {conditions.INVALID_SPEC}
    assert "global unicast" in rendered.rejected[ObjectRef(NS, "metadata")].message
