"""The leader's NOTIFY listener: the relay tells the serial monitor a zone has changed.

The relay runs in its own Deployment (docs/notify-relay.md), so the operator no
longer sees the primaries' NOTIFYs. Each relay replica forwards every NOTIFY it
accepts, signed with the relay key of a server that serves the zone, to the
address the leader publishes on its Lease; the leader then probes fast, and a
Zone's status follows a change within a second instead of a steady-state
interval. The message is checked as the relay checks one (`decide_notify`): a
zone the leader monitors, a valid signature with a relay key of one of its
servers; anything else is dropped unanswered. Nothing is fanned out.

The relay forwards twice per NOTIFY, as the operator's own relay once told the
monitor (`SerialMonitor.notified`): on arrival without a serial, and once its
fan-out was acknowledged with the serial the primary announced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from types import MappingProxyType
from typing import Any, cast

from secondary_dns import metrics
from secondary_dns.api import ObjectRef
from secondary_dns.dns.relay import Accepted, RelayRoute, RouteTable, decide_notify, route_table

log = logging.getLogger(__name__)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: NotifyListener) -> None:
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        response = self.listener.handle_message(data, str(addr[0]))
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)


class NotifyListener:
    """UDP only (the relay forwards over UDP); routes replaced at any time, from any thread."""

    def __init__(self, on_notify: Callable[[ObjectRef, int | None], object]) -> None:
        # Called with each Zone object the NOTIFY is for, and the serial it carries.
        self.on_notify = on_notify
        # One route table per key of a zone: every server's relay key has the
        # same name, so each is tried in turn (a keyring holds one key per name).
        self._by_key: tuple[RouteTable, ...] = ()
        self._transport: asyncio.DatagramTransport | None = None
        self.bound_port: int | None = None

    def set_routes(self, routes: Iterable[RelayRoute]) -> None:
        listed = list(routes)
        most = max((len(route.allowed_keys) for route in listed), default=0)
        self._by_key = tuple(
            MappingProxyType(
                route_table(
                    replace(route, allowed_keys=(route.allowed_keys[index],))
                    for route in listed
                    if index < len(route.allowed_keys)
                )
            )
            for index in range(most)
        )

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port)
        )
        self._transport = transport
        self.bound_port = int(transport.get_extra_info("sockname")[1])
        log.info("listening for the relay's NOTIFYs on %s port %d (UDP)", host, self.bound_port)

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def handle_message(self, wire: bytes, source: str) -> bytes | None:
        for table in self._by_key:
            decision = decide_notify(wire, source, table)
            if isinstance(decision, Accepted) and decision.key_name is not None:
                break
        else:
            # Unsigned or refused: only a relay, with a server's relay key, wakes us.
            return None
        metrics.MONITOR_WAKEUPS.inc()
        try:
            for route in decision.routes:
                self.on_notify(route.ref, decision.serial)
        except Exception:  # never let a callback stop the answers
            log.exception("waking the serial monitor failed")
        return decision.response
