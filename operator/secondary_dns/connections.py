"""Connection slots for the servers that face the network: the relay's TCP, the agent's HTTP.

Both accept connections from anyone who can reach them, and a connection that
sends nothing costs a slot (a task, or a thread) until it times out. Caps alone
let one client take every slot and lock out the primaries or the kubelet's
probes, so the slots are shared fairly:

- one source (an IPv4 address, or an IPv6 /64, which one host usually holds
  whole) holds at most `per_source` connections;
- when all `total` slots are taken, a newcomer takes the oldest connection of
  the sources that hold the most, as long as they hold at least as many as the
  newcomer's source will; the server closes that one.

So a client with many connections can only ever crowd out itself, and when
many sources hold one each, the connection open longest (the likeliest to be
idle) makes room for the newest (a probe, a NOTIFY: they finish at once). Pure
bookkeeping, no I/O; thread-safe, because the agent's server admits connections
in one thread and releases them in its handler threads.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

# A socket or a stream writer: hashable by identity.
Connection = TypeVar("Connection", bound=Hashable)

# The prefix one IPv6 host is commonly given (RFC 6177): per-address caps mean
# nothing to a client that can use 2^64 of them.
IPV6_SOURCE_PREFIX = 64


def source_key(source: str) -> str:
    """What one source is: the IPv4 address, or the IPv6 /64 of the address."""
    try:
        address = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False))
    return str(address)


@dataclass(frozen=True)
class Admission(Generic[Connection]):
    admitted: bool
    # A connection to close to make room for this one (the biggest holder's oldest).
    evict: Connection | None = None


class ConnectionSlots(Generic[Connection]):
    def __init__(self, total: int, per_source: int) -> None:
        if total < 1 or per_source < 1:
            raise ValueError("connection caps must be at least 1")
        self.total = total
        self.per_source = per_source
        self._guard = threading.Lock()
        # Every admitted connection, oldest first, with its source's key.
        self._order: OrderedDict[Connection, str] = OrderedDict()
        self._per_key: dict[str, int] = {}
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._order)

    def admit(self, source: str, connection: Connection) -> Admission[Connection]:
        key = source_key(source)
        with self._guard:
            held = self._per_key.get(key, 0)
            if held >= self.per_source:
                self.refused += 1
                return Admission(False)
            evict: Connection | None = None
            if len(self._order) >= self.total:
                most = max(self._per_key.values())
                if most < held + 1:
                    # This source would hold the most: it may only crowd out itself.
                    self.refused += 1
                    return Admission(False)
                evict = next(
                    held_by
                    for held_by, owner in self._order.items()
                    if owner != key and self._per_key[owner] == most
                )
                self._drop(self._order.pop(evict))
                self.evicted += 1
            self._order[connection] = key
            self._per_key[key] = held + 1
            return Admission(True, evict)

    def release(self, connection: Connection) -> None:
        """The connection ended; harmless for one that was evicted or never admitted."""
        with self._guard:
            owner = self._order.pop(connection, None)
            if owner is not None:
                self._drop(owner)

    def _drop(self, key: str) -> None:
        # Called with the lock held, after one connection of `key` went away.
        self._per_key[key] -= 1
        if not self._per_key[key]:
            del self._per_key[key]
