from __future__ import annotations

import subprocess
import sys

from secondary_dns import __version__
from secondary_dns.cli import main


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
