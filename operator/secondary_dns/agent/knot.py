"""knotd (Knot DNS) as the agent's engine: knotc for checks, reloads, retransfers and timers.

knotd's control channel is a UNIX socket in the run directory both containers
share (`api.agent_contract.KNOT_CONTROL_SOCKET`): no key to make or guard, and
nothing outside the pod can reach it. `knotc conf-check` reads a configuration
file without a running server, as named-checkconf does; it also refuses a key
that is named but not defined ("invalid reference"), which named-checkconf 9.18
does not, so no separate key check is needed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.name

from secondary_dns.agent.control import (
    CONTROL_TIMEOUT_SECONDS,
    ReloadResult,
    ZoneChanges,
    check_result,
    combined_result,
    command_result,
    run_tool,
)
from secondary_dns.agent.probe import PROBE_TIMEOUT_SECONDS, EngineProbe
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout, ZoneState

# `knotc zone-status` waits this long for knotd; it lists every zone in one answer.
STATUS_TIMEOUT_SECONDS = 10
# Zones named in one `knotc zone-refresh` (keeps the command line short).
REFRESH_ZONES_PER_CALL = 100


def knotd_argv(knotd: str, layout: PodLayout) -> list[str]:
    # knotd stays in the foreground unless told -d; logging goes to stderr as
    # rendered. No `user`: the pod already runs as a non-root user.
    return [knotd, "-c", str(layout.engine_conf(agent_contract.ENGINE_KNOT))]


def _knotc_result(argv: list[str], timeout: float) -> ReloadResult:
    # "error: failed to connect to socket '...' (not exists|connection refused)":
    # knotd is not (yet) there. Anything else is knotd's own answer, a refusal.
    return command_result(
        argv,
        timeout,
        lambda output: "failed to connect" not in output and "timed out" not in output,
    )


class KnotControl:
    """knotc, Knot's own tool, against the configuration file and the control socket."""

    engine = agent_contract.ENGINE_KNOT
    checker = "knotc conf-check"
    reload_command = "knotc reload"
    # knotd keeps answering while it loads a new configuration: at 10,000 zones
    # the slowest answer during `knotc reload` (1.3–3.9 s at load 26–31) was
    # 60 ms p50, 218 ms at most, as slow as without a reload at that load
    # (bench/catalog_zones.py), so its replicas need no waves.
    answers_while_reloading = True

    def __init__(self, layout: PodLayout, *, knotc: str = "knotc") -> None:
        self.layout = layout
        self.knotc = knotc

    def _socket_argv(self, *arguments: str) -> list[str]:
        # -s alone: knotc reads no configuration file for socket commands.
        return [self.knotc, "-s", str(self.layout.knot_socket), *arguments]

    def prepare(self) -> str | None:
        return None

    def undefined_keys(self, files: Mapping[str, str], key_file: str) -> list[str]:
        # knotc conf-check refuses a reference to an undefined key itself.
        return []

    def check(self, conf: Path) -> str | None:
        return check_result([self.knotc, "-c", str(conf), "conf-check"])

    def reload(self) -> ReloadResult:
        """`knotc reload`: the configuration (and keys) again; zones keep serving.

        knotd keeps its running configuration when the new one fails to load, and
        knotc says so (exit 1).
        """
        return _knotc_result(
            self._socket_argv("-t", str(int(CONTROL_TIMEOUT_SECONDS)), "reload"),
            CONTROL_TIMEOUT_SECONDS + 5,
        )

    def retransfer(self, zone: dns.name.Name) -> ReloadResult:
        """`knotc zone-retransfer ZONE`: an AXFR from the primaries, whatever the serial."""
        return _knotc_result(
            self._socket_argv(
                "-t", str(int(CONTROL_TIMEOUT_SECONDS)), "zone-retransfer", zone.to_text()
            ),
            CONTROL_TIMEOUT_SECONDS + 5,
        )

    def zone_changes(
        self, running: Mapping[str, str], files: Mapping[str, str]
    ) -> ZoneChanges | None:
        """Always a reload: knotd keeps answering while it reloads (all replicas
        apply a change at once), and its zone-level transactions (`knotc
        conf-begin`/`conf-set`) change no file a restart reads (docs/agent.md)."""
        return None

    def change_zones(self, changes: ZoneChanges) -> ReloadResult:
        return ReloadResult(False, False, "knotd takes zone changes by a reload only")

    def refresh(self, zones: Sequence[dns.name.Name]) -> ReloadResult:
        """`knotc zone-refresh ZONE...`: an SOA query to the primaries now, many zones a call."""
        results = [
            _knotc_result(
                self._socket_argv(
                    "-t",
                    str(int(CONTROL_TIMEOUT_SECONDS)),
                    "zone-refresh",
                    *(zone.to_text() for zone in zones[start : start + REFRESH_ZONES_PER_CALL]),
                ),
                CONTROL_TIMEOUT_SECONDS + 5,
            )
            for start in range(0, len(zones), REFRESH_ZONES_PER_CALL)
        ]
        return combined_result(results)


# ---- knotc zone-status ------------------------------------------------------------

_LINE = re.compile(r"^\[(?P<zone>[^\]]+)\]\s+(?P<fields>.*)$")
# Knot's relative times (contrib/time.c, TIME_PRINT_HUMAN_MIXED): a sign, then
# years (365 days), months (30 days), days, hours, minutes, seconds.
_UNITS = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}
_RELATIVE = re.compile(r"^(?P<sign>[+-])(?P<parts>(?:\d+(?:\.\d+)?[YMDhms])+)$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([YMDhms])")


def parse_relative_time(text: str, now: float) -> float | None:
    """`+1h59m58s` (Knot's time until an event) as Unix seconds; None for `-`, `pending`..."""
    match = _RELATIVE.match(text.strip())
    if match is None:
        return None
    seconds = sum(float(value) * _UNITS[unit] for value, unit in _PART.findall(match["parts"]))
    return now + (seconds if match["sign"] == "+" else -seconds)


def parse_zone_status(text: str, now: float) -> dict[dns.name.Name, ZoneState]:
    """Every zone of `knotc zone-status` output with its serial and timers.

    One line per zone: `[example.com.] role: slave | serial: 5 | refresh: +59m58s |
    expiration: +6D23h59m58s`. `serial: -` is a zone without a copy yet;
    `expiration` is when knotd stops answering for it unless a refresh succeeds
    first (last successful refresh + SOA expire), `refresh` its next attempt.
    A line that does not parse is left out, never an error.
    """
    states: dict[dns.name.Name, ZoneState] = {}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        try:
            zone = dns.name.from_text(match["zone"])
        except dns.exception.DNSException:
            continue
        fields: dict[str, str] = {}
        for field in match["fields"].split("|"):
            key, separator, value = field.partition(":")
            if separator:
                fields[key.strip()] = value.strip()
        serial_text = fields.get("serial", "")
        serial = int(serial_text) if serial_text.isdigit() else None
        states[zone] = ZoneState(
            serial=serial if serial is not None and serial < 2**32 else None,
            expires=parse_relative_time(fields.get("expiration", ""), now),
            refresh=parse_relative_time(fields.get("refresh", ""), now),
        )
    return states


class KnotProbe(EngineProbe):
    """knotd's zones from `knotc zone-status` over the control socket."""

    def __init__(
        self,
        layout: PodLayout,
        *,
        dns_address: str = "127.0.0.1",
        dns_port: int = 53,
        knotc: str = "knotc",
        timeout: float = PROBE_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(dns_address=dns_address, dns_port=dns_port, timeout=timeout)
        self.layout = layout
        self.knotc = knotc
        self.clock = clock

    def zone_states(self) -> dict[dns.name.Name, ZoneState] | None:
        argv = [
            self.knotc,
            "-s",
            str(self.layout.knot_socket),
            "-x",  # no colours
            "-t",
            str(STATUS_TIMEOUT_SECONDS),
            "zone-status",
        ]
        now = self.clock()
        result = run_tool(argv, STATUS_TIMEOUT_SECONDS + 5)
        if isinstance(result, str) or result.returncode != 0:
            return None
        return parse_zone_status(result.stdout, now)
