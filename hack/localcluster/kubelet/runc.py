"""runc, as containerd's runc shim drives it: run detached, signal, exec, delete.

The pod runner is the containers' subreaper (PR_SET_CHILD_SUBREAPER, as the
shim is): `runc run --detach` exits once the container's process runs, that
process becomes the runner's child, and its exit status is collected with
waitpid. A runner that restarts is no longer the parent of the containers it
adopts; their exit is seen by polling and their exit code is unknown (kubelet
reports such a container as `ContainerStatusUnknown`, exit code 137).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster.processes import pid_alive

_PR_SET_CHILD_SUBREAPER = 36
RUNC = "runc"


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


class RuncError(RuntimeError):
    """runc refused; the message is runc's own."""


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str
    timed_out: bool = False


def exit_code_of(status: int) -> tuple[int, int | None]:
    """(exit code as the runtime reports it, signal): 128 + signal for a killed process."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return 128 + number, number
    return os.WEXITSTATUS(status), None


class Runc:
    """runc with the cluster's own state directory (`--root`), so no one else's containers show."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _argv(self, *args: str, log: Path | None = None) -> list[str]:
        argv = [RUNC, "--root", str(self.root)]
        if log is not None:
            argv += ["--log", str(log), "--log-format", "json"]
        return [*argv, *args]

    def run(self, container_id: str, bundle: Path, log_file: Path) -> int:
        """Start the container detached; its stdout and stderr append to `log_file`; its pid."""
        pid_file = bundle / "pid"
        runc_log = bundle / "runc.log"
        pid_file.unlink(missing_ok=True)
        with open(log_file, "ab") as out:
            result = subprocess.run(
                self._argv(
                    "run",
                    "--detach",
                    "--bundle",
                    str(bundle),
                    "--pid-file",
                    str(pid_file),
                    container_id,
                    log=runc_log,
                ),  # fmt: skip
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=bundle,
            )
        if result.returncode != 0:
            self.delete(container_id, force=True)
            raise RuncError(_last_error(runc_log) or f"runc run exited {result.returncode}")
        return int(pid_file.read_text())

    def state(self, container_id: str) -> dict[str, Any] | None:
        result = subprocess.run(self._argv("state", container_id), capture_output=True, text=True)
        if result.returncode != 0:
            return None
        state: dict[str, Any] = json.loads(result.stdout)
        return state

    def containers(self) -> list[dict[str, Any]]:
        result = subprocess.run(
            self._argv("list", "--format", "json"), capture_output=True, text=True
        )
        if result.returncode != 0 or not result.stdout.strip():
            return []
        listed: list[dict[str, Any]] = json.loads(result.stdout) or []
        return listed

    def kill(self, container_id: str, signum: int, all_processes: bool = False) -> None:
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(signum)]
        subprocess.run(self._argv(*args), capture_output=True)

    def delete(self, container_id: str, force: bool = False) -> None:
        subprocess.run(
            self._argv("delete", *(["--force"] if force else []), container_id),
            capture_output=True,
        )

    def exec(self, container_id: str, argv: list[str], timeout: float) -> ExecResult:
        """Run `argv` in the container (its user, capabilities, environment), as ExecSync does."""
        pid_file = self.root / f"exec-{container_id}-{time.monotonic_ns()}.pid"
        process = subprocess.Popen(
            self._argv("exec", "--pid-file", str(pid_file), container_id, *argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            out, _ = process.communicate(timeout=timeout)
            return ExecResult(process.returncode, out.decode(errors="replace"))
        except subprocess.TimeoutExpired:
            # The process in the container, not only runc, must go.
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            process.kill()
            out, _ = process.communicate()
            return ExecResult(-1, out.decode(errors="replace"), timed_out=True)
        finally:
            pid_file.unlink(missing_ok=True)


def _last_error(runc_log: Path) -> str | None:
    try:
        lines = runc_log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg"))
    return None


def reap(pid: int) -> int | None:
    """The wait status of our child `pid` once it exited, else None; -1 when it is not our child."""
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None if pid_alive(pid) else -1
    return status if waited == pid else None
