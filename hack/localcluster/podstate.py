"""What the pod runner leaves on disk and in the kernel for each pod, and how it is removed.

State lives in `<cluster state>/pods/<pod uid>/`: `pod.json` (a PodRecord),
`containers/<name>.json` (a ContainerRecord each), the runc bundles
(`containers/<name>/<attempt>/`), the pod's volumes, its /etc files and its
IPC and UTS namespaces (`ns/`). runc keeps its own state in
`<cluster state>/runc`; each container's root filesystem is a podman
container labelled with the cluster's name. A restarted pod runner adopts
pods from this; `hack/local-cluster down` and `status` read it without a pod
runner (`remove_all_pods`, `describe_pods`).
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from localcluster import netns
from localcluster.kubelet import images, volumes
from localcluster.kubelet.runc import Runc
from localcluster.processes import pid_alive, signal_all
from localcluster.waiting import poll

POD_FILE = "pod.json"
CONTAINERS_DIR = "containers"
CGROUP_ROOT = Path("/sys/fs/cgroup")


# ---- names of a pod's resources ---------------------------------------------------


def pod_netns_prefix(cluster: str) -> str:
    return f"{cluster}-pod-"


def pod_netns_name(cluster: str, uid: str) -> str:
    """Short, derived from the UID: a recreated pod (new UID) never meets its predecessor."""
    return pod_netns_prefix(cluster) + uid.replace("-", "")[:8]


def host_veth_name(uid: str) -> str:
    # Interface names are at most 15 characters (IFNAMSIZ - 1).
    return "sp" + uid.replace("-", "")[:8]


def pods_dir(state_dir: Path) -> Path:
    return state_dir / "pods"


def runc_root(state_dir: Path) -> Path:
    return state_dir / "runc"


def container_id(uid: str, name: str, attempt: int) -> str:
    """The runtime's ID of one run of a container: `<8 hex of the pod UID>-<name>-<attempt>`."""
    return f"{uid.replace('-', '')[:8]}-{name}-{attempt}"


def rootfs_name(cluster: str, container: str) -> str:
    """The podman container holding the root filesystem (one store for every checkout)."""
    return f"{cluster}-{container}"


# ---- records ----------------------------------------------------------------


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically: a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class PodRecord:
    """A pod the runner runs: which Pod, where, and the names of its network."""

    uid: str
    namespace: str
    name: str
    node: str
    ip: str
    netns: str
    veth: str

    def save(self, directory: Path) -> None:
        record = {f.name: getattr(self, f.name) for f in fields(PodRecord)}
        write_json(directory / POD_FILE, record)

    @classmethod
    def load(cls, directory: Path) -> PodRecord | None:
        data = read_json(directory / POD_FILE)
        if data is None:
            return None
        try:
            return cls(**{f.name: str(data[f.name]) for f in fields(PodRecord)})
        except KeyError:
            return None


@dataclass
class ContainerRecord:
    """One container of a pod: what survives a restart of the pod runner."""

    id: str | None = None  # the runc container of the current (or last) run
    pid: int | None = None
    started_at: str | None = None
    restarts: int = 0
    image: str | None = None
    image_id: str | None = None
    last_exit: dict[str, Any] | None = None
    exit_before: dict[str, Any] | None = None
    user: dict[str, Any] | None = None
    cgroups: list[str] = field(default_factory=list)  # its cgroup directories

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> ContainerRecord:
        data = read_json(path) or {}
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return cls()

    def running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)


def pod_records(state_dir: Path) -> Iterator[tuple[Path, PodRecord]]:
    """(pod directory, record) of every pod with a readable record, in a stable order."""
    for pod_file in sorted(pods_dir(state_dir).glob(f"*/{POD_FILE}")):
        record = PodRecord.load(pod_file.parent)
        if record is not None:
            yield pod_file.parent, record


def container_records(pod_directory: Path) -> Iterator[tuple[str, Path, ContainerRecord]]:
    """(container name, state file, record) of each container of one pod."""
    for path in sorted((pod_directory / CONTAINERS_DIR).glob("*.json")):
        yield path.stem, path, ContainerRecord.load(path)


# ---- removal ----------------------------------------------------------------


def remove_cgroups(directories: list[str], cluster: str, pod_only: bool = False) -> None:
    """Containers' cgroup directories, then their empty parents up to the cluster's own.

    Every container's cgroup is `<cluster>/kubepods/<qos>/pod<uid>/<id>` under
    the pod runner's own cgroup of each hierarchy; nothing above `<cluster>` is
    ever removed, and with `pod_only` nothing above the pod's (another pod may
    be starting under the same parents).
    """
    for directory in sorted(set(directories), key=len, reverse=True):
        path = Path(directory)
        if cluster not in path.parts:
            continue
        while CGROUP_ROOT in path.parents:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass  # runc removed it already
            except OSError:
                break  # not empty: another pod's, or the cluster's while pods remain
            if path.name == cluster or (pod_only and path.name.startswith("pod")):
                break
            path = path.parent


def teardown_pod_network(pod_ns: str) -> None:
    """Kill what is left in the pod's namespace, then delete it (its veth and route go too)."""
    signal_all(netns.pids(pod_ns), signal.SIGKILL)
    poll(lambda: not netns.pids(pod_ns), timeout=10, every=0.1)
    netns.delete(pod_ns)


def remove_pod_files(directory: Path) -> None:
    """Unmount what is mounted under a pod's directory (tmpfs, namespaces), then delete it."""
    volumes.unmount_all(directory)
    shutil.rmtree(directory, ignore_errors=True)


def _container_ids(state_dir: Path) -> set[str]:
    root = runc_root(state_dir)
    if not root.is_dir():
        return set()
    return {entry.name for entry in root.iterdir() if entry.is_dir()}


def remove_all_pods(cluster: str, state_dir: Path) -> int:
    """Every pod of `cluster`: containers killed and deleted, namespaces, mounts and root
    filesystems removed; returns how many pods there were.

    Found by name as well as by state, so a lost state directory leaks nothing.
    """
    prefix = pod_netns_prefix(cluster)
    names = {
        path.name
        for path in netns.NETNS_DIR.glob(prefix + "*")
        if len(path.name) == len(prefix) + 8
    }
    records = list(pod_records(state_dir))
    names |= {record.netns for _, record in records if record.netns}
    runc = Runc(runc_root(state_dir))
    cgroups: list[str] = []
    for directory, _ in records:
        for _, _, container in container_records(directory):
            cgroups += container.cgroups
    # The containers first: their processes, then runc's state of them.
    victims: set[int] = set()

    def signal_every_pod(signum: signal.Signals) -> None:
        for name in sorted(names):
            victims.update(netns.pids(name))
        signal_all([pid for pid in victims if pid_alive(pid)], signum)

    def all_gone() -> bool:
        return not any(pid_alive(pid) for pid in victims) and not any(
            netns.pids(name) for name in names
        )

    signal_every_pod(signal.SIGTERM)
    poll(all_gone, timeout=5, every=0.1)
    # Whatever ignored SIGTERM (a container's pid 1 without a handler) is killed:
    # deleting a namespace's name does not end the processes in it.
    signal_every_pod(signal.SIGKILL)
    poll(all_gone, timeout=5, every=0.1)
    for runc_id in _container_ids(state_dir):
        runc.delete(runc_id, force=True)
    images.remove_cluster_rootfs(cluster)
    for name in sorted(names):
        teardown_pod_network(name)
    remove_cgroups(cgroups, cluster)
    remove_pod_files(pods_dir(state_dir))
    shutil.rmtree(runc_root(state_dir), ignore_errors=True)
    return len(names)


def describe_pods(state_dir: Path) -> list[str]:
    """One line per pod the runner runs, for `hack/local-cluster status`."""
    lines = []
    for directory, record in pod_records(state_dir):
        containers = [
            f"{name}={f'{state.id} pid {state.pid}' if state.running() else 'down'}"
            for name, _, state in container_records(directory)
        ]
        lines.append(
            f"{record.namespace}/{record.name} {record.ip} "
            f"netns {record.netns} node {record.node} [{', '.join(containers)}]"
        )
    return lines
