"""named (BIND 9) as the agent's engine: named-checkconf, rndc, the statistics channel."""

from __future__ import annotations

import json
import logging
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.tsig

from secondary_dns.agent.assemble import undefined_tsig_keys
from secondary_dns.agent.control import (
    CONTROL_TIMEOUT_SECONDS,
    ReloadResult,
    ZoneChanges,
    check_result,
    combined_result,
    command_result,
    diff_zone_statements,
)
from secondary_dns.agent.files import write_atomically
from secondary_dns.agent.probe import PROBE_TIMEOUT_SECONDS, EngineProbe, loaded_zones
from secondary_dns.api import TsigKey, agent_contract
from secondary_dns.api.agent_contract import PodLayout, ZoneState
from secondary_dns.render import render_key_file
from secondary_dns.render.engine import DEFAULT_RNDC_KEY_NAME

log = logging.getLogger(__name__)

# rndc calls in flight at once for a refresh of several zones (each is a process
# and a connection to named's control channel, which serves them one by one).
REFRESH_CONCURRENCY = 4


# At most this many zones are added, changed or removed one `rndc` call each
# (~20 ms a call at 10,000 zones, bench/catalog_zones.py); a larger change is one
# `rndc reconfig` (0.3-2 s at 10,000 zones, answering nothing meanwhile).
MAX_ZONE_COMMANDS = 50

# A zone statement as render/bind9.py writes it: `zone "NAME" {` alone on a line,
# its items indented by a tab, `};` alone. Only names rndc takes as one word.
_ZONE_START = re.compile(r'zone "([A-Za-z0-9_.-]+)" \{')
_INCLUDE = re.compile(r'include "[^"\\]+";')


def zone_statements(text: str) -> dict[str, str] | None:
    """zone -> its statement's body on one line (`{ type secondary; ... };`), for a
    file of zone statements, blank lines and comments; None for anything else.

    The body is what `rndc addzone`/`modzone` take after the zone's name.
    """
    statements: dict[str, str] = {}
    name = ""
    items: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if items is not None:
            if line == "};":
                statements[name] = "{ " + " ".join(items) + " };"
                items = None
            elif line.startswith("\t") and stripped and not stripped.startswith("#"):
                items.append(stripped)
            elif not stripped.startswith("#"):
                return None
            continue
        if not stripped or stripped.startswith("#"):
            continue
        match = _ZONE_START.fullmatch(line)
        if match is None or match.group(1) in statements:
            return None
        name, items = match.group(1), []
    return None if items is not None else statements


def includes_only(text: str) -> bool:
    """A file of `include` lines and comments only (the zones include: which shard
    files exist, nothing a zone-by-zone change must tell named)."""
    return all(
        not line.strip() or line.startswith("#") or _INCLUDE.fullmatch(line)
        for line in text.splitlines()
    )


def named_zone_changes(running: Mapping[str, str], files: Mapping[str, str]) -> ZoneChanges | None:
    """The zone statements between two sets of named's configuration files, when
    they are all that changed (see NamedControl.zone_changes).

    Only the files that differ are read: no zone is in two files of one
    configuration (assemble.py refuses that), so a zone that is in neither
    changed file is the same in both.
    """
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    for name in sorted(set(running) | set(files)):
        old, new = running.get(name), files.get(name)
        if old == new:
            continue
        if all(text is None or includes_only(text) for text in (old, new)):
            continue  # the zones include: a shard file came or went
        parsed_old = {} if old is None else zone_statements(old)
        parsed_new = {} if new is None else zone_statements(new)
        if parsed_old is None or parsed_new is None:
            return None  # the main file or something else that is not zones
        before.update(parsed_old)
        after.update(parsed_new)
    changes = diff_zone_statements(before, after)
    return changes if len(changes) <= MAX_ZONE_COMMANDS else None


def empty_new_zones_dir(layout: PodLayout) -> int:
    """Empty named's database of zones added by `rndc addzone` (and make its
    directory, which named needs); how many files it held. Raises OSError."""
    directory = Path(layout.new_zones_dir)
    removed = 0
    for entry in directory.iterdir() if directory.is_dir() else ():
        entry.unlink()
        removed += 1
    directory.mkdir(parents=True, exist_ok=True)
    return removed


def named_argv(named: str, layout: PodLayout) -> list[str]:
    # -g: foreground, everything to stderr (the container log); no -u: the pod
    # already runs as a non-root user and named must not try to switch.
    return [named, "-g", "-c", str(layout.engine_conf(agent_contract.ENGINE_BIND9))]


def ensure_rndc_key(layout: PodLayout) -> bool:
    """Create the rndc key (HMAC-SHA256, random) unless it exists; True when created.

    named includes it in its `controls` statement and rndc signs with it, so
    both containers share one key that never leaves the pod.
    """
    path = Path(layout.rndc_key_file)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = TsigKey(DEFAULT_RNDC_KEY_NAME, dns.tsig.HMAC_SHA256, secrets.token_bytes(32))
    write_atomically(path, render_key_file([key]), 0o600)
    return True


class NamedControl:
    """named-checkconf and rndc, the engine's own tools."""

    engine = agent_contract.ENGINE_BIND9
    checker = "named-checkconf"
    reload_command = "rndc reconfig"
    # named reconfigures in exclusive mode: at 10,000 zones it answered nothing
    # for 1.1 s (p50) of its 1.2 s `rndc reconfig` (bench/catalog_zones.py).
    answers_while_reloading = False

    def __init__(
        self,
        layout: PodLayout,
        *,
        control_port: int = 953,
        named_checkconf: str = "named-checkconf",
        rndc: str = "rndc",
    ) -> None:
        self.layout = layout
        self.control_port = control_port
        self.named_checkconf = named_checkconf
        self.rndc = rndc

    def prepare(self) -> str | None:
        if ensure_rndc_key(self.layout):
            return f"created rndc key {self.layout.rndc_key_file}"
        return None

    def undefined_keys(self, files: Mapping[str, str], key_file: str) -> list[str]:
        # named-checkconf 9.18 accepts a zone naming an unknown key (which then
        # fails every transfer), so the agent checks the pair itself.
        return undefined_tsig_keys(files, key_file)

    def check(self, conf: Path) -> str | None:
        return check_result([self.named_checkconf, str(conf)])

    def reload(self) -> ReloadResult:
        """`rndc reconfig`: load the new configuration, zones keep serving.

        named's database of zones added by `rndc addzone` is emptied first: the
        files name every zone, and named refuses a configuration with a zone
        that is in both ("already exists"). An unlinked database stays named's
        until this reconfigure opens a new, empty one.
        """
        try:
            empty_new_zones_dir(self.layout)
        except OSError as error:
            # named then refuses a zone it holds twice ("already exists"), which the
            # agent reports like any refused configuration; it must not stop here.
            log.error("could not empty %s: %s", self.layout.new_zones_dir, error)
        return self._rndc("reconfig")

    def zone_changes(
        self, running: Mapping[str, str], files: Mapping[str, str]
    ) -> ZoneChanges | None:
        return named_zone_changes(running, files)

    def change_zones(self, changes: ZoneChanges) -> ReloadResult:
        """`rndc delzone`, `modzone`, `addzone`, one zone a call, stopping at the first
        call that is refused or does not get through.

        named stays answering throughout (each call holds its exclusive mode for
        milliseconds, where a reconfigure at 10,000 zones held it 0.3-1.1 s).
        """
        calls = [
            *(("delzone", zone, None) for zone in changes.removed),
            *(("modzone", zone, text) for zone, text in changes.modified.items()),
            *(("addzone", zone, text) for zone, text in changes.added.items()),
        ]
        for command, zone, text in calls:
            result = self._rndc(command, zone, *([text] if text is not None else []))
            if not result.ok:
                return ReloadResult(
                    False, result.unreachable, f"{command} {zone}: {result.message}"
                )
        return ReloadResult(True, False, changes.summary())

    def retransfer(self, zone: dns.name.Name) -> ReloadResult:
        """`rndc retransfer ZONE`: a full transfer (AXFR) from the primaries now."""
        return self._rndc("retransfer", zone.to_text())

    def refresh(self, zones: Sequence[dns.name.Name]) -> ReloadResult:
        """`rndc refresh ZONE` for each zone (rndc takes one zone a call), a few at once."""
        with ThreadPoolExecutor(REFRESH_CONCURRENCY) as pool:
            results = list(pool.map(lambda zone: self._rndc("refresh", zone.to_text()), zones))
        return combined_result(results)

    def _rndc(self, command: str, *arguments: str) -> ReloadResult:
        argv = [
            self.rndc,
            "-k",
            str(self.layout.rndc_key_file),
            "-s",
            "127.0.0.1",
            "-p",
            str(self.control_port),
            command,
            *arguments,
        ]
        # rndc prints "'<command>' failed: <reason>" when named received the
        # command and refused it; anything else (connect failed, timed out,
        # connection closed) means the command never got through.
        return command_result(
            argv, CONTROL_TIMEOUT_SECONDS, lambda output: f"'{command}' failed" in output
        )


# ---- the statistics channel -------------------------------------------------------


def _time(value: object) -> float | None:
    """BIND's `2026-12-02T05:31:50Z`; None for the epoch (never) or anything else."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    seconds = parsed.timestamp()
    return seconds if seconds > 0 else None


def parse_zone_states(document: Mapping[str, Any]) -> dict[dns.name.Name, ZoneState]:
    """The IN-class zones of `/json/v1/zones`, with their serial and timers.

    BIND lists every configured zone; a secondary that has neither transferred
    nor read its file yet has no `serial` (and `loaded` is the epoch).
    """
    states: dict[dns.name.Name, ZoneState] = {}
    views = document.get("views")
    if not isinstance(views, Mapping):
        return states
    for view in views.values():
        zones = view.get("zones") if isinstance(view, Mapping) else None
        if not isinstance(zones, list):
            continue
        for zone in zones:
            if not isinstance(zone, Mapping) or not isinstance(zone.get("name"), str):
                continue
            if zone.get("class", "IN") != "IN":
                continue
            try:
                name = dns.name.from_text(zone["name"])
            except dns.exception.DNSException:
                continue
            states[name] = ZoneState.read(zone, _time)
    return states


def parse_zone_statistics(document: Mapping[str, Any]) -> set[dns.name.Name]:
    """Zones named has loaded at least once, from `/json/v1/zones`."""
    return loaded_zones(parse_zone_states(document))


# Seconds named's statistics channel has to start sending /json/v1/zones (and
# between two reads of it). At 10,000 zones the document is 1.7 MB; named writes it
# in 60 ms when idle, but it shares named's threads with thousands of transfers
# after a new configuration, and 1 s (the DNS probe's timeout, used before) left
# every look of a minute unanswered (bench/scale.py). Under the operator's 5 s wait
# for a /zones report (handlers/monitor.py REPORT_TIMEOUT_SECONDS).
STATISTICS_TIMEOUT_SECONDS = 4.0


class NamedProbe(EngineProbe):
    """named's zones from its statistics channel on 127.0.0.1 (as rendered)."""

    def __init__(
        self,
        *,
        dns_address: str = "127.0.0.1",
        dns_port: int = 53,
        statistics_port: int = 8053,
        timeout: float = PROBE_TIMEOUT_SECONDS,
        statistics_timeout: float = STATISTICS_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(dns_address=dns_address, dns_port=dns_port, timeout=timeout)
        self.statistics_url = f"http://127.0.0.1:{statistics_port}/json/v1/zones"
        self.statistics_timeout = statistics_timeout

    def zone_states(self) -> dict[dns.name.Name, ZoneState] | None:
        try:
            with urllib.request.urlopen(
                self.statistics_url, timeout=self.statistics_timeout
            ) as response:
                document = json.load(response)
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return parse_zone_states(document) if isinstance(document, Mapping) else None
