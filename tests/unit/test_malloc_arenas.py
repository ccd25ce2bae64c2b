"""The operator caps glibc's malloc arenas before its threads start (handlers/run.py), and
hands the free pages of its heaps back (handlers/malloc.py)."""

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
from secondary_dns.handlers.malloc import limit_malloc_arenas
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


def run_program(program: str) -> str:
    """What `program` prints, run by this interpreter with the operator's package, in
    an environment without MALLOC_ARENA_MAX."""
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environment["PYTHONPATH"] = str(OPERATOR)
    done = subprocess.run(
        [sys.executable, "-c", program], env=environment, capture_output=True, text=True, check=True
    )
    return done.stdout


def heaps(limit: str) -> int:
    return int(run_program(PROGRAM.format(limit=limit)).strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's arenas")
def test_threads_share_two_malloc_arenas_once_limited() -> None:
    assert heaps("pass") > 2  # glibc's own default: an arena per thread, up to 8 per core
    assert heaps("assert limit_malloc_arenas()") <= 2


# 80 MiB in blocks of 4 KiB (glibc's heap, below its mmap threshold), then all but one
# in 64 freed: the blocks kept pin the freed space inside the heap, where glibc does
# not hand it back by itself. VmRSS in KiB before and after `{release}`.
FRAGMENTED = """
from secondary_dns.handlers.malloc import release_free_memory
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
blocks = [bytearray(4096) for _ in range(20480)]
blocks = [block for index, block in enumerate(blocks) if index % 64 == 0]
before = rss()
{release}
print(before, rss())
"""


def rss_around(release: str) -> tuple[int, int]:
    before, after = run_program(FRAGMENTED.format(release=release)).split()
    return int(before), int(after)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_free_memory_inside_the_heap_is_handed_back() -> None:
    before, after = rss_around("pass")
    assert before - after < 8 * 1024  # glibc keeps it by itself
    before, after = rss_around("assert release_free_memory()")
    assert before - after > 40 * 1024  # of the ~79 MiB freed
