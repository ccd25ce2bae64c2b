from __future__ import annotations

import subprocess
import sys

import pytest

from secondary_dns import __version__
from secondary_dns.cli import build_parser, main


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
