"""Network namespaces: the only place where pod and Service addresses exist.

The local cluster's namespace has a loopback interface and nothing else: no
veth, no route out. Whatever runs in it (the control plane, named processes on
pod IPs, the operator) can only reach addresses inside it.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import subprocess
from pathlib import Path

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


class NotInNamespaceError(RuntimeError):
    """Raised before anything that would send packets to a pod address from the host."""


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    if not exists(name):
        subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def delete(name: str) -> None:
    if exists(name):
        subprocess.run(["ip", "netns", "delete", name], check=True)


def pids(name: str) -> list[int]:
    if not exists(name):
        return []
    out = subprocess.run(
        ["ip", "netns", "pids", name], check=True, capture_output=True, text=True
    ).stdout
    # Run from inside the namespace, the `ip` that lists them is one of them.
    return [int(pid) for pid in out.split() if Path(f"/proc/{pid}").exists()]


def add_address(name: str, address: str) -> None:
    """Add a /32 (or /128) to the namespace's loopback; adding it twice is harmless."""
    ip = ipaddress.ip_address(address)
    prefix = 32 if ip.version == 4 else 128
    result = subprocess.run(
        ["ip", "-n", name, "addr", "add", f"{ip}/{prefix}", "dev", "lo"],
        capture_output=True,
        text=True,
    )
    # iproute2 says "File exists" or "Address already assigned", by version.
    already = ("File exists" in result.stderr) or ("already assigned" in result.stderr)
    if result.returncode != 0 and not already:
        raise RuntimeError(f"cannot add {ip} to namespace {name}: {result.stderr.strip()}")


def remove_address(name: str, address: str) -> None:
    ip = ipaddress.ip_address(address)
    prefix = 32 if ip.version == 4 else 128
    subprocess.run(
        ["ip", "-n", name, "addr", "del", f"{ip}/{prefix}", "dev", "lo"],
        capture_output=True,
    )


def _inode(path: str | Path) -> int:
    return os.stat(path).st_ino


def inside(name: str) -> bool:
    """True when the calling thread's network namespace is `name`."""
    return exists(name) and _inode("/proc/thread-self/ns/net") == _inode(NETNS_DIR / name)


def require_inside(name: str) -> None:
    if not inside(name):
        raise NotInNamespaceError(
            f"refusing to use pod addresses outside network namespace {name!r}: "
            f"run this through `hack/local-cluster exec` or the test fixtures"
        )


def enter(name: str) -> None:
    """Move the calling thread (and every thread and process it starts later) into `name`.

    Python 3.11 has no os.setns, so this calls libc. Threads started
    afterwards inherit the namespace, so call it before starting any.
    """
    if inside(name):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def holds(name: str, pid: int) -> bool:
    """True when process `pid` lives in network namespace `name`."""
    try:
        return _inode(f"/proc/{pid}/ns/net") == _inode(NETNS_DIR / name)
    except OSError:
        return False
