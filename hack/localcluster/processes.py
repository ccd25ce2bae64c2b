"""Processes the local cluster started: alive or not, and stopping them for good.

Processes are always addressed by PID (or by the process group a child
leads), never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

from localcluster.waiting import poll


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def signal_all(pids: Iterable[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def reap(pids: Iterable[int]) -> None:
    """Collect the exit status of those that are our own children, so none lingers as a zombie."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def terminate(pids: set[int], grace: float = 15) -> None:
    """SIGTERM, up to `grace` seconds to exit, then SIGKILL whatever is left."""

    def all_gone() -> bool:
        reap(pids)
        return not any(pid_alive(pid) for pid in pids)

    signal_all(pids, signal.SIGTERM)
    if not poll(all_gone, grace, every=0.2):
        signal_all([pid for pid in pids if pid_alive(pid)], signal.SIGKILL)
        poll(all_gone, 5, every=0.1)


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the process group a child leads, SIGKILL it after `grace` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
