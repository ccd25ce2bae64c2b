"""Millisecond timing for bench/propagation.py: concurrent SOA polls and a Zone status watch.

- `poll_serials`: one coroutine per server (the primary and every replica), each
  asking the zone's SOA every `interval` seconds (5 ms by default) on its own
  fixed grid, until that server serves the serial. A server's time is when the
  answer with the new serial arrived; it is late by at most one interval plus
  that answer's round trip (both printed as the resolution).
- `StatusWatch`: `kubectl get zone -w -o json` in a thread, every version of the
  Zone with its arrival time; nothing polls the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.rdatatype

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
    port: int = 53,
) -> SeenAt:
    """Poll every server concurrently until each serves `serial` (or the deadline).

    Cheap per query, because the pollers share the 2 cores with what they
    measure: one connected UDP socket per server, one query built once (its id
    patched per send), the serial read from the answer's SOA without a full
    parse. A `probe_soa` per poll (a message built, a socket opened and an answer
    parsed by dnspython) cost 0.15-0.18 ms of CPU per query, 20 % of a core for
    7 servers every 5 ms (and at load ~18 it once managed only 786 of the 1,400
    queries a second); this costs 0.045-0.07 ms.
    """
    seen = SeenAt()
    query = bytearray(dns.message.make_query(origin, dns.rdatatype.SOA, use_edns=False).to_wire())
    loop = asyncio.get_running_loop()

    async def poll(name: str, address: str) -> None:
        answers = _Answers(len(query), serial)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: answers, remote_addr=(address, port)
        )
        try:
            tick = time.monotonic()
            while time.monotonic() < deadline:
                query_id = random.getrandbits(16)
                query[0:2] = query_id.to_bytes(2, "big")
                answers.sent(query_id, time.monotonic())
                transport.sendto(bytes(query))
                tick += interval
                # Woken early by the answer that shows the serial, whichever query
                # of this poller it answers (a slow answer counts when it arrives).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answers.found.wait(), max(0.0, tick - time.monotonic()))
                if answers.found.is_set():
                    seen.at[name] = answers.arrived
                    seen.max_rtt = max(seen.max_rtt, answers.rtt)
                    return
        finally:
            transport.close()

    await asyncio.gather(*(poll(name, address) for name, address in servers.items()))
    return seen


class _Answers(asyncio.DatagramProtocol):
    """One poller's answers: when the first one showing the serial arrived."""

    def __init__(self, question_end: int, serial: int) -> None:
        self.question_end = question_end
        self.serial = serial
        self.found = asyncio.Event()
        # Queries sent and not answered yet: id -> when (at most the last second's).
        self.outstanding: dict[int, float] = {}
        self.arrived = 0.0
        self.rtt = 0.0

    def sent(self, query_id: int, at: float) -> None:
        if len(self.outstanding) > 400:
            self.outstanding = {i: t for i, t in self.outstanding.items() if at - t < 1.0}
        self.outstanding[query_id] = at

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        arrived = time.monotonic()
        sent = self.outstanding.pop(int.from_bytes(data[:2], "big"), None)
        if sent is None or len(data) < 12 or self.found.is_set():
            return
        if soa_serial_of(data, self.question_end) == self.serial:
            self.arrived, self.rtt = arrived, arrived - sent
            self.found.set()

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors: nothing answers yet; the next tick asks again


def soa_serial_of(answer: bytes, question_end: int) -> int | None:
    """The serial of a one-record SOA answer to our query, read off the wire.

    The answer echoes the question, so its first record starts where the query
    ended; the serial is the first of the five 32-bit numbers that end an SOA's
    RDATA (RFC 1035 §3.3.13). Anything else (a referral, an error, several
    records) is parsed by dnspython.
    """
    answers = int.from_bytes(answer[6:8], "big")
    if answers == 1 and answer[3] & 0x0F == 0 and len(answer) > question_end + 2:
        offset = question_end
        # The owner: a compression pointer to the question's name, as servers send it.
        if answer[offset] & 0xC0 == 0xC0:
            offset += 2
            rdtype, _, _, length = struct.unpack_from("!HHIH", answer, offset)
            end = offset + 10 + length
            if rdtype == dns.rdatatype.SOA and length >= 22 and end <= len(answer):
                return int.from_bytes(answer[end - 20 : end - 16], "big")
    try:
        message = dns.message.from_wire(answer)
    except (dns.exception.DNSException, ValueError):
        return None
    for rrset in message.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(next(iter(rrset)).serial)
    return None


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
