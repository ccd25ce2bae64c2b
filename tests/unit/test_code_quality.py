"""ruff, mypy --strict and import-linter, run as tests so CI enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["operator", "hack/localcluster", "hack/image.py", "tests"] + (
    ["bench"] if (REPO / "bench").is_dir() else []
)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True)


def test_ruff_lint() -> None:
    result = _run([sys.executable, "-m", "ruff", "check", *SOURCES])
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = _run([sys.executable, "-m", "ruff", "format", "--check", *SOURCES])
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "operator/secondary_dns",
            "hack/localcluster",
            "hack/image.py",
            "bench",
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layers() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]'")
    result = _run([lint_imports, "--no-cache"])
    assert result.returncode == 0, result.stdout + result.stderr
