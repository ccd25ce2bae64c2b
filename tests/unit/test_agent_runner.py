"""The agent loop with named replaced by scripted answers: what it writes and reports."""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath

import dns.name
import pytest
from prometheus_client import generate_latest

from secondary_dns.agent.control import ReloadResult, ZoneChanges
from secondary_dns.agent.named import NamedControl
from secondary_dns.agent.probe import EngineProbe, ZoneState
from secondary_dns.agent.runner import LOOK_DEFER_SECONDS, Agent, MemoryPodReporter
from secondary_dns.agent.source import StaticConfigSource
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout
from secondary_dns.render.shards import shard_of
from tests.agent_configs import (
    Bundle,
    PrimaryZone,
    key_secret_of,
    render_bundle,
    shards_of,
)

KEY = dns.name.from_text("transfer-key.example.")


class ScriptedControl(NamedControl):
    def __init__(self, layout: PodLayout, *, zone_by_zone: bool = False) -> None:
        super().__init__(layout)
        self.reconfigs = 0
        self.refreshed: list[list[dns.name.Name]] = []
        self.reachable = True
        # Off: every change is a reload (what most tests here are about).
        self.zone_by_zone = zone_by_zone
        self.zone_calls: list[ZoneChanges] = []
        self.refuse_zones = False

    def reload(self) -> ReloadResult:
        self.reconfigs += 1
        return ReloadResult(True, False, "")

    def zone_changes(
        self, running: Mapping[str, str], files: Mapping[str, str]
    ) -> ZoneChanges | None:
        return super().zone_changes(running, files) if self.zone_by_zone else None

    def change_zones(self, changes: ZoneChanges) -> ReloadResult:
        self.zone_calls.append(changes)
        if self.refuse_zones:
            return ReloadResult(False, False, "'addzone' failed: failure")
        return ReloadResult(True, False, changes.summary())

    def refresh(self, zones: Sequence[dns.name.Name]) -> ReloadResult:
        if not self.reachable:
            return ReloadResult(False, True, "connection refused")
        self.refreshed.append(list(zones))
        return ReloadResult(True, False, "")


class ScriptedProbe(EngineProbe):
    def __init__(self) -> None:
        super().__init__()
        self.loaded: set[dns.name.Name] = set()

    def answering(self) -> bool:
        return True

    def zone_states(self) -> dict[dns.name.Name, ZoneState] | None:
        return {zone: ZoneState(serial=1) for zone in self.loaded}


@pytest.fixture
def layout(tmp_path: Path) -> PodLayout:
    if shutil.which("named-checkconf") is None:
        pytest.skip("named-checkconf is not installed")
    return PodLayout(PurePosixPath(tmp_path / "run"), PurePosixPath(tmp_path / "data"))


def bundle(layout: PodLayout, *zones: str) -> Bundle:
    return bundle_of(layout, [PrimaryZone(zone, "192.0.2.1") for zone in zones])


def bundle_of(layout: PodLayout, zones: list[PrimaryZone]) -> Bundle:
    return render_bundle(
        layout,
        zones,
        KEY,
        b"0123456789abcdef0123456789abcdef",
        listen=ipaddress.ip_address("127.0.0.1"),
    )


def make_agent(
    layout: PodLayout, source: StaticConfigSource, reporter: MemoryPodReporter
) -> tuple[Agent, ScriptedControl, ScriptedProbe]:
    control, probe = ScriptedControl(layout), ScriptedProbe()
    agent = Agent(layout, source, reporter, control, probe)
    agent.start()
    return agent, control, probe


def test_pod_is_patched_only_when_a_value_changes(layout: PodLayout) -> None:
    config = bundle(layout, "a.test.", "b.test.")
    source = StaticConfigSource(shards_of(config), key_secret_of(config))
    reporter = MemoryPodReporter()
    agent, control, probe = make_agent(layout, source, reporter)

    agent.step()
    assert reporter.annotations == {
        agent_contract.ANNOTATION_APPLIED_CONFIG_HASH: config.config_hash,
        agent_contract.ANNOTATION_CONFIG_ERROR: "",
        agent_contract.ANNOTATION_ZONES_LOADED: "0/2",
    }
    assert not agent.readyz()[0]
    for _ in range(3):
        agent.step()
    assert len(reporter.patches) == 1

    probe.loaded = {dns.name.from_text("a.test."), dns.name.from_text("b.test.")}
    agent.step()
    assert reporter.patches[-1] == {agent_contract.ANNOTATION_ZONES_LOADED: "2/2"}
    assert agent.readyz()[0]
    agent.step()
    assert len(reporter.patches) == 2 and control.reconfigs == 0


def test_restarted_agent_neither_rewrites_reloads_nor_patches(layout: PodLayout) -> None:
    config = bundle(layout, "a.test.")
    source = StaticConfigSource(shards_of(config), key_secret_of(config))
    reporter = MemoryPodReporter()
    first, _, probe = make_agent(layout, source, reporter)
    probe.loaded = {dns.name.from_text("a.test.")}
    first.step()
    patches = len(reporter.patches)
    version_dir = Path(layout.versions_dir) / config.config_hash
    written = version_dir.stat().st_mtime_ns

    again, control, probe = make_agent(layout, source, reporter)
    probe.loaded = {dns.name.from_text("a.test.")}
    again.step()
    assert control.reconfigs == 0 and len(reporter.patches) == patches
    assert version_dir.stat().st_mtime_ns == written
    assert again.readyz()[0]


def test_invalid_configuration_is_reported_once(layout: PodLayout) -> None:
    config = bundle(layout, "a.test.")
    shards = shards_of(config)
    # The operator lost a part: the files no longer match the hash.
    broken = [replace(shard, data={**shard.data, "zones.conf": ""}) for shard in shards]
    source = StaticConfigSource(broken, key_secret_of(config))
    reporter = MemoryPodReporter()
    agent, control, _ = make_agent(layout, source, reporter)
    agent.step()
    agent.step()
    error = reporter.annotations[agent_contract.ANNOTATION_CONFIG_ERROR]
    assert error == f"{config.config_hash}: the files do not match the config hash annotation"
    assert reporter.annotations[agent_contract.ANNOTATION_APPLIED_CONFIG_HASH] == ""
    assert len(reporter.patches) == 1
    assert not Path(layout.marker).exists()


class RetransferControl(ScriptedControl):
    """named that answers rndc retransfer (or cannot be reached) as scripted."""

    def __init__(self, layout: PodLayout) -> None:
        super().__init__(layout)
        self.retransfers: list[dns.name.Name] = []

    def retransfer(self, zone: dns.name.Name) -> ReloadResult:
        if not self.reachable:
            return ReloadResult(False, True, "connection refused")
        self.retransfers.append(zone)
        return ReloadResult(True, False, "")


def test_a_new_retransfer_request_asks_named_once(layout: PodLayout) -> None:
    def config(request: str | None) -> Bundle:
        return bundle_of(layout, [PrimaryZone("a.test.", "192.0.2.1", retransfer_request=request)])

    a = dns.name.from_text("a.test.")
    first = config(None)
    source = StaticConfigSource(shards_of(first), key_secret_of(first))
    control = RetransferControl(layout)
    agent = Agent(layout, source, MemoryPodReporter(), control, ScriptedProbe())
    agent.start()
    # named starts on the first configuration: it transfers everything anyway.
    agent.step()
    assert control.retransfers == []

    requested = config("ticket-1")
    assert requested.config_hash != first.config_hash
    control.reachable = False
    source.set(shards_of(requested), key_secret_of(requested))
    agent.step()
    assert control.retransfers == [] and agent.retransfers_pending == {a}
    control.reachable = True
    agent.step()
    agent.step()
    assert control.retransfers == [a]
    metrics = generate_latest(agent.metrics.registry).decode()
    assert 'secondarydns_agent_retransfers_total{result="requested"} 1.0' in metrics

    # A restarted agent reads the request from disk and does not repeat it.
    again = Agent(layout, source, MemoryPodReporter(), control, ScriptedProbe())
    again.start()
    again.step()
    assert control.retransfers == [a]


def test_zones_of_a_changed_shard_are_refreshed_once_after_the_reload(layout: PodLayout) -> None:
    a, b = dns.name.from_text("a.test."), dns.name.from_text("b.test.")
    assert shard_of(a) != shard_of(b)

    def config(primary_of_a: str, *more: str) -> Bundle:
        zones = [PrimaryZone("a.test.", primary_of_a), PrimaryZone("b.test.", "192.0.2.1")]
        return bundle_of(layout, zones + [PrimaryZone(zone, "192.0.2.1") for zone in more])

    first = config("192.0.2.1")
    source = StaticConfigSource(shards_of(first), key_secret_of(first))
    control = ScriptedControl(layout)
    agent = Agent(layout, source, MemoryPodReporter(), control, ScriptedProbe())
    agent.start()
    agent.step()
    assert control.refreshed == []  # a first configuration transfers everything anyway

    # a.test. moves to another primary: the reload alone would leave it on its
    # refresh timer; b.test.'s shard did not change.
    moved = config("192.0.2.2")
    control.reachable = False
    source.set(shards_of(moved), key_secret_of(moved))
    agent.step()
    assert control.refreshed == [] and agent.refreshes_pending == {a}
    control.reachable = True
    agent.step()
    agent.step()
    assert control.reconfigs == 1 and control.refreshed == [[a]]
    metrics = generate_latest(agent.metrics.registry).decode()
    assert 'secondarydns_agent_refreshes_total{result="requested"} 1.0' in metrics

    # A zone new to the replica transfers at once, and b.test.'s own entry in the
    # shard they share did not change: nothing to refresh.
    c = next(
        name
        for name in (dns.name.from_text(f"c{index}.test.") for index in range(1000))
        if shard_of(name) == shard_of(b)
    )
    added = config("192.0.2.2", c.to_text())
    source.set(shards_of(added), key_secret_of(added))
    agent.step()
    assert control.reconfigs == 2 and control.refreshed == [[a]] and not agent.refreshes_pending


def test_zones_with_max_age_ask_the_engine_again(layout: PodLayout) -> None:
    config = bundle(layout, "a.test.")
    source = StaticConfigSource(shards_of(config), key_secret_of(config))
    agent, _, probe = make_agent(layout, source, MemoryPodReporter())
    probe.loaded = {dns.name.from_text("a.test.")}
    agent.step()
    served = {dns.name.from_text("a.test."): agent_contract.ZoneState(serial=1)}
    assert agent_contract.ZonesDocument.parse(agent.zones_document()) == (
        agent_contract.ZonesDocument(config.config_hash, served)
    )
    # The engine transferred serial 2 since the loop's last look.
    probe.zone_states = lambda: {dns.name.from_text("a.test."): ZoneState(serial=2)}  # type: ignore[method-assign]
    cached = agent_contract.ZonesDocument.parse(agent.zones_document(max_age=3600))
    fresh = agent_contract.ZonesDocument.parse(agent.zones_document(max_age=0))
    assert cached is not None and fresh is not None
    assert cached.zones[dns.name.from_text("a.test.")].serial == 1
    assert fresh.zones[dns.name.from_text("a.test.")].serial == 2


def test_a_look_the_engine_does_not_answer_keeps_what_the_last_one_saw(layout: PodLayout) -> None:
    """named's statistics channel timed out (busy transferring): the pod stays ready
    and /zones still lists the zones at their last serials, not none of them."""
    config = bundle(layout, "a.test.")
    source = StaticConfigSource(shards_of(config), key_secret_of(config))
    agent, _, probe = make_agent(layout, source, MemoryPodReporter())
    zone = dns.name.from_text("a.test.")
    unanswered = {"looks": 0}

    def no_answer() -> None:
        unanswered["looks"] += 1

    # Before any answer the engine has said nothing: not ready, and it says why.
    probe.zone_states = no_answer  # type: ignore[method-assign,assignment]
    agent.step()
    assert agent.readyz() == (False, "bind9 does not say which zones it has loaded")
    assert agent_contract.ZonesDocument.parse(agent.zones_document(max_age=0)) == (
        agent_contract.ZonesDocument(config.config_hash, {})
    )
    probe.zone_states = lambda: {zone: ZoneState(serial=1)}  # type: ignore[method-assign]
    agent.step()
    assert agent.readyz()[0]
    probe.zone_states = no_answer  # type: ignore[method-assign,assignment]
    looks = unanswered["looks"]
    document = agent_contract.ZonesDocument.parse(agent.zones_document(max_age=0))
    agent.step()
    assert unanswered["looks"] > looks  # it did ask
    assert document == agent_contract.ZonesDocument(
        config.config_hash, {zone: agent_contract.ZoneState(serial=1)}
    )
    assert agent.readyz()[0]
    assert agent.metrics.failed_looks._value.get() >= 1


def no_draw(low: float, high: float) -> float:
    raise AssertionError("a pod with an ordinal draws no random wait")


def replica(
    layout: PodLayout,
    source: StaticConfigSource,
    control: ScriptedControl,
    now: list[float],
    pod: str,
) -> Agent:
    """The agent of a StatefulSet pod (its ordinal sets its wave), on the clock `now`."""
    return Agent(
        layout,
        source,
        MemoryPodReporter(),
        control,
        ScriptedProbe(),
        clock=lambda: now[0],
        apply_jitter=2.0,
        uniform=no_draw,
        pod=pod,
    )


@pytest.mark.parametrize(
    ("pod", "answers_while_reloading", "waits"),
    [("edge-0", False, False), ("edge-1", False, True), ("edge-1", True, False)],
)
def test_replicas_apply_a_change_in_two_waves_by_ordinal(
    layout: PodLayout, pod: str, answers_while_reloading: bool, waits: bool
) -> None:
    """An even ordinal applies at once; an odd one waits for its own last apply's
    duration (times 1.5, plus 0.25 s) and draws no random wait. Every replica of an
    engine that answers while it reloads (knotd) applies at once."""
    now = [1000.0]
    first = bundle(layout, "a.test.")
    source = StaticConfigSource(shards_of(first), key_secret_of(first))
    control = ScriptedControl(layout)
    control.answers_while_reloading = answers_while_reloading

    agent = replica(layout, source, control, now, pod)
    agent.start()
    agent.step()
    assert agent.applied is not None and agent.last_apply is not None
    took = sum(agent.last_apply.seconds.get(step, 0.0) for step in ("check", "write", "reload"))
    second = bundle(layout, "a.test.", "b.test.")
    source.set(shards_of(second), key_secret_of(second))
    agent.step()
    if not waits:
        assert agent.applied.config_hash == second.config_hash and control.reconfigs == 1
        return
    assert agent.applied.config_hash == first.config_hash and control.reconfigs == 0
    now[0] += took * 1.5 + 0.2
    agent.step()
    assert agent.applied.config_hash == first.config_hash
    now[0] += 0.1
    agent.step()
    assert agent.applied.config_hash == second.config_hash and control.reconfigs == 1


def test_a_running_replica_applies_a_change_after_its_jitter(layout: PodLayout) -> None:
    """Issue 13, item 11: replicas do not reconfigure (and pause) all at once."""
    now = [1000.0]
    first = bundle(layout, "a.test.")
    source = StaticConfigSource(shards_of(first), key_secret_of(first))
    control, reporter = ScriptedControl(layout), MemoryPodReporter()
    delays: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        delays.append((low, high))
        return 1.5

    agent = Agent(
        layout,
        source,
        reporter,
        control,
        ScriptedProbe(),
        clock=lambda: now[0],
        apply_jitter=2.0,
        uniform=uniform,
    )
    agent.start()
    agent.step()
    # A fresh replica applies its first configuration at once.
    assert agent.applied is not None and agent.applied.config_hash == first.config_hash
    assert delays == []

    second = bundle(layout, "a.test.", "b.test.")
    source.set(shards_of(second), key_secret_of(second))
    agent.step()
    assert agent.applied.config_hash == first.config_hash and control.reconfigs == 0
    now[0] += 1.0
    agent.step()
    assert agent.applied.config_hash == first.config_hash
    now[0] += 0.6
    agent.step()
    assert agent.applied.config_hash == second.config_hash and control.reconfigs == 1
    # One draw per change, within the configured jitter.
    assert delays == [(0.0, 2.0)]


@pytest.mark.parametrize("pod", ["edge-0", "edge-1"])
def test_a_zone_added_or_removed_is_applied_zone_by_zone_by_every_replica_at_once(
    layout: PodLayout, pod: str
) -> None:
    """named takes a change of zone statements only by rndc addzone/modzone/delzone,
    answering throughout, so no replica waits for a wave, and nothing is reloaded;
    the files on disk are the whole new configuration all the same."""
    now = [1000.0]
    first = bundle(layout, "a.test.", "b.test.")
    source = StaticConfigSource(shards_of(first), key_secret_of(first))
    control = ScriptedControl(layout, zone_by_zone=True)
    agent = replica(layout, source, control, now, pod)
    agent.start()
    agent.step()
    assert agent.applied is not None and control.reconfigs == 0 and control.zone_calls == []

    second = bundle(layout, "a.test.", "b.test.", "c.test.")
    source.set(shards_of(second), key_secret_of(second))
    agent.step()
    assert agent.applied.config_hash == second.config_hash
    assert control.reconfigs == 0
    [added] = control.zone_calls
    assert (added.removed, dict(added.modified), list(added.added)) == ((), {}, ["c.test"])
    assert added.added["c.test"].startswith("{ type secondary; ")
    assert added.added["c.test"].endswith(" };") and "\n" not in added.added["c.test"]
    on_disk = Path(layout.config_dir)
    assert {name: (on_disk / name).read_text() for name in second.files} == dict(second.files)

    third = bundle_of(
        layout,
        [PrimaryZone("b.test.", "192.0.2.9"), PrimaryZone("c.test.", "192.0.2.1")],
    )
    source.set(shards_of(third), key_secret_of(third))
    agent.step()
    assert agent.applied.config_hash == third.config_hash and control.reconfigs == 0
    changed = control.zone_calls[-1]
    assert changed.removed == ("a.test",) and list(changed.modified) == ["b.test"]
    assert "192.0.2.9" in changed.modified["b.test"] and not changed.added
    assert agent.last_apply is not None and "reload" not in agent.last_apply.seconds


def test_zone_changes_the_engine_refuses_are_applied_by_a_reload(layout: PodLayout) -> None:
    first = bundle(layout, "a.test.")
    source = StaticConfigSource(shards_of(first), key_secret_of(first))
    control = ScriptedControl(layout, zone_by_zone=True)
    control.refuse_zones = True
    agent = Agent(layout, source, MemoryPodReporter(), control, ScriptedProbe(), pod="edge-0")
    agent.start()
    agent.step()
    second = bundle(layout, "a.test.", "b.test.")
    source.set(shards_of(second), key_secret_of(second))
    agent.step()
    assert len(control.zone_calls) == 1 and control.reconfigs == 1
    assert agent.applied is not None and agent.applied.config_hash == second.config_hash


def test_without_a_configuration_applied_by_this_agent_a_change_is_a_reload(
    layout: PodLayout,
) -> None:
    """After an agent restart the engine's zones are known only as files: reload."""
    first = bundle(layout, "a.test.")
    source = StaticConfigSource(shards_of(first), key_secret_of(first))
    control = ScriptedControl(layout, zone_by_zone=True)
    before = Agent(layout, source, MemoryPodReporter(), control, ScriptedProbe())
    before.start()
    before.step()
    assert before.applied is not None and before.applied.config_hash == first.config_hash
    restarted = Agent(layout, source, MemoryPodReporter(), control, ScriptedProbe())
    second = bundle(layout, "a.test.", "b.test.")
    source.set(shards_of(second), key_secret_of(second))
    restarted.start()
    restarted.step()
    assert control.zone_calls == [] and control.reconfigs == 1


def test_a_change_that_comes_during_a_pass_is_applied_before_the_next_look(
    layout: PodLayout,
) -> None:
    """A look at 10,000 zones takes tenths of a second; a change waits for none,
    unless the last look is LOOK_DEFER_SECONDS old."""
    first = bundle(layout, "a.test.")
    source = StaticConfigSource(shards_of(first), key_secret_of(first))
    probe = CountingProbe()
    agent = Agent(layout, source, MemoryPodReporter(), ScriptedControl(layout), probe)
    agent.start()
    agent.step()
    looks = probe.looks
    assert looks >= 1
    reconcile = agent.reconcile_config

    def change_comes_meanwhile() -> None:
        reconcile()
        agent.changed.set()  # as the source does when a change comes

    agent.reconcile_config = change_comes_meanwhile  # type: ignore[method-assign]
    agent.changed.clear()  # as the loop does before a pass
    agent.step()
    assert probe.looks == looks
    agent.changed.clear()
    agent._looked_at -= LOOK_DEFER_SECONDS  # the last look is that old now
    agent.step()
    assert probe.looks == looks + 1
    agent.reconcile_config = reconcile  # type: ignore[method-assign]
    agent.changed.clear()
    agent.step()
    assert probe.looks == looks + 2  # not loaded yet: every pass looks


class CountingProbe(ScriptedProbe):
    def __init__(self) -> None:
        super().__init__()
        self.looks = 0

    def zone_states(self) -> dict[dns.name.Name, ZoneState] | None:
        self.looks += 1
        return {}
