"""Build pinned Go tools from the Go module proxy into a cache.

The control plane (etcd, the Kubernetes commands, kwok) and the tools the tests
use with it (kube-proxy for Services, helm, kubeconform). The cache lives
outside the repository and is keyed by version, so a warm run builds nothing
and a version bump never mixes binaries; each binary is installed atomically,
so an interrupted build never leaves one that looks cached.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

KUBERNETES_VERSION = "1.36.3"
ETCD_VERSION = "3.6.16"
KWOK_VERSION = "0.8.0"
# v3.22.0 is served by the module proxy but not approved here; v3.21.4 is.
HELM_VERSION = "3.21.4"
KUBECONFORM_VERSION = "0.8.0"
# promtool checks and unit-tests the chart's PrometheusRule (tests/unit/test_chart_rules.py).
PROMETHEUS_VERSION = "0.316.0"

# All from k8s.io/kubernetes at KUBERNETES_VERSION, in one throwaway module
# (they share its module and build caches). kube-proxy programs the cluster
# namespace's Services.
KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kube-proxy",
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
    kube_proxy: Path
    kwok: Path
    kwok_stages: Path
    helm: Path
    kubeconform: Path
    promtool: Path

    def all(self) -> list[Path]:
        return [getattr(self, f.name) for f in fields(self)]

    def path_dirs(self) -> list[str]:
        """The directories of the commands, for PATH (kubectl's first)."""
        return list(dict.fromkeys(str(p.parent) for p in [self.kubectl, *self.all()]))


def binaries(root: Path | None = None) -> Binaries:
    root = root or cache_root() / "bin"
    kube = root / f"kubernetes-v{KUBERNETES_VERSION}"
    return Binaries(
        etcd=root / f"etcd-v{ETCD_VERSION}" / "etcd",
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=kube / "kube-controller-manager",
        kube_scheduler=kube / "kube-scheduler",
        kubectl=kube / "kubectl",
        kube_proxy=kube / "kube-proxy",
        kwok=root / f"kwok-v{KWOK_VERSION}" / "kwok",
        kwok_stages=root / f"kwok-v{KWOK_VERSION}" / "stages.yaml",
        helm=root / f"helm-v{HELM_VERSION}" / "helm",
        kubeconform=root / f"kubeconform-v{KUBECONFORM_VERSION}" / "kubeconform",
        promtool=root / f"promtool-v{PROMETHEUS_VERSION}" / "promtool",
    )


def _log(message: str) -> None:
    print(f"[local-cluster build] {message}", file=sys.stderr, flush=True)


@contextmanager
def _building(name: str, version: str, target: Path) -> Iterator[None]:
    """Log the start and the duration of one component's (cold) build."""
    _log(f"building {name} v{version} (cold: minutes)")
    started = time.monotonic()
    yield
    seconds = time.monotonic() - started
    _log(f"built {name} v{version} in {seconds // 60:.0f}m{seconds % 60:02.0f}s -> {target}")


def _go(args: list[str], cwd: Path, **extra: str) -> None:
    env = dict(os.environ, CGO_ENABLED="0", **extra)
    if args[0] == "build":
        # In a throwaway module without go.sum: resolve what it needs.
        env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -mod=mod".strip()
    subprocess.run(["go", *args], cwd=cwd, env=env, check=True)


def _download(module: str, workdir: Path) -> dict[str, Any]:
    """`go mod download -json module@version`: where its go.mod and source landed."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", module],
        cwd=workdir,
        env=dict(os.environ, GOFLAGS="-mod=mod"),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info: dict[str, Any] = json.loads(out)
    if info.get("Error") or not info.get("GoMod") or not info.get("Dir"):
        raise RuntimeError(f"go mod download {module}: {info.get('Error') or out}")
    return info


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


def helm_kubernetes_version(helm_go_mod: str) -> tuple[str, str]:
    """(major, minor) of the Kubernetes version helm's release builds assume.

    Without it `helm template` and `helm lint` assume Kubernetes 1.20
    (pkg/chartutil/capabilities.go); helm's Makefile derives it from the
    client-go it requires (v0.37.x -> 1.37), and so does this.
    """
    match = re.search(r"^\s*k8s\.io/client-go\s+v0\.(\d+)\.\d+", helm_go_mod, re.MULTILINE)
    if not match:
        raise RuntimeError("helm's go.mod requires no k8s.io/client-go")
    return "1", match.group(1)


def _install(built: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    shutil.copy2(built, tmp)
    tmp.chmod(0o755)
    tmp.replace(target)  # atomic: a half-written binary never looks cached


def _go_install(name: str, package: str, version: str, target: Path, ldflags: str) -> None:
    """`go install package@version` into a scratch GOBIN, then into the cache."""
    with _building(name, version, target), tempfile.TemporaryDirectory(prefix="sdns-go-") as tmp:
        work = Path(tmp)
        _go(
            ["install", "-trimpath", "-ldflags", ldflags, f"{package}@v{version}"],
            work,
            GOBIN=str(work / "bin"),
        )
        _install(work / "bin" / name, target)


def build_kubernetes(bins: Binaries) -> None:
    wanted = {name: getattr(bins, name.replace("-", "_")) for name in KUBERNETES_COMMANDS}
    missing = {name: path for name, path in wanted.items() if not path.exists()}
    if not missing:
        return
    with tempfile.TemporaryDirectory(prefix="sdns-k8s-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module localbuild\n\ngo 1.26\n")
        upstream = Path(_download(f"k8s.io/kubernetes@v{KUBERNETES_VERSION}", work)["GoMod"])
        replacements = staging_replacements(upstream.read_text(), KUBERNETES_VERSION)
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
            with _building(name, KUBERNETES_VERSION, target):
                out = work / name
                _go(
                    ["build", "-ldflags", ldflags, "-o", str(out), f"k8s.io/kubernetes/cmd/{name}"],
                    work,
                )
                _install(out, target)


def build_etcd(bins: Binaries) -> None:
    if bins.etcd.exists():
        return
    with (
        _building("etcd", ETCD_VERSION, bins.etcd),
        tempfile.TemporaryDirectory(prefix="sdns-etcd-build-") as tmp,
    ):
        work = Path(tmp)
        # etcd's own modules carry replace directives, so `go install pkg@v`
        # refuses them; a throwaway module that requires the server works.
        (work / "go.mod").write_text(
            f"module localbuild\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 v{ETCD_VERSION}\n"
        )
        out = work / "etcd"
        _go(["build", "-ldflags", "-s -w", "-o", str(out), "go.etcd.io/etcd/server/v3"], work)
        _install(out, bins.etcd)


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


def write_kwok_stages(bins: Binaries) -> None:
    if bins.kwok_stages.exists():
        return
    with tempfile.TemporaryDirectory(prefix="sdns-kwok-stages-") as tmp:
        source = Path(_download(f"sigs.k8s.io/kwok@v{KWOK_VERSION}", Path(tmp))["Dir"])
    documents = [(source / name).read_text().strip() for name in KWOK_STAGE_FILES]
    bins.kwok_stages.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = bins.kwok_stages.with_suffix(".tmp")
    tmp_file.write_text("\n---\n".join(documents) + "\n")
    tmp_file.replace(bins.kwok_stages)


def build_kwok(bins: Binaries) -> None:
    write_kwok_stages(bins)
    if not bins.kwok.exists():
        _go_install("kwok", "sigs.k8s.io/kwok/cmd/kwok", KWOK_VERSION, bins.kwok, "-s -w")


def build_helm(bins: Binaries) -> None:
    if bins.helm.exists():
        return
    with tempfile.TemporaryDirectory(prefix="sdns-helm-mod-") as tmp:
        go_mod = Path(_download(f"helm.sh/helm/v3@v{HELM_VERSION}", Path(tmp))["GoMod"])
    major, minor = helm_kubernetes_version(go_mod.read_text())
    # What helm's Makefile stamps into a release build (`make build VERSION=...`).
    stamp = [f"-X helm.sh/helm/v3/internal/version.version=v{HELM_VERSION}"]
    stamp += ["-X helm.sh/helm/v3/internal/version.gitTreeState=clean"]
    for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        stamp += [f"-X {package}.k8sVersionMajor={major}", f"-X {package}.k8sVersionMinor={minor}"]
    _go_install(
        "helm", "helm.sh/helm/v3/cmd/helm", HELM_VERSION, bins.helm, " ".join(["-s -w", *stamp])
    )


def build_kubeconform(bins: Binaries) -> None:
    if not bins.kubeconform.exists():
        _go_install(
            "kubeconform",
            "github.com/yannh/kubeconform/cmd/kubeconform",
            KUBECONFORM_VERSION,
            bins.kubeconform,
            f"-s -w -X main.version=v{KUBECONFORM_VERSION}",
        )


def build_promtool(bins: Binaries) -> None:
    """promtool from the Prometheus module of the same version (its rule evaluator).

    Prometheus tags its Go module v0.3XX.Y for release 3.X.Y; the version
    stamp is the module's (promtool --version prints it).
    """
    if not bins.promtool.exists():
        _go_install(
            "promtool",
            "github.com/prometheus/prometheus/cmd/promtool",
            PROMETHEUS_VERSION,
            bins.promtool,
            f"-s -w -X github.com/prometheus/common/version.Version={PROMETHEUS_VERSION}",
        )


def ensure_binaries() -> Binaries:
    bins = binaries()
    if shutil.which("go") is None and not all(p.exists() for p in bins.all()):
        raise RuntimeError("Go is needed to build the local cluster's tools (install golang)")
    build_etcd(bins)
    build_kwok(bins)
    build_kubernetes(bins)
    build_helm(bins)
    build_kubeconform(bins)
    build_promtool(bins)
    return bins


if __name__ == "__main__":
    for path in ensure_binaries().all():
        print(path)
