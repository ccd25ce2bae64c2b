"""`secondary-dns engine`: wait for the agent's first checked configuration, then become named.

named runs in the foreground as this process (exec, same PID), so the
container lives exactly as long as named does and the kubelet restarts it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from secondary_dns.api.agent_contract import PodLayout

WAIT_LOG_EVERY_SECONDS = 10.0
POLL_SECONDS = 0.2


def named_argv(named: str, layout: PodLayout) -> list[str]:
    # -g: foreground, everything to stderr (the container log); no -u: the pod
    # already runs as a non-root user and named must not try to switch.
    return [named, "-g", "-c", str(layout.named_conf)]


def wait_for_config(layout: PodLayout, timeout: float | None, err: TextIO = sys.stderr) -> bool:
    """True once the marker and the named.conf it vouches for exist."""
    start = time.monotonic()
    last_log = start
    marker, named_conf = Path(layout.marker), Path(layout.named_conf)
    while not (marker.exists() and named_conf.exists()):
        now = time.monotonic()
        if timeout is not None and now - start > timeout:
            return False
        if now - last_log >= WAIT_LOG_EVERY_SECONDS:
            print(
                f"secondary-dns engine: waiting {now - start:.0f}s for the agent's first "
                f"configuration ({marker})",
                file=err,
                flush=True,
            )
            last_log = now
        time.sleep(POLL_SECONDS)
    return True


def run_engine(
    layout: PodLayout, named: str, timeout: float | None = None, err: TextIO = sys.stderr
) -> int:
    executable = shutil.which(named)
    if executable is None:
        print(f"secondary-dns engine: {named} not found on PATH", file=err)
        return 127
    if not wait_for_config(layout, timeout, err):
        print("secondary-dns engine: no configuration arrived in time", file=err)
        return 1
    argv = named_argv(executable, layout)
    print(f"secondary-dns engine: exec {' '.join(argv)}", file=err, flush=True)
    os.execv(executable, argv)
    return 0  # not reached: execv replaces this process
