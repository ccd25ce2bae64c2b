from __future__ import annotations

import subprocess
import sys

import pytest

from secondary_dns import __version__
from secondary_dns.cli import build_parser, main, operator_options


def test_version_flag_prints_version(capsys: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "secondary_dns.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"secondary-dns {__version__}"


def test_no_command_prints_help_and_fails() -> None:
    assert main([]) == 2


def test_operator_refused_primary_networks_are_checked_at_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(
        ["operator", "--refused-primary-networks", "10.96.0.0/12,fd00:10:96::/112"]
    )
    assert args.refused_primary_networks == "10.96.0.0/12,fd00:10:96::/112"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "--refused-primary-networks", "10.96.0.1/12"])
    assert "--refused-primary-networks[0]" in capsys.readouterr().err


def test_watched_namespaces_from_the_flag_else_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SDNS_WATCH_NAMESPACES", "dns, tenant-a,")
    monkeypatch.setenv("SDNS_WORKERS", "2")
    options = operator_options(build_parser().parse_args(["operator"]))
    assert options.namespaces == ("dns", "tenant-a")
    assert options.workers == 2
    flagged = build_parser().parse_args(["operator", "-n", "edge", "--workers", "8"])
    assert (operator_options(flagged).namespaces, operator_options(flagged).workers) == (
        ("edge",),
        8,
    )
    monkeypatch.delenv("SDNS_WATCH_NAMESPACES")
    assert operator_options(build_parser().parse_args(["operator"])).namespaces == ()
