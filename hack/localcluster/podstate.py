"""What the pod runner leaves on disk and in the kernel for each pod, and how it is removed.

State lives in `<cluster state>/pods/<pod uid>/`: `pod.json` (a PodRecord) and
`containers/<name>.json` (a ContainerRecord each). A restarted pod runner
adopts pods from it; `hack/local-cluster down` and `status` read it without a
pod runner (`remove_all_pods`, `describe_pods`).
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from localcluster import netns
from localcluster.processes import pid_alive, signal_all
from localcluster.waiting import poll

POD_FILE = "pod.json"
CONTAINERS_DIR = "containers"


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


@dataclass(frozen=True)
class ContainerRecord:
    """One container's process: what survives a restart of the pod runner."""

    pid: int | None = None
    started_at: str | None = None
    restarts: int = 0
    last_exit_code: int | None = None

    def save(self, path: Path) -> None:
        write_json(
            path,
            {
                "pid": self.pid,
                "startedAt": self.started_at,
                "restarts": self.restarts,
                "lastExitCode": self.last_exit_code,
            },
        )

    @classmethod
    def load(cls, path: Path) -> ContainerRecord:
        data = read_json(path) or {}
        pid, code = data.get("pid"), data.get("lastExitCode")
        started = data.get("startedAt")
        return cls(
            pid=pid if isinstance(pid, int) else None,
            started_at=started if isinstance(started, str) else None,
            restarts=int(data.get("restarts") or 0),
            last_exit_code=code if isinstance(code, int) else None,
        )

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


def teardown_pod_network(pod_ns: str) -> None:
    """Kill what is left in the pod's namespace, then delete it (its veth and route go too)."""
    signal_all(netns.pids(pod_ns), signal.SIGKILL)
    poll(lambda: not netns.pids(pod_ns), timeout=10, every=0.1)
    netns.delete(pod_ns)


def remove_all_pods(cluster: str, state_dir: Path) -> int:
    """Every pod namespace of `cluster`: processes killed, namespace deleted; returns how many.

    Found by name as well as by state, so a lost state directory leaks nothing.
    """
    prefix = pod_netns_prefix(cluster)
    names = {
        path.name
        for path in netns.NETNS_DIR.glob(prefix + "*")
        if len(path.name) == len(prefix) + 8
    }
    names |= {record.netns for _, record in pod_records(state_dir) if record.netns}
    # Waited for by pid, not by namespace: an exiting process leaves its
    # namespaces before it is gone (unmounting a pod's private mounts takes a
    # while), and `down` promises that nothing it started still runs.
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
    # Whatever ignored SIGTERM is killed: deleting a namespace's name does not
    # end the processes in it, it only makes them impossible to find.
    signal_every_pod(signal.SIGKILL)
    poll(all_gone, timeout=5, every=0.1)
    for name in sorted(names):
        teardown_pod_network(name)
    shutil.rmtree(pods_dir(state_dir), ignore_errors=True)
    return len(names)


def describe_pods(state_dir: Path) -> list[str]:
    """One line per pod the runner runs, for `hack/local-cluster status`."""
    lines = []
    for directory, record in pod_records(state_dir):
        containers = [
            f"{name}={'pid ' + str(state.pid) if state.running() else 'down'}"
            for name, _, state in container_records(directory)
        ]
        lines.append(
            f"{record.namespace}/{record.name} {record.ip} "
            f"netns {record.netns} node {record.node} [{', '.join(containers)}]"
        )
    return lines
