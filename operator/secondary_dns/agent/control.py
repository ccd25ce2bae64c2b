"""The engine the agent drives, behind one interface: named (BIND 9) or knotd (Knot DNS).

The agent's loop (runner.py) and the configuration directory (files.py) know
nothing of either engine: they check a configuration with `check`, load it with
`reload`, ask for a full transfer with `retransfer`, and learn what the engine
serves from an `EngineProbe` (probe.py). named.py and knot.py implement both
with each engine's own tools (named-checkconf and rndc; knotc).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import dns.name

CHECK_TIMEOUT_SECONDS = 120.0
CONTROL_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    # True when the engine could not be reached at all (not started yet,
    # restarting): the files on disk are what it will load, so nothing is rolled back.
    unreachable: bool
    message: str


@dataclass(frozen=True)
class ZoneChanges:
    """Zone statements to remove, replace and add in the running engine, by zone name.

    A configuration that differs from the running one in these statements only
    (same main file, same keys) is applied by telling the engine about each zone
    (`EngineControl.change_zones`) instead of reloading everything. Each
    statement is the zone's whole statement as the configuration files have it.
    """

    removed: tuple[str, ...] = ()
    modified: Mapping[str, str] = field(default_factory=dict)
    added: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.removed) + len(self.modified) + len(self.added)

    def summary(self) -> str:
        return f"{len(self.added)} added, {len(self.modified)} changed, {len(self.removed)} removed"


def diff_zone_statements(before: Mapping[str, str], after: Mapping[str, str]) -> ZoneChanges:
    """What turns the zones of `before` into those of `after` (zone -> statement)."""
    return ZoneChanges(
        removed=tuple(sorted(set(before) - set(after))),
        modified={
            zone: text
            for zone, text in sorted(after.items())
            if zone in before and before[zone] != text
        },
        added={zone: text for zone, text in sorted(after.items()) if zone not in before},
    )


class EngineControl(Protocol):
    # spec.engine.type: the file the engine is started with follows from it
    # (api.agent_contract.ENGINE_CONFIG_FILES).
    engine: str
    # How the checker and the reload are named in messages on the Pod.
    checker: str
    reload_command: str
    # False when the engine answers no query while it reloads, so the replicas of
    # a server reload in two waves (agent/decide.apply_delay); True lets every
    # replica apply a change at once.
    answers_while_reloading: bool

    def prepare(self) -> str | None:
        """Make what the engine's configuration needs before its first start; what was done."""

    def undefined_keys(self, files: Mapping[str, str], key_file: str) -> list[str]:
        """Key names the configuration uses that neither it nor the key file defines."""

    def check(self, conf: Path) -> str | None:
        """None when the engine's own checker accepts `conf`; its message otherwise."""

    def reload(self) -> ReloadResult:
        """Load the configuration now on disk without a restart; zones keep serving."""

    def retransfer(self, zone: dns.name.Name) -> ReloadResult:
        """A full transfer (AXFR) of `zone` from its primaries now, whatever the serial."""

    def refresh(self, zones: Sequence[dns.name.Name]) -> ReloadResult:
        """Ask each zone's primaries for its SOA now (a transfer follows if newer)."""

    def zone_changes(
        self, running: Mapping[str, str], files: Mapping[str, str]
    ) -> ZoneChanges | None:
        """The zone statements that turn the engine's `running` configuration files into
        `files`, when nothing else differs and the engine can take them one zone at a
        time; None when the engine must reload (anything else changed, or the engine
        cannot)."""

    def change_zones(self, changes: ZoneChanges) -> ReloadResult:
        """Apply `changes` to the running engine, zone by zone, without a reload."""


def combined_result(results: Sequence[ReloadResult]) -> ReloadResult:
    """One outcome for a command run once per zone: not reached if any was not reached
    (it is asked again), else refused if any was refused, with the refusals' messages."""
    unreached = [result for result in results if result.unreachable]
    if unreached:
        return unreached[0]
    refused = [result.message for result in results if not result.ok]
    return ReloadResult(not refused, False, "; ".join(refused))


def run_tool(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str] | str:
    """Run one of the engine's tools; the error text when it could not run at all."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{argv[0]} could not run: {error}"


def check_result(argv: Sequence[str]) -> str | None:
    """A checker's verdict: None when it exits 0, its output otherwise."""
    result = run_tool(argv, CHECK_TIMEOUT_SECONDS)
    if isinstance(result, str):
        return result
    if result.returncode == 0:
        return None
    return (result.stdout + result.stderr).strip() or f"exit status {result.returncode}"


def command_result(
    argv: Sequence[str], timeout: float, received: Callable[[str], bool]
) -> ReloadResult:
    """A control command's outcome; `received(output)` tells a refusal from "not reached"."""
    result = run_tool(argv, timeout)
    if isinstance(result, str):
        return ReloadResult(False, True, result)
    message = (result.stdout + result.stderr).strip()
    if result.returncode == 0:
        return ReloadResult(True, False, message)
    return ReloadResult(False, not received(message), message or f"exit status {result.returncode}")
