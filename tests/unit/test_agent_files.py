"""The config directory: checked before anything changes, swapped whole, rolled back."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
from pathlib import Path, PurePosixPath

import dns.name
import pytest

from secondary_dns.agent.assemble import DesiredConfig, assemble
from secondary_dns.agent.files import (
    ConfigDirectory,
    NamedControl,
    ReloadResult,
    checkable_copy,
    ensure_rndc_key,
)
from secondary_dns.api.agent_contract import PodLayout
from tests.agent_configs import (
    Bundle,
    PrimaryZone,
    key_secret_of,
    render_bundle,
    shards_of,
)

KEY = dns.name.from_text("transfer-key.example.")


class RecordingControl(NamedControl):
    """named-checkconf for real; rndc replaced by a scripted answer."""

    def __init__(self, layout: PodLayout, answer: ReloadResult) -> None:
        super().__init__(layout)
        self.answer = answer
        self.reconfigs = 0

    def reconfig(self) -> ReloadResult:
        self.reconfigs += 1
        return self.answer


@pytest.fixture
def layout(tmp_path: Path) -> PodLayout:
    if shutil.which("named-checkconf") is None:
        pytest.skip("named-checkconf is not installed")
    layout = PodLayout(PurePosixPath(tmp_path / "run"), PurePosixPath(tmp_path / "data"))
    ensure_rndc_key(layout)
    return layout


def bundle(layout: PodLayout, *zones: str) -> Bundle:
    return render_bundle(
        layout,
        [PrimaryZone(zone, "192.0.2.1") for zone in zones],
        KEY,
        b"0123456789abcdef0123456789abcdef",
        listen=ipaddress.ip_address("127.0.0.1"),
    )


def desired(config: Bundle) -> DesiredConfig:
    result = assemble(shards_of(config), key_secret_of(config))
    assert isinstance(result, DesiredConfig), result
    return result


def served_text(layout: PodLayout, name: str = "zones.conf") -> str:
    return (Path(layout.config_dir) / name).read_text()


def test_rndc_key_is_created_once_and_private(layout: PodLayout) -> None:
    path = Path(layout.rndc_key_file)
    text = path.read_text()
    assert 'key "secondary-dns-rndc"' in text and "hmac-sha256" in text
    assert path.stat().st_mode & 0o777 == 0o600
    assert not ensure_rndc_key(layout)
    assert path.read_text() == text


def test_checkable_copy_moves_only_the_include_paths() -> None:
    text = 'include "/run/c/zones.conf";\nfile "/var/lib/x.db";\ninclude "/run/k/tsig.conf";\n'
    copy = checkable_copy(text, {"/run/c/": "/tmp/check/", "/run/k/tsig.conf": "/tmp/check/k"})
    assert (
        copy == 'include "/tmp/check/zones.conf";\nfile "/var/lib/x.db";\ninclude "/tmp/check/k";\n'
    )


def test_first_config_is_written_without_rndc_and_marks_the_engine_ready(
    layout: PodLayout,
) -> None:
    control = RecordingControl(layout, ReloadResult(True, False, ""))
    directory = ConfigDirectory(layout)
    config = bundle(layout, "a.test.")
    outcome = directory.apply(desired(config), control)
    assert outcome.applied and control.reconfigs == 0
    assert Path(layout.config_dir).is_symlink()
    assert served_text(layout) == config.files["zones.conf"]
    assert served_text(layout, "named.conf") == config.files["named.conf"]
    assert json.loads(Path(layout.marker).read_text())["configHash"] == config.config_hash
    assert Path(layout.tsig_key_file).read_text() == config.key_file
    applied = directory.applied()
    assert applied is not None and applied.zones == (dns.name.from_text("a.test."),)


def test_second_config_swaps_and_reconfigures(layout: PodLayout) -> None:
    control = RecordingControl(layout, ReloadResult(True, False, ""))
    directory = ConfigDirectory(layout)
    first, second = bundle(layout, "a.test."), bundle(layout, "a.test.", "b.test.")
    directory.apply(desired(first), control)
    outcome = directory.apply(desired(second), control)
    assert outcome.applied and not outcome.reload_pending and control.reconfigs == 1
    assert 'zone "b.test"' in served_text(layout)
    # The new and the previous version stay; nothing else piles up.
    assert sorted(p.name for p in Path(layout.versions_dir).iterdir()) == sorted(
        [first.config_hash, second.config_hash]
    )


def test_rejected_by_named_checkconf_leaves_everything_as_it_was(layout: PodLayout) -> None:
    control = RecordingControl(layout, ReloadResult(True, False, ""))
    directory = ConfigDirectory(layout)
    good = bundle(layout, "a.test.")
    directory.apply(desired(good), control)
    before = {p: p.read_bytes() for p in Path(layout.run_dir).rglob("*") if p.is_file()}
    link = os.readlink(layout.config_dir)

    bad = good.with_file(
        "zones.conf", good.files["zones.conf"] + 'zone "c.test" { type nonsense; };\n'
    )
    outcome = directory.apply(desired(bad), control)
    assert not outcome.applied
    assert "named-checkconf" in outcome.message and "zones.conf" in outcome.message
    # The message names the real path, not the throw-away check directory.
    assert str(layout.config_dir) in outcome.message and ".check-" not in outcome.message
    assert control.reconfigs == 0 and os.readlink(layout.config_dir) == link
    after = {p: p.read_bytes() for p in Path(layout.run_dir).rglob("*") if p.is_file()}
    assert after == before


def test_key_file_without_a_referenced_key_is_rejected(layout: PodLayout) -> None:
    control = RecordingControl(layout, ReloadResult(True, False, ""))
    config = bundle(layout, "a.test.")
    broken = DesiredConfig(
        config.config_hash, "other", config.files, (dns.name.from_text("a.test."),), ""
    )
    outcome = ConfigDirectory(layout).apply(broken, control)
    assert not outcome.applied and "transfer-key.example" in outcome.message


def test_named_refusing_reconfig_rolls_the_disk_back(layout: PodLayout) -> None:
    directory = ConfigDirectory(layout)
    first, second = bundle(layout, "a.test."), bundle(layout, "a.test.", "b.test.")
    directory.apply(desired(first), RecordingControl(layout, ReloadResult(True, False, "")))
    refusing = RecordingControl(
        layout, ReloadResult(False, False, "rndc: 'reconfig' failed: failure")
    )
    outcome = directory.apply(desired(second), refusing)
    assert not outcome.applied and "'reconfig' failed" in outcome.message
    assert served_text(layout) == first.files["zones.conf"]
    applied = directory.applied()
    assert applied is not None and applied.config_hash == first.config_hash


def test_unreachable_named_keeps_the_new_files_and_asks_for_a_retry(layout: PodLayout) -> None:
    directory = ConfigDirectory(layout)
    first, second = bundle(layout, "a.test."), bundle(layout, "a.test.", "b.test.")
    directory.apply(desired(first), RecordingControl(layout, ReloadResult(True, False, "")))
    down = RecordingControl(layout, ReloadResult(False, True, "connection refused"))
    outcome = directory.apply(desired(second), down)
    assert outcome.applied and outcome.reload_pending
    assert served_text(layout) == second.files["zones.conf"]
