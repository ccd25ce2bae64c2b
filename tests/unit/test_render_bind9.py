"""The BIND 9 renderer: golden files, named-checkconf, rejections, hashing."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from secondary_dns.api import ObjectRef, ZoneTimers, conditions
from secondary_dns.api.agent_contract import SHARDS_FILE, parse_retransfer_file, shard_file_name
from secondary_dns.render import (
    RenderError,
    config_hash,
    render_bind9,
    render_key_file,
    renderer_for,
)
from secondary_dns.render.bind9 import NAMED_CONF, ZONES_CONF
from secondary_dns.render.engine import DEFAULT_RELAY_KEY_NAME
from secondary_dns.render.shards import shard_of
from tests.unit.render_cases import (
    CASES,
    NS,
    assert_golden_config,
    golden_config,
    golden_key_file,
    install_tree,
    key,
    minimal_request,
    named_checkconf,
    primary,
    zone,
    zones_text,
)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_config_matches_golden(case: str) -> None:
    rendered = render_bind9(CASES[case]())
    assert sorted(rendered.files) == [NAMED_CONF, SHARDS_FILE, ZONES_CONF]
    # The zones include names each shard's file; every zone is in the shard of its name.
    for shard in rendered.shards:
        assert shard_file_name(shard) in rendered.files[ZONES_CONF]
    for planned in rendered.plan.zones:
        assert shard_of(planned.zone) in rendered.shards
    keys = [*rendered.tsig_keys, key(DEFAULT_RELAY_KEY_NAME.to_text(), b"r")]
    assert_golden_config(rendered, render_key_file(keys), case)


def _install_golden(case: str, root: Path, *, zones_twice: bool = False) -> Path:
    """The golden files of `case`, relocated under `root`, as named would read them."""
    paths = CASES[case]().paths
    files = {paths.config_dir / name: text for name, text in golden_config("bind9", case).items()}
    if zones_twice:
        # Every zone of a shard twice in its file: named must refuse the duplicates.
        for path, text in files.items():
            if path.name.startswith("zones-") and "zone " in text:
                files[path] = text * 2
    files[paths.tsig_key_file] = golden_key_file("bind9", case)
    files[paths.rndc_key_file] = render_key_file([key(paths.rndc_key_name.to_text(), b"c")])
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


def test_key_file_deduplicates_and_refuses_conflicts() -> None:
    same = key("transfer.example.")
    text = render_key_file([same, key("a.example.", b"a"), same])
    assert text.count('key "transfer.example"') == 1
    assert text.index('key "a.example"') < text.index('key "transfer.example"')
    with pytest.raises(RenderError, match="defined twice"):
        render_key_file([same, key("transfer.example.", b"z")])


def test_engine_lookup() -> None:
    assert renderer_for("bind9").engine == "bind9"
    with pytest.raises(RenderError, match="supported: bind9, knot"):
        renderer_for("nsd")


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
    assert "10.96.0.10" not in zones_text(rendered)
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
