"""Millisecond timing for bench/propagation.py: concurrent SOA polls and a Zone status watch.

- `SerialPoll`: one coroutine per server (the primary and every replica), each
  asking the zone's SOA every `interval` seconds (5 ms by default) on its own
  fixed grid, until that server serves the serial. A server's time is when the
  answer with the new serial arrived; it is late by at most one interval plus
  that answer's round trip (both printed as the resolution).
- `StatusWatch`: `kubectl get zone -w -o json` in a thread, every version of the
  Zone with its arrival time; nothing polls the API.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.name

from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.probe import probe_soa

POLL_INTERVAL = 0.005


@dataclass
class SeenAt:
    """When each server was first seen serving the serial (monotonic seconds)."""

    at: dict[str, float] = field(default_factory=dict)
    # The longest round trip of an answer that showed the serial (part of the resolution).
    max_rtt: float = 0.0


async def poll_serials(
    origin: dns.name.Name,
    servers: Mapping[str, str],
    serial: int,
    deadline: float,
    interval: float = POLL_INTERVAL,
) -> SeenAt:
    """Poll every server concurrently until each serves `serial` (or the deadline)."""
    seen = SeenAt()

    async def poll(name: str, address: str) -> None:
        tick = time.monotonic()
        while time.monotonic() < deadline:
            result = await probe_soa(origin, ProbeTarget(address), timeout=0.5, attempts=1)
            if result.serial == serial:
                seen.at[name] = time.monotonic()
                seen.max_rtt = max(seen.max_rtt, result.rtt_seconds)
                return
            tick += interval
            await asyncio.sleep(max(0.0, tick - time.monotonic()))

    await asyncio.gather(*(poll(name, address) for name, address in servers.items()))
    return seen


class StatusWatch:
    """Every version of one Zone as a watch delivers it: (arrival time, status)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self._argv = [*argv, "--watch", "-o", "json"]
        self._env = env
        self._events: list[tuple[float, dict[str, Any]]] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="zone-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # A watch that ends (kubectl failed, the server closed it) is started again:
        # its first answer is the object as it is, so nothing is missed for long.
        while not self._stopping.is_set():
            process = subprocess.Popen(
                self._argv,
                env=self._env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self._process = process
            self._read(process)
            _, stderr = process.communicate()
            if stderr.strip() and not self._stopping.is_set():
                self.errors.append(stderr.strip())
            self._stopping.wait(0.2)

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for line in process.stdout:
            buffer += line
            # kubectl prints one indented JSON object per version, back to back.
            while buffer.strip():
                try:
                    obj, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                arrived = time.monotonic()
                buffer = buffer.lstrip()[end:]
                with self._changed:
                    self._events.append((arrived, dict(obj.get("status") or {})))
                    self._changed.notify_all()

    def synced_at(self, serial: int, since: float, timeout: float) -> float | None:
        """Arrival of the first version since `since` with every replica at `serial`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for arrived, status in self._events:
                    if arrived >= since and _synced(status, serial):
                        return arrived
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def last(self) -> dict[str, Any]:
        """The newest status the watch delivered (for error messages)."""
        with self._changed:
            return self._events[-1][1] if self._events else {}

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
        self._thread.join(timeout=10)

    def __enter__(self) -> StatusWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _synced(status: Mapping[str, Any], serial: int) -> bool:
    return (
        status.get("primarySerial") == serial
        and status.get("servedSerial") == serial
        and status.get("replicasInSync") == status.get("replicasTotal")
    )
