"""The OCI runtime spec of one container, built the way containerd's CRI plugin builds it.

containerd's defaults (oci.populateDefaultUnixSpec) with the CRI plugin's
changes (pkg/cri/.../container_create_linux.go `buildLinuxSpec` and
pkg/cri/opts): no /run tmpfs, no default rlimits or seccomp, a read-only
cgroup mount, the kubelet's mounts sorted by depth and bind-mounted `rbind`
plus `rprivate` plus `ro`/`rw`, the pod's network, IPC and UTS namespaces
joined and fresh PID and mount namespaces, capabilities from the default set
with the Pod's add and drop in the bounding, effective and permitted sets
(never ambient or inheritable), no_new_privs from allowPrivilegeEscalation,
kubelet's masked and read-only /proc paths, the cgroup limits kubelet computes.
Pure: everything it needs is passed in; runc runs the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from localcluster.kubelet.security import (
    MASKED_PATHS,
    READONLY_PATHS,
    ProcessUser,
    Resources,
    SecurityContext,
)

OCI_VERSION = "1.0.2-dev"

# oci.defaultMounts without /run (oci.WithoutRunMount), then the cgroup mount
# customopts.WithMounts adds.
DEFAULT_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
)  # fmt: skip


@dataclass(frozen=True)
class Mount:
    """A kubelet mount (CRI Mount): a host path bind-mounted into the container."""

    destination: str
    source: str
    read_only: bool = False


@dataclass(frozen=True)
class Namespaces:
    """The pod's namespaces a container joins (the sandbox's, in containerd)."""

    network: str
    ipc: str
    uts: str


def _depth(path: str) -> int:
    return str(PurePosixPath(path)).count("/")


def mounts(kubelet_mounts: Sequence[Mount]) -> list[dict[str, Any]]:
    """customopts.WithMounts: defaults not overridden, then the kubelet's, shallow ones first."""
    ordered = sorted(kubelet_mounts, key=lambda m: _depth(m.destination))
    destinations = {str(PurePosixPath(m.destination)) for m in ordered}
    result = []
    for default in DEFAULT_MOUNTS:
        destination = str(PurePosixPath(default["destination"]))
        if destination in destinations:
            continue
        if "/dev" in destinations and destination.startswith("/dev/"):
            continue
        result.append({**default, "options": list(default["options"])})
    for mount in ordered:
        result.append(
            {
                "destination": mount.destination,
                "type": "bind",
                "source": mount.source,
                "options": ["rbind", "rprivate", "ro" if mount.read_only else "rw"],
            }
        )
    return result


def _resources(resources: Resources, swap_accounting: bool) -> dict[str, Any]:
    section: dict[str, Any] = {
        "devices": [{"allow": False, "access": "rwm"}],
        "cpu": {"shares": resources.cpu_shares},
    }
    if resources.cpu_quota is not None:
        section["cpu"]["quota"] = resources.cpu_quota
        section["cpu"]["period"] = resources.cpu_period
    if resources.memory_limit is not None:
        memory: dict[str, Any] = {"limit": resources.memory_limit}
        # Memory and memory+swap equal: the container cannot swap (containerd).
        if swap_accounting:
            memory["swap"] = resources.memory_limit
        section["memory"] = memory
    return section


def build(
    *,
    args: Sequence[str],
    env: Sequence[str],
    cwd: str,
    user: ProcessUser,
    sc: SecurityContext,
    capabilities: Sequence[str],
    rootfs: str,
    kubelet_mounts: Sequence[Mount],
    namespaces: Namespaces,
    cgroups_path: str,
    resources: Resources,
    oom_score_adj: int,
    seccomp: Mapping[str, Any] | None,
    annotations: Mapping[str, str],
    swap_accounting: bool = True,
) -> dict[str, Any]:
    caps = list(capabilities)
    linux: dict[str, Any] = {
        "resources": _resources(resources, swap_accounting),
        "cgroupsPath": cgroups_path,
        "namespaces": [
            {"type": "pid"},
            {"type": "ipc", "path": namespaces.ipc},
            {"type": "uts", "path": namespaces.uts},
            {"type": "mount"},
            {"type": "network", "path": namespaces.network},
        ],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if seccomp is not None:
        linux["seccomp"] = dict(seccomp)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": list(user.additional_gids),
            },
            "args": list(args),
            "env": list(env),
            "cwd": cwd or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": sc.no_new_privileges,
            "oomScoreAdj": oom_score_adj,
        },
        "root": {"path": rootfs, "readonly": sc.read_only_root_filesystem},
        "mounts": mounts(kubelet_mounts),
        "annotations": dict(sorted(annotations.items())),
        "linux": linux,
    }
