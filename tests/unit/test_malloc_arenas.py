"""The operator caps glibc's malloc arenas before its threads start (handlers/run.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

OPERATOR = Path(__file__).resolve().parents[2] / "operator"

# Six threads, alive together, each allocate outside Python's small-object allocator
# (glibc malloc); then the process counts glibc's heaps (malloc_info(3)). `{limit}` runs first.
PROGRAM = """
import ctypes, os, tempfile, threading
from secondary_dns.handlers.run import limit_malloc_arenas
{limit}
def allocate():
    kept.append(bytearray(64 * 1024))
    together.wait()  # all alive at once: an exiting thread's arena would be reused
kept = []
together = threading.Barrier(6)
threads = [threading.Thread(target=allocate) for _ in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile() as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(open(out.name).read().count("<heap nr="))
"""


def heaps(limit: str) -> int:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environment["PYTHONPATH"] = str(OPERATOR)
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(limit=limit)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's arenas")
def test_threads_share_two_malloc_arenas_once_limited() -> None:
    assert heaps("pass") > 2  # glibc's own default: an arena per thread, up to 8 per core
    assert heaps("assert limit_malloc_arenas()") <= 2
