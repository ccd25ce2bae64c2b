"""Fuzz the NOTIFY relay on loopback with a bounded random mix of datagrams.

    PYTHONPATH=operator python3 bench/fuzz_relay.py [--count 1000000] [--seconds 900]

The relay runs as the operator runs it, in its `RelayThread`, in a child process
of its own whose main thread runs another event loop (standing for kopf's,
which reconciles) that measures how late its timers fire. This process sends
from two kinds of source address on 127.0.0.0/8:

- strangers (127.0.0.99, 127.0.0.98, 127.0.0.97): random bytes, mutated valid
  NOTIFYs (unsigned, or signed with a key the relay does not know), valid
  NOTIFYs (unsigned), oversized messages (a NOTIFY header and up to 60 KB);
- the zone's primary (127.0.0.11): valid NOTIFYs (each fanned out to one
  replica, a responder in the child) and mutated ones.

A stranger must get no answer at all. Sending is paced to what the relay has
taken (shared counter), so the kernel drops little and datagrams/s is the
relay's own rate. Prints: no crash, answers per source class, RSS before and
after, datagrams/s, and the lag of the other event loop (p50, p99, max).
tests/unit/test_relay_fuzz.py runs a short version (20 000 datagrams).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import multiprocessing
import multiprocessing.connection
import os
import random
import secrets
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.tsig

ZONE = dns.name.from_text("example.com.")
RELAY_HOST = "127.0.0.1"
PRIMARY = "127.0.0.11"
STRANGERS = ("127.0.0.99", "127.0.0.98", "127.0.0.97")
# Datagrams sent but not yet taken by the relay, at most (the socket buffer holds more).
WINDOW = 256
LAG_TICK = 0.005


@dataclass
class FuzzReport:
    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # by source class
    received: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    relayed: int = 0
    alive_after: bool = False
    crashed: str | None = None
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    seconds: float = 0.0
    lag_ms: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def lines(self) -> list[str]:
        rate = self.received / self.seconds if self.seconds else 0.0
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.sent.items()))
        return [
            f"datagrams sent: {self.total} ({kinds})",
            f"taken by the relay: {self.received} in {self.seconds:.1f}s = {rate:,.0f} datagrams/s "
            f"(dropped by the kernel, its receive buffer full: {self.total - self.received})",
            f"accepted: {self.accepted}, fanned out and acknowledged: {self.relayed}; rejected: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())),
            f"answers: to strangers {self.answers['stranger']}, to the primary "
            f"{self.answers['primary']}",
            f"crash: {self.crashed or 'none'}; answers a valid NOTIFY afterwards: "
            f"{'yes' if self.alive_after else 'NO'}",
            f"relay process RSS: {self.rss_before_kib / 1024:.1f} MiB before, "
            f"{self.rss_after_kib / 1024:.1f} MiB after",
            "lag of another event loop in the relay's process (timer of "
            f"{LAG_TICK * 1000:.0f} ms): p50 {self.lag_ms.get('p50', 0):.2f} ms, "
            f"p99 {self.lag_ms.get('p99', 0):.2f} ms, max {self.lag_ms.get('max', 0):.2f} ms",
        ]


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _key(name: str, secret: bytes) -> Any:
    from secondary_dns.api import TsigKey

    return TsigKey(dns.name.from_text(name), dns.tsig.HMAC_SHA256, secret)


# ---------------------------------------------------------------- the relay's process


def _replica(sock: socket.socket, keyring: dict[dns.name.Name, dns.tsig.Key]) -> None:
    """A secondary's NOTIFY handling, enough for the fan-out: answer NOERROR, signed."""
    while True:
        try:
            data, peer = sock.recvfrom(65535)
        except OSError:
            return
        try:
            request = dns.message.from_wire(data, keyring=keyring)
            sock.sendto(dns.message.make_response(request).to_wire(), peer)
        except Exception:  # noqa: BLE001 - the relay only sends good ones; keep serving
            continue


def relay_process(
    primary_secret: bytes,
    conn: multiprocessing.connection.Connection,
    taken: Any,
    stop: Any,
) -> None:
    from secondary_dns.api import ObjectRef
    from secondary_dns.api.soa import ProbeTarget
    from secondary_dns.dns.relay import NotifyRelay, RelayRoute, RelayThread

    relay_key = _key("secondary-dns-relay.", secrets.token_bytes(32))
    replica = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    replica.bind((RELAY_HOST, 0))
    threading.Thread(
        target=_replica, args=(replica, {relay_key.name: relay_key.to_dnspython()}), daemon=True
    ).start()
    relay = NotifyRelay(fanout_timeout=1.0, fanout_attempts=1)
    runner = RelayThread(relay)
    runner.start(RELAY_HOST, 0)
    relay.set_routes(
        [
            RelayRoute(
                ref=ObjectRef("fuzz", "example-com"),
                zone=ZONE,
                allowed_sources=(ipaddress.ip_network(f"{PRIMARY}/32"),),
                allowed_keys=(_key("transfer-key.", primary_secret),),
                targets=((ProbeTarget(RELAY_HOST, replica.getsockname()[1]), relay_key),),
            )
        ]
    )
    rss_before = _rss_kib()

    def publish() -> None:
        while not stop.is_set():
            taken.value = relay.received
            time.sleep(0.002)

    threading.Thread(target=publish, daemon=True).start()
    conn.send(relay.bound_port)
    lags: list[float] = []

    async def reconciling_loop() -> None:
        # What kopf's loop would notice: how late a short timer fires.
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(LAG_TICK)
            lags.append(time.perf_counter() - started - LAG_TICK)

    asyncio.run(reconciling_loop())
    runner.call(relay.wait_idle())
    lags.sort()
    conn.send(
        {
            "received": relay.received,
            "accepted": relay.accepted,
            "rejected": dict(relay.rejected),
            "relayed": relay.relayed,
            "rss_before_kib": rss_before,
            "rss_after_kib": _rss_kib(),
            "lag_ms": {
                "p50": statistics.median(lags) * 1000 if lags else 0.0,
                "p99": lags[int(len(lags) * 0.99)] * 1000 if lags else 0.0,
                "max": lags[-1] * 1000 if lags else 0.0,
            },
        }
    )
    runner.stop()
    replica.close()


# ---------------------------------------------------------------- what is sent


class Generator:
    """The datagrams, from a fixed pool of valid NOTIFYs mutated at random."""

    def __init__(self, rng: random.Random, primary_secret: bytes) -> None:
        from secondary_dns.dns.notify import make_notify

        self.rng = rng
        good = _key("transfer-key.", primary_secret)
        unknown = _key("transfer-key.", secrets.token_bytes(32))
        self.unsigned = [make_notify(ZONE, soa_serial=n).to_wire() for n in range(64)]
        self.wrong_key = [make_notify(ZONE, key=unknown, soa_serial=n).to_wire() for n in range(64)]
        self.signed = [make_notify(ZONE, key=good, soa_serial=n).to_wire() for n in range(16)]

    def mutate(self, wire: bytes) -> bytes:
        data = bytearray(wire)
        for _ in range(self.rng.randint(1, 4)):
            choice = self.rng.random()
            position = self.rng.randrange(len(data) + 1)
            if choice < 0.5 and data:
                data[min(position, len(data) - 1)] = self.rng.randrange(256)
            elif choice < 0.7:
                data[position:position] = self.rng.randbytes(self.rng.randint(1, 16))
            elif choice < 0.9:
                del data[position : position + self.rng.randint(1, 16)]
            else:
                data = data[:position]
        return bytes(data)

    def next(self) -> tuple[str, str, bytes]:
        """(class, source class, datagram)."""
        roll = self.rng.random()
        if roll < 0.30:
            return "random", "stranger", self.rng.randbytes(self.rng.randint(0, 600))
        if roll < 0.60:
            base = self.rng.choice(self.unsigned + self.wrong_key)
            return "mutated", "stranger", self.mutate(base)
        if roll < 0.80:
            return "valid-from-stranger", "stranger", self.rng.choice(self.unsigned)
        if roll < 0.85:
            return "signed-with-unknown-key", "stranger", self.rng.choice(self.wrong_key)
        if roll < 0.90:
            size = self.rng.randint(4097, 60_000)
            base = self.rng.choice(self.unsigned)
            return "oversized", "stranger", base + b"\x00" * (size - len(base))
        if roll < 0.99:
            base = self.rng.choice(self.unsigned + self.signed)
            return "mutated-from-primary", "primary", self.mutate(base)
        return "valid-from-primary", "primary", self.rng.choice(self.unsigned)


def run_fuzz(count: int, seconds: float, seed: int | None = None) -> FuzzReport:
    """Send up to `count` datagrams within `seconds`; the child's and the sender's figures."""
    report = FuzzReport()
    seed = secrets.randbits(32) if seed is None else seed
    rng = random.Random(seed)
    primary_secret = secrets.token_bytes(32)
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    taken = context.Value("q", 0, lock=False)
    stop = context.Event()
    child = context.Process(
        target=relay_process, args=(primary_secret, child_end, taken, stop), daemon=True
    )
    child.start()
    sockets: dict[str, socket.socket] = {}
    try:
        if not parent_end.poll(60):
            raise RuntimeError("the relay process did not start")
        port = int(parent_end.recv())
        for address in (PRIMARY, *STRANGERS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((address, 0))
            sock.setblocking(False)
            sockets[address] = sock
        generator = Generator(rng, primary_secret)
        started = time.monotonic()
        deadline = started + seconds
        for index in range(count):
            while index - taken.value > WINDOW:
                if time.monotonic() > deadline or not child.is_alive():
                    break
                time.sleep(0.0005)
            if time.monotonic() > deadline or not child.is_alive():
                break
            kind, source_class, wire = generator.next()
            address = PRIMARY if source_class == "primary" else rng.choice(STRANGERS)
            try:
                sockets[address].sendto(wire, (RELAY_HOST, port))
            except BlockingIOError:
                continue
            report.sent[kind] += 1
            if index % 64 == 0:
                _drain(sockets, report)
        # Let the relay take what is queued (what the kernel dropped never comes).
        last, still = -1, time.monotonic()
        while taken.value < report.total and child.is_alive():
            if taken.value != last:
                last, still = taken.value, time.monotonic()
            elif time.monotonic() - still > 0.5:
                break
            time.sleep(0.005)
        report.seconds = (
            still - started if taken.value < report.total else time.monotonic() - started
        )
        time.sleep(0.2)
        _drain(sockets, report)
        report.alive_after = _still_answers(port, generator)
        stop.set()
        if parent_end.poll(60):
            figures = parent_end.recv()
            for name in ("received", "accepted", "rejected", "relayed"):
                setattr(report, name, figures[name])
            report.rss_before_kib = figures["rss_before_kib"]
            report.rss_after_kib = figures["rss_after_kib"]
            report.lag_ms = figures["lag_ms"]
        child.join(60)
        if child.exitcode not in (0, None):
            report.crashed = f"the relay process exited with {child.exitcode}"
    finally:
        stop.set()
        for sock in sockets.values():
            sock.close()
        if child.is_alive():
            child.kill()
            child.join(10)
    if report.crashed is None and not report.rejected and report.total:
        report.crashed = "the relay process reported nothing"
    return report


def _drain(sockets: dict[str, socket.socket], report: FuzzReport) -> None:
    for address, sock in sockets.items():
        while True:
            try:
                sock.recv(65535)
            except BlockingIOError:
                break
            report.answers["primary" if address == PRIMARY else "stranger"] += 1


def _still_answers(port: int, generator: Generator) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((PRIMARY, 0))
        sock.settimeout(2)
        sock.sendto(generator.unsigned[0], (RELAY_HOST, port))
        try:
            answer = dns.message.from_wire(sock.recv(65535))
        except (TimeoutError, dns.exception.DNSException):
            return False
        return bool(answer.rcode() == 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=900.0, help="stop sending after this")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    print(
        f"fuzzing the NOTIFY relay: up to {args.count} datagrams in {args.seconds:.0f}s "
        f"(pid {os.getpid()}, python {sys.version.split()[0]})"
    )
    seed = secrets.randbits(32) if args.seed is None else args.seed
    print(f"seed {seed} (--seed {seed} sends the same datagrams again)")
    report = run_fuzz(args.count, args.seconds, seed)
    for line in report.lines():
        print(line)
    ok = not report.crashed and report.answers["stranger"] == 0 and report.alive_after
    print("result:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
