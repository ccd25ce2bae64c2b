"""named (BIND 9) as the agent's engine: named-checkconf, rndc, the statistics channel."""

from __future__ import annotations

import json
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
    check_result,
    combined_result,
    command_result,
)
from secondary_dns.agent.files import write_atomically
from secondary_dns.agent.probe import PROBE_TIMEOUT_SECONDS, EngineProbe, loaded_zones
from secondary_dns.api import TsigKey, agent_contract
from secondary_dns.api.agent_contract import PodLayout, ZoneState
from secondary_dns.render import render_key_file
from secondary_dns.render.engine import DEFAULT_RNDC_KEY_NAME

# rndc calls in flight at once for a refresh of several zones (each is a process
# and a connection to named's control channel, which serves them one by one).
REFRESH_CONCURRENCY = 4


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
        """`rndc reconfig`: load the new configuration, zones keep serving."""
        return self._rndc("reconfig")

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
