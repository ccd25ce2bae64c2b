"""Start, stop and inspect the local control plane inside its network namespace.

Every process is started through `ip netns exec`, so the caller may sit in any
namespace; `down` kills whatever is left in the namespace (`ip netns pids`),
which is what makes "nothing is left behind" true even after a crash.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localcluster import build, kubeproxy, netns
from localcluster.constants import (
    API_PORT,
    CONTROL_PLANE_ADDRESS,
    ETCD_PEER_PORT,
    ETCD_PORT,
    FAILURE_ZONES,
    KUBERNETES_SERVICE_ADDRESS,
    KWOK_SERVER_ADDRESS,
    NODE_ADDRESS,
    NODES_PER_ZONE,
    RUNNER_POD_SELECTOR,
    SERVICE_CIDR,
)
from localcluster.podstate import describe_pods, remove_all_pods
from localcluster.processes import pid_alive, terminate
from localcluster.waiting import wait_for

# The control plane proper: what must be up before the node components can be
# (re)started without touching it.
CONTROL_PLANE = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)
# What a node's kubelet, CNI plugin and kube-proxy do for the pods.
NODE_COMPONENTS = ("kube-proxy", "pod-runner")
COMPONENTS = CONTROL_PLANE + NODE_COMPONENTS
# kwok leaves the status of the pods this selects alone; the pod runner
# (podrunner.py) runs them and writes their status, as a kubelet would. The
# flag is deprecated upstream in favour of Stage selectors but does exactly
# this in v0.8.0 (pkg/kwok/controllers/pod_controller.go, `need`).
KWOK_DISREGARD_FLAG = f"--disregard-status-with-label-selector={RUNNER_POD_SELECTOR}"
HACK_DIR = Path(__file__).resolve().parents[1]
CERTIFICATE_DAYS = "3650"


def state_root() -> Path:
    # Runtime state (etcd data, certificates, logs) lives in /run when it can:
    # it is tmpfs on most machines, which keeps etcd fast and leaves no trace.
    run = Path("/run")
    if os.access(run, os.W_OK):
        return run / "secondary-dns"
    return build.cache_root() / "run"


@dataclass(frozen=True)
class Node:
    name: str
    zone: str
    pod_cidr: str


def nodes() -> list[Node]:
    result = []
    index = 0
    for zone in FAILURE_ZONES:
        for n in range(1, NODES_PER_ZONE + 1):
            index += 1
            result.append(Node(f"kwok-{zone}-{n}", zone, f"10.244.{index}.0/24"))
    return result


def node_manifest(node: Node) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": node.zone,
                "topology.kubernetes.io/region": "local",
                "type": "kwok",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }


def _log(message: str) -> None:
    print(f"[local-cluster] {message}", file=sys.stderr, flush=True)


@dataclass
class LocalCluster:
    """One local cluster; its name picks its network namespace and state directory."""

    name: str = "sdns"
    state_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state_dir = state_root() / self.name

    @property
    def netns(self) -> str:
        return self.name

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def environment(self) -> dict[str, str]:
        """This process's environment with KUBECONFIG set and the cached tools first on PATH."""
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        env["PATH"] = os.pathsep.join([*build.binaries().path_dirs(), env.get("PATH", "")])
        return env

    # ---- processes -------------------------------------------------------

    def _pid_file(self, component: str) -> Path:
        return self.state_dir / f"{component}.pid"

    def component_pid(self, component: str) -> int | None:
        try:
            pid = int(self._pid_file(component).read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def _start(
        self,
        component: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        enters_itself: bool = False,
    ) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{component}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            process = subprocess.Popen(
                list(argv) if enters_itself else ["ip", "netns", "exec", self.netns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C in the shell that ran `up` does not
                # reach the cluster, `down` does.
                start_new_session=True,
                cwd=self.state_dir,
                env=env,
            )
        finally:
            log.close()
        self._pid_file(component).write_text(str(process.pid))
        _log(f"started {component} (pid {process.pid}, log {self.logs / component}.log)")

    def run_inside(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            input=input,
            env=self.environment(),
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run_inside(
            [str(build.binaries().kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            check=check,
        )

    # ---- certificates ----------------------------------------------------

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.pki)

    def _write_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        self._openssl("genrsa", "-out", "ca.key", "2048")
        self._openssl(
            "req", "-x509", "-new", "-key", "ca.key", "-days", CERTIFICATE_DAYS,
            "-subj", "/CN=secondary-dns-local-ca", "-out", "ca.crt",
        )  # fmt: skip
        sans = ",".join(
            [
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "IP:127.0.0.1",
                f"IP:{CONTROL_PLANE_ADDRESS}",
                f"IP:{KUBERNETES_SERVICE_ADDRESS}",
            ]
        )
        (self.pki / "apiserver.ext").write_text(
            f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
        )
        self._issue("apiserver", "/CN=kube-apiserver", "apiserver.ext")
        # system:masters: the test and demo clusters' one administrator.
        self._issue("admin", "/O=system:masters/CN=secondary-dns-admin")
        self._openssl("genrsa", "-out", "sa.key", "2048")
        self._openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _issue(self, name: str, subject: str, ext: str = "client.ext") -> None:
        """`name`.crt and .key signed by the cluster's CA, unless they exist (client by default)."""
        if (self.pki / f"{name}.crt").exists():
            return
        (self.pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        self._openssl("genrsa", "-out", f"{name}.key", "2048")
        self._openssl("req", "-new", "-key", f"{name}.key", "-subj", subject,
                      "-out", f"{name}.csr")  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", CERTIFICATE_DAYS, "-extfile", ext,
            "-out", f"{name}.crt",
        )  # fmt: skip

    def _write_kubeconfig(self, path: Path, user: str, certificate: str) -> None:
        """A kubeconfig for the API server on the namespace's loopback, as `user`."""

        def b64(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": f"https://127.0.0.1:{API_PORT}",
                        "certificate-authority-data": b64("ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(f"{certificate}.crt"),
                        "client-key-data": b64(f"{certificate}.key"),
                    },
                }
            ],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": user}}],
            "current-context": self.name,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)

    def _kube_proxy_kubeconfig(self) -> Path:
        """kube-proxy's own identity (what kubeadm gives it), made once per cluster."""
        path = self.state_dir / "kube-proxy.kubeconfig"
        if not path.exists():
            self._issue("kube-proxy", f"/CN={kubeproxy.USER}")
            self._write_kubeconfig(path, kubeproxy.USER, "kube-proxy")
        return path

    # ---- lifecycle -------------------------------------------------------

    def running_components(self) -> dict[str, int | None]:
        return {component: self.component_pid(component) for component in COMPONENTS}

    def api_ready(self) -> bool:
        if not netns.exists(self.netns) or not self.kubeconfig.exists():
            return False
        try:
            result = self.kubectl("get", "--raw", "/readyz", check=False)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0 and result.stdout.strip() == "ok"

    def healthy(self) -> bool:
        return all(self.running_components().values()) and self.api_ready()

    def control_plane_healthy(self) -> bool:
        running = self.running_components()
        return all(running[c] for c in CONTROL_PLANE) and self.api_ready()

    def _kwok_argv(self, bins: build.Binaries) -> list[str]:
        return [
            str(bins.kwok),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={bins.kwok_stages}",
            "--manage-all-nodes=true",
            f"--server-address={KWOK_SERVER_ADDRESS}",
            "--node-lease-duration-seconds=40",
            # Every node's InternalIP (and so every kwok pod's hostIP): all
            # nodes are this one namespace. kube-proxy waits 30 s for its
            # node's address before it gives up on it.
            f"--node-ip={NODE_ADDRESS}",
            KWOK_DISREGARD_FLAG,
        ]

    def _runs_with(self, component: str, wanted: list[str]) -> bool:
        """True when the component runs with the arguments this version starts it with."""
        pid = self.component_pid(component)
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1] if pid else []
        except OSError:
            return False
        return [a.decode() for a in argv] == wanted

    def _kwok_current(self, bins: build.Binaries) -> bool:
        return self._runs_with("kwok", self._kwok_argv(bins))

    def _kube_proxy_argv(self, bins: build.Binaries) -> list[str]:
        return kubeproxy.argv(bins.kube_proxy, self._kube_proxy_kubeconfig(), nodes()[0].name)

    def _start_pod_runner(self) -> None:
        path = os.pathsep.join([str(HACK_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        # It enters the cluster's network namespace itself (setns), keeping the
        # host's mount namespace: `ip netns exec` would give it a private one,
        # and the pod namespaces it creates (bind mounts under /run/netns)
        # would then be invisible to everyone else, `down` included.
        self._start(
            "pod-runner",
            [
                sys.executable,
                "-m",
                "localcluster.podrunner",
                "--cluster",
                self.name,
                "--state-dir",
                str(self.state_dir),
                "--kubeconfig",
                str(self.kubeconfig),
                "--logs",
                str(self.logs),
            ],
            env=dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1"),
            enters_itself=True,
        )

    def _start_kube_proxy(self, bins: build.Binaries) -> None:
        kubeproxy.prepare_service_route(self.netns)
        self._start("kube-proxy", self._kube_proxy_argv(bins))
        self._wait("kube-proxy's rules", lambda: kubeproxy.programmed(self.netns), timeout=60)

    def _start_node_components(self, bins: build.Binaries) -> None:
        """Start kube-proxy and the pod runner where they are not running.

        A kube-proxy started with other arguments (an older version of this
        file) is restarted: its rules are rewritten from the API on start.
        """
        pid = self.component_pid("kube-proxy")
        if pid is not None and not self._runs_with("kube-proxy", self._kube_proxy_argv(bins)):
            _log("restarting kube-proxy with its current arguments")
            terminate({pid})
            pid = None
        if pid is None:
            self._start_kube_proxy(bins)
        if self.component_pid("pod-runner") is None:
            self._start_pod_runner()

    def _repair(self) -> bool:
        """Bring a running control plane up to date without restarting it; False if it is not.

        A cluster started before the pod runner or kube-proxy existed keeps its
        etcd and API server: only kwok is restarted (when its arguments
        changed) and the missing node components are started.
        """
        if not self.control_plane_healthy():
            return False
        bins = build.ensure_binaries()
        if not self._kwok_current(bins):
            _log("restarting kwok with its current arguments")
            pid = self.component_pid("kwok")
            if pid:
                terminate({pid})
            self._start("kwok", self._kwok_argv(bins))
        self._start_node_components(bins)
        return True

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Until `ready()`; fails at once when a component the cluster started has exited."""

        def check() -> bool:
            if ready():
                return True
            for component, pid in self.running_components().items():
                if self._pid_file(component).exists() and pid is None:
                    raise RuntimeError(
                        f"{component} exited while waiting for {what}; "
                        f"see {self.logs / component}.log"
                    )
            return False

        wait_for(what, check, timeout)

    def up(self) -> None:
        if self.healthy() and self._kwok_current(build.binaries()):
            _log(f"cluster {self.name!r} is already running; kubeconfig {self.kubeconfig}")
            return
        if self._repair():
            _log(f"cluster {self.name!r} is running; kubeconfig {self.kubeconfig}")
            return
        if self.state_dir.exists():
            # Only the cluster's own processes: the namespace may already hold
            # the caller (a test session enters it first) and its children.
            _log("cleaning up a partial cluster first")
            terminate({pid for pid in self.running_components().values() if pid})
            remove_all_pods(self.name, self.state_dir)
            shutil.rmtree(self.state_dir, ignore_errors=True)
        bins = build.ensure_binaries()
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        netns.create(self.netns)
        netns.add_address(self.netns, CONTROL_PLANE_ADDRESS)
        self._write_pki()
        self._write_kubeconfig(self.kubeconfig, "admin", "admin")
        pki = self.pki
        self._start(
            "etcd",
            [
                str(bins.etcd),
                "--name=local",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
                f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
                f"--listen-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
                f"--initial-cluster=local=http://127.0.0.1:{ETCD_PEER_PORT}",
                # A throwaway cluster on tmpfs: durability buys nothing here.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._start(
            "kube-apiserver",
            [
                str(bins.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
                f"--secure-port={API_PORT}",
                "--bind-address=0.0.0.0",
                f"--advertise-address={CONTROL_PLANE_ADDRESS}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                "--event-ttl=1h",
                "--v=0",
            ],
        )
        self._wait("the API server", self.api_ready, timeout=180)
        kubeconfig = str(self.kubeconfig)
        self._start(
            "kube-controller-manager",
            [
                str(bins.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--cert-dir={self.state_dir / 'controller-manager'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--use-service-account-credentials=false",
                # Nodes get their podCIDR from us (a /24 each, fixed per node).
                "--allocate-node-cidrs=false",
                "--profiling=false",
                "--v=0",
            ],
        )
        self._start(
            "kube-scheduler",
            [
                str(bins.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--cert-dir={self.state_dir / 'scheduler'}",
                "--profiling=false",
                "--v=0",
            ],
        )
        self._start("kwok", self._kwok_argv(bins))
        manifests = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [node_manifest(n) for n in nodes()],
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(manifests))
        self._wait("6 Ready nodes", self._nodes_ready, timeout=120)
        self._wait("the default service account", self._default_service_account, 120)
        self._start_node_components(bins)
        _log(
            f"cluster {self.name!r} is up in {time.monotonic() - started:.0f}s; "
            f"kubeconfig {self.kubeconfig}"
        )

    def _nodes_ready(self) -> bool:
        result = self.kubectl("get", "nodes", "-o", "json", check=False)
        if result.returncode != 0:
            return False
        items = json.loads(result.stdout)["items"]
        ready = [
            node
            for node in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in node.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) == len(nodes())

    def _default_service_account(self) -> bool:
        result = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
        return result.returncode == 0

    def down(self) -> None:
        own = {os.getpid(), os.getppid()}
        victims = set(netns.pids(self.netns)) - own
        victims |= {pid for pid in self.running_components().values() if pid is not None}
        terminate(victims)
        # The pods' processes live in namespaces of their own, not in the
        # cluster's: they are not among the victims above.
        pods = remove_all_pods(self.name, self.state_dir)
        # kube-proxy's nftables tables, the Service route and the pods' veths
        # and routes belong to the namespace: they go with it.
        netns.delete(self.netns)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if victims or pods:
            _log(f"cluster {self.name!r} stopped ({len(victims)} processes, {pods} pods)")

    def status(self) -> str:
        present = netns.exists(self.netns)
        lines = [f"cluster {self.name!r}: network namespace {'present' if present else 'absent'}"]
        for component, pid in self.running_components().items():
            state = f"running, pid {pid}" if pid else "not running"
            lines.append(f"  {component:<24} {state}")
        if present:
            api = "ready" if self.api_ready() else "not ready"
            lines.append(f"  {'API server':<24} {api}")
            lines.append(f"  {'kubeconfig':<24} {self.kubeconfig}")
        pods = describe_pods(self.state_dir)
        lines.append(f"  pods run by the pod runner: {len(pods)}")
        lines += [f"    {line}" for line in pods]
        return "\n".join(lines)
