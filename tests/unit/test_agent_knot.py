"""knotd as the agent's engine: knotc's answers read as the agent needs them."""

from __future__ import annotations

import io
import shutil
from pathlib import Path, PurePosixPath

import dns.name
import pytest

from secondary_dns.agent import knot
from secondary_dns.agent.control import ReloadResult, combined_result
from secondary_dns.agent.engine import ARGV, EXECUTABLES, remove_stale_pid_file
from secondary_dns.agent.knot import (
    KnotControl,
    KnotProbe,
    parse_relative_time,
    parse_zone_status,
)
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout, ZoneState

NOW = 1_800_000_000.0

# What knotc 3.2.6 prints (captured from a real knotd serving a BIND primary's zone).
STATUS = """\
[absent.test.] role: slave | serial: - | refresh: +19s
[example.test.] role: slave | serial: 5 | refresh: +59m58s | expiration: +6D23h59m58s
[broken line without fields
[odd.test.] role: slave | serial: 12x | refresh: pending | expiration: -3s
"""


def test_zone_status_gives_serials_and_knots_own_timers() -> None:
    states = parse_zone_status(STATUS, NOW)
    name = dns.name.from_text
    assert states[name("example.test.")] == ZoneState(
        serial=5, expires=NOW + 6 * 86400 + 23 * 3600 + 59 * 60 + 58, refresh=NOW + 59 * 60 + 58
    )
    # Configured, never loaded: no serial, no expiry; refresh is the next attempt.
    assert states[name("absent.test.")] == ZoneState(serial=None, expires=None, refresh=NOW + 19)
    # Unreadable values are unknown, never an error; an overdue event is in the past.
    assert states[name("odd.test.")] == ZoneState(serial=None, expires=NOW - 3, refresh=None)
    assert len(states) == 3
    assert parse_zone_status("", NOW) == {}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("+19s", 19),
        ("+1h59m58s", 7198),
        ("+1Y2M3D", 365 * 86400 + 60 * 86400 + 3 * 86400),
        ("-1m", -60),
        ("+0.250s", 0.25),
    ],
)
def test_relative_times_in_knots_units(text: str, seconds: float) -> None:
    assert parse_relative_time(text, NOW) == NOW + seconds


@pytest.mark.parametrize("text", ["-", "", "pending", "not scheduled", "+", "+5x", "5s"])
def test_anything_else_is_no_time(text: str) -> None:
    assert parse_relative_time(text, NOW) is None


def test_a_missing_socket_is_unreachable_not_refused(tmp_path: Path) -> None:
    if shutil.which("knotc") is None:
        pytest.skip("knotc is not installed")
    layout = PodLayout(PurePosixPath(tmp_path / "run"), PurePosixPath(tmp_path / "data"))
    control = KnotControl(layout)
    outcome = control.reload()
    assert not outcome.ok and outcome.unreachable
    assert "failed to connect" in outcome.message
    assert control.retransfer(dns.name.from_text("example.test.")).unreachable
    # No knotd, no zones known: None (unknown), not "no zones".
    assert KnotProbe(layout).zone_states() is None


def test_the_engine_command_execs_knotd_on_the_pods_knot_conf() -> None:
    layout = PodLayout()
    assert EXECUTABLES["knot"] == "knotd"
    assert ARGV["knot"]("/usr/sbin/knotd", layout) == [
        "/usr/sbin/knotd",
        "-c",
        "/run/secondary-dns/config/knot.conf",
    ]
    assert ARGV["bind9"]("/usr/sbin/named", layout)[-1] == "/run/secondary-dns/config/named.conf"


@pytest.mark.parametrize("engine", [agent_contract.ENGINE_BIND9, agent_contract.ENGINE_KNOT])
def test_the_engine_container_removes_a_pid_file_a_killed_engine_left(
    tmp_path: Path, engine: str
) -> None:
    # A SIGKILLed knotd leaves knot.pid holding "1"; in the next container it is
    # PID 1 again and would refuse to start, crash-looping (seen with runc).
    layout = PodLayout(run_dir=PurePosixPath(tmp_path))
    stale = Path(layout.engine_pid_file(engine))
    stale.write_text("1")
    err = io.StringIO()
    remove_stale_pid_file(layout, engine, err)
    assert not stale.exists()
    assert "stale pid file" in err.getvalue()
    remove_stale_pid_file(layout, engine, err)  # none left: nothing to do


def test_refresh_names_many_zones_per_knotc_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def knotc(argv: list[str], timeout: float) -> ReloadResult:
        calls.append(argv)
        return ReloadResult(True, False, "OK")

    monkeypatch.setattr(knot, "_knotc_result", knotc)
    layout = PodLayout(PurePosixPath("/run/sdns"), PurePosixPath("/var/lib/sdns"))
    zones = [dns.name.from_text(f"z{index:03d}.test.") for index in range(250)]
    assert KnotControl(layout).refresh(zones).ok
    named = [argv[argv.index("zone-refresh") + 1 :] for argv in calls]
    assert [len(names) for names in named] == [100, 100, 50]
    assert [name for names in named for name in names] == [zone.to_text() for zone in zones]


def test_a_command_run_in_parts_is_unreached_refused_or_ok_as_a_whole() -> None:
    ok = ReloadResult(True, False, "")
    refused = ReloadResult(False, False, "no such zone")
    unreached = ReloadResult(False, True, "failed to connect")
    assert combined_result([ok, ok]) == ok
    assert combined_result([ok, refused]) == ReloadResult(False, False, "no such zone")
    # Not reached wins: the whole request is asked again.
    assert combined_result([refused, unreached]) == unreached
    assert combined_result([]).ok
