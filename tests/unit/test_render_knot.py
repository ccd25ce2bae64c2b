"""The Knot DNS renderer: golden files, knotc conf-check, what Knot cannot express."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from secondary_dns.api import Limits, ObjectRef, SecondaryServerSpec, ZoneTimers
from secondary_dns.api.agent_contract import SHARDS_FILE
from secondary_dns.render import render_knot, renderer_for
from secondary_dns.render.engine import DEFAULT_RELAY_KEY_NAME
from secondary_dns.render.knot import (
    KNOT_CONF,
    KNOT_MAX_IO_TIMEOUT_MS,
    MAX_RECORD_WIRE_BYTES,
    ZONES_CONF,
    render_key_file,
    zone_max_size,
)
from tests.unit.render_cases import (
    CASES,
    NS,
    assert_golden_config,
    full_request,
    golden_config,
    golden_key_file,
    install_tree,
    key,
    knotc_conf_check,
    minimal_request,
    primary,
    zone,
    zones_text,
)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_config_matches_golden(case: str) -> None:
    rendered = render_knot(CASES[case]())
    assert rendered.engine == "knot"
    assert sorted(rendered.files) == [KNOT_CONF, SHARDS_FILE, ZONES_CONF]
    keys = [*rendered.tsig_keys, key(DEFAULT_RELAY_KEY_NAME.to_text(), b"r")]
    assert_golden_config(rendered, render_key_file(keys), case)


def _install_golden(case: str, root: Path, edit: Callable[[str], str] | None = None) -> Path:
    """The golden files of `case`, relocated under `root`, as knotd would read them.

    `edit` changes the shard file that holds example.com.
    """
    paths = CASES[case]().paths
    files = {paths.config_dir / name: text for name, text in golden_config("knot", case).items()}
    if edit is not None:
        for path, text in files.items():
            if path.name.startswith("zones-") and "  - domain: example.com\n" in text:
                files[path] = edit(text)
    files[paths.tsig_key_file] = golden_key_file("knot", case)
    install_tree(root, files, [paths.data_dir, paths.run_dir])
    return root / (paths.config_dir / KNOT_CONF).relative_to("/")


@pytest.mark.parametrize("case", sorted(CASES))
def test_knotc_conf_check_accepts_every_golden(case: str, tmp_path: Path) -> None:
    result = knotc_conf_check(_install_golden(case, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration is valid" in result.stdout


def test_knotc_conf_check_is_a_real_check(tmp_path: Path) -> None:
    # Knot refuses a key nobody defined (named-checkconf 9.18 does not), and one
    # zone twice.
    def unknown_key(text: str) -> str:
        assert "key: downstream.example.net" in text
        return text.replace("key: downstream.example.net", "key: nobody.example", 1)

    def twice(text: str) -> str:
        return text + text[text.index("  - domain: example.com") :]

    result = knotc_conf_check(_install_golden("full", tmp_path / "a", unknown_key))
    assert result.returncode != 0
    assert "invalid reference" in result.stderr
    result = knotc_conf_check(_install_golden("full", tmp_path / "b", twice))
    assert result.returncode != 0
    assert "duplicate identifier" in result.stderr


def test_engine_lookup_finds_knot() -> None:
    assert renderer_for("knot").engine == "knot"


def test_what_knot_cannot_express_is_said_not_dropped() -> None:
    rendered = render_knot(full_request())
    # Server-wide limits: every served zone carries them.
    records, seconds = rendered.server_limitations
    assert "maxRecords is 100000" in records
    assert f"zone-max-size {100_000 * MAX_RECORD_WIRE_BYTES} bytes" in records
    assert "transferTimeoutSeconds is 90" in seconds and "90000 ms" in seconds
    served = ObjectRef(NS, "example-com")
    assert rendered.limitations(served) == rendered.server_limitations
    # A zone left out has nothing to say about how it is served.
    assert rendered.limitations(ObjectRef(NS, "missing-key")) == ()
    # A minimal server with default limits expresses everything exactly.
    assert render_knot(minimal_request()).limitations(ObjectRef(NS, "example")) == ()


def test_a_refresh_below_knots_floor_is_rendered_at_the_floor_and_said() -> None:
    spec = zone(
        "example.com.",
        primary("192.0.2.1"),
        timers=ZoneTimers(min_refresh_seconds=1, max_refresh_seconds=1, max_retry_seconds=1),
    )
    ref = ObjectRef(NS, "example")
    rendered = render_knot(dataclasses.replace(minimal_request(), zones=[(ref, spec)]))
    zones_conf = zones_text(rendered)
    assert "refresh-min-interval: 2\n" in zones_conf
    assert "refresh-max-interval: 2\n" in zones_conf
    # A retry of 1 s is within Knot's range: as written.
    assert "retry-max-interval: 1\n" in zones_conf
    notes = rendered.limitations(ref)
    assert len(notes) == 2
    assert "minRefreshSeconds is 1 s" in notes[0] and "every 2 s" in notes[0]


def test_a_transfer_timeout_past_knots_range_is_capped_and_said() -> None:
    server = SecondaryServerSpec(limits=Limits(transfer_timeout_seconds=40_320 * 60))
    rendered = render_knot(dataclasses.replace(minimal_request(), server=server))
    assert f"tcp-remote-io-timeout: {KNOT_MAX_IO_TIMEOUT_MS}\n" in rendered.files[KNOT_CONF]
    assert "capped at Knot's maximum" in rendered.server_limitations[0]


def test_zone_max_size_is_the_most_the_records_can_take() -> None:
    # An owner of 255 octets, 10 octets of type/class/TTL/length, 65535 of RDATA.
    assert zone_max_size(1) == 65_800
    assert zone_max_size(100_000) == 6_580_000_000


def test_transfer_acl_rules_name_address_and_key_as_the_zone_does() -> None:
    zones_conf = zones_text(render_knot(full_request()))
    lines = zones_conf.splitlines()
    start = lines.index("  - id: transfer-2-example.com") + 1
    assert lines[start : start + 3] == [
        "    address: 2001:db8:1::/48",
        "    key: bundle-b.example.com",
        "    action: transfer",
    ]
    assert not lines[start + 3].startswith("    ")
    # No allowTransfer, no transfer rule: Knot denies what no rule allows.
    minimal = zones_text(render_knot(minimal_request()))
    assert "action: transfer" not in minimal
    assert "automatic-acl: off" in render_knot(minimal_request()).files[KNOT_CONF]


def test_every_primary_remote_blocks_the_notify_event_after_a_transfer() -> None:
    # Without it knotd 3.2 plans an (empty) NOTIFY event 1 s after each transfer,
    # and a primary's NOTIFY in the next wall-clock second waits for that event
    # (docs/render.md, "Knot DNS"; bench/knot_refresh.py measures it).
    for request in (full_request(), minimal_request()):
        lines = zones_text(render_knot(request)).splitlines()
        remotes = [i for i, line in enumerate(lines) if line.startswith("  - id: primary-")]
        assert remotes
        for start in remotes:
            end = next(
                (i for i in range(start + 1, len(lines)) if not lines[i].startswith("    ")),
                len(lines),
            )
            assert "    block-notify-after-transfer: on" in lines[start + 1 : end], lines[start]
