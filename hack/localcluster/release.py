"""The Helm chart on the local cluster, and the operator and relay it describes, as processes.

`install` puts the chart in (`helm upgrade --install`, as a user would). Until
the pod runner runs the project's image (it runs only the DNS pods today), the
chart's two Deployments are installed with 0 replicas and their containers run
here as processes instead, each with a token of the chart's own ServiceAccount
(TokenRequest API, as the kubelet gives one to a pod) and never the admin's
kubeconfig: a verb the chart's RBAC lacks fails them as it would fail a pod.
The relay processes listen on addresses of the cluster namespace; an
EndpointSlice for the chart's relay Service lists them, so kube-proxy sends
what reaches the Service (the address primaries NOTIFY) to them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from localcluster import build, netns, podstate
from localcluster.cluster import LocalCluster
from localcluster.constants import RELAY_ADDRESSES, SERVICE_CIDR
from localcluster.named import free_port
from localcluster.processes import pid_alive, stop_process_group
from localcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "secondary-dns-operator"
RELEASE = "secondary-dns-operator"
NAMESPACE = "secondary-dns"
# The chart's names for this release (its fullname is the release name).
OPERATOR = RELEASE
RELAY = f"{RELEASE}-relay"
# The chart's relay containerPort, where each relay process listens.
RELAY_PORT = 5353
# Process mode: the Deployments exist (RBAC, Services, PDBs all as installed)
# but run no pods; their containers run here as processes.
PROCESS_MODE = {"operator": {"replicas": 0}, "relay": {"replicas": 0}}


def helm(cluster: LocalCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    netns.require_inside(cluster.netns)
    result = subprocess.run(
        [str(build.binaries().helm), *args],
        capture_output=True,
        text=True,
        env=cluster.environment(),
        timeout=300,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)}: {result.stderr.strip() or result.stdout}")
    return result


def installed_values(
    cluster: LocalCluster, release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, Any] | None:
    result = helm(cluster, "get", "values", release, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    return dict(json.loads(result.stdout) or {})


def _adoptable() -> list[tuple[str, str]]:
    """(kind, name) of the cluster-scoped objects the chart carries from crds/ and deploy/."""
    found = []
    for path in [
        *sorted((REPO / "crds").glob("*.yaml")),
        *sorted((REPO / "deploy").glob("*.yaml")),
    ]:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((str(document["kind"]).lower(), str(document["metadata"]["name"])))
    return found


def adopt_cluster_scoped(
    cluster: LocalCluster, release: str = RELEASE, namespace: str = NAMESPACE
) -> None:
    """Let the release take over the CRDs and the agents' pod policy applied earlier with
    kubectl (tests, older demos).

    Helm refuses to install over objects it does not own; these labels and
    annotations are how it recognises its own (what a user migrating from
    `kubectl apply -f crds/ -f deploy/` does once).
    """
    for kind, name in _adoptable():
        if cluster.kubectl("get", kind, name, check=False).returncode != 0:
            continue
        cluster.kubectl("label", "--overwrite", kind, name, "app.kubernetes.io/managed-by=Helm")
        cluster.kubectl(
            "annotate",
            "--overwrite",
            kind,
            name,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )


def install(
    cluster: LocalCluster,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    workdir: Path | None = None,
    extra: Sequence[str] = (),
) -> bool:
    """`helm upgrade --install` unless the release already has these values from this chart.

    True when helm ran. CRDs come with the release (crds.enabled, kept on uninstall).
    """
    wanted = json.loads(json.dumps(dict(values or {})))
    marker = _marker(cluster, release, namespace)
    installed = {"values": wanted, "chart": chart_digest()}
    if (
        not extra
        and marker.exists()
        and json.loads(marker.read_text()) == installed
        and installed_values(cluster, release, namespace) == wanted
    ):
        return False
    adopt_cluster_scoped(cluster, release, namespace)
    directory = workdir or cluster.state_dir
    values_file = directory / f"values-{release}.yaml"
    values_file.write_text(yaml.safe_dump(wanted))
    helm(
        cluster,
        "upgrade",
        "--install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--values",
        str(values_file),
        *extra,
    )
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/zones.secondarydns.io",
        "crd/secondaryservers.secondarydns.io",
    )  # fmt: skip
    marker.write_text(json.dumps(installed))
    return True


def _marker(cluster: LocalCluster, release: str, namespace: str) -> Path:
    """What was last installed (values, chart digest), so an unchanged release is not."""
    return cluster.state_dir / f"release-{namespace}-{release}.json"


def chart_digest() -> str:
    """A hash of the chart's files: a changed chart is installed again."""
    digest = hashlib.sha256()
    for path in sorted(p for p in CHART.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(CHART)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def relay_service_address(cluster: LocalCluster, namespace: str = NAMESPACE) -> str:
    result = cluster.kubectl(
        "get", "service", RELAY, "-n", namespace, "-o", "jsonpath={.spec.clusterIP}"
    )
    return result.stdout.strip()


def ensure_installed(cluster: LocalCluster) -> None:
    """The release of this chart: the CRDs, the agents' pod policy and the relay Service.

    Installed with no replicas when there is none; one installed from another
    version of the chart is upgraded with its values, its replicas at 0 (only
    run_operator runs them).
    """
    values = installed_values(cluster)
    if values is None:
        install(cluster, PROCESS_MODE)
        return
    marker = _marker(cluster, RELEASE, NAMESPACE)
    if marker.exists() and json.loads(marker.read_text()).get("chart") == chart_digest():
        return
    for component in ("operator", "relay"):
        values[component] = {**(values.get(component) or {}), "replicas": 0}
    install(cluster, values)


def relay_notify_target(cluster: LocalCluster) -> tuple[str, int]:
    """Where a primary sends NOTIFY: the relay Service (the chart installed first when it
    is not)."""
    ensure_installed(cluster)
    return (relay_service_address(cluster), 53)


def service_account_kubeconfig(
    cluster: LocalCluster, account: str, path: Path, namespace: str = NAMESPACE
) -> Path:
    """A kubeconfig whose only credential is a token of `account` (TokenRequest API)."""
    token = cluster.kubectl(
        "create", "token", account, "-n", namespace, "--duration=24h"
    ).stdout.strip()
    config = json.loads(cluster.kubeconfig.read_text())
    config["users"] = [{"name": account, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = account
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


# ---- the processes -------------------------------------------------------------------


@dataclass
class ReleaseProcess:
    """One container of the chart's Deployments, run as a process (`secondary-dns ...`)."""

    process: subprocess.Popen[bytes]
    metrics_port: int
    log: Path
    health_port: int = 0
    address: str = "127.0.0.1"
    # An operator's name in the Lease (a random suffix follows it there).
    identity: str = ""

    def metrics_text(self) -> str:
        return _metrics_text("127.0.0.1", self.metrics_port)

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of a metric's samples whose label text contains `labels`."""
        return _metric(self.metrics_text(), name, labels)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"{self.log.name} exited:\n{self.log_text()[-4000:]}")
        url = f"http://127.0.0.1:{self.health_port or self.metrics_port}/" + (
            "readyz" if self.health_port else "metrics"
        )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        stop_process_group(self.process, grace=15)

    def kill(self) -> None:
        """SIGKILL, as when a node dies: no clean-up, no Lease released."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def _metrics_text(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def _metric(text: str, name: str, labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {" and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _start(
    argv: list[str], log: Path, kubeconfig: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    environment = dict(os.environ, KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1")
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "operator"), *filter(None, [environment.get("PYTHONPATH")])]
    )
    environment.update(env or {})
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "secondary_dns.cli", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )


def start_operator(
    cluster: LocalCluster,
    log: Path,
    *,
    identity: str = "operator-0",
    resync_seconds: float = 60,
    probe_seconds: float = 10,
    repair: bool = True,
    namespace: str = NAMESPACE,
    pod_image: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    verbose: bool = False,
) -> ReleaseProcess:
    """`secondary-dns operator` with the chart's arguments and its ServiceAccount's token."""
    netns.require_inside(cluster.netns)
    kubeconfig = service_account_kubeconfig(
        cluster, OPERATOR, log.with_suffix(".kubeconfig"), namespace
    )
    metrics_port = free_port()
    argv = [
        "operator",
        # Where the relay forwards NOTIFYs to this replica while it leads (the
        # chart: the pod's IP, port 5354).
        f"--wakeup-listen=127.0.0.1:{free_port()}",
        "--advertise-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
        "--health-port=0",
        f"--resync-seconds={resync_seconds}",
        f"--probe-seconds={probe_seconds}",
        f"--operator-namespace={namespace}",
        f"--lease-name={OPERATOR}",
        f"--relay-service={RELAY}",
        f"--identity={identity}",
        f"--repair={'on' if repair else 'off'}",
        # As a platform team sets it: no Zone may point the replicas at the
        # cluster's own Services (docs/operator.md, --refused-primary-networks).
        f"--refused-primary-networks={SERVICE_CIDR}",
        *([f"--image={pod_image}"] if pod_image else []),
        *(["--verbose"] if verbose else []),
    ]
    process = _start(argv, log, kubeconfig, extra_env)
    return ReleaseProcess(process, metrics_port, log, identity=identity)


def start_relay(
    cluster: LocalCluster, log: Path, address: str, namespace: str = NAMESPACE
) -> ReleaseProcess:
    """`secondary-dns relay` on `address`:RELAY_PORT with the relay ServiceAccount's token."""
    netns.require_inside(cluster.netns)
    netns.add_address(cluster.netns, address)
    kubeconfig = service_account_kubeconfig(
        cluster, RELAY, log.with_suffix(".kubeconfig"), namespace
    )
    metrics_port, health_port = free_port(), free_port()
    argv = [
        "relay",
        f"--namespace={namespace}",
        f"--listen={address}:{RELAY_PORT}",
        f"--metrics-port={metrics_port}",
        f"--health-port={health_port}",
        f"--lease-name={OPERATOR}",
    ]
    process = _start(argv, log, kubeconfig)
    return ReleaseProcess(process, metrics_port, log, health_port, address)


def publish_relay_endpoints(
    cluster: LocalCluster, addresses: Sequence[str], namespace: str = NAMESPACE
) -> None:
    """The relay Service's endpoints: the relay processes (kube-proxy routes to them).

    What the EndpointSlice controller would write for the relay's pods; a slice
    of our own (not managed by that controller) is honoured by kube-proxy like
    any other slice labelled with the Service's name.
    """
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{RELAY}-processes",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": RELAY,
                "endpointslice.kubernetes.io/managed-by": "local-cluster.secondarydns.io",
            },
        },
        "addressType": "IPv4",
        "ports": [
            {"name": "dns-udp", "port": RELAY_PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "port": RELAY_PORT, "protocol": "TCP"},
        ],
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": True}} for address in addresses
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(slice_))


class Replica(Protocol):
    """One replica of the chart's Deployments: a pod of the image, or a process."""

    @property
    def identity(self) -> str: ...

    @property
    def log(self) -> Path: ...

    def metric(self, name: str, labels: str = "") -> float: ...

    def metrics_text(self) -> str: ...

    def alive(self) -> bool: ...

    def log_text(self) -> str: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


class Installation:
    """The chart's operator and relay replicas, running: what a test or the demo runs."""

    @property
    def operators(self) -> Sequence[Replica]:
        raise NotImplementedError

    @property
    def relays(self) -> Sequence[Replica]:
        raise NotImplementedError

    def leader_identity(self) -> str | None:
        return None

    @property
    def operator(self) -> Replica:
        """The leading operator replica (the first one while none leads)."""
        operators = list(self.operators)
        leader = self.leader_identity()
        return next((o for o in operators if o.identity == leader), operators[0])

    @property
    def log(self) -> Path:
        return self.operator.log

    def metric(self, name: str, labels: str = "") -> float:
        """Sum over every replica (the relay's counters are in the relay replicas)."""
        return sum(
            _metric(p.metrics_text(), name, labels)
            for p in [*self.operators, *self.relays]
            if p.alive()
        )

    def metrics_text(self) -> str:
        return self.operator.metrics_text()

    def alive(self) -> bool:
        return all(p.alive() for p in [*self.operators, *self.relays])

    def log_text(self) -> str:
        return self.operator.log_text()


@dataclass
class ProcessInstallation(Installation):
    """The chart's containers as processes with its ServiceAccounts' tokens (see below)."""

    operator_processes: list[ReleaseProcess]
    relay_processes: list[ReleaseProcess] = field(default_factory=list)

    @property
    def operators(self) -> Sequence[ReleaseProcess]:
        return self.operator_processes

    @property
    def relays(self) -> Sequence[ReleaseProcess]:
        return self.relay_processes

    @property
    def metrics_port(self) -> int:
        return self.operator_processes[0].metrics_port

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.operator_processes[0].process


def start_relays(cluster: LocalCluster, workdir: Path, count: int) -> list[ReleaseProcess]:
    relays = [
        start_relay(cluster, workdir / f"relay-{index}.log", RELAY_ADDRESSES[index])
        for index in range(count)
    ]
    try:
        for relay in relays:
            wait_for(f"relay {relay.address} ready", relay.ready, timeout=60)
    except BaseException:
        for relay in relays:
            relay.stop()
        raise
    publish_relay_endpoints(cluster, [relay.address for relay in relays])
    return relays


# ---- the pods ------------------------------------------------------------------------


def pod_values(
    pod_image: str,
    *,
    operators: int = 2,
    relays: int = 2,
    probe_seconds: float = 10,
    resync_seconds: float = 60,
) -> dict[str, Any]:
    """Values that run the chart's Deployments as pods of `pod_image` (a local image).

    The pod runner runs them from the image with runc, as kubelet with containerd
    would: in-cluster credentials from the projected token, the API server
    through the `kubernetes` Service, the relay behind its Service.
    """
    repository, _, tag = pod_image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "operator": {
            "replicas": operators,
            "probeSeconds": probe_seconds,
            "resyncSeconds": resync_seconds,
            "refusedPrimaryNetworks": [SERVICE_CIDR],
        },
        "relay": {"replicas": relays},
    }


@dataclass
class ReleasePod:
    """One replica of the chart's Deployments as the pod runner runs it."""

    cluster: LocalCluster
    name: str
    ip: str
    container: str
    namespace: str = NAMESPACE
    metrics_port: int = 8080
    uid: str = ""

    @property
    def identity(self) -> str:
        """Its name in the Lease (the chart passes the pod's name; a random suffix follows)."""
        return self.name

    @property
    def log(self) -> Path:
        return self.cluster.logs / "pods" / f"{self.namespace}_{self.name}_{self.container}.log"

    def metrics_text(self) -> str:
        netns.require_inside(self.cluster.netns)
        return _metrics_text(self.ip, self.metrics_port)

    def metric(self, name: str, labels: str = "") -> float:
        return _metric(self.metrics_text(), name, labels)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def pid(self) -> int | None:
        """The container's process as the pod runner records it (podstate.py), if it runs."""
        directory = podstate.pods_dir(self.cluster.state_dir) / self.uid
        for name, _, record in podstate.container_records(directory):
            if name == self.container and record.running():
                return record.pid
        return None

    def alive(self) -> bool:
        return self.pid() is not None

    def kill(self) -> None:
        """SIGKILL the container's process, as when its node dies: no clean-up, no Lease
        released. The pod runner then restarts the container (restartPolicy Always), as
        kubelet would on a node that comes back."""
        pid = self.pid()
        if pid is None:
            # Nothing killed would look like a takeover that never happens.
            raise RuntimeError(f"pod {self.name}: no running {self.container} container to kill")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(f"pod {self.name}'s process {pid} to die", lambda: not pid_alive(pid), timeout=10)

    def stop(self) -> None:
        """`kubectl delete pod`: SIGTERM, the grace period, and the Deployment's replacement."""
        self.cluster.kubectl("delete", "pod", self.name, "-n", self.namespace, "--wait=true")


def _pods(cluster: LocalCluster, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    """The release's Pods (`selector`: more labels, after a comma)."""
    listed = json.loads(
        cluster.kubectl(
            "get", "pods", "-n", namespace, "-o", "json",
            "-l", f"app.kubernetes.io/instance={RELEASE}{selector}",
        ).stdout
    )  # fmt: skip
    return list(listed["items"])


def release_pods(
    cluster: LocalCluster, component: str, namespace: str = NAMESPACE
) -> list[ReleasePod]:
    """The Running, Ready replicas of one component (operator, relay)."""
    found = []
    for pod in _pods(cluster, namespace, f",app.kubernetes.io/component={component}"):
        status = pod.get("status") or {}
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
        )
        if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            found.append(
                ReleasePod(
                    cluster,
                    pod["metadata"]["name"],
                    status["podIP"],
                    component,
                    namespace,
                    uid=pod["metadata"]["uid"],
                )
            )
    return found


def rolled_out(cluster: LocalCluster, name: str, namespace: str = NAMESPACE) -> bool:
    """`kubectl rollout status` as a predicate: every replica of the current template
    available (kubectl's own wait would outlive the wrapper's timeout on a busy machine)."""
    found = cluster.kubectl("get", "deployment", name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return False
    deployment = json.loads(found.stdout)
    status, wanted = deployment.get("status") or {}, deployment["spec"].get("replicas", 1)
    return bool(
        status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
        and status.get("replicas", 0) == wanted
    )


def wait_rolled_out(cluster: LocalCluster, namespace: str = NAMESPACE) -> None:
    for name in (OPERATOR, RELAY):

        def done(name: str = name) -> bool:
            return rolled_out(cluster, name, namespace)

        wait_for(f"{name} rolled out", done, timeout=300)


def leader_pod(cluster: LocalCluster, namespace: str = NAMESPACE) -> str | None:
    """The Ready operator pod holding the Lease (its identity is `<pod name>_<random>`).

    None while the Lease names no one, or a pod that is gone (a killed leader's
    name stays in it until a standby takes it over).
    """
    lease = cluster.kubectl("get", "lease", OPERATOR, "-n", namespace, "-o", "json", check=False)
    if lease.returncode != 0:
        return None
    holder = (json.loads(lease.stdout).get("spec") or {}).get("holderIdentity") or ""
    pod = holder.rpartition("_")[0]
    return pod if pod in {p.name for p in release_pods(cluster, "operator", namespace)} else None


def restart_counts(cluster: LocalCluster, namespace: str = NAMESPACE) -> dict[str, int]:
    """Container restarts of every pod of the release (pod -> restarts)."""
    return {
        pod["metadata"]["name"]: sum(
            c.get("restartCount", 0)
            for c in (pod.get("status") or {}).get("containerStatuses") or []
        )
        for pod in _pods(cluster, namespace)
        if not pod["metadata"].get("deletionTimestamp")
    }


@dataclass
class PodInstallation(Installation):
    """The chart's Deployments running as pods of the image: what users deploy."""

    cluster: LocalCluster
    operator_replicas: int
    relay_replicas: int
    namespace: str = NAMESPACE
    restarts: dict[str, int] = field(default_factory=dict)

    @property
    def operators(self) -> Sequence[ReleasePod]:
        return release_pods(self.cluster, "operator", self.namespace)

    @property
    def relays(self) -> Sequence[ReleasePod]:
        return release_pods(self.cluster, "relay", self.namespace)

    def leader_identity(self) -> str | None:
        return leader_pod(self.cluster, self.namespace)

    @property
    def operator(self) -> ReleasePod:
        """The leading operator pod (the first one while none leads)."""
        pods = self.operators
        leader = self.leader_identity()
        return next((p for p in pods if p.name == leader), pods[0])

    def alive(self) -> bool:
        """Every replica Ready, and none restarted since it started: no crash, no crash-loop."""
        restarts = restart_counts(self.cluster, self.namespace)
        return (
            len(self.operators) == self.operator_replicas
            and len(self.relays) == self.relay_replicas
            and all(count <= self.restarts.get(pod, 0) for pod, count in restarts.items())
        )

    def log_text(self) -> str:
        return "\n".join(pod.log_text() for pod in self.operators)


def gone(cluster: LocalCluster, namespace: str = NAMESPACE) -> None:
    """Until no pod of the release is left (the garbage collector removes those of an
    uninstalled release a moment after `helm uninstall` returns)."""
    cluster.kubectl(
        "wait", "--for=delete", "pods", "-n", namespace, "--timeout=120s",
        "-l", f"app.kubernetes.io/instance={RELEASE}", check=False,
    )  # fmt: skip


def uninstall(cluster: LocalCluster, namespace: str = NAMESPACE) -> None:
    helm(cluster, "uninstall", RELEASE, "-n", namespace, "--wait", check=False)
    gone(cluster, namespace)


def scale(cluster: LocalCluster, operators: int, relays: int, namespace: str = NAMESPACE) -> None:
    for name, replicas in ((OPERATOR, operators), (RELAY, relays)):
        cluster.kubectl("scale", "deployment", name, "-n", namespace, f"--replicas={replicas}")


@contextmanager
def running_pods(
    cluster: LocalCluster, values: Mapping[str, Any], namespace: str = NAMESPACE
) -> Iterator[PodInstallation]:
    """The chart installed with `values` (pod_values), its replicas Ready; scaled to 0 after.

    Scaled, not uninstalled: the next user with the same values finds the
    release as it is and only scales it up again (no helm run, no rollout).
    The relay Service's endpoints are the relay pods' (the EndpointSlice
    controller's); a slice left by the process mode is removed.
    """
    netns.require_inside(cluster.netns)
    operators, relays = values["operator"]["replicas"], values["relay"]["replicas"]
    install(cluster, values)
    cluster.kubectl(
        "delete", "endpointslice", f"{RELAY}-processes", "-n", namespace, "--ignore-not-found"
    )
    scale(cluster, operators, relays, namespace)
    try:
        wait_rolled_out(cluster, namespace)
        for component, count in (("operator", operators), ("relay", relays)):

            def all_ready(component: str = component, count: int = count) -> bool:
                return len(release_pods(cluster, component, namespace)) == count

            wait_for(f"{count} {component} pods Ready", all_ready, timeout=240)
        wait_for("an operator pod holding the Lease", lambda: leader_pod(cluster, namespace))
        yield PodInstallation(
            cluster, operators, relays, namespace, restart_counts(cluster, namespace)
        )
    finally:
        scale(cluster, 0, 0, namespace)
        gone(cluster, namespace)
