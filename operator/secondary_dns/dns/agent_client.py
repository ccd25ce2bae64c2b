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
import hashlib
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import dns.exception
import dns.name

from secondary_dns.api.agent_contract import (
    AGENT_PORT,
    ZONES_MAX_AGE_PARAMETER,
    ZONES_PATH,
    ZoneState,
    read_document,
    unix_time,
)

DEFAULT_TIMEOUT = 2.0


async def fetch_raw(
    addresses: Iterable[str],
    port: int = AGENT_PORT,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    concurrency: int = 16,
    max_age: float | None = None,
) -> dict[str, bytes]:
    """The body of every agent's GET /zones answered 200, by address; unparsed."""
    query = "" if max_age is None else f"?{ZONES_MAX_AGE_PARAMETER}={max_age:g}"
    gate = asyncio.Semaphore(concurrency)
    found: dict[str, bytes] = {}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:

        async def one(address: str) -> None:
            host = f"[{address}]" if ":" in address else address
            async with gate:
                try:
                    async with session.get(f"http://{host}:{port}{ZONES_PATH}{query}") as response:
                        if response.status != 200:
                            return
                        found[address] = await response.read()
                except (aiohttp.ClientError, TimeoutError, OSError):
                    return

        await asyncio.gather(*(one(address) for address in sorted(set(addresses))))
    return found


def zone_key(zone: dns.name.Name) -> str:
    """How `ZoneReports` names a zone: its text, lower case (names compare without case)."""
    return zone.to_text().lower()


class ZoneReports:
    """Each agent's last /zones, read incrementally: the zone states by `zone_key`.

    The serial monitor reads every replica's report every report round: N zone
    states each, mostly what they were the round before. A body identical to
    the last one is not parsed at all (told by digest: a body of 10,000 zones is
    1.1 MB, kept per replica only as its 16-byte BLAKE2b); otherwise a zone
    whose entry says what its kept state says keeps that same `ZoneState` object
    (the monitor then knows by identity that nothing about it changed), and only
    a zone seen for
    the first time has its name checked. Zones are keyed by text, not by
    `dns.name.Name`, whose hash is computed anew, byte by byte, at every lookup.
    Lenient as `ZonesDocument.parse`: a malformed entry is left out.
    """

    def __init__(self) -> None:
        self._digests: dict[str, bytes] = {}
        self._states: dict[str, dict[str, ZoneState]] = {}
        # address -> the zones whose state the last update read anew (not kept)
        self._changed: dict[str, set[str]] = {}

    def states(self, address: str) -> Mapping[str, ZoneState] | None:
        """The zone states of the agent at `address` from its last report; None: none read."""
        return self._states.get(address)

    def changed(self, address: str, key: str) -> bool:
        """Did the last update read this zone's state anew (new, or not what it was)?"""
        return key in self._changed.get(address, ())

    def update(self, reports: Mapping[str, bytes]) -> None:
        """This round's bodies by address: an agent absent (no answer) has no states now."""
        for address in set(self._states) - set(reports):
            self._forget(address)
        for address, body in reports.items():
            self._changed[address] = set()
            digest = hashlib.blake2b(body, digest_size=16).digest()
            if self._digests.get(address) == digest and address in self._states:
                continue
            states = self._read(body, self._states.get(address, {}), self._changed[address])
            if states is None:
                self._forget(address)
                continue
            self._states[address] = states
            self._digests[address] = digest

    def _forget(self, address: str) -> None:
        self._states.pop(address, None)
        self._digests.pop(address, None)
        self._changed.pop(address, None)

    @staticmethod
    def _read(
        body: bytes, known: Mapping[str, ZoneState], changed: set[str]
    ) -> dict[str, ZoneState] | None:
        read = read_document(body)
        if read is None:
            return None
        _, zones = read
        states: dict[str, ZoneState] = {}
        for text, entry in zones.items():
            if not isinstance(text, str) or not isinstance(entry, Mapping):
                continue
            # Interned: every replica's report names every zone, each decoded from
            # its own body; one string a zone, not one a replica and a round.
            key = sys.intern(text.lower())
            kept = known.get(key)
            if kept is not None and _says(entry, kept):
                states[key] = kept
                continue
            if kept is None:
                try:
                    key = sys.intern(zone_key(dns.name.from_text(text)))
                except dns.exception.DNSException:
                    continue
            states[key] = ZoneState.read(entry, unix_time)
            changed.add(key)
        return states


def _says(entry: Mapping[str, Any], state: ZoneState) -> bool:
    """Does the JSON entry read as `state`? (what `ZoneState.read` would make of it)"""
    serial = entry.get("serial")
    if not isinstance(serial, int) or isinstance(serial, bool):
        serial = None
    return (
        serial == state.serial
        and unix_time(entry.get("expires")) == state.expires
        and unix_time(entry.get("refresh")) == state.refresh
    )
