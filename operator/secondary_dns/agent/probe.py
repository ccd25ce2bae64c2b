"""What named serves right now, asked over loopback: DNS and the statistics channel."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query

from secondary_dns.api.agent_contract import ZoneState

PROBE_TIMEOUT_SECONDS = 1.0


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
    """The IN-class zones of `/json/v1/zones`, with their serial and timers."""
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


def loaded_zones(states: Mapping[dns.name.Name, ZoneState]) -> set[dns.name.Name]:
    """Zones named has loaded at least once.

    BIND lists every configured zone; a secondary that has neither transferred
    nor read its file yet has no `serial` (and `loaded` is the epoch).
    """
    return {name for name, state in states.items() if state.serial is not None}


def parse_zone_statistics(document: Mapping[str, Any]) -> set[dns.name.Name]:
    """Zones named has loaded at least once, from `/json/v1/zones`."""
    return loaded_zones(parse_zone_states(document))


class EngineProbe:
    def __init__(
        self,
        *,
        dns_address: str = "127.0.0.1",
        dns_port: int = 53,
        statistics_port: int = 8053,
        timeout: float = PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self.dns_address = dns_address
        self.dns_port = dns_port
        self.statistics_url = f"http://127.0.0.1:{statistics_port}/json/v1/zones"
        self.timeout = timeout

    def answering(self) -> bool:
        """Any DNS answer counts (REFUSED for `.` too): the engine is up and serving."""
        query = dns.message.make_query(".", "SOA")
        query.flags &= ~dns.flags.RD
        try:
            dns.query.udp(query, self.dns_address, port=self.dns_port, timeout=self.timeout)
        except (dns.exception.DNSException, OSError):
            return False
        return True

    def zone_states(self) -> dict[dns.name.Name, ZoneState] | None:
        """None when the statistics channel does not answer."""
        try:
            with urllib.request.urlopen(self.statistics_url, timeout=self.timeout) as response:
                document = json.load(response)
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return parse_zone_states(document) if isinstance(document, Mapping) else None
