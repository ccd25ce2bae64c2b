"""An HTTP client of the agents: each replica's own zone timers, from GET /zones.

An SOA probe shows what a replica serves, not whether it can still refresh:
a replica cut off from the primary keeps answering the right serial while the
zone does not change, until SOA expire. named knows better: it moves a zone's
expire time forward at every successful refresh. The agent publishes those
times (docs/agent.md, `api.agent_contract.ZonesDocument`) and the serial
monitor reads them here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aiohttp

from secondary_dns.api.agent_contract import (
    AGENT_PORT,
    ZONES_MAX_AGE_PARAMETER,
    ZONES_PATH,
    ZonesDocument,
)

DEFAULT_TIMEOUT = 2.0


async def fetch_zones(
    addresses: Iterable[str],
    port: int = AGENT_PORT,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    concurrency: int = 16,
    max_age: float | None = None,
) -> dict[str, ZonesDocument]:
    """GET http://ADDRESS:PORT/zones of every agent; an address that fails is left out.

    `max_age`: the agent looks at its engine again when its last look is older.
    """
    query = "" if max_age is None else f"?{ZONES_MAX_AGE_PARAMETER}={max_age:g}"
    gate = asyncio.Semaphore(concurrency)
    found: dict[str, ZonesDocument] = {}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:

        async def one(address: str) -> None:
            host = f"[{address}]" if ":" in address else address
            async with gate:
                try:
                    async with session.get(f"http://{host}:{port}{ZONES_PATH}{query}") as response:
                        if response.status != 200:
                            return
                        data = await response.read()
                except (aiohttp.ClientError, TimeoutError, OSError):
                    return
            document = ZonesDocument.parse(data)
            if document is not None:
                found[address] = document

        await asyncio.gather(*(one(address) for address in sorted(set(addresses))))
    return found
