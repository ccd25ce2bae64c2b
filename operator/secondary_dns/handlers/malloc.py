"""glibc malloc settings of the operator process (docs/operator.md, "Memory").

Python keeps objects of up to 512 bytes in arenas of its own; everything larger
(dict tables of big caches, response bodies, rendered configurations, C
libraries' buffers) comes from glibc's malloc, which keeps what is freed in its
heaps for the next allocation instead of handing it back.
"""

from __future__ import annotations

import ctypes
import os

# glibc's malloc gives every thread that allocates an arena of its own, up to 8 per
# core, and memory freed in one arena serves only that arena's threads. The operator
# has ~25 threads (workers, informers, status writers, the metrics server): at 3,000
# Zones the 15 arenas besides the main one held 22 MiB, 12 MiB of it free. Two keep the
# freed memory where the next allocation finds it (MALLOC_ARENA_MAX=2, the setting
# commonly given to multi-threaded Python services); the environment variable, when
# set, wins.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt(3)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before threads start; False where it does not apply."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the user's own setting, which glibc read at start
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False  # no mallopt (not glibc)
    return bool(mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Hand the free pages inside glibc's heaps back to the system (`malloc_trim(0)`);
    False where there is no malloc_trim (not glibc).

    glibc returns only the top of a heap by itself; what a peak freed below live
    blocks stays in the process's RSS until reused. At 10,000 Zones, once converged,
    its heaps held 21-25 MiB free and a trim handed 12 MiB back (bench/scale.py
    --allocators); one takes a few milliseconds (about 5 ms over a fragmented heap
    of 100 MiB), and pages used again are simply faulted back in.
    """
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True
