"""Each replica's own expire timers, read from its agent's /zones endpoint.

An SOA probe shows what a replica serves, not whether it can still refresh:
a replica cut off from the primary keeps answering the right serial while the
zone does not change, until SOA expire. named knows better: it moves a zone's
expire time forward at every successful refresh. The agent publishes those
times (docs/agent.md, GET /zones) and the serial monitor reads them here.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable, Mapping

import aiohttp
import dns.exception
import dns.name

DEFAULT_TIMEOUT = 2.0

# zone -> Unix time at which the replica's copy expires
ZoneExpiry = dict[dns.name.Name, float]


def parse_zones_document(data: bytes) -> ZoneExpiry | None:
    """The expire time of each zone in an agent's /zones answer; None when it is not one."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    zones = document.get("zones") if isinstance(document, Mapping) else None
    if not isinstance(zones, Mapping):
        return None
    expiry: ZoneExpiry = {}
    for zone, state in zones.items():
        if not isinstance(zone, str) or not isinstance(state, Mapping):
            continue
        expires = state.get("expires")
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            continue
        if not math.isfinite(expires) or expires <= 0:
            continue
        try:
            expiry[dns.name.from_text(zone)] = float(expires)
        except dns.exception.DNSException:
            continue
    return expiry


async def fetch_expiry(
    addresses: Iterable[str],
    port: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    concurrency: int = 16,
) -> dict[str, ZoneExpiry]:
    """GET http://ADDRESS:PORT/zones of every agent; an address that fails is left out."""
    gate = asyncio.Semaphore(concurrency)
    found: dict[str, ZoneExpiry] = {}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:

        async def one(address: str) -> None:
            host = f"[{address}]" if ":" in address else address
            async with gate:
                try:
                    async with session.get(f"http://{host}:{port}/zones") as response:
                        if response.status != 200:
                            return
                        data = await response.read()
                except (aiohttp.ClientError, TimeoutError, OSError):
                    return
            expiry = parse_zones_document(data)
            if expiry is not None:
                found[address] = expiry

        await asyncio.gather(*(one(address) for address in sorted(set(addresses))))
    return found
