"""What a stranger can cost the operator through the NOTIFY relay (issue 13, item 2).

    PYTHONPATH=operator python3 bench/relay_load.py [--mode own-thread|same-loop]

Prints three figures, on loopback:

1. the relay's time for one 60 KB NOTIFY from an address that may not notify
   (about 2 700 small records: what makes a parser slow), median of 50;
2. the lag of the event loop that reconciles (this process's main loop, a 5 ms
   timer) while such a stranger sends 300 of them, one after the other as fast
   as the relay takes them: the relay in that same loop (`same-loop`, as before
   issue 13) or in its RelayThread (`own-thread`, as the operator runs it now);
   then ten times as many of the dearest message a stranger can send now (as
   large as a NOTIFY may be, signed with the zone's key name and a wrong secret);
3. how long a primary's TCP NOTIFY waits while one address holds 64 idle TCP
   connections to the relay.

It only uses what the relay had before issue 13 too (NotifyRelay,
handle_message, routes.relay_routes), so running it with an older
tree on PYTHONPATH and `--mode same-loop` prints the figures from before.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
import statistics
import sys
import threading
import time
from typing import Any

import dns.asyncquery
import dns.edns
import dns.exception
import dns.name
import dns.rrset
import dns.tsig

from secondary_dns.api import ObjectRef, TsigKey
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.notify import make_notify
from secondary_dns.dns.relay import NotifyRelay
from secondary_dns.routes import MonitoredZone, relay_routes

ZONE = dns.name.from_text("example.com.")
HOST = "127.0.0.1"
PRIMARY = "127.0.0.11"
STRANGER = "127.0.0.99"
TICK = 0.005


def big_notify() -> bytes:
    """A NOTIFY of about 60 KB: the question, then thousands of A records."""
    message = make_notify(ZONE, soa_serial=1)
    for index in range(2700):
        name = dns.name.from_text(f"h{index}", ZONE)
        message.additional.append(
            dns.rrset.from_text(name, 0, "IN", "A", f"192.0.{index // 256 % 256}.{index % 256}")
        )
    return message.to_wire()


PRIMARY_KEY = TsigKey(dns.name.from_text("transfer-key."), dns.tsig.HMAC_SHA256, b"k" * 32)


def forged_notify() -> bytes:
    """The dearest message a stranger can send now: as large as a NOTIFY may be, signed
    with the zone's key name and a wrong secret (parsed twice, its MAC computed)."""
    message = make_notify(ZONE, soa_serial=1)
    message.use_edns(
        0, payload=4096, options=[dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\0" * 3850)]
    )
    message.use_tsig(dns.tsig.Key(PRIMARY_KEY.name, b"x" * 32, PRIMARY_KEY.algorithm))
    return message.to_wire(max_size=65535)


def routes() -> Any:
    zone = MonitoredZone(
        ref=ObjectRef("bench", "example-com"),
        name=ZONE,
        primaries=(ProbeTarget(PRIMARY),),
        primary_keys=(PRIMARY_KEY,),
        notify_sources=(ipaddress.ip_network(f"{PRIMARY}/32"),),
        replicas=(),
    )
    return relay_routes([zone])


def cost_of_one(wire: bytes, source: str = STRANGER) -> float:
    relay = NotifyRelay()
    relay.set_routes(routes())
    times = []
    for _ in range(50):
        started = time.perf_counter()
        relay.handle_message(wire, source, "udp")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def lag_under_flood(wire: bytes, mode: str, count: int) -> dict[str, float]:
    runner: Any = None
    if mode == "own-thread":
        from secondary_dns.dns.relay import RelayThread

        relay = NotifyRelay()
        runner = RelayThread(relay)
        await asyncio.to_thread(runner.start, HOST, 0)
    else:
        relay = NotifyRelay()
        await relay.start(HOST, 0)
    relay.set_routes(routes())
    port = relay.bound_port
    done = threading.Event()

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((STRANGER, 0))
            for index in range(count):
                sock.sendto(wire, (HOST, port))
                deadline = time.monotonic() + 2
                while relay.received <= index and time.monotonic() < deadline:
                    time.sleep(0.0002)
        done.set()

    lags: list[float] = []
    started = time.monotonic()
    sender = threading.Thread(target=flood)
    sender.start()
    while not done.is_set():
        tick = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - tick - TICK)
    elapsed = time.monotonic() - started
    sender.join()
    taken = relay.received
    if runner is not None:
        await asyncio.to_thread(runner.stop)
    else:
        await relay.stop()
    lags.sort()
    return {
        "taken": taken,
        "seconds": elapsed,
        "p50": statistics.median(lags) * 1000,
        "p99": lags[int(len(lags) * 0.99)] * 1000,
        "max": lags[-1] * 1000,
        "late": sum(lags) / elapsed * 100,
    }


async def tcp_behind_idle_connections(count: int) -> tuple[float, bool]:
    relay = NotifyRelay()
    await relay.start(HOST, 0)
    relay.set_routes(routes())

    def open_idle() -> list[socket.socket]:
        opened = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((STRANGER, 0))
            sock.connect((HOST, relay.bound_port))
            opened.append(sock)
        return opened

    idle = await asyncio.to_thread(open_idle)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    answered = False
    try:
        while time.monotonic() - started < 20:
            try:
                await dns.asyncquery.tcp(
                    make_notify(ZONE), HOST, port=relay.bound_port, source=PRIMARY, timeout=2
                )
                answered = True
                break
            except (EOFError, ConnectionError, dns.exception.Timeout, OSError):
                await asyncio.sleep(0.05)
    finally:
        waited = time.monotonic() - started
        for sock in idle:
            sock.close()
        await relay.stop()
    return waited, answered


async def main_async(mode: str, count: int) -> None:
    wire = big_notify()
    print(
        f"a {len(wire)}-octet NOTIFY from a stranger ({STRANGER}), python {sys.version.split()[0]}"
    )
    print(f"1. the relay's time for one: {cost_of_one(wire) * 1000:.3f} ms (median of 50)")
    forged = forged_notify()
    print(
        f"   a {len(forged)}-octet NOTIFY signed with the zone's key name and a wrong secret: "
        f"{cost_of_one(forged) * 1000:.3f} ms"
    )
    lag = await lag_under_flood(wire, mode, count)
    print(
        f"2. {count} of them, relay {mode}: the relay took {lag['taken']:.0f} in "
        f"{lag['seconds']:.2f}s; the reconciling loop's {TICK * 1000:.0f} ms timer was late "
        f"p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms, max {lag['max']:.1f} ms "
        f"(late {lag['late']:.0f}% of the time)"
    )
    lag = await lag_under_flood(forged, mode, count * 10)
    print(
        f"   {count * 10} of the signed ones: the relay took {lag['taken']:.0f} in "
        f"{lag['seconds']:.2f}s; the timer was late p50 {lag['p50']:.2f} ms, "
        f"p99 {lag['p99']:.2f} ms, max {lag['max']:.1f} ms (late {lag['late']:.0f}% of the time)"
    )
    waited, answered = await tcp_behind_idle_connections(64)
    print(
        f"3. a primary's TCP NOTIFY with 64 idle connections from one address: "
        f"{'answered' if answered else 'NOT answered'} after {waited:.2f}s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["own-thread", "same-loop"], default="own-thread")
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main_async(args.mode, args.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
