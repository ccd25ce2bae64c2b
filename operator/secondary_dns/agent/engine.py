"""`secondary-dns engine`: wait for the agent's first checked configuration, then become the engine.

The engine (named or knotd) runs in the foreground as this process (exec, same
PID), so the container lives exactly as long as the engine does and the
kubelet restarts it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from secondary_dns.agent.knot import knotd_argv
from secondary_dns.agent.named import empty_new_zones_dir, named_argv
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout

WAIT_LOG_EVERY_SECONDS = 10.0
POLL_SECONDS = 0.2

# The engine's executable by default, and its command line for the pod's layout.
EXECUTABLES = {agent_contract.ENGINE_BIND9: "named", agent_contract.ENGINE_KNOT: "knotd"}
ARGV = {agent_contract.ENGINE_BIND9: named_argv, agent_contract.ENGINE_KNOT: knotd_argv}


def wait_for_config(
    layout: PodLayout, engine: str, timeout: float | None, err: TextIO = sys.stderr
) -> bool:
    """True once the marker and the main configuration file it vouches for exist."""
    start = time.monotonic()
    last_log = start
    marker, conf = Path(layout.marker), Path(layout.engine_conf(engine))
    while not (marker.exists() and conf.exists()):
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


def remove_stale_pid_file(layout: PodLayout, engine: str, err: TextIO) -> None:
    """Remove the pid file a killed engine left in the pod's run directory.

    The run directory outlives the container (an emptyDir), and every container
    has its own PID namespace where the engine is PID 1 again: knotd finds its
    old PID in the file, sees a live process with it (itself) and refuses to
    start ("server PID found, already running"), so a SIGKILLed knotd would
    crash-loop forever. The kubelet starts a container only after the previous
    one exited, and a pod has one engine container, so a pid file found here is
    always stale.
    """
    path = Path(layout.engine_pid_file(engine))
    try:
        path.unlink()
    except FileNotFoundError:
        return
    print(f"secondary-dns engine: removed the stale pid file {path}", file=err, flush=True)


def empty_new_zones(layout: PodLayout, engine: str, err: TextIO) -> None:
    """Empty named's database of zones added by `rndc addzone` before named starts.

    The agent adds a zone to the running named with `rndc addzone` after it
    wrote the zone into the configuration files too (docs/agent.md). named
    refuses to start when a zone is in both ("already exists"), and the files
    hold every zone, so the database only bridges the time until a reconfigure
    or a restart: here it has nothing left to give.
    """
    if engine != agent_contract.ENGINE_BIND9:
        return
    directory = layout.new_zones_dir
    try:
        removed = empty_new_zones_dir(layout)
    except OSError as error:
        # named says why it cannot start, if it cannot; nothing else is gained by stopping.
        print(f"secondary-dns engine: could not empty {directory}: {error}", file=err, flush=True)
        return
    if removed:
        print(
            f"secondary-dns engine: emptied {directory} (zones added without a reload; "
            "the configuration holds them)",
            file=err,
            flush=True,
        )


def run_engine(
    layout: PodLayout,
    engine: str,
    executable: str | None = None,
    timeout: float | None = None,
    err: TextIO = sys.stderr,
) -> int:
    program = executable or EXECUTABLES[engine]
    found = shutil.which(program)
    if found is None:
        print(f"secondary-dns engine: {program} not found on PATH", file=err)
        return 127
    if not wait_for_config(layout, engine, timeout, err):
        print("secondary-dns engine: no configuration arrived in time", file=err)
        return 1
    remove_stale_pid_file(layout, engine, err)
    empty_new_zones(layout, engine, err)
    argv = ARGV[engine](found, layout)
    print(f"secondary-dns engine: exec {' '.join(argv)}", file=err, flush=True)
    os.execv(found, argv)
    return 0  # not reached: execv replaces this process
