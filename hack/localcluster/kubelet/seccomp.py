"""The RuntimeDefault seccomp profile, in the OCI runtime spec's form.

containerd's RuntimeDefault is its built-in profile (contrib/seccomp), moby's
default with the same rules: syscalls allowed by default, a few only with a
capability, architecture-specific ones per architecture. Debian ships that
family's JSON form as containers-common's default profile (the one podman and
CRI-O use), which is a fair stand-in: this module turns it into the OCI form
for one architecture and one container's capabilities, the way containerd and
moby evaluate the `includes`/`excludes` conditions (against the bounding set).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PROFILE = Path("/usr/share/containers/seccomp.json")

# Go's GOARCH names (what the profile's `arches` use) and libseccomp's names.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}
_SCMP_ARCH = {
    "amd64": "SCMP_ARCH_X86_64",
    "arm64": "SCMP_ARCH_AARCH64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390x": "SCMP_ARCH_S390X",
}


def host_arch() -> str:
    machine = platform.machine()
    if machine not in _GOARCH:
        raise RuntimeError(f"no seccomp architecture for {machine}")
    return _GOARCH[machine]


def _applies(rule: Mapping[str, Any], arch: str, caps: set[str], kernel: tuple[int, ...]) -> bool:
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if includes.get("caps") and not set(includes["caps"]) <= caps:
        return False
    if includes.get("minKernel") and kernel < _version(includes["minKernel"]):
        return False
    if excludes.get("arches") and arch in excludes["arches"]:
        return False
    return not (excludes.get("caps") and set(excludes["caps"]) & caps)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("-", 1)[0].split("."):
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def oci_profile(
    profile: Mapping[str, Any], arch: str, capabilities: Iterable[str], kernel_release: str
) -> dict[str, Any]:
    """The OCI `linux.seccomp` section for one container.

    `capabilities` is the container's bounding set (what containerd and moby
    evaluate the rules against).
    """
    caps = set(capabilities)
    kernel = _version(kernel_release)
    main = _SCMP_ARCH[arch]
    architectures = [main]
    for arch_entry in profile.get("archMap") or []:
        if arch_entry.get("architecture") == main:
            architectures += list(arch_entry.get("subArchitectures") or [])
    syscalls = []
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, arch, caps, kernel):
            continue
        names = sorted(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        if not names:
            continue
        entry: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            entry["errnoRet"] = rule["errnoRet"]
        args = [
            {k: arg[k] for k in ("index", "value", "valueTwo", "op") if k in arg}
            for arg in rule.get("args") or []
        ]
        if args:
            entry["args"] = args
        syscalls.append(entry)
    result: dict[str, Any] = {
        "defaultAction": profile["defaultAction"],
        "architectures": architectures,
        "syscalls": syscalls,
    }
    if profile.get("defaultErrnoRet") is not None:
        result["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return result


def load_default_profile(path: Path = PROFILE) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the RuntimeDefault seccomp profile comes from Debian's "
            "golang-github-containers-common (installed with podman; make system-packages)"
        )
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
