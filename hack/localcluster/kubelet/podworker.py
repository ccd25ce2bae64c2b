"""kubelet's pod worker for one pod: sandbox, volumes, containers, probes, status, termination.

One thread per pod (kubelet's pod workers), woken by changes of its Pod and by
its probes, and every second otherwise (kubelet's PLEG relists every second):

- admission: a pod asking for what cannot be run here (unsafe sysctls,
  hostNetwork, privileged, ...) fails with kubelet's reason and message;
- the sandbox (network.py, sandbox.py) and the volumes (volumes.py);
- containers, init containers first (kubelet's computePodActions and
  kuberuntime's startContainer/killContainer): the image (images.py), the
  runtime spec (ocispec.py, security.py, envvars.py, seccomp.py), runc
  (runc.py); exits, restarts with back-off (backoff.py), probes (probes.py),
  preStop and grace periods;
- the Pod's status (status.py) when it changed, and events (events.py);
- on deletion: every container stopped, the sandbox removed, the Pod deleted
  with grace period 0.

What it needs of the node (the API, the image store, runc, back-offs) comes
through `Node`, which podrunner.PodRunner implements.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import platform
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import kubernetes

from localcluster import netns
from localcluster.kubelet import (
    envvars,
    images,
    network,
    ocispec,
    sandbox,
    seccomp,
    security,
    volumes,
)
from localcluster.kubelet.backoff import Backoff, go_duration
from localcluster.kubelet.events import NORMAL, WARNING, EventRecorder
from localcluster.kubelet.lifecycle import (
    Handler,
    HandlerResult,
    http_get,
    resolve_port,
    tcp_connect,
)
from localcluster.kubelet.probes import LIVENESS, READINESS, STARTUP, ProbeSpec, ProbeWorker
from localcluster.kubelet.runc import Runc, RuncError, exit_code_of, reap
from localcluster.kubelet.status import (
    ContainerView,
    PodView,
    Terminated,
    pod_status,
    status_differs,
)
from localcluster.podstate import (
    CONTAINERS_DIR,
    ContainerRecord,
    PodRecord,
    container_id,
    container_records,
    host_veth_name,
    pod_netns_name,
    pods_dir,
    remove_cgroups,
    remove_pod_files,
    rootfs_name,
    teardown_pod_network,
)
from localcluster.processes import pid_alive

log = logging.getLogger("pod-runner")

# How often a pod worker looks at its containers without being woken (kubelet's
# PLEG relists every second).
SYNC_SECONDS = 1.0
# How often volumes are refreshed (configMap and secret contents, tokens): the
# kubelet's sync frequency.
VOLUME_RESYNC_SECONDS = 60.0
# kubelet's eviction manager looks at local storage every housekeeping interval.
EVICTION_CHECK_SECONDS = 10.0
# A pod whose sync failed (a Secret that is missing, a spec that cannot be made)
# is tried again after this long (kubelet's pod worker back-off).
RETRY_SECONDS = 10.0
# kubelet never gives a container less than this to stop (minimumGracePeriodInSeconds).
MINIMUM_GRACE_SECONDS = 2
DEFAULT_GRACE_SECONDS = 30
# The most of a termination message kubelet keeps (and of a log's tail).
TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
EXIT_UNKNOWN = 137  # kubelet's ContainerStatusUnknown


class Node(Protocol):
    """What a pod worker uses of the node it runs on (podrunner.PodRunner)."""

    cluster: str
    state_dir: Path
    core: Any
    stop: threading.Event
    events: EventRecorder
    images: images.ImageStore
    runc: Runc
    crash_backoff: Backoff
    image_backoff: Backoff
    all_capabilities: list[str]
    seccomp_default: dict[str, Any]
    swap_accounting: bool
    node_allocatable: dict[str, str]
    memory_capacity: int

    def pod_ip(self, pod: Mapping[str, Any], node: str) -> str: ...
    def host_ip(self, node: str) -> str | None: ...
    def object_bytes(self, kind: str, namespace: str, name: str) -> dict[str, bytes] | None: ...
    def object_strings(self, kind: str, namespace: str, name: str) -> dict[str, str] | None: ...
    def services(self, namespace: str, links: bool) -> list[dict[str, Any]]: ...
    def log_path(self, namespace: str, pod: str, container: str) -> Path: ...


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unsupported(pod: Mapping[str, Any]) -> str | None:
    """Why this pod cannot be run here, in the words a user would look for; None if it can."""
    spec = pod.get("spec") or {}
    for field_name in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field_name):
            return f"spec.{field_name} is not supported by the local cluster's pod runner"
    if spec.get("hostUsers") is False:
        return "user namespaces (spec.hostUsers: false) are not supported by the pod runner"
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            return f"container {container['name']}: privileged containers are not run here"
        if sc.get("appArmorProfile") or (spec.get("securityContext") or {}).get("appArmorProfile"):
            return "Cannot enforce AppArmor: AppArmor is not enabled on the host"
        if container.get("restartPolicy") == "Always":
            return f"init container {container['name']}: sidecar containers are not supported here"
    return None


# ---- one container ----------------------------------------------------------------


@dataclass
class Container:
    """One container of a pod across its runs (kubelet keys its back-off the same way)."""

    name: str
    spec: dict[str, Any]
    record_file: Path
    init: bool = False
    record: ContainerRecord = field(default_factory=ContainerRecord)
    child: bool = False  # this process is the parent of the current run (exit code known)
    started_monotonic: float = 0.0
    finished_monotonic: float = 0.0
    bundle: Path | None = None
    waiting: tuple[str, str | None] | None = None
    retry_at: float = 0.0  # no new start before this (monotonic) after a failed one
    probes: dict[str, ProbeWorker] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM

    @property
    def running(self) -> bool:
        return self.record.pid is not None

    @property
    def last_exit(self) -> Terminated | None:
        return Terminated.from_dict(self.record.last_exit) if self.record.last_exit else None

    @property
    def exit_before(self) -> Terminated | None:
        return Terminated.from_dict(self.record.exit_before) if self.record.exit_before else None

    def save(self) -> None:
        self.record.save(self.record_file)

    def probe_result(self, kind: str) -> bool | None:
        worker = self.probes.get(kind)
        return None if worker is None else worker.result

    @property
    def started(self) -> bool:
        if not self.running:
            return False
        return STARTUP not in self.probes or self.probe_result(STARTUP) is True

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        return READINESS not in self.probes or self.probe_result(READINESS) is True


# ---- one pod ----------------------------------------------------------------------


class PodWorker:
    """kubelet's pod worker for one pod: sandbox, volumes, containers, status, termination."""

    def __init__(self, runner: Node, uid: str, pod: dict[str, Any]) -> None:
        self.runner = runner
        self.uid = uid
        self.pod = pod
        self.directory = pods_dir(runner.state_dir) / uid
        self.record: PodRecord | None = None
        self.network_ready = False
        self.containers: dict[str, Container] = {}
        self.volumes = volumes.PodVolumes(
            self.directory,
            lambda kind, name: runner.object_bytes(kind, self.namespace, name),
            self._token,
            runner.node_allocatable,
            time.time,
        )
        self.volume_paths: dict[str, Path] | None = None
        self.volumes_synced = 0.0
        self.eviction_checked = 0.0
        self.etc_files: dict[str, Path] = {}
        self.failed: tuple[str, str] | None = None  # (reason, message): the pod failed for good
        self.extra_conditions: list[dict[str, str]] = []
        self.last_status: dict[str, Any] | None = None
        self.deleted = False
        self.wake = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"pod-{uid[:8]}", daemon=True)

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.wake.set()

    def forget(self) -> None:
        """The Pod object is gone from the API (deleted with no grace, or while we were down)."""
        self.deleted = True
        self.wake.set()

    def _event(self, type_: str, reason: str, message: str, container: str | None = None) -> None:
        self.runner.events.event(self.pod, type_, reason, message, container)

    # -- the loop

    def _loop(self) -> None:
        while not self.runner.stop.is_set():
            self.wake.wait(SYNC_SECONDS)
            self.wake.clear()
            if self.runner.stop.is_set():
                break  # the pods keep running: a restarted runner adopts them
            pod = self.pod
            try:
                if self.deleted:
                    self._kill_all(pod, MINIMUM_GRACE_SECONDS)
                    self._destroy()
                    break
                if pod["metadata"].get("deletionTimestamp"):
                    self._terminate(pod)
                    break
                self._sync(pod)
            except Exception:  # noqa: BLE001 - one bad pass must not stop the pod
                log.exception("pod %s/%s", self.namespace, self.name)
        self.done.set()

    # -- SyncPod

    def _sync(self, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return  # not scheduled yet
        if self.failed is None and self.record is None:
            reason = unsupported(pod)
            forbidden = security.forbidden_sysctls(pod)
            if forbidden:
                self.failed = (
                    "SysctlForbidden",
                    f'Pod was rejected: forbidden sysctl: "{forbidden[0]}" not allowlisted',
                )
            elif reason:
                self.failed = ("UnsupportedByPodRunner", reason)
            if self.failed:
                self._event(WARNING, self.failed[0], self.failed[1])
        if self.failed is not None:
            self._kill_all(pod, 0)
        else:
            self._ensure_sandbox(pod, str(node))
            if self._ensure_volumes(pod):
                if self._run_init_containers(pod):
                    for spec in pod["spec"]["containers"]:
                        self._step(pod, self._container(spec, init=False))
                self._check_eviction(pod)
        self._write_status(pod)

    def _container(self, spec: Mapping[str, Any], init: bool) -> Container:
        name = str(spec["name"])
        container = self.containers.get(name)
        if container is None:
            record_file = self.directory / CONTAINERS_DIR / f"{name}.json"
            container = Container(name, dict(spec), record_file, init=init)
            self.containers[name] = container
        container.spec = dict(spec)
        return container

    def _ensure_sandbox(self, pod: Mapping[str, Any], node: str) -> None:
        if self.record is None:
            ip = self.runner.pod_ip(pod, node)
            (self.directory / CONTAINERS_DIR).mkdir(parents=True, exist_ok=True)
            self.record = PodRecord(
                uid=self.uid,
                namespace=self.namespace,
                name=self.name,
                node=node,
                ip=ip,
                netns=pod_netns_name(self.runner.cluster, self.uid),
                veth=host_veth_name(self.uid),
            )
            self.record.save(self.directory)
            log.info("pod %s/%s on %s: address %s", self.namespace, self.name, node, ip)
        if not self.network_ready:
            network.setup_pod_network(
                self.runner.cluster, self.record.netns, self.record.veth, self.record.ip
            )
            _, uts = sandbox.create_namespaces(self.directory, sandbox.hostname(pod))
            ipc, _ = sandbox.namespace_files(self.directory)
            sandbox.apply_sysctls(self.record.netns, ipc, security.pod_sysctls(pod))
            self.network_ready = True
        self.etc_files = sandbox.etc_files(self.directory, pod, self.record.ip)

    def _ensure_volumes(self, pod: Mapping[str, Any]) -> bool:
        now = time.monotonic()
        if self.volume_paths is not None and now - self.volumes_synced < VOLUME_RESYNC_SECONDS:
            return True
        try:
            self.volume_paths = self.volumes.setup(pod)
        except (volumes.VolumeError, kubernetes.client.exceptions.ApiException) as error:
            message = str(error) if isinstance(error, volumes.VolumeError) else _api_error(error)
            if self.volume_paths is None:
                for spec in pod["spec"].get("containers") or []:
                    self._container(spec, init=False).waiting = ("ContainerCreating", None)
            self._event(WARNING, "FailedMount", message)
            log.warning("pod %s/%s: %s", self.namespace, self.name, message)
            self.volumes_synced = now - VOLUME_RESYNC_SECONDS + 5  # try again soon
            return self.volume_paths is not None
        self.volumes_synced = now
        return True

    def _run_init_containers(self, pod: Mapping[str, Any]) -> bool:
        """True once every init container has succeeded; they run one after the other."""
        for spec in pod["spec"].get("initContainers") or []:
            container = self._container(spec, init=True)
            last = container.last_exit
            if not container.running and last is not None and last.exit_code == 0:
                continue
            self._step(pod, container)
            return False
        return True

    def _check_eviction(self, pod: Mapping[str, Any]) -> None:
        now = time.monotonic()
        if now - self.eviction_checked < EVICTION_CHECK_SECONDS:
            return
        self.eviction_checked = now
        over = self.volumes.over_size_limit(pod)
        if over is None:
            return
        volume, limit = over
        message = f'Usage of EmptyDir volume "{volume}" exceeds the limit "{limit}". '
        log.warning("pod %s/%s evicted: %s", self.namespace, self.name, message)
        self._event(WARNING, "Evicted", message)
        self._kill_all(pod, 0)
        self.failed = ("Evicted", message)
        self.extra_conditions = [
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "TerminationByKubelet",
                "message": message,
            }
        ]

    # -- one container (kubelet's computePodActions for it)

    def _restart_policy(self, container: Container) -> str:
        policy = str((self.pod.get("spec") or {}).get("restartPolicy") or "Always")
        if container.init and policy == "Always":
            return "OnFailure"  # an init container that succeeded is never run again
        return policy

    def _step(self, pod: Mapping[str, Any], container: Container) -> None:
        if container.running:
            self._poll(container)
        if container.running:
            for kind in (LIVENESS, STARTUP):
                if container.probe_result(kind) is False:
                    worker = container.probes[kind]
                    self._event(
                        NORMAL,
                        "Killing",
                        f"Container {container.name} failed {kind} probe, will be restarted",
                        container.name,
                    )
                    grace = worker.spec.termination_grace
                    self._kill(pod, container, self._grace(pod) if grace is None else int(grace))
                    break
        if container.running:
            return
        last = container.last_exit
        if last is not None:
            policy = self._restart_policy(container)
            if policy == "Never" or (policy == "OnFailure" and last.exit_code == 0):
                container.waiting = None
                return
            key = f"{self.uid}/{container.name}"
            backoff = self.runner.crash_backoff
            if backoff.in_backoff_since(key, container.finished_monotonic):
                message = (
                    f"back-off {go_duration(backoff.get(key))} restarting failed "
                    f"container={container.name} pod={security.format_pod(pod)}"
                )
                if container.waiting is None or container.waiting[0] != "CrashLoopBackOff":
                    self._event(
                        WARNING,
                        "BackOff",
                        f"Back-off restarting failed container {container.name} in pod "
                        f"{security.format_pod(pod)}",
                        container.name,
                    )
                container.waiting = ("CrashLoopBackOff", message)
                return
            if time.monotonic() < container.retry_at:
                return
            backoff.next(key, container.finished_monotonic)
        elif time.monotonic() < container.retry_at:
            return
        self._start(pod, container)
        # Images have their own back-off; other failures wait for the pod's retry.
        pulling = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull")
        if container.waiting is not None and container.waiting[0] not in pulling:
            container.retry_at = time.monotonic() + RETRY_SECONDS

    def _poll(self, container: Container) -> None:
        pid = container.record.pid
        assert pid is not None
        if container.child:
            status = reap(pid)
            if status is None:
                return
            if status != -1:
                self._finish(container, *exit_code_of(status))
                return
        elif self.runner.runc.state(str(container.record.id)) is not None and pid_alive(pid):
            return
        # Not ours to wait for (adopted after a restart of the runner): gone, code unknown.
        self._finish(container, EXIT_UNKNOWN, None, unknown=True)

    # -- starting

    def _image(self, pod: Mapping[str, Any], container: Container) -> images.Image | None:
        """kubelet's EnsureImageExists in local storage; None (waiting reason set) if not there."""
        reference = str(container.spec.get("image") or "")
        policy = images.pull_policy(container.spec)
        store = self.runner.images
        found = store.inspect(reference)
        if policy == images.NEVER and found is None:
            message = images.never_pull_message(reference)
            container.waiting = ("ErrImageNeverPull", message)
            self._event(WARNING, "ErrImageNeverPull", message, container.name)
            return None
        if found is not None:
            if policy != images.ALWAYS:
                self._event(
                    NORMAL,
                    "Pulled",
                    f'Container image "{reference}" already present on machine',
                    container.name,
                )
            else:
                self._event(
                    NORMAL,
                    "Pulled",
                    f'Successfully pulled image "{reference}" (from local storage: no registry '
                    "here)",
                    container.name,
                )
            return found
        key = f"{self.uid}_{reference}"
        backoff = self.runner.image_backoff
        if backoff.in_backoff_since_update(key, time.monotonic()):
            message = images.backoff_message(reference)
            container.waiting = ("ImagePullBackOff", message)
            self._event(NORMAL, "BackOff", message, container.name)
            return None
        self._event(NORMAL, "Pulling", f'Pulling image "{reference}"', container.name)
        message = images.pull_failure_message(reference)
        backoff.next(key, time.monotonic())
        container.waiting = ("ErrImagePull", message)
        self._event(
            WARNING, "Failed", f'Failed to pull image "{reference}": {message}', container.name
        )
        self._event(WARNING, "Failed", "Error: ErrImagePull", container.name)
        return None

    def _start(self, pod: Mapping[str, Any], container: Container) -> None:
        image = self._image(pod, container)
        if image is None:
            return
        attempt = container.record.restarts + (1 if container.last_exit is not None else 0)
        cid = container_id(self.uid, container.name, attempt)
        rootfs = rootfs_name(self.runner.cluster, cid)
        bundle = self.directory / CONTAINERS_DIR / container.name / str(attempt)
        try:
            sc = security.effective(pod, container.spec)
            security.verify_run_as_non_root(pod, container.spec, sc, image.config.user)
            kubelet_env = self._kubelet_env(pod, container)
            argv = envvars.process_args(container.spec, image.config, kubelet_env)
            mounts = self._mounts(container, bundle)
        except envvars.ContainerConfigError as error:
            self._config_error(container, "CreateContainerConfigError", str(error))
            return
        except envvars.CreateContainerError as error:
            self._config_error(container, "CreateContainerError", str(error))
            return
        except kubernetes.client.exceptions.ApiException as error:
            self._config_error(container, "CreateContainerConfigError", _api_error(error))
            return
        try:
            root = self.runner.images.create_rootfs(image, rootfs, self.runner.cluster)
            spec = self._spec(pod, container, image, sc, kubelet_env, argv, mounts, root, cid)
        except envvars.CreateContainerError as error:
            self.runner.images.remove(rootfs)
            self._config_error(container, "CreateContainerError", str(error))
            return
        except Exception as error:  # noqa: BLE001 - podman's failure is the container's
            self.runner.images.remove(rootfs)
            self._config_error(container, "CreateContainerError", str(error))
            return
        bundle.mkdir(parents=True, exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(spec, indent=2))
        if container.last_exit is not None:
            container.record.restarts = attempt
        log_path = self.runner.log_path(self.namespace, self.name, container.name)
        with open(log_path, "ab") as out:
            out.write(f"---- {_now()} start {cid}: {' '.join(argv)}\n".encode())
        self._event(NORMAL, "Created", f"Created container: {container.name}", container.name)
        started_at = _now()
        try:
            pid = self.runner.runc.run(cid, bundle, log_path)
        except (RuncError, OSError, ValueError) as error:
            message = f"failed to create containerd task: OCI runtime create failed: {error}"
            self._event(WARNING, "Failed", f"Error: {message}", container.name)
            self.runner.images.remove(rootfs)
            container.record.exit_before = container.record.last_exit
            container.record.last_exit = Terminated(
                exit_code=128,
                reason="StartError",
                started_at="1970-01-01T00:00:00Z",
                finished_at=_now(),
                container_id=f"runc://{cid}",
                message=message,
            ).as_dict()
            container.record.id = None
            container.finished_monotonic = time.monotonic()
            container.waiting = ("RunContainerError", message)
            container.save()
            return
        user = spec["process"]["user"]
        container.record.id = cid
        container.record.pid = pid
        container.record.started_at = started_at
        container.record.image = str(container.spec.get("image") or "")
        container.record.image_id = image.image_id
        container.record.user = {
            "uid": user["uid"],
            "gid": user["gid"],
            "supplementalGroups": user["additionalGids"],
        }
        container.record.cgroups = _cgroup_dirs(pid)
        container.child = True
        container.bundle = bundle
        container.started_monotonic = time.monotonic()
        container.stop_signal = _signal_number(image.config.stop_signal)
        container.waiting = None
        container.save()
        self._event(NORMAL, "Started", f"Started container {container.name}", container.name)
        log.info(
            "pod %s/%s: started %s as %s (pid %d, uid %s)",
            self.namespace, self.name, container.name, cid, pid, user["uid"],
        )  # fmt: skip
        self._start_probes(pod, container)

    def _config_error(self, container: Container, reason: str, message: str) -> None:
        container.waiting = (reason, message)
        self._event(WARNING, "Failed", f"Error: {message}", container.name)
        log.warning("pod %s/%s: %s: %s", self.namespace, self.name, container.name, message)

    def _kubelet_env(self, pod: Mapping[str, Any], container: Container) -> dict[str, str]:
        spec = pod.get("spec") or {}
        links = spec.get("enableServiceLinks", True) is not False
        services = envvars.visible_services(
            self.runner.services(self.namespace, links), self.namespace, links
        )
        status = dict(pod.get("status") or {})
        assert self.record is not None
        status.update(
            podIP=self.record.ip,
            podIPs=[{"ip": self.record.ip}],
            hostIP=self.runner.host_ip(self.record.node),
            hostIPs=[{"ip": self.runner.host_ip(self.record.node)}],
        )
        return envvars.container_env(
            container.spec,
            {**pod, "status": status},
            envvars.service_env(services),
            lambda kind, name: self.runner.object_strings(kind, self.namespace, name),
            self.runner.node_allocatable,
        )

    def _mounts(self, container: Container, bundle: Path) -> list[ocispec.Mount]:
        assert self.volume_paths is not None
        volume_specs = {
            str(v["name"]): v for v in (self.pod.get("spec") or {}).get("volumes") or []
        }
        mounts = []
        for entry in container.spec.get("volumeMounts") or []:
            name = str(entry["name"])
            if name not in self.volume_paths:
                raise envvars.ContainerConfigError(
                    f'cannot find volume "{name}" to mount into container "{container.name}"'
                )
            source = self.volume_paths[name]
            if entry.get("subPath"):
                source = source / str(entry["subPath"])
                source.mkdir(parents=True, exist_ok=True)
            api_data = any(
                k in volume_specs[name] for k in ("configMap", "secret", "downwardAPI", "projected")
            )
            # configMap, secret, downwardAPI and projected volumes are always
            # mounted read-only (kubelet, since CVE-2017-1002102).
            read_only = bool(entry.get("readOnly")) or api_data
            mounts.append(ocispec.Mount(str(entry["mountPath"]), str(source), read_only))
        sc = security.effective(self.pod, container.spec)
        for target, path in self.etc_files.items():
            if any(m.destination == target for m in mounts):
                continue
            read_only = sc.read_only_root_filesystem and target != "/etc/hosts"
            mounts.append(ocispec.Mount(target, str(path), read_only))
        termination_path = str(
            container.spec.get("terminationMessagePath") or "/dev/termination-log"
        )
        bundle.mkdir(parents=True, exist_ok=True)
        message_file = bundle / "termination-log"
        message_file.touch()
        message_file.chmod(0o666)  # kubelet's: any user of the container may write it
        mounts.append(ocispec.Mount(termination_path, str(message_file), False))
        return mounts

    def _spec(
        self,
        pod: Mapping[str, Any],
        container: Container,
        image: images.Image,
        sc: security.SecurityContext,
        kubelet_env: Mapping[str, str],
        argv: Sequence[str],
        mounts: Sequence[ocispec.Mount],
        rootfs: str,
        cid: str,
    ) -> dict[str, Any]:
        assert self.record is not None
        root = Path(rootfs)
        user = security.resolve_user(
            sc, image.config.user, security.read_passwd(root), security.read_group(root)
        )
        caps = security.capabilities(sc, self.runner.all_capabilities)
        profile = None
        if sc.seccomp_type == "RuntimeDefault":
            profile = seccomp.oci_profile(
                self.runner.seccomp_default, seccomp.host_arch(), caps, platform.release()
            )
        elif sc.seccomp_type == "Localhost":
            path = self.runner.state_dir / "seccomp" / str(sc.seccomp_localhost)
            try:
                profile = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                raise envvars.CreateContainerError(
                    f"failed to load seccomp profile {path}: {error}"
                ) from None
        qos = security.qos_class(pod)
        qos_dir = {"Guaranteed": "", "Burstable": "burstable/", "BestEffort": "besteffort/"}[qos]
        ipc, uts = sandbox.namespace_files(self.directory)
        cwd = str(container.spec.get("workingDir") or image.config.working_dir or "/")
        return ocispec.build(
            args=argv,
            env=envvars.runtime_env(image.config, kubelet_env, sandbox.hostname(pod)),
            cwd=cwd,
            user=user,
            sc=sc,
            capabilities=caps,
            rootfs=rootfs,
            kubelet_mounts=mounts,
            namespaces=ocispec.Namespaces(
                str(netns.NETNS_DIR / self.record.netns), str(ipc), str(uts)
            ),
            # Relative: runc puts it under its own (the runner's) cgroup in each hierarchy.
            cgroups_path=f"{self.runner.cluster}/kubepods/{qos_dir}pod{self.uid}/{cid}",
            resources=security.container_resources(container.spec),
            oom_score_adj=security.oom_score_adj(qos, container.spec, self.runner.memory_capacity),
            seccomp=profile,
            annotations={
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": container.name,
                "io.kubernetes.cri.sandbox-name": self.name,
                "io.kubernetes.cri.sandbox-namespace": self.namespace,
                "io.kubernetes.cri.sandbox-uid": self.uid,
                "io.kubernetes.cri.image-name": image.reference,
            },
            swap_accounting=self.runner.swap_accounting,
        )

    # -- probes

    def _start_probes(self, pod: Mapping[str, Any], container: Container) -> None:
        for worker in container.probes.values():
            worker.stop()
        container.probes = {}
        for kind in (STARTUP, READINESS, LIVENESS):
            spec = ProbeSpec.parse(container.spec, kind)
            if spec is None or container.init:
                continue

            def may_run(kind: str = kind) -> bool:
                # Liveness and readiness wait for the startup probe to succeed.
                return (
                    kind == STARTUP
                    or STARTUP not in container.probes
                    or container.probe_result(STARTUP) is True
                )

            def run(handler: Handler, timeout: float) -> HandlerResult:
                return self._run_handler(container, handler, timeout)

            worker = ProbeWorker(
                spec,
                run,
                container.started_monotonic,
                may_run,
                self._probe_failed(container),
                lambda _worker: self.wake.set(),
            )
            container.probes[kind] = worker
        for worker in container.probes.values():
            worker.start()

    def _probe_failed(self, container: Container) -> Callable[[ProbeWorker, HandlerResult], None]:
        def report(worker: ProbeWorker, outcome: HandlerResult) -> None:
            kind = worker.spec.kind.capitalize()
            output = outcome.output.strip()[:1024]
            self._event(WARNING, "Unhealthy", f"{kind} probe failed: {output}", container.name)

        return report

    def _run_handler(self, container: Container, handler: Handler, timeout: float) -> HandlerResult:
        """A probe's or hook's handler against this pod (from the node, as kubelet runs them)."""
        assert self.record is not None
        try:
            if handler.kind == "exec":
                result = self.runner.runc.exec(
                    str(container.record.id), list(handler.command), timeout
                )
                if result.timed_out:
                    return HandlerResult(False, f"command timed out after {timeout:g}s")
                return HandlerResult(result.exit_code == 0, result.output)
            if handler.kind == "httpGet":
                port = resolve_port(handler.port, container.spec)
                return http_get(
                    handler.host or self.record.ip,
                    port,
                    handler.path,
                    handler.scheme,
                    dict(handler.headers),
                    timeout,
                )
            if handler.kind == "tcpSocket":
                port = resolve_port(handler.port, container.spec)
                return tcp_connect(handler.host or self.record.ip, port, timeout)
            if handler.kind == "sleep":
                self.runner.stop.wait(min(handler.seconds, timeout))
                return HandlerResult(True)
        except ValueError as error:
            return HandlerResult(False, str(error))
        return HandlerResult(False, f"{handler.kind} handlers are not supported by the pod runner")

    # -- stopping

    def _grace(self, pod: Mapping[str, Any]) -> int:
        spec = pod.get("spec") or {}
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds")
        return DEFAULT_GRACE_SECONDS if grace is None else int(grace)

    def _kill(self, pod: Mapping[str, Any], container: Container, grace: int) -> None:
        """kubelet's killContainer: preStop (if there is time), the stop signal, then SIGKILL."""
        started = time.monotonic()
        hook = ((container.spec.get("lifecycle") or {}).get("preStop")) or None
        if hook and grace > 0 and container.running:
            outcome = self._run_handler(container, Handler.parse(hook), float(grace))
            if not outcome.ok:
                self._event(
                    WARNING,
                    "FailedPreStopHook",
                    f"PreStopHook failed: {outcome.output.strip()[:512]}",
                    container.name,
                )
            grace = int(grace - (time.monotonic() - started))
        grace = max(grace, MINIMUM_GRACE_SECONDS)
        cid = str(container.record.id)
        self.runner.runc.kill(cid, container.stop_signal)
        deadline = time.monotonic() + grace
        while container.running and time.monotonic() < deadline:
            self._poll(container)
            if container.running:
                time.sleep(0.1)
        if container.running:
            self.runner.runc.kill(cid, signal.SIGKILL, all_processes=True)
            deadline = time.monotonic() + 10
            while container.running and time.monotonic() < deadline:
                self._poll(container)
                if container.running:
                    time.sleep(0.1)
        # Readiness is probed until the container is gone (below, _kill_all).
        for worker in container.probes.values():
            worker.stop()
        self.wake.set()

    def _finish(
        self, container: Container, exit_code: int, signum: int | None, unknown: bool = False
    ) -> None:
        """A run of the container ended: its termination recorded, its runtime state removed."""
        cid = str(container.record.id)
        oom = _oom_killed(container.record.cgroups)
        reason = "Completed" if exit_code == 0 else "Error"
        message: str | None = None
        if unknown:
            reason = "ContainerStatusUnknown"
            message = "The container could not be located when the pod was terminated"
        elif oom:
            reason = "OOMKilled"
        else:
            message = self._termination_message(container, exit_code)
        for worker in container.probes.values():
            worker.stop()
        container.probes = {}
        self.runner.runc.delete(cid, force=True)
        self.runner.images.remove(rootfs_name(self.runner.cluster, cid))
        remove_cgroups(container.record.cgroups, self.runner.cluster, pod_only=True)
        container.record.exit_before = container.record.last_exit
        container.record.last_exit = Terminated(
            exit_code=exit_code,
            reason=reason,
            started_at=container.record.started_at,
            finished_at=_now(),
            container_id=f"runc://{cid}",
            message=message,
            signal=signum,
        ).as_dict()
        container.record.pid = None
        container.record.cgroups = []
        container.child = False
        container.finished_monotonic = time.monotonic()
        container.save()
        log.info(
            "pod %s/%s: container %s exited %d (%s)",
            self.namespace, self.name, container.name, exit_code, reason,
        )  # fmt: skip
        self.wake.set()

    def _termination_message(self, container: Container, exit_code: int) -> str | None:
        text = ""
        if container.bundle is not None:
            with contextlib.suppress(OSError):
                text = (
                    (container.bundle / "termination-log")
                    .read_bytes()[:TERMINATION_MESSAGE_BYTES]
                    .decode(errors="replace")
                )
        policy = container.spec.get("terminationMessagePolicy") or "File"
        if not text and exit_code != 0 and policy == "FallbackToLogsOnError":
            path = self.runner.log_path(self.namespace, self.name, container.name)
            with contextlib.suppress(OSError):
                lines = path.read_text(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
                text = "\n".join(lines)[-TERMINATION_MESSAGE_BYTES:]
        return text or None

    def _kill_all(self, pod: Mapping[str, Any], grace: int) -> None:
        """Every running container at once (kubelet stops them in parallel).

        As kubelet's SyncTerminatingPod: liveness and startup probes stop first,
        readiness is probed on through the preStop hooks and the grace period,
        and the status follows it meanwhile. A terminating pod that turns
        unready is no longer a *serving* endpoint, which is what makes
        kube-proxy drop the UDP conntrack flows still pinned to it
        (docs/local-cluster.md, "A pod leaving a Service").
        """
        running = [c for c in self.containers.values() if c.running]
        for container in running:
            for kind in (LIVENESS, STARTUP):
                worker = container.probes.get(kind)
                if worker is not None:
                    worker.stop()
        threads = [
            threading.Thread(target=self._kill, args=(pod, c, grace), daemon=True) for c in running
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            self.wake.wait(0.5)
            self.wake.clear()
            if grace > 0:
                self._write_status(self.pod)
        for thread in threads:
            thread.join()

    def _terminate(self, pod: dict[str, Any]) -> None:
        """Graceful stop, then the Pod object goes (grace period 0): the kubelet's last word."""
        grace = self._grace(pod)
        log.info("pod %s/%s: terminating (grace %ds)", self.namespace, self.name, grace)
        for container in self.containers.values():
            if container.running:
                self._event(
                    NORMAL, "Killing", f"Stopping container {container.name}", container.name
                )
        self._kill_all(pod, grace)
        self._write_status(pod, final=True)
        self._destroy()
        metadata = pod["metadata"]
        try:
            self.runner.core.delete_namespaced_pod(
                metadata["name"],
                metadata["namespace"],
                grace_period_seconds=0,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": metadata["uid"]}},
            )
        except kubernetes.client.exceptions.ApiException as error:
            if error.status not in (404, 409):
                raise

    def _destroy(self) -> None:
        for container in self.containers.values():
            if container.running:
                self._kill(self.pod, container, 0)
        self.volumes.teardown()
        sandbox.remove_namespaces(self.directory)
        if self.record is not None:
            teardown_pod_network(self.record.netns)
            network.forget_pod_address(self.runner.cluster, self.record.ip)
        remove_pod_files(self.directory)
        self.runner.crash_backoff.forget(f"{self.uid}/")
        log.info("pod %s/%s: stopped and removed", self.namespace, self.name)

    # -- status

    def _view(self, container: Container) -> ContainerView:
        record = container.record
        image = str(container.spec.get("image") or "")
        common: dict[str, Any] = {
            "name": container.name,
            "image": image,
            "image_id": record.image_id or "",
            "restart_count": record.restarts,
            "user": record.user,
        }
        if container.running:
            return ContainerView(
                **common,
                container_id=f"runc://{record.id}",
                running_since=record.started_at,
                last_terminated=container.last_exit,
                ready=container.ready,
                started=container.started,
            )
        last = container.last_exit
        restarting = container.waiting is not None or last is None
        if last is not None and not restarting:
            return ContainerView(
                **common,
                container_id=last.container_id,
                terminated=last,
                last_terminated=container.exit_before,
            )
        reason, message = container.waiting or ("ContainerCreating", None)
        return ContainerView(
            **common,
            container_id=last.container_id if last else None,
            waiting_reason=reason,
            waiting_message=message,
            last_terminated=last,
        )

    def _view_of(self, entry: Mapping[str, Any], waiting: str | None) -> ContainerView:
        container = self.containers.get(str(entry["name"]))
        if container is not None:
            return self._view(container)
        image = str(entry.get("image") or "")
        return ContainerView(str(entry["name"]), image, waiting_reason=waiting)

    def _write_status(self, pod: Mapping[str, Any], final: bool = False) -> None:
        spec = pod.get("spec") or {}
        views = []
        init_views = []
        for entry in spec.get("initContainers") or []:
            init_views.append(self._view_of(entry, "PodInitializing"))
        for entry in spec.get("containers") or []:
            views.append(self._view_of(entry, "PodInitializing" if init_views else None))
        failed = self.failed
        view = PodView(
            pod_ip=self.record.ip if self.record else None,
            host_ip=self.runner.host_ip(self.record.node) if self.record else None,
            sandbox_ready=self.network_ready,
            containers=views,
            init_containers=init_views,
            restart_policy=str(spec.get("restartPolicy") or "Always"),
            failed_reason=failed[0] if failed else None,
            failed_message=failed[1] if failed else None,
            extra_conditions=self.extra_conditions,
            terminated=final,
        )
        desired = pod_status(pod, view, _now())
        current = pod.get("status") or {}
        if not status_differs(desired, current) or desired == self.last_status:
            return
        metadata = pod["metadata"]
        try:
            self.runner.core.patch_namespaced_pod_status(
                metadata["name"],
                metadata["namespace"],
                {"status": desired},
                _content_type="application/merge-patch+json",
            )
        except kubernetes.client.exceptions.ApiException as error:
            if error.status != 404:
                raise
        self.last_status = desired
        log.info(
            "pod %s/%s: %s, ready=%s",
            self.namespace, self.name, desired["phase"],
            all(v.ready for v in views) and bool(views),
        )  # fmt: skip

    # -- tokens

    def _token(self, account: str, audiences: list[str], seconds: int) -> tuple[str, float]:
        metadata = self.pod["metadata"]
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences,
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                },
            },
        }
        response = self.runner.core.create_namespaced_service_account_token(
            account, metadata["namespace"], request, _preload_content=False
        )
        document = json.loads(response.data)
        return str(document["status"]["token"]), volumes.token_expiration(document)

    # -- adoption

    def adopt(self, record: PodRecord) -> None:
        """Take over a pod a previous runner started: same network, same containers."""
        self.record = record
        self.network_ready = netns.exists(record.netns)
        for name, path, state in container_records(self.directory):
            spec = next(
                (
                    c
                    for c in [
                        *(self.pod["spec"].get("initContainers") or []),
                        *self.pod["spec"]["containers"],
                    ]
                    if c["name"] == name
                ),
                None,
            )
            if spec is None:
                continue
            init = any(c["name"] == name for c in self.pod["spec"].get("initContainers") or [])
            container = Container(name, dict(spec), path, init=init, record=state)
            if state.pid is not None:
                # Not our child any more: its end is seen by polling (_poll).
                container.started_monotonic = time.monotonic()
                if state.id:
                    container.bundle = (
                        self.directory / CONTAINERS_DIR / name / state.id.rsplit("-", 1)[-1]
                    )
            self.containers[name] = container
            if container.running:
                self._start_probes(self.pod, container)
        running = sum(1 for c in self.containers.values() if c.running)
        log.info(
            "adopted pod %s/%s (%s, %d running containers)",
            record.namespace, record.name, record.ip, running,
        )  # fmt: skip


def _api_error(error: kubernetes.client.exceptions.ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return f"{error.status} {error.reason}"


def _signal_number(name: str) -> int:
    if not name:
        return signal.SIGTERM
    if name.isdigit():
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        return signal.SIGTERM


def _cgroup_dirs(pid: int) -> list[str]:
    """The container's cgroup directory in every hierarchy (removed when it exits)."""
    directories = []
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            name = controller.removeprefix("name=") if controller else "unified"
            base = Path("/sys/fs/cgroup") / name
            if base.is_dir() and path != "/":
                directories.append(str(base / path.lstrip("/")))
    return sorted(set(directories))


def _oom_killed(cgroups: Sequence[str]) -> bool:
    for directory in cgroups:
        control = Path(directory) / "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in control.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
    return False
