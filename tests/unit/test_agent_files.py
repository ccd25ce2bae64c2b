"""The config directory: checked before anything changes, swapped whole, rolled back.

Every test runs for both engines, with the engine's real checker (named-checkconf,
knotc conf-check) and its reload replaced by a scripted answer.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import dns.name
import pytest

from secondary_dns.agent.assemble import DesiredConfig, assemble
from secondary_dns.agent.control import ReloadResult
from secondary_dns.agent.files import ConfigDirectory, checkable_copy
from secondary_dns.agent.knot import KnotControl
from secondary_dns.agent.named import NamedControl, ensure_rndc_key
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout
from secondary_dns.render import renderer_for
from secondary_dns.render.shards import shard_of
from tests.agent_configs import (
    RELAY_KEY,
    Bundle,
    PrimaryZone,
    key_secret_of,
    render_bundle,
    shards_of,
)

KEY = dns.name.from_text("transfer-key.example.")
CHECKERS = {agent_contract.ENGINE_BIND9: "named-checkconf", agent_contract.ENGINE_KNOT: "knotc"}
# One zone statement the checker refuses, in each engine's syntax.
NONSENSE = {
    agent_contract.ENGINE_BIND9: 'zone "c.test" { type nonsense; };\n',
    agent_contract.ENGINE_KNOT: "zone:\n  - domain: c.test\n    nonsense: on\n",
}


class Recording:
    """Replaces an engine control's reload by a scripted answer, and counts the calls."""

    answer = ReloadResult(True, False, "")
    reloads = 0

    def reload(self) -> ReloadResult:
        self.reloads += 1
        return self.answer


class RecordingNamed(Recording, NamedControl):
    pass


class RecordingKnot(Recording, KnotControl):
    pass


@dataclass
class Pod:
    """A run directory, and the engine whose configuration goes into it."""

    layout: PodLayout
    engine: str

    def control(self, answer: ReloadResult) -> RecordingNamed | RecordingKnot:
        """The engine's checker for real; its reload replaced by `answer`."""
        control = (
            RecordingKnot(self.layout)
            if self.engine == agent_contract.ENGINE_KNOT
            else RecordingNamed(self.layout)
        )
        control.answer = answer
        return control

    def bundle(self, *zones: str) -> Bundle:
        return render_bundle(
            self.layout,
            [PrimaryZone(zone, "192.0.2.1") for zone in zones],
            KEY,
            b"0123456789abcdef0123456789abcdef",
            listen=ipaddress.ip_address("127.0.0.1"),
            engine=self.engine,
        )

    @property
    def main_file(self) -> str:
        return agent_contract.ENGINE_CONFIG_FILES[self.engine]


OK = ReloadResult(True, False, "")


@pytest.fixture(params=sorted(CHECKERS))
def pod(request: pytest.FixtureRequest, tmp_path: Path) -> Pod:
    engine: str = request.param
    if shutil.which(CHECKERS[engine]) is None:
        pytest.skip(f"{CHECKERS[engine]} is not installed")
    layout = PodLayout(PurePosixPath(tmp_path / "run"), PurePosixPath(tmp_path / "data"))
    return Pod(layout, engine)


def desired(config: Bundle) -> DesiredConfig:
    result = assemble(shards_of(config), key_secret_of(config))
    assert isinstance(result, DesiredConfig), result
    return result


def served_text(layout: PodLayout, name: str | None = None) -> str:
    """One file of the served configuration; without a name, the zones include and every shard."""
    if name is not None:
        return (Path(layout.config_dir) / name).read_text()
    return "".join(path.read_text() for path in sorted(Path(layout.config_dir).glob("zones*.conf")))


def test_rndc_key_is_created_once_and_private(tmp_path: Path) -> None:
    layout = PodLayout(PurePosixPath(tmp_path / "run"), PurePosixPath(tmp_path / "data"))
    assert ensure_rndc_key(layout)
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


def test_first_config_is_written_without_a_reload_and_marks_the_engine_ready(pod: Pod) -> None:
    layout = pod.layout
    control = pod.control(OK)
    control.prepare()
    directory = ConfigDirectory(layout)
    config = pod.bundle("a.test.")
    outcome = directory.apply(desired(config), control)
    assert outcome.applied and control.reloads == 0
    assert Path(layout.config_dir).is_symlink()
    assert served_text(layout, "zones.conf") == config.files["zones.conf"]
    assert served_text(layout, pod.main_file) == config.files[pod.main_file]
    assert json.loads(Path(layout.marker).read_text())["configHash"] == config.config_hash
    assert Path(layout.tsig_key_file).read_text() == config.key_file
    applied = directory.applied()
    assert applied is not None and applied.zones == (dns.name.from_text("a.test."),)


def test_second_config_swaps_and_reloads(pod: Pod) -> None:
    layout = pod.layout
    control = pod.control(OK)
    control.prepare()
    directory = ConfigDirectory(layout)
    first, second = pod.bundle("a.test."), pod.bundle("a.test.", "b.test.")
    directory.apply(desired(first), control)
    outcome = directory.apply(desired(second), control)
    assert outcome.applied and not outcome.reload_pending and control.reloads == 1
    assert "b.test" in served_text(layout)
    # The new and the previous version stay; nothing else piles up.
    assert sorted(p.name for p in Path(layout.versions_dir).iterdir()) == sorted(
        [first.config_hash, second.config_hash]
    )


def test_rejected_by_the_checker_leaves_everything_as_it_was(pod: Pod) -> None:
    layout = pod.layout
    control = pod.control(OK)
    control.prepare()
    directory = ConfigDirectory(layout)
    good = pod.bundle("a.test.")
    directory.apply(desired(good), control)
    before = {p: p.read_bytes() for p in Path(layout.run_dir).rglob("*") if p.is_file()}
    link = os.readlink(layout.config_dir)

    bad = good.with_file("zones.conf", good.files["zones.conf"] + NONSENSE[pod.engine])
    outcome = directory.apply(desired(bad), control)
    assert not outcome.applied
    assert outcome.message.startswith(control.checker + ": ")
    assert "zones.conf" in outcome.message and "nonsense" in outcome.message
    # The message names the real path, not the throw-away check directory.
    assert str(layout.config_dir) in outcome.message and ".check-" not in outcome.message
    assert control.reloads == 0 and os.readlink(layout.config_dir) == link
    after = {p: p.read_bytes() for p in Path(layout.run_dir).rglob("*") if p.is_file()}
    assert after == before


def test_key_file_without_a_referenced_key_is_rejected(pod: Pod) -> None:
    control = pod.control(OK)
    control.prepare()
    config = pod.bundle("a.test.")
    # The relay's key alone: the zone's transfer key is the one missing.
    relay_only = renderer_for(pod.engine).render_key_file([RELAY_KEY])
    broken = DesiredConfig(
        config.config_hash, "other", config.files, (dns.name.from_text("a.test."),), relay_only
    )
    outcome = ConfigDirectory(pod.layout).apply(broken, control)
    assert not outcome.applied and "transfer-key.example" in outcome.message


def test_an_engine_refusing_the_reload_rolls_the_disk_back(pod: Pod) -> None:
    layout = pod.layout
    directory = ConfigDirectory(layout)
    first, second = pod.bundle("a.test."), pod.bundle("a.test.", "b.test.")
    accepting = pod.control(OK)
    accepting.prepare()
    directory.apply(desired(first), accepting)
    refusing = pod.control(ReloadResult(False, False, "refused: failure"))
    outcome = directory.apply(desired(second), refusing)
    assert not outcome.applied
    assert outcome.message == f"{refusing.reload_command}: refused: failure"
    assert served_text(layout, "zones.conf") == first.files["zones.conf"]
    applied = directory.applied()
    assert applied is not None and applied.config_hash == first.config_hash


def test_an_unreachable_engine_keeps_the_new_files_and_asks_for_a_retry(pod: Pod) -> None:
    layout = pod.layout
    directory = ConfigDirectory(layout)
    first, second = pod.bundle("a.test."), pod.bundle("a.test.", "b.test.")
    accepting = pod.control(OK)
    accepting.prepare()
    directory.apply(desired(first), accepting)
    down = pod.control(ReloadResult(False, True, "connection refused"))
    outcome = directory.apply(desired(second), down)
    assert outcome.applied and outcome.reload_pending
    assert served_text(layout, "zones.conf") == second.files["zones.conf"]


class CheckRecording:
    """Runs the real checker and keeps which shard files it was given non-empty."""

    checked: list[set[str]]

    def check(self, conf: Path) -> str | None:
        self.checked.append(
            {path.name for path in conf.parent.glob("zones-*.conf") if path.read_text()}
        )
        return super().check(conf)  # type: ignore[misc]


class CheckedNamed(CheckRecording, RecordingNamed):
    pass


class CheckedKnot(CheckRecording, RecordingKnot):
    pass


def checked_control(pod: Pod) -> CheckedNamed | CheckedKnot:
    control = (
        CheckedKnot(pod.layout)
        if pod.engine == agent_contract.ENGINE_KNOT
        else CheckedNamed(pod.layout)
    )
    control.answer, control.checked = OK, []
    control.prepare()
    return control


ZONES = [f"z{index}.test." for index in range(40)]


def zone_in_a_used_shard(zones: list[str]) -> str:
    """A new zone name whose shard already holds one of `zones` (the zones include stays)."""
    used = {shard_of(dns.name.from_text(zone)) for zone in zones}
    return next(
        name
        for name in (f"new{index}.test." for index in range(1000))
        if shard_of(dns.name.from_text(name)) in used
    )


def test_a_one_zone_change_checks_only_its_shard(pod: Pod) -> None:
    control = checked_control(pod)
    directory = ConfigDirectory(pod.layout)
    first = desired(pod.bundle(*ZONES))
    assert directory.apply(first, control).shards_checked == len(first.shards)
    added = zone_in_a_used_shard(ZONES)
    second = desired(pod.bundle(*ZONES, added))
    outcome = directory.apply(second, control)
    assert outcome.applied and control.reloads == 1
    assert (outcome.shards_checked, outcome.shards) == (1, len(second.shards))
    shard = shard_of(dns.name.from_text(added))
    assert control.checked[-1] == {agent_contract.shard_file_name(shard)}
    # What is served is every shard, whole: only the check skipped the unchanged ones.
    assert added.rstrip(".") in served_text(pod.layout)
    assert all(zone.rstrip(".") in served_text(pod.layout) for zone in ZONES)


def test_a_bad_changed_shard_is_refused_by_the_shard_check(pod: Pod) -> None:
    control = checked_control(pod)
    directory = ConfigDirectory(pod.layout)
    good = pod.bundle(*ZONES)
    directory.apply(desired(good), control)
    link = os.readlink(pod.layout.config_dir)
    first_shard = sorted(good.shards)[0]
    shard_file = agent_contract.shard_file_name(first_shard)
    bad = good.with_file(shard_file, good.shards[first_shard][shard_file] + NONSENSE[pod.engine])
    outcome = directory.apply(desired(bad), control)
    assert not outcome.applied and outcome.message.startswith(control.checker + ": ")
    assert control.checked[-1] == {shard_file}
    assert control.reloads == 0 and os.readlink(pod.layout.config_dir) == link


def test_new_keys_or_a_new_shard_check_everything(pod: Pod) -> None:
    control = checked_control(pod)
    directory = ConfigDirectory(pod.layout)
    first = desired(pod.bundle(*ZONES))
    directory.apply(first, control)
    # A zone in a shard the configuration did not have: the zones include changes.
    used = {shard_of(dns.name.from_text(zone)) for zone in ZONES}
    fresh = next(
        name
        for name in (f"fresh{index}.test." for index in range(1000))
        if shard_of(dns.name.from_text(name)) not in used
    )
    second = desired(pod.bundle(*ZONES, fresh))
    assert directory.apply(second, control).shards_checked == len(second.shards)
    # Same files, another key file: every shard is checked against it.
    rekeyed = DesiredConfig(
        second.config_hash,
        "other-keys",
        second.files,
        second.zones,
        second.key_file + "\n",
        shards=second.shards,
        shard_files=second.shard_files,
    )
    assert directory.apply(rekeyed, control).shards_checked == len(second.shards)
    assert len(control.checked[-1]) == len(second.shards)
