"""A container's effective security context and who it runs as, as kubelet and containerd decide.

kubelet: the container's securityContext overrides the pod's for the user,
group, runAsNonRoot and seccomp (DetermineEffectiveSecurityContext);
`runAsNonRoot` is verified before the container is created
(verifyRunAsNonRoot, CreateContainerConfigError); `allowPrivilegeEscalation:
false` becomes no_new_privs; only safe sysctls are accepted. containerd: the
user string (`uid[:gid]`, else the image's USER) is resolved in the image's
/etc/passwd and /etc/group, the primary group is always among the
supplementary ones (CVE-2023-25173), then the pod's supplementalGroups and
fsGroup are added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster.kubelet import quantity
from localcluster.kubelet.envvars import ContainerConfigError, CreateContainerError

# kubelet's safe sysctls (pkg/kubelet/sysctl/safe_sysctls.go, 1.36): namespaced
# and unable to affect other pods; any other sysctl is refused unless the kubelet
# allows it (--allowed-unsafe-sysctls; this one allows none).
SAFE_SYSCTLS = (
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
)
# kubelet's DefaultProcMount masked and read-only paths (pkg/securitycontext).
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# containerd's default capabilities (oci.defaultUnixCaps): the bounding,
# effective and permitted sets before the Pod's add and drop.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


@dataclass(frozen=True)
class SecurityContext:
    """The effective settings for one container."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    read_only_root_filesystem: bool = False
    allow_privilege_escalation: bool | None = None
    privileged: bool = False
    capabilities_add: tuple[str, ...] = ()
    capabilities_drop: tuple[str, ...] = ()
    seccomp_type: str | None = None  # RuntimeDefault, Unconfined, Localhost
    seccomp_localhost: str | None = None
    supplemental_groups: tuple[int, ...] = ()
    fs_group: int | None = None

    @property
    def no_new_privileges(self) -> bool:
        return self.allow_privilege_escalation is False


def effective(pod: Mapping[str, Any], container: Mapping[str, Any]) -> SecurityContext:
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    sc = container.get("securityContext") or {}

    def pick(name: str) -> Any:
        return sc[name] if sc.get(name) is not None else pod_sc.get(name)

    seccomp = pick("seccompProfile") or {}
    capabilities = sc.get("capabilities") or {}
    return SecurityContext(
        run_as_user=pick("runAsUser"),
        run_as_group=pick("runAsGroup"),
        run_as_non_root=pick("runAsNonRoot"),
        read_only_root_filesystem=bool(sc.get("readOnlyRootFilesystem")),
        allow_privilege_escalation=sc.get("allowPrivilegeEscalation"),
        privileged=bool(sc.get("privileged")),
        capabilities_add=tuple(str(c) for c in capabilities.get("add") or []),
        capabilities_drop=tuple(str(c) for c in capabilities.get("drop") or []),
        seccomp_type=seccomp.get("type"),
        seccomp_localhost=seccomp.get("localhostProfile"),
        supplemental_groups=tuple(int(g) for g in pod_sc.get("supplementalGroups") or []),
        fs_group=pod_sc.get("fsGroup"),
    )


def format_pod(pod: Mapping[str, Any]) -> str:
    """kubelet's format.Pod: `name_namespace(uid)`."""
    metadata = pod["metadata"]
    return f"{metadata['name']}_{metadata['namespace']}({metadata['uid']})"


def verify_run_as_non_root(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    sc: SecurityContext,
    image_user: str,
) -> None:
    """kubelet's verifyRunAsNonRoot, with its messages: raise ContainerConfigError to refuse."""
    if not sc.run_as_non_root:
        return
    where = f'(pod: "{format_pod(pod)}", container: {container["name"]})'
    if sc.run_as_user is not None:
        if sc.run_as_user == 0:
            raise ContainerConfigError(f"container's runAsUser breaks non-root policy {where}")
        return
    user = image_user.split(":", 1)[0]
    if user == "" or user == "0":
        raise ContainerConfigError(f"container has runAsNonRoot and image will run as root {where}")
    if not user.isdigit():
        raise ContainerConfigError(
            f"container has runAsNonRoot and image has non-numeric user ({user}), "
            f"cannot verify user is non-root {where}"
        )


# ---- users and groups in the image ------------------------------------------------


@dataclass(frozen=True)
class Passwd:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Group:
    name: str
    gid: int
    members: tuple[str, ...]


def _lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def read_passwd(rootfs: Path) -> list[Passwd]:
    entries = []
    for parts in _lines(rootfs / "etc/passwd"):
        if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
            entries.append(Passwd(parts[0], int(parts[2]), int(parts[3])))
    return entries


def read_group(rootfs: Path) -> list[Group]:
    entries = []
    for parts in _lines(rootfs / "etc/group"):
        if len(parts) >= 3 and parts[2].isdigit():
            members = tuple(m for m in (parts[3] if len(parts) > 3 else "").split(",") if m)
            entries.append(Group(parts[0], int(parts[2]), members))
    return entries


@dataclass(frozen=True)
class ProcessUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = field(default_factory=tuple)


def user_string(sc: SecurityContext, image_user: str) -> str:
    """containerd's generateUserString, falling back to the image's USER."""
    if sc.run_as_user is None:
        if sc.run_as_group is not None:
            raise CreateContainerError(f'user group "{sc.run_as_group}" is specified without user')
        return image_user
    if sc.run_as_group is not None:
        return f"{sc.run_as_user}:{sc.run_as_group}"
    return str(sc.run_as_user)


def resolve_user(
    sc: SecurityContext,
    image_user: str,
    passwd: Sequence[Passwd],
    groups: Sequence[Group],
) -> ProcessUser:
    """uid, gid and supplementary groups of the container's process (oci.WithUser and friends)."""
    text = user_string(sc, image_user)
    user_part, _, group_part = text.partition(":")
    uid: int
    gid = 0
    name: str | None = None
    if user_part == "":
        uid = 0
    elif user_part.isdigit():
        uid = int(user_part)
        entry = next((p for p in passwd if p.uid == uid), None)
        if entry is not None:
            gid, name = entry.gid, entry.name
    else:
        entry = next((p for p in passwd if p.name == user_part), None)
        if entry is None:
            raise CreateContainerError(
                f"unable to find user {user_part}: no matching entries in passwd file"
            )
        uid, gid, name = entry.uid, entry.gid, entry.name
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            found = next((g for g in groups if g.name == group_part), None)
            if found is None:
                raise CreateContainerError(
                    f"unable to find group {group_part}: no matching entries in group file"
                )
            gid = found.gid
    # WithAdditionalGIDs: the groups of /etc/group that list the user by name,
    # and the primary group itself (CVE-2023-25173); then the pod's
    # supplementalGroups and fsGroup, merged and sorted as containerd does.
    extra = [g.gid for g in groups if name is not None and g.name != name and name in g.members]
    merged = sorted({gid, *extra, *sc.supplemental_groups, *_fs_group(sc)})
    return ProcessUser(uid, gid, tuple(merged))


def _fs_group(sc: SecurityContext) -> tuple[int, ...]:
    # kubelet passes fsGroup to the runtime as one more supplemental group.
    return (sc.fs_group,) if sc.fs_group is not None else ()


# ---- capabilities ---------------------------------------------------------------------


def _cap(name: str) -> str:
    return "CAP_" + name.upper().removeprefix("CAP_")


def capabilities(sc: SecurityContext, all_capabilities: Sequence[str]) -> list[str]:
    """The bounding (= effective = permitted) set: containerd's defaults, then add, then drop.

    containerd (pkg/cri/opts WithCapabilities): `add: [ALL]` starts from every
    capability, `drop: [ALL]` from none; named adds are added and named drops
    removed after that. Nothing goes to the ambient or inheritable sets, so for
    a non-root user the added capabilities are gone after execve
    (kubernetes/kubernetes#56374).
    """
    add = [c.upper() for c in sc.capabilities_add]
    drop = [c.upper() for c in sc.capabilities_drop]
    caps = list(DEFAULT_CAPABILITIES)
    if "ALL" in add:
        caps = list(all_capabilities)
    if "ALL" in drop:
        caps = []
    for name in add:
        if name != "ALL" and _cap(name) not in caps:
            caps.append(_cap(name))
    return [c for c in caps if c not in {_cap(d) for d in drop if d != "ALL"}]


def all_capabilities() -> list[str]:
    """Every capability this kernel knows (containerd's allCaps from cap.Current)."""
    names = [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
        "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
        "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
        "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
        "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
        "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
    ]  # fmt: skip
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = len(names) - 1
    return [f"CAP_{name}" for name in names[: last + 1]]


# ---- sysctls ----------------------------------------------------------------------------


def forbidden_sysctls(pod: Mapping[str, Any]) -> list[str]:
    """The pod's sysctls kubelet refuses (it admits only the safe ones here)."""
    sysctls = ((pod.get("spec") or {}).get("securityContext") or {}).get("sysctls") or []
    return [str(s["name"]) for s in sysctls if str(s["name"]).replace("/", ".") not in SAFE_SYSCTLS]


def pod_sysctls(pod: Mapping[str, Any]) -> dict[str, str]:
    sysctls = ((pod.get("spec") or {}).get("securityContext") or {}).get("sysctls") or []
    return {str(s["name"]).replace("/", "."): str(s["value"]) for s in sysctls}


# ---- resources ----------------------------------------------------------------------------


def qos_class(pod: Mapping[str, Any]) -> str:
    """The API server sets status.qosClass; computed here the same way when it is missing."""
    given = (pod.get("status") or {}).get("qosClass")
    if given:
        return str(given)
    containers = (pod.get("spec") or {}).get("containers") or []
    requests_any = limits_all = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for name in ("cpu", "memory"):
            if requests.get(name) or limits.get(name):
                requests_any = True
            request, limit = requests.get(name), limits.get(name)
            if not limit or (request and quantity.parse(request) != quantity.parse(limit)):
                guaranteed = False
        limits_all = limits_all or bool(limits)
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def oom_score_adj(qos: str, container: Mapping[str, Any], memory_capacity: int) -> int:
    """kubelet's GetContainerOOMScoreAdjust."""
    if qos == "Guaranteed":
        return -997
    if qos == "BestEffort":
        return 1000
    request = ((container.get("resources") or {}).get("requests") or {}).get("memory")
    memory = quantity.to_bytes(request) if request else 0
    score = 1000 - (1000 * memory) // memory_capacity
    if score < 2:
        return 2
    return min(score, 999)


@dataclass(frozen=True)
class Resources:
    """What containerd writes to the container's cgroup (kubelet computes the numbers)."""

    cpu_shares: int
    cpu_quota: int | None
    cpu_period: int
    memory_limit: int | None


def container_resources(container: Mapping[str, Any]) -> Resources:
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    cpu_request = requests.get("cpu") or limits.get("cpu")
    shares = 2
    if cpu_request:
        shares = max(2, quantity.to_millicores(cpu_request) * 1024 // 1000)
    quota = None
    period = 100_000
    if limits.get("cpu"):
        quota = max(1000, quantity.to_millicores(limits["cpu"]) * period // 1000)
    memory = quantity.to_bytes(limits["memory"]) if limits.get("memory") else None
    return Resources(shares, quota, period, memory)
