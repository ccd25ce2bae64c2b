"""What differs between the engines in the data-plane tests: their words, never the checks.

The scenarios are the same for named and knotd (parametrised with the `engine`
fixture of conftest.py); each asserts what a user observes (serials served,
transfers the primary served, answers to clients) and, where only the engine's
log can tell (a NOTIFY it refused, a transfer it aborted), matches that engine's
own log line from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from secondary_dns.api import agent_contract


def _zone(zone: str) -> str:
    return re.escape(zone.rstrip("."))


@dataclass(frozen=True)
class Engine:
    name: str
    # The pid file the rendered configuration names, in the run directory.
    pid_file: str
    # Logged once per configuration reload without a restart.
    reloaded: str
    # Regexes of the engine's log, by what happened; `{zone}` is the zone without
    # its final dot, `{address}` a client address (both escaped).
    # None: the engine does not log it at info level (knotd logs ACL denials only
    # at debug); the answer's rcode and the absence of a refresh tell instead.
    notify_refused: str | None
    notify_received: str
    relay_notify_received: str
    too_big_refused: str
    bad_key_refresh_failed: str
    loaded_from_disk: str
    outgoing_ixfr_with_key: str
    # How the engine logs a zone added by the agent without a reload; None: every
    # change is a reload (knotd).
    zone_added: str | None = None

    @property
    def main_file(self) -> str:
        return agent_contract.ENGINE_CONFIG_FILES[self.name]

    def pattern(self, template: str, zone: str = "", address: str = "", serial: int = 0) -> str:
        return template.format(zone=_zone(zone), address=re.escape(address), serial=serial)

    def break_zones_conf(self, zones_conf: str) -> str:
        """The zones file with one statement the engine's checker refuses."""
        if self.name == agent_contract.ENGINE_KNOT:
            return zones_conf.replace("    master:", "    mistress:", 1)
        return zones_conf.replace("type secondary", "type tertiary", 1)

    @property
    def broken_word(self) -> str:
        return "mistress" if self.name == agent_contract.ENGINE_KNOT else "tertiary"


BIND9 = Engine(
    name=agent_contract.ENGINE_BIND9,
    pid_file="named.pid",
    reloaded="reloading configuration succeeded",
    notify_refused=r"refused notify from non-primary: {address}#",
    notify_received=r"received notify for zone '{zone}'",
    relay_notify_received=r"received notify for zone '{zone}': TSIG 'secondary-dns-relay'",
    too_big_refused=r"transfer of '{zone}/IN' from .*: failed .*too many records",
    bad_key_refresh_failed=(
        r"zone {zone}/IN: refresh: failure trying primary .*tsig indicates error"
    ),
    loaded_from_disk=r"zone {zone}/IN: loaded serial {serial}\b",
    outgoing_ixfr_with_key=r"IXFR started: TSIG downstream\.example",
    zone_added=r"added zone {zone} in view _default via addzone",
)

KNOT = Engine(
    name=agent_contract.ENGINE_KNOT,
    pid_file="knot.pid",
    reloaded="configuration reloaded",
    notify_refused=None,
    notify_received=r"\[{zone}\.\] notify, incoming",
    relay_notify_received=r"\[{zone}\.\] notify, incoming, remote [^,]+, TSIG secondary-dns-relay",
    too_big_refused=r"\[{zone}\.\] AXFR, incoming, remote .*, zone size exceeded",
    bad_key_refresh_failed=r"\[{zone}\.\] refresh, remote .*, failed \(failed to verify TSIG\)",
    loaded_from_disk=r"\[{zone}\.\] loaded, serial (none|\d+) -> {serial}\b",
    # knotd 3.2 does not name the key here; the same client unsigned was refused.
    outgoing_ixfr_with_key=r"IXFR, outgoing, remote {address}@\d+, started, serial 1 -> ",
)

ENGINES = {engine.name: engine for engine in (BIND9, KNOT)}
