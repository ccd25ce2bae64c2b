"""Flux's real controllers for the local cluster: built from the Go module proxy, cached, run.

source-controller fetches a GitRepository from the in-cluster git server
(gitserver.py) and serves it as an artifact; kustomize-controller downloads that
artifact and applies it with server-side apply, prunes what left git and waits
for health with kstatus (kstatus.py has the same library as a command). They run
as processes in the cluster's network namespace with the cluster's kubeconfig,
like the control plane: they are not our image, so the pod runner does not run
them. Their CRDs come from `config/crd/bases` of the same module versions.

`hack/local-flux up | down | status | build` drives them on a running cluster;
`running(cluster)` is the context manager the tests use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localcluster import build, gitserver, kstatus, netns
from localcluster.cluster import LocalCluster
from localcluster.processes import terminate

# v1.10.x need Go 1.27 (their go.mod says `go 1.27.0`), which this machine's
# Go 1.26 refuses without a newer toolchain: v1.9.x it is. source-controller
# v1.9.4-v1.9.6 require github.com/fluxcd/pkg/artifact v0.18.2/v0.18.3, which the
# Go module proxy here does not serve; v1.9.3 is the newest whose every
# dependency it serves (kustomize-controller v1.9.6 itself is built against
# source-controller/api v1.9.0, so the two agree on the GitRepository API).
SOURCE_CONTROLLER_VERSION = "1.9.3"
KUSTOMIZE_CONTROLLER_VERSION = "1.9.6"

# Addresses on the cluster namespace's lo (outside the pod, Service and
# control-plane ranges, and apart from scenario.py's primary and relay): one
# per controller, so their fixed ports cannot collide with each other or with
# anything else bound to a specific address.
SOURCE_CONTROLLER_ADDRESS = "10.250.0.21"
KUSTOMIZE_CONTROLLER_ADDRESS = "10.250.0.22"
STORAGE_PORT = 9090
METRICS_PORT = 8080
HEALTH_PORT = 9440

COMPONENTS = (gitserver.COMPONENT, "source-controller", "kustomize-controller")


def _log(message: str) -> None:
    print(f"[local-flux] {message}", file=sys.stderr, flush=True)


# ---- build -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Controller:
    """One Flux controller at one version, and where its build is cached."""

    name: str
    version: str

    @property
    def module(self) -> str:
        return f"github.com/fluxcd/{self.name}"

    def directory(self, root: Path | None = None) -> Path:
        return (root or build.cache_root() / "bin") / f"{self.name}-v{self.version}"

    def binary(self, root: Path | None = None) -> Path:
        return self.directory(root) / self.name

    def crds(self, root: Path | None = None) -> Path:
        return self.directory(root) / "crds.yaml"


SOURCE_CONTROLLER = Controller("source-controller", SOURCE_CONTROLLER_VERSION)
KUSTOMIZE_CONTROLLER = Controller("kustomize-controller", KUSTOMIZE_CONTROLLER_VERSION)
CONTROLLERS = (SOURCE_CONTROLLER, KUSTOMIZE_CONTROLLER)


def api_module_edit(controller: Controller) -> list[str]:
    """The `go mod edit` that makes a controller's downloaded module buildable on its own.

    Its go.mod replaces its `api` submodule with `./api`, a nested module that the
    module's zip leaves out; dropping the replace builds against the published api
    at the version the go.mod requires (the same tag, released together).
    """
    return ["mod", "edit", f"-dropreplace={controller.module}/api"]


def crd_bundle(documents: Sequence[str]) -> str:
    """One multi-document YAML from the CRD files, in the order given."""
    return "\n---\n".join(d.strip().removeprefix("---").strip() for d in documents) + "\n"


def _write_atomically(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(target)


def build_controller(controller: Controller, root: Path | None = None) -> bool:
    """Build (or find cached) one controller and its CRDs; True when it built something."""
    binary, crds = controller.binary(root), controller.crds(root)
    if binary.exists() and crds.exists():
        return False
    with tempfile.TemporaryDirectory(prefix=f"sdns-{controller.name}-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module localbuild\n\ngo 1.26\n")
        source = Path(build._download(f"{controller.module}@v{controller.version}", work)["Dir"])
        bases = sorted((source / "config" / "crd" / "bases").glob("*.yaml"))
        if not bases:
            raise RuntimeError(f"{controller.module}@v{controller.version} has no CRDs")
        _write_atomically(crds, crd_bundle([path.read_text() for path in bases]))
        if binary.exists():
            return True
        _log(f"building {controller.name} v{controller.version} (cold: several minutes)")
        started = time.monotonic()
        # The module cache is read-only, and go.mod needs the edit above: build a copy.
        tree = work / "src"
        shutil.copytree(source, tree, copy_function=shutil.copyfile)
        for directory in (tree, *(p for p in tree.rglob("*") if p.is_dir())):
            directory.chmod(0o755)
        build._go(api_module_edit(controller), tree)
        out = work / controller.name
        build._go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."], tree)
        build._install(out, binary)
        _log(
            f"built {controller.name} v{controller.version} in "
            f"{time.monotonic() - started:.0f}s ({binary.stat().st_size / 1e6:.1f} MB) -> {binary}"
        )
    return True


def ensure_controllers(root: Path | None = None) -> tuple[Controller, ...]:
    if shutil.which("go") is None and not all(
        c.binary(root).exists() and c.crds(root).exists() for c in CONTROLLERS
    ):
        raise RuntimeError("Go is needed to build Flux's controllers (install golang)")
    for controller in CONTROLLERS:
        build_controller(controller, root)
    return CONTROLLERS


# ---- run -------------------------------------------------------------------------------


def artifact_storage(cluster: LocalCluster) -> Path:
    return cluster.state_dir / "flux" / "artifacts"


def controller_environment(cluster: LocalCluster) -> dict[str, str]:
    # The controllers have no --kubeconfig flag; controller-runtime reads KUBECONFIG.
    return dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))


def _controller_flags(address: str) -> list[str]:
    """What keeps a controller local: one instance, its own address, every namespace."""
    return [
        "--enable-leader-election=false",
        "--watch-all-namespaces=true",
        f"--metrics-addr={address}:{METRICS_PORT}",
        f"--health-addr={address}:{HEALTH_PORT}",
        "--log-level=info",
    ]


def source_controller_argv(cluster: LocalCluster, binary: Path) -> list[str]:
    address = SOURCE_CONTROLLER_ADDRESS
    return [
        str(binary),
        *_controller_flags(address),
        f"--storage-path={artifact_storage(cluster)}",
        f"--storage-addr={address}:{STORAGE_PORT}",
        # The address in each artifact's URL: kustomize-controller downloads
        # from it, inside the same network namespace.
        f"--storage-adv-addr={address}:{STORAGE_PORT}",
    ]


def kustomize_controller_argv(cluster: LocalCluster, binary: Path) -> list[str]:
    return [
        str(binary),
        *_controller_flags(KUSTOMIZE_CONTROLLER_ADDRESS),
        # Remote kustomize bases would be fetched from the internet; the
        # namespace has no route out, so refuse them plainly instead.
        "--no-remote-bases=true",
    ]


def _ready(cluster: LocalCluster, address: str) -> bool:
    """The controller's /readyz, asked from inside the cluster's namespace."""
    return gitserver.answers_http(cluster, f"http://{address}:{HEALTH_PORT}/readyz") == 200


@dataclass
class Flux:
    """The git server and Flux's two controllers on one local cluster."""

    cluster: LocalCluster

    @property
    def git(self) -> gitserver.GitServer:
        return gitserver.GitServer(self.cluster)

    def running_components(self) -> dict[str, int | None]:
        return {c: self.cluster.component_pid(c) for c in COMPONENTS}

    def healthy(self) -> bool:
        return all(self.running_components().values()) and all(
            _ready(self.cluster, address)
            for address in (SOURCE_CONTROLLER_ADDRESS, KUSTOMIZE_CONTROLLER_ADDRESS)
        )

    def apply_crds(self) -> None:
        for controller in CONTROLLERS:
            self.cluster.kubectl(
                "apply", "--server-side", "--force-conflicts", "-f", str(controller.crds())
            )
        names = [
            line.split()[-1]
            for controller in CONTROLLERS
            for line in controller.crds().read_text().splitlines()
            if line.startswith("  name: ") and line.split()[-1].count(".") >= 2
        ]
        self.cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            *(f"crd/{name}" for name in names),
        )  # fmt: skip

    def up(self) -> None:
        """Start whatever is not running; harmless when all is."""
        if not self.cluster.api_ready():
            raise RuntimeError(
                f"cluster {self.cluster.name!r} is not running: run `hack/local-cluster up` first"
            )
        ensure_controllers()
        self.apply_crds()
        for address in (SOURCE_CONTROLLER_ADDRESS, KUSTOMIZE_CONTROLLER_ADDRESS):
            netns.add_address(self.cluster.netns, address)
        self.git.start()
        artifact_storage(self.cluster).mkdir(parents=True, exist_ok=True)
        env = controller_environment(self.cluster)
        for controller, argv in (
            (SOURCE_CONTROLLER, source_controller_argv),
            (KUSTOMIZE_CONTROLLER, kustomize_controller_argv),
        ):
            if self.cluster.component_pid(controller.name) is None:
                self.cluster._start(controller.name, argv(self.cluster, controller.binary()), env)
        deadline = time.monotonic() + 120
        while not self.healthy():
            for component, pid in self.running_components().items():
                if pid is None:
                    raise RuntimeError(
                        f"{component} is not running; see {self.cluster.logs / component}.log"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError("Flux's controllers did not become ready within 120s")
            time.sleep(0.5)
        _log(f"Flux is running on cluster {self.cluster.name!r}; git server {self.git.url('')}")

    def down(self) -> None:
        """Stop the controllers and the git server by PID; the CRDs and objects stay."""
        pids = {pid for pid in self.running_components().values() if pid is not None}
        terminate(pids)
        for component in COMPONENTS:
            self.cluster._pid_file(component).unlink(missing_ok=True)
        for address in (gitserver.ADDRESS, SOURCE_CONTROLLER_ADDRESS, KUSTOMIZE_CONTROLLER_ADDRESS):
            netns.remove_address(self.cluster.netns, address)
        if pids:
            _log(f"Flux stopped on cluster {self.cluster.name!r} ({len(pids)} processes)")

    def status(self) -> str:
        lines = [f"Flux on cluster {self.cluster.name!r}:"]
        for component, pid in self.running_components().items():
            state = f"running, pid {pid}" if pid else "not running"
            lines.append(f"  {component:<24} {state}")
        lines.append(f"  {'repositories':<24} {self.git.root}")
        return "\n".join(lines)


@contextmanager
def running(cluster: LocalCluster) -> Iterator[Flux]:
    """Flux on `cluster` for the length of the block; what this started is stopped after.

    Controllers that were already running (`hack/local-flux up`) are left running.
    """
    flux = Flux(cluster)
    was_running = all(flux.running_components().values())
    flux.up()
    try:
        yield flux
    finally:
        if not was_running:
            flux.down()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/local-flux",
        description="Flux's source-controller and kustomize-controller and a git server "
        "on a running local cluster (hack/local-cluster up).",
    )
    parser.add_argument(
        "--name",
        default=os.environ.get("SDNS_CLUSTER", "sdns"),
        help="the local cluster's name (default: %(default)s, env SDNS_CLUSTER)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("build", help="build or reuse the cached controllers, their CRDs and kstatus")
    sub.add_parser("up", help="apply the CRDs, start the git server and the controllers")
    sub.add_parser("down", help="stop them (the cluster keeps running)")
    sub.add_parser("status", help="say what is running")
    check = sub.add_parser(
        "kstatus", help="print the kstatus of objects: hack/local-flux kstatus zones -A"
    )
    # REMAINDER: kubectl's own flags (-A, -n NS, -l SELECTOR) pass through.
    check.add_argument("get_args", nargs=argparse.REMAINDER, metavar="KUBECTL-GET-ARGS")
    args = parser.parse_args(argv)
    flux = Flux(LocalCluster(args.name))
    if args.command == "build":
        for controller in ensure_controllers():
            print(controller.binary())
            print(controller.crds())
        print(kstatus.ensure_binary())
    elif args.command == "up":
        flux.up()
    elif args.command == "down":
        flux.down()
    elif args.command == "status":
        print(flux.status())
        return 0 if all(flux.running_components().values()) else 1
    elif args.command == "kstatus":
        if not args.get_args:
            parser.error("kstatus needs what to get: hack/local-flux kstatus zones -A")
        for result in kstatus.of_objects(flux.cluster, *args.get_args):
            print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
