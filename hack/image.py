"""Build the project's one image on this machine, with no registry, cached by content.

`make image` runs `python3 hack/image.py build`:

1. The Dockerfile's base (`FROM debian:bookworm-slim`) must be in local
   storage. When it is not, it is made with `mmdebstrap --variant=minbase`
   (Debian's own minimal root filesystem, trimmed like the official slim image)
   and imported under the exact name the Dockerfile pulls elsewhere
   (`docker.io/library/debian:bookworm-slim`), so one Dockerfile builds here
   (`--pull=never`) and anywhere else (pulled).
2. A content hash of everything the image is built from (the Dockerfile,
   .dockerignore, the build context that .dockerignore lets through, and this
   script) names the image: `<repository>:<version>-<hash12>`, with the full
   hash as a label. When that image is in local storage nothing is built; the
   version tag (`<repository>:<version>`, the StatefulSet's default image) is
   pointed at it, since another checkout may have moved it.
3. Otherwise `buildah bud --isolation chroot --pull=never --layers` builds it
   (the layer cache keeps the apt steps when only the sources changed).

Every podman and buildah call gets `CONTAINERS_CONF=hack/containers.conf`
(runc, cgroupfs, no default ulimits: what works on these machines); nothing is
written to /etc. Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CONTAINERS_CONF = REPO / "hack" / "containers.conf"

# render/children.py DEFAULT_IMAGE is `<this>:<version>` (a unit test holds them together).
REPOSITORY = "ghcr.io/secondary-dns-operator/secondary-dns"
CONTENT_HASH_LABEL = "io.secondarydns.image.content-hash"
VERSION_LABEL = "org.opencontainers.image.version"

# What .dockerignore lets into the build context (it is an allow-list; a unit
# test keeps the two equal). Under these directories, caches are left out.
CONTEXT_FILES = ("pyproject.toml", "README.md")
CONTEXT_DIRECTORIES = ("operator",)
IGNORED_PARTS = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc", ".egg-info")
# How the context becomes the image: a change to any of them is a new image too.
RECIPE_FILES = ("Dockerfile", ".dockerignore", "hack/image.py")

# The official slim image leaves these out of every package (debuerreotype's
# slimify); the exclusions stay in /etc/dpkg/dpkg.cfg.d for what the image installs.
SLIM_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/lintian/*",
)
# The official image's config: a shell, and a PATH (an imported tarball has none).
BASE_CHANGES = (
    'CMD ["bash"]',
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
)
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"


class ImageError(RuntimeError):
    """The image cannot be built here; the message says what to do."""


def _log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def package_version(repo: Path = REPO) -> str:
    """`__version__` of the package, read as text (setuptools reads the same attribute)."""
    text = (repo / "operator" / "secondary_dns" / "__init__.py").read_text()
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ImageError('operator/secondary_dns/__init__.py has no __version__ = "..."')
    return match.group(1)


def context_files(repo: Path = REPO) -> list[str]:
    """The build context, as paths relative to the repository, sorted."""
    found = [name for name in CONTEXT_FILES if (repo / name).is_file()]
    for directory in CONTEXT_DIRECTORIES:
        for path in (repo / directory).rglob("*"):
            relative = path.relative_to(repo)
            if any(
                part in IGNORED_PARTS or part.endswith(IGNORED_SUFFIXES) for part in relative.parts
            ):
                continue
            if path.is_file():
                found.append(relative.as_posix())
    return sorted(found)


def hashed_files(repo: Path = REPO) -> list[str]:
    """Everything the image is built from: the context, and how it is built."""
    return sorted({*context_files(repo), *RECIPE_FILES})


def content_hash(repo: Path = REPO) -> str:
    """SHA-256 over the names, executable bits and contents of `hashed_files`."""
    digest = hashlib.sha256()
    for name in hashed_files(repo):
        path = repo / name
        executable = b"x" if os.access(path, os.X_OK) else b"-"
        # Length-prefixed, so moving bytes from one file to the next changes the hash.
        for part in (name.encode(), executable, path.read_bytes()):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageRef:
    version: str
    content_hash: str

    @property
    def content_tag(self) -> str:
        return f"{REPOSITORY}:{self.version}-{self.content_hash[:12]}"

    @property
    def version_tag(self) -> str:
        return f"{REPOSITORY}:{self.version}"


def image_ref(repo: Path = REPO) -> ImageRef:
    return ImageRef(package_version(repo), content_hash(repo))


def base_image(dockerfile: Path = DOCKERFILE) -> str:
    """The fully qualified name of the Dockerfile's one external base image."""
    stages: set[str] = set()
    bases: set[str] = set()
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match is None:
            continue
        if match.group(1) not in stages:
            bases.add(match.group(1))
        if match.group(2):
            stages.add(match.group(2))
    if len(bases) != 1:
        raise ImageError(f"the Dockerfile should have one base image; it has {sorted(bases)}")
    name = bases.pop()
    # Docker Hub's short names, as docker and containers' short-name aliases resolve them.
    if "/" not in name:
        name = f"library/{name}"
    if "." not in name.split("/")[0] and ":" not in name.split("/")[0]:
        name = f"docker.io/{name}"
    return name


def debian_suite(base: str) -> str:
    """`bookworm` for docker.io/library/debian:bookworm-slim; other bases cannot be made here."""
    match = re.fullmatch(r"docker\.io/library/debian:([a-z]+)(?:-slim)?", base)
    if match is None:
        raise ImageError(
            f"{base} is not in local storage and only Debian bases can be made here "
            "(mmdebstrap); pull it or change the Dockerfile's FROM"
        )
    return match.group(1)


def container_env() -> dict[str, str]:
    """The environment for podman and buildah: this repository's containers.conf."""
    return dict(os.environ, CONTAINERS_CONF=str(CONTAINERS_CONF))


def podman(
    *args: str, check: bool = True, capture: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=container_env(), check=check, capture_output=capture, text=True
    )


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def image_label(name: str, label: str) -> str | None:
    result = podman(
        "image", "inspect", "--format", f'{{{{index .Labels "{label}"}}}}', name, check=False
    )
    if result.returncode != 0:
        return None
    value = result.stdout.strip()
    return None if value in ("", "<no value>") else value


def _need_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ImageError(
            f"{', '.join(missing)} not installed: run `make system-packages` "
            "(hack/install-system-packages)"
        )


def make_base(base: str) -> None:
    """mmdebstrap a minbase root filesystem and import it as `base`."""
    _need_tools("mmdebstrap", "podman")
    suite = debian_suite(base)
    _log(f"{base} is not in local storage: making it with mmdebstrap ({suite}, under a minute)")
    mirrors = [
        f"deb {DEBIAN_MIRROR} {suite} main",
        f"deb {DEBIAN_MIRROR} {suite}-updates main",
        f"deb {DEBIAN_SECURITY_MIRROR} {suite}-security main",
    ]
    with tempfile.TemporaryDirectory(prefix="sdns-base-", dir="/var/tmp") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        run_logged(
            [
                "mmdebstrap",
                "--variant=minbase",
                # bookworm's minbase would pull in usrmerge and perl to convert
                # /bin to a link; the hook lays out merged /usr directly, as
                # debootstrap does for the official image.
                "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                *(f"--dpkgopt={option}" for option in SLIM_DPKG_OPTIONS),
                suite,
                str(tarball),
                *mirrors,
            ]
        )
        changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
        podman("import", *changes, str(tarball), base)
    _log(f"imported {base}")


def _ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts, handed to the build's pip as a secret."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def build_command(ref: ImageRef) -> list[str]:
    argv = [
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--pull=never",
        "--layers",
        "--build-arg",
        f"VERSION={ref.version}",
        "--label",
        f"{CONTENT_HASH_LABEL}={ref.content_hash}",
        "--tag",
        ref.content_tag,
        "--tag",
        ref.version_tag,
        "--file",
        str(DOCKERFILE),
    ]
    bundle = _ca_bundle()
    if bundle is not None:
        argv += ["--secret", f"id=ca-certificates,src={bundle}"]
    return [*argv, str(REPO)]


def lock_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "secondary-dns" / "image.lock"


@contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time on this machine: every checkout shares the image storage."""
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another image build ({path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_log_path() -> Path:
    return lock_path().with_name("image-build.log")


def run_logged(argv: list[str], show: str | None = None) -> None:
    """Run a build tool; lines matching `show` are echoed, everything goes to the build log."""
    log_path = build_log_path()
    tail: list[str] = []
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(argv)}\n")
        process = subprocess.Popen(
            argv,
            env=container_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            tail = [*tail[-79:], line.rstrip()]
            if show is not None and re.match(show, line):
                _log("  " + line.rstrip()[:110])
        returncode = process.wait()
    if returncode != 0:
        print("\n".join(tail), file=sys.stderr)
        raise ImageError(f"{argv[0]} failed (exit {returncode}); its whole output is in {log_path}")


def cached(ref: ImageRef) -> bool:
    return image_label(ref.content_tag, CONTENT_HASH_LABEL) == ref.content_hash


def ensure_image(force: bool = False) -> ImageRef:
    """Build the image of this tree unless it is in local storage; return its names."""
    _need_tools("podman")
    ref = image_ref()
    with build_lock():
        if cached(ref) and not force:
            podman("tag", ref.content_tag, ref.version_tag)
            _log(f"up to date: {ref.content_tag} (nothing to build)")
            return ref
        _need_tools("buildah")
        build_log_path().write_text("")
        base = base_image()
        if not image_exists(base):
            make_base(base)
        _log(f"building {ref.content_tag} (log: {build_log_path()})")
        started = time.monotonic()
        run_logged(build_command(ref), show=r"(\[\d+/\d+\] )?STEP \d+/\d+: ")
        if not cached(ref):
            raise ImageError(f"buildah finished but {ref.content_tag} is not in local storage")
        _log(f"built {ref.content_tag} and {ref.version_tag} in {time.monotonic() - started:.0f}s")
    return ref


def prune() -> list[str]:
    """Remove this repository's other content-tagged images, and dangling layers.

    Not part of `build`: every checkout on the machine shares the storage, and
    removing another checkout's image between its build and its tests would
    fail them. Run it by hand when the storage grows.
    """
    current = image_ref()
    listed = podman(
        "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={REPOSITORY}"
    ).stdout.split()
    stale = [
        name
        for name in sorted(set(listed))
        if name not in (current.content_tag, current.version_tag)
    ]
    for name in stale:
        podman("rmi", name, check=False)
    podman("image", "prune", "--force")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/image.py",
        description="The project's image, built locally with buildah and cached by content.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = sub.add_parser("build", help="build the image unless this tree's is in local storage")
    build.add_argument("--force", action="store_true", help="build even when it is cached")
    sub.add_parser("ref", help="print the content-tagged name of this tree's image")
    sub.add_parser("hash", help="print the content hash and the files it covers")
    sub.add_parser("prune", help="remove other trees' images and dangling layers (by hand)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(ensure_image(force=args.force).content_tag)
        elif args.command == "ref":
            print(image_ref().content_tag)
        elif args.command == "hash":
            print(content_hash())
            for name in hashed_files():
                print(f"  {name}")
        elif args.command == "prune":
            for name in prune():
                print(f"removed {name}")
    except (ImageError, subprocess.CalledProcessError) as error:
        print(f"hack/image.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
