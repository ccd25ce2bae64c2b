"""Where a running Python process's RSS is, read from inside it (issue 16).

The process must start with `hook_environment(directory)` in its environment:
a `sitecustomize` that makes SIGUSR2 write, from inside the process (its main
thread, between two bytecodes), what its allocators hold; `read_allocators(pid,
directory)` asks for it and waits. What is read there:

- /proc/self/status: VmRSS, VmHWM, RssAnon, RssFile; /proc/self/smaps_rollup;
- `sys._debugmallocstats()`: Python's small-object allocator (pymalloc, objects
  of up to 512 bytes): its arenas of 1 MiB (mapped for it alone, not glibc's),
  the bytes in blocks in use, in free blocks, in unused pools, lost to headers,
  quantization and arena alignment;
- glibc's `mallinfo2(3)`: everything else malloc holds (larger objects, C
  libraries' buffers): in use, free inside its heaps, mapped for one large block;
  and `malloc_info(3)`, the same by heap (arena);
- with `trim` (a file `trim` in the directory): VmRSS again after `malloc_trim(0)`
  (what glibc would hand back);
- with `census` (after the rest): the objects by type, their number and bytes
  (`sys.getsizeof`), the collector's containers and what they hold directly.

(gdb cannot call into a process on this machine: "Couldn't write extended state
status".)
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SIGNAL = signal.SIGUSR2

# The target's sitecustomize: it imports nothing until asked but os and signal.
_SITECUSTOMIZE = r"""
import os
import signal


def _sdns_allocators(*_):
    import ctypes, json, sys

    directory = os.environ["SDNS_ALLOCATORS_DIR"]
    trim = os.path.exists(os.path.join(directory, "trim"))
    path = os.path.join(directory, "out.json")

    def status():
        found = {}
        with open("/proc/self/status") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    found[key] = int(value.split()[0]) * 1024
                elif key == "Threads":
                    found[key] = int(value)
        return found

    out = {"status": status()}
    with open("/proc/self/smaps_rollup") as rollup:
        out["smaps_rollup"] = rollup.read()
    fd = os.open(path + ".pymalloc", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    saved = os.dup(2)
    try:
        sys.stderr.flush()
        os.dup2(fd, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
            ).split()
        ]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    out["mallinfo2"] = {name: getattr(info, name) for name, _ in Mallinfo2._fields_}
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    stream = libc.fopen((path + ".malloc_info").encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    if trim:
        libc.malloc_trim(0)
        out["after_trim"] = status()
    if os.path.exists(os.path.join(directory, "census")):
        import gc

        # Objects by type: the containers the collector tracks, and the strings,
        # bytes and numbers they hold (each object once); sizes by sys.getsizeof.
        census = {}
        stack = gc.get_objects()
        seen = {id(obj) for obj in stack}
        seen.add(id(stack))
        for obj in stack:
            kind = type(obj)
            entry = census.setdefault(f"{kind.__module__}.{kind.__qualname__}", [0, 0])
            entry[0] += 1
            entry[1] += sys.getsizeof(obj, 0)
        while stack:
            for each in gc.get_referents(stack.pop()):
                if id(each) in seen:
                    continue
                seen.add(id(each))
                stack.append(each)
                kind = type(each)
                entry = census.setdefault(f"{kind.__module__}.{kind.__qualname__}", [0, 0])
                entry[0] += 1
                entry[1] += sys.getsizeof(each, 0)
        tracked = None
        del tracked, seen
        out["census"] = sorted(census.items(), key=lambda item: -item[1][1])[:40]
    with open(path + ".tmp", "w") as written:
        json.dump(out, written)
    os.rename(path + ".tmp", path)


if os.environ.get("SDNS_ALLOCATORS_DIR"):
    signal.signal(signal.SIGUSR2, _sdns_allocators)
"""


def hook_environment(directory: Path, environment: Mapping[str, str]) -> dict[str, str]:
    """What to add to a Python process's `environment` so that it answers SIGUSR2."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    path = [str(directory), *filter(None, [environment.get("PYTHONPATH")])]
    return {"SDNS_ALLOCATORS_DIR": str(directory), "PYTHONPATH": os.pathsep.join(path)}


def read_allocators(
    pid: int, directory: Path, trim: bool = False, census: bool = False, timeout: float = 120
) -> dict[str, Any]:
    """The allocators of process `pid` (started with `hook_environment(directory)`)."""
    out = directory / "out.json"
    out.unlink(missing_ok=True)
    for flag, wanted in (("trim", trim), ("census", census)):
        (directory / flag).unlink(missing_ok=True)
        if wanted:
            (directory / flag).touch()
    os.kill(pid, SIGNAL)
    deadline = time.monotonic() + timeout
    while not out.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} wrote no allocators in {timeout:.0f} s")
        time.sleep(0.05)
    read: dict[str, Any] = json.loads(out.read_text())
    read["pymalloc"] = Path(str(out) + ".pymalloc").read_text()
    read["malloc_info"] = Path(str(out) + ".malloc_info").read_text()
    return read


def _pymalloc(text: str) -> dict[str, int]:
    """The totals of `sys._debugmallocstats()`'s text, in bytes."""
    figures: dict[str, int] = {}
    patterns = {
        "arenas": r"# arenas allocated current\s*=\s*([\d,]+)",
        "in use": r"# bytes in allocated blocks\s*=\s*([\d,]+)",
        "free blocks": r"# bytes in available blocks\s*=\s*([\d,]+)",
        "unused pools": r"(\d+) unused pools \* \d+ bytes\s*=\s*([\d,]+)",
        "pool headers": r"# bytes lost to pool headers\s*=\s*([\d,]+)",
        "quantization": r"# bytes lost to quantization\s*=\s*([\d,]+)",
        "arena alignment": r"# bytes lost to arena alignment\s*=\s*([\d,]+)",
        "total": r"Total\s*=\s*([\d,]+)",
    }
    for name, pattern in patterns.items():
        match = re.search(pattern, text)
        if match:
            figures[name] = int(match.groups()[-1].replace(",", ""))
    return figures


def _heaps(xml: str) -> list[tuple[int, int]]:
    """(system bytes, free bytes) of each glibc heap in `malloc_info`'s XML."""
    heaps = []
    for heap in re.findall(r'<heap nr="\d+">(.*?)</heap>', xml, re.S):
        system = re.search(r'<system type="current" size="(\d+)"/>', heap)
        free = re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"/>', heap)
        heaps.append((int(system.group(1)) if system else 0, sum(int(f) for f in free)))
    return heaps


def describe(read: dict[str, Any]) -> list[str]:
    """Lines in MiB: the process's RSS and where it is."""
    mib = 2**20
    status = read["status"]
    rollup = {
        key: int(value) * 1024
        for key, value in re.findall(r"^(\w+):\s+(\d+) kB", read["smaps_rollup"], re.M)
    }
    py = _pymalloc(read["pymalloc"])
    glibc = read["mallinfo2"]
    heaps = _heaps(read["malloc_info"])
    lines = [
        f"VmRSS {status['VmRSS'] / mib:.1f} MiB (VmHWM {status['VmHWM'] / mib:.1f}): "
        f"anonymous {status['RssAnon'] / mib:.1f}, files {status['RssFile'] / mib:.1f}; "
        f"{status['Threads']} threads; swap {rollup.get('Swap', 0) / mib:.1f}",
    ]
    if py:
        lost = py.get("pool headers", 0) + py.get("quantization", 0) + py.get("arena alignment", 0)
        lines.append(
            f"pymalloc: {py.get('arenas', 0)} arenas of 1 MiB; blocks in use "
            f"{py.get('in use', 0) / mib:.1f}, free blocks {py.get('free blocks', 0) / mib:.1f}, "
            f"unused pools {py.get('unused pools', 0) / mib:.1f}, headers/quantization/alignment "
            f"{lost / mib:.1f}"
        )
    lines.append(
        f"glibc malloc: in use {glibc['uordblks'] / mib:.1f} (+ {glibc['hblkhd'] / mib:.1f} "
        f"in {glibc['hblks']} blocks mapped apart), free inside its heaps "
        f"{glibc['fordblks'] / mib:.1f} of {glibc['arena'] / mib:.1f}; heaps (system / free): "
        + ", ".join(f"{s / mib:.1f}/{f / mib:.1f}" for s, f in heaps)
    )
    for name, (count, size) in read.get("census", []):
        lines.append(f"census: {size / mib:7.2f} MiB {count:9d} {name}")
    if "after_trim" in read:
        after = read["after_trim"]
        lines.append(
            f"after malloc_trim(0): VmRSS {after['VmRSS'] / mib:.1f} MiB "
            f"({(status['VmRSS'] - after['VmRSS']) / mib:+.1f} handed back)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Start a command with the hook and print its allocators every `--every` seconds."""
    import argparse
    import subprocess
    import sys
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--trim", action="store_true", help="then malloc_trim(0), VmRSS again")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sdns-allocators-") as name:
        directory = Path(name)
        env = dict(os.environ)
        env.update(hook_environment(directory, env))
        process = subprocess.Popen(args.command, env=env)
        try:
            while process.poll() is None:
                time.sleep(args.every)
                if process.poll() is None:
                    for line in describe(read_allocators(process.pid, directory, args.trim)):
                        print(line, file=sys.stderr, flush=True)
        finally:
            process.terminate()
            process.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
