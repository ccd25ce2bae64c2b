"""Build pinned control-plane binaries from the Go module proxy into a cache.

The cache lives outside the repository and is keyed by version, so a warm run
builds nothing and a version bump never mixes binaries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "1.36.3"
ETCD_VERSION = "3.6.16"
KWOK_VERSION = "0.8.0"

KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "secondary-dns"


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwok_stages: Path

    def all(self) -> list[Path]:
        return [
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
            self.kwok,
            self.kwok_stages,
        ]


def binaries(root: Path | None = None) -> Binaries:
    root = root or cache_root() / "bin"
    kube = root / f"kubernetes-v{KUBERNETES_VERSION}"
    return Binaries(
        etcd=root / f"etcd-v{ETCD_VERSION}" / "etcd",
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=kube / "kube-controller-manager",
        kube_scheduler=kube / "kube-scheduler",
        kubectl=kube / "kubectl",
        kwok=root / f"kwok-v{KWOK_VERSION}" / "kwok",
        kwok_stages=root / f"kwok-v{KWOK_VERSION}" / "stages.yaml",
    )


def _log(message: str) -> None:
    print(f"[local-cluster build] {message}", file=sys.stderr, flush=True)


def _go(args: list[str], cwd: Path) -> None:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    env["CGO_ENABLED"] = "0"
    subprocess.run(["go", *args], cwd=cwd, env=env, check=True)


def staging_replacements(kubernetes_go_mod: str, version: str) -> dict[str, str]:
    """Map each staging module of k8s.io/kubernetes to its published tag.

    Upstream's go.mod replaces every `k8s.io/*` staging module with a local
    path (`./staging/src/k8s.io/...`); outside that tree each one must point at
    the published `v0.X.Y` that matches `v1.X.Y`. Deriving the list from the
    go.mod keeps it right when upstream adds or drops a staging module.
    """
    major, minor, patch = version.split(".")
    published = f"v0.{minor}.{patch}"
    modules = re.findall(
        r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/src/", kubernetes_go_mod, re.MULTILINE
    )
    return {module: published for module in sorted(set(modules))}


def _kubernetes_go_mod(version: str, workdir: Path) -> str:
    env = dict(os.environ, GOFLAGS="-mod=mod")
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@v{version}"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r'"GoMod":\s*"([^"]+)"', out)
    if not match:
        raise RuntimeError(f"go mod download gave no go.mod for kubernetes v{version}")
    return Path(match.group(1)).read_text()


def _install(built: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    shutil.copy2(built, tmp)
    tmp.chmod(0o755)
    tmp.replace(target)  # atomic: a half-written binary never looks cached


def build_kubernetes(bins: Binaries) -> None:
    wanted = {
        "kube-apiserver": bins.kube_apiserver,
        "kube-controller-manager": bins.kube_controller_manager,
        "kube-scheduler": bins.kube_scheduler,
        "kubectl": bins.kubectl,
    }
    missing = {name: path for name, path in wanted.items() if not path.exists()}
    if not missing:
        return
    with tempfile.TemporaryDirectory(prefix="sdns-k8s-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module localbuild\n\ngo 1.26\n")
        upstream = _kubernetes_go_mod(KUBERNETES_VERSION, work)
        replacements = staging_replacements(upstream, KUBERNETES_VERSION)
        lines = [
            "module localbuild",
            "",
            "go 1.26",
            "",
            f"require k8s.io/kubernetes v{KUBERNETES_VERSION}",
            "",
            "replace (",
            *(f"\t{module} => {module} {tag}" for module, tag in replacements.items()),
            ")",
            "",
        ]
        (work / "go.mod").write_text("\n".join(lines))
        _, minor, _ = KUBERNETES_VERSION.split(".")
        pkg = "k8s.io/component-base/version"
        client_pkg = "k8s.io/client-go/pkg/version"
        stamp = []
        for p in (pkg, client_pkg):
            stamp += [
                f"-X {p}.gitVersion=v{KUBERNETES_VERSION}",
                f"-X {p}.gitMajor=1",
                f"-X {p}.gitMinor={minor}",
                f"-X {p}.gitTreeState=clean",
                f"-X {p}.buildDate=1970-01-01T00:00:00Z",
            ]
        ldflags = " ".join(["-s", "-w", *stamp])
        for name, target in missing.items():
            _log(f"building {name} v{KUBERNETES_VERSION} (cold: several minutes)")
            out = work / name
            _go(
                ["build", "-ldflags", ldflags, "-o", str(out), f"k8s.io/kubernetes/cmd/{name}"],
                work,
            )
            _install(out, target)
            _log(f"built {name} -> {target}")


def build_etcd(bins: Binaries) -> None:
    if bins.etcd.exists():
        return
    _log(f"building etcd v{ETCD_VERSION}")
    with tempfile.TemporaryDirectory(prefix="sdns-etcd-build-") as tmp:
        work = Path(tmp)
        # etcd's own modules carry replace directives, so `go install pkg@v`
        # refuses them; a throwaway module that requires the server works.
        (work / "go.mod").write_text(
            f"module localbuild\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 v{ETCD_VERSION}\n"
        )
        out = work / "etcd"
        _go(["build", "-ldflags", "-s -w", "-o", str(out), "go.etcd.io/etcd/server/v3"], work)
        _install(out, bins.etcd)
    _log(f"built etcd -> {bins.etcd}")


# A bare `kwok` (unlike kwokctl) simulates nothing until it is given stages.
# These are upstream's "fast" node and pod lifecycles plus lease heartbeats,
# taken from the same module version as the binary.
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def _module_dir(module: str, workdir: Path) -> Path:
    out = subprocess.run(
        ["go", "mod", "download", "-json", module],
        cwd=workdir,
        env=dict(os.environ, GOFLAGS="-mod=mod"),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r'"Dir":\s*"([^"]+)"', out)
    if not match:
        raise RuntimeError(f"go mod download gave no directory for {module}")
    return Path(match.group(1))


def write_kwok_stages(bins: Binaries) -> None:
    if bins.kwok_stages.exists():
        return
    with tempfile.TemporaryDirectory(prefix="sdns-kwok-stages-") as tmp:
        source = _module_dir(f"sigs.k8s.io/kwok@v{KWOK_VERSION}", Path(tmp))
    documents = [(source / name).read_text().strip() for name in KWOK_STAGE_FILES]
    bins.kwok_stages.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = bins.kwok_stages.with_suffix(".tmp")
    tmp_file.write_text("\n---\n".join(documents) + "\n")
    tmp_file.replace(bins.kwok_stages)


def build_kwok(bins: Binaries) -> None:
    write_kwok_stages(bins)
    if bins.kwok.exists():
        return
    _log(f"building kwok v{KWOK_VERSION}")
    with tempfile.TemporaryDirectory(prefix="sdns-kwok-build-") as tmp:
        work = Path(tmp)
        env_gobin = work / "bin"
        env = dict(os.environ, GOBIN=str(env_gobin), CGO_ENABLED="0")
        subprocess.run(
            ["go", "install", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@v{KWOK_VERSION}"],
            cwd=work,
            env=env,
            check=True,
        )
        _install(env_gobin / "kwok", bins.kwok)
    _log(f"built kwok -> {bins.kwok}")


def ensure_binaries() -> Binaries:
    bins = binaries()
    if shutil.which("go") is None and not all(p.exists() for p in bins.all()):
        raise RuntimeError("Go is needed to build the local control plane (install golang)")
    build_etcd(bins)
    build_kwok(bins)
    build_kubernetes(bins)
    return bins


if __name__ == "__main__":
    for path in ensure_binaries().all():
        print(path)
