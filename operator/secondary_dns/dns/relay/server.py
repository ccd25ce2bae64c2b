"""The relay's listeners (UDP and TCP), its fan-out to the replicas, and a thread to run it in.

Routes in (`set_routes`, from any thread), NOTIFYs out: nothing here knows
about Kubernetes. The operator runs the relay in a thread with an event loop
of its own (`RelayThread`), so that no message, however hostile, takes time
from the loop that reconciles; the same class can run alone in a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, cast

import dns.name
import dns.serial

from secondary_dns import metrics
from secondary_dns.api import ObjectRef
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.api.tsig import MAX_FUDGE_SECONDS
from secondary_dns.connections import ConnectionSlots
from secondary_dns.dns.notify import DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT
from secondary_dns.dns.relay.decide import (
    MALFORMED,
    MAX_MESSAGE_SIZE,
    REPLAYED,
    Rejected,
    RelayRoute,
    RouteTable,
    decide_notify,
    route_table,
)
from secondary_dns.dns.relay.fanout import notify_all
from secondary_dns.dns.relay.guards import RejectionLog, ReplayCache, Seen

# The package's logger: one name for everything the relay logs.
log = logging.getLogger("secondary_dns.dns.relay")

# Bounds that keep a flood of connections or NOTIFYs from exhausting the relay.
DEFAULT_MAX_TCP_CONNECTIONS = 64
DEFAULT_MAX_TCP_CONNECTIONS_PER_SOURCE = 8
# A primary sends its NOTIFY as soon as it has connected and waits for the answer
# (RFC 7766 §6.2.3 lets a server close idle connections): silence for this long,
# at the start or between messages, closes the connection.
DEFAULT_TCP_IDLE_TIMEOUT = 2.0
# From the first octet of a message to its last.
DEFAULT_TCP_MESSAGE_TIMEOUT = 5.0
# Fan-out rounds (one Zone object's NOTIFYs to all its replicas, one socket each)
# in flight at once.
DEFAULT_FANOUT_CONCURRENCY = 128
DEFAULT_LOG_INTERVAL = 10.0
# Logged with the dropped messages, counted in no metric: not a message.
CONNECTION_REFUSED = "connection_refused"


def later_serial(pending: int | None, new: int | None) -> int | None:
    """The hint for one fan-out round standing for two NOTIFYs: the later serial (RFC 1982).

    Without a hint a secondary checks its primaries whatever serial it has
    (RFC 1996 §3.11), so one NOTIFY without a hint makes the round hint-less.
    Two serials 2^31 apart are not comparable (§3.2): the first one stays.
    """
    if pending is None or new is None:
        return None
    return new if dns.serial.Serial(new) > dns.serial.Serial(pending) else pending


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, relay: NotifyRelay) -> None:
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_datagram_endpoint hands over a datagram transport (the selector
        # loop's class does not derive from asyncio.DatagramTransport, hence a cast).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        response = self.relay.handle_message(data, str(addr[0]), "udp")
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier answers (a primary that went away): nothing to do.
        log.debug("NOTIFY relay UDP socket error: %s", exc)


class NotifyRelay:
    """UDP and TCP listener for NOTIFY, with routes replaced at any time.

    `set_routes` may be called from any thread: it swaps one reference to new
    read-only mappings (atomic under the interpreter lock), and every message
    is decided against the mappings it read once, so it never sees half an
    update. All other methods belong to the event loop the relay was started on.
    """

    def __init__(
        self,
        *,
        fanout_timeout: float = DEFAULT_TIMEOUT,
        fanout_attempts: int = DEFAULT_ATTEMPTS,
        fanout_concurrency: int = DEFAULT_FANOUT_CONCURRENCY,
        max_tcp_connections: int = DEFAULT_MAX_TCP_CONNECTIONS,
        max_tcp_connections_per_source: int = DEFAULT_MAX_TCP_CONNECTIONS_PER_SOURCE,
        tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT,
        tcp_message_timeout: float = DEFAULT_TCP_MESSAGE_TIMEOUT,
        log_interval: float = DEFAULT_LOG_INTERVAL,
        on_notify: Callable[[RelayRoute], object] | None = None,
        on_fanned_out: Callable[[RelayRoute, int | None], object] | None = None,
    ) -> None:
        # Called with the route of every Zone object a NOTIFY was accepted for (the
        # serial monitor probes faster after one), in the relay's event loop, which
        # may not be the caller's thread: it must be thread-safe and not block.
        self.on_notify = on_notify
        # Called (same rules) when a fan-out round ended, with the serial it announced:
        # the replicas have the NOTIFY now, so a probe can see them transfer.
        self.on_fanned_out = on_fanned_out
        self._routes: tuple[RouteTable, Mapping[ObjectRef, RelayRoute]] = (
            MappingProxyType({}),
            MappingProxyType({}),
        )
        self.fanout_timeout = fanout_timeout
        self.fanout_attempts = fanout_attempts
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_message_timeout = tcp_message_timeout
        self._fanout_gate = asyncio.Semaphore(fanout_concurrency)
        self._tcp_slots: ConnectionSlots[asyncio.StreamWriter] = ConnectionSlots(
            max_tcp_connections, max_tcp_connections_per_source
        )
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # One fan-out per Zone object at a time; NOTIFYs arriving meanwhile coalesce
        # into one more round (RFC 1996 §4.5 lets a secondary treat them as one anyway).
        self._fanouts: dict[ObjectRef, asyncio.Task[None]] = {}
        self._again: dict[ObjectRef, int | None] = {}
        self._replays = ReplayCache()
        self._rejections = RejectionLog(log, log_interval)
        self._flush: asyncio.TimerHandle | None = None
        self._received = {
            transport: metrics.NOTIFY_RECEIVED.labels(transport=transport)
            for transport in ("udp", "tcp")
        }
        # Per-relay counts (the Prometheus counters are process-wide).
        self.received = 0
        self.accepted = 0
        self.retransmissions = 0
        self.rejected: Counter[str] = Counter()
        self.relayed = 0
        self.fanout_errors = 0
        self.last_fanout_errors: dict[ProbeTarget, str] = {}

    # ---- routes

    def set_routes(self, routes: Iterable[RelayRoute]) -> None:
        """Every Zone object's route; replaces the previous ones (any thread)."""
        listed = list(routes)
        self._routes = (
            MappingProxyType(route_table(listed)),
            MappingProxyType({route.ref: route for route in listed}),
        )

    @property
    def routes(self) -> RouteTable:
        return self._routes[0]

    # ---- lifecycle

    @property
    def bound_port(self) -> int:
        if self._port is None:
            raise RuntimeError("the NOTIFY relay is not started")
        return self._port

    @property
    def tcp_connections(self) -> int:
        return len(self._tcp_slots)

    async def start(self, host: str, port: int = 53) -> None:
        """Listen on UDP and TCP `host`:`port`; port 0 lets the OS choose one for both."""
        if self._udp is not None:
            raise RuntimeError("the NOTIFY relay is already started")
        loop = asyncio.get_running_loop()
        attempts = 5 if port == 0 else 1
        for attempt in range(attempts):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port)
            )
            chosen = int(udp.get_extra_info("sockname")[1])
            try:
                tcp = await asyncio.start_server(self._serve_tcp, host, chosen, backlog=128)
            except OSError:
                udp.close()
                # With port 0 the OS chose a UDP port whose TCP twin is taken: retry.
                if attempt + 1 == attempts:
                    raise
                continue
            self._udp, self._tcp, self._port, self._loop = udp, tcp, chosen, loop
            log.info("NOTIFY relay listening on %s port %d (UDP and TCP)", host, chosen)
            return

    async def stop(self) -> None:
        """Stop listening, then let fan-outs in flight finish (bounded by their timeouts)."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2)
            self._tcp = None
        await self.wait_idle()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._rejections.flush()
        self._port = None

    async def wait_idle(self) -> None:
        """Wait until no fan-out is in flight (tests, shutdown)."""
        while self._fanouts:
            await asyncio.gather(*list(self._fanouts.values()), return_exceptions=True)

    # ---- messages

    def handle_message(self, wire: bytes, source: str, transport: str) -> bytes | None:
        """Decide, count, start the fan-out; the response to send back, or None."""
        self.received += 1
        self._received[transport].inc()
        routes, _ = self._routes
        decision = decide_notify(wire, source, routes)
        if isinstance(decision, Rejected):
            self._reject(decision.reason, source, decision.detail)
            return None
        if decision.key_name is not None and decision.mac is not None:
            assert decision.time_signed is not None
            now = time.time()
            seen = self._replays.check(
                decision.key_name,
                decision.mac,
                source,
                now,
                expires=decision.time_signed + MAX_FUDGE_SECONDS + 1,
            )
            if seen is Seen.REPLAY:
                self._reject(REPLAYED, source, f"a NOTIFY for {decision.zone} seen before")
                return None
            if seen is Seen.RETRANSMISSION:
                self.retransmissions += 1
                return decision.response
        self.accepted += 1
        how = f"key {decision.key_name}" if decision.key_name is not None else "source address"
        log.info(
            "NOTIFY for %s from %s accepted (%s) for %s",
            decision.zone,
            source,
            how,
            ", ".join(f"Zone {route.ref}" for route in decision.routes),
        )
        for route in decision.routes:
            self._start_fan_out(route, decision.serial)
        return decision.response

    def _reject(self, reason: str, source: str, detail: str) -> None:
        if reason != CONNECTION_REFUSED:
            self.rejected[reason] += 1
            metrics.NOTIFY_REJECTED.labels(reason=reason).inc()
        log.debug("NOTIFY relay dropped a message from %s: %s", source, detail)
        due = self._rejections.note(reason, source, detail)
        if due is not None and self._loop is not None and self._flush is None:
            self._flush = self._loop.call_later(due, self._flush_rejections)

    def _flush_rejections(self) -> None:
        self._flush = None
        self._rejections.flush()

    def _start_fan_out(self, route: RelayRoute, serial: int | None) -> None:
        if route.ref not in self._fanouts:
            task = asyncio.get_running_loop().create_task(self._fan_out(route.ref, serial))
            self._fanouts[route.ref] = task
        elif route.ref in self._again:
            self._again[route.ref] = later_serial(self._again[route.ref], serial)
        else:
            self._again[route.ref] = serial
        self._call(self.on_notify, route)

    @staticmethod
    def _call(callback: Callable[..., object] | None, route: RelayRoute, *arguments: Any) -> None:
        if callback is None:
            return
        try:
            callback(route, *arguments)
        except Exception:  # a broken callback must not stop the relay answering
            log.exception("NOTIFY relay: callback failed for %s", route.ref)

    async def _fan_out(self, ref: ObjectRef, serial: int | None) -> None:
        try:
            while True:
                # The current route: replicas may have come or gone since the NOTIFY.
                route = self._routes[1].get(ref)
                if route is not None:
                    await self._notify_replicas(route, serial)
                    self._call(self.on_fanned_out, route, serial)
                if ref not in self._again:
                    return
                serial = self._again.pop(ref)
        finally:
            self._fanouts.pop(ref, None)
            self._again.pop(ref, None)

    async def _notify_replicas(self, route: RelayRoute, serial: int | None) -> None:
        # Every replica of the route in one round (fanout.py: one signature per relay
        # key, every datagram sent before any answer is read); at most
        # `fanout_concurrency` rounds, one socket each, in flight per relay.
        async with self._fanout_gate:
            results = await notify_all(
                route.zone,
                route.targets,
                serial,
                timeout=self.fanout_timeout,
                attempts=self.fanout_attempts,
            )
        for target, error in results.items():
            self._count_fanout(route.zone, target, error)

    def _count_fanout(self, zone: dns.name.Name, target: ProbeTarget, error: str | None) -> None:
        if error is None:
            self.relayed += 1
            self.last_fanout_errors.pop(target, None)
            metrics.NOTIFY_RELAYED.inc()
        else:
            self.fanout_errors += 1
            self.last_fanout_errors[target] = error
            metrics.NOTIFY_FANOUT_ERRORS.inc()
            log.warning("NOTIFY for %s to replica %s failed: %s", zone, target, error)

    # ---- TCP

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        admission = self._tcp_slots.admit(source, writer)
        if admission.evict is not None:
            # Its reader sees the end of the stream and its task ends.
            admission.evict.transport.abort()
        if not admission.admitted:
            writer.transport.abort()
            self._reject(
                CONNECTION_REFUSED,
                source,
                f"TCP connection refused: {self.tcp_connections} open, at most "
                f"{self._tcp_slots.per_source} per source",
            )
            return
        try:
            # RFC 1035 §4.2.2 / RFC 7766 §8: two-octet length, then the message; several
            # messages may follow on one connection.
            while True:
                prefix = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout)
                length = int.from_bytes(prefix, "big")
                if length > MAX_MESSAGE_SIZE:
                    # Judged on its length alone: nothing of it is read.
                    self.received += 1
                    self._received["tcp"].inc()
                    self._reject(
                        MALFORMED,
                        source,
                        f"{length} octets announced, more than the {MAX_MESSAGE_SIZE} "
                        "a NOTIFY may have",
                    )
                    break
                wire = await asyncio.wait_for(reader.readexactly(length), self.tcp_message_timeout)
                response = self.handle_message(wire, source, "tcp")
                if response is None:
                    # No answer to what is not an acceptable NOTIFY; the framing of
                    # whatever follows cannot be trusted either.
                    break
                writer.write(len(response).to_bytes(2, "big") + response)
                await asyncio.wait_for(writer.drain(), self.tcp_message_timeout)
        except asyncio.IncompleteReadError as error:
            if error.partial:
                # A connection closed in the middle of a message: a truncated message.
                self.received += 1
                self._received["tcp"].inc()
                self._reject(MALFORMED, source, "connection closed in the middle of a message")
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._tcp_slots.release(writer)
            # Not awaited: an answer still buffered is sent, then the socket closes.
            writer.close()


class RelayThread:
    """A NotifyRelay on an event loop of its own, in a thread of its own.

    The relay parses whatever anyone sends; in its own loop that work never
    delays the operator's reconciles and status writes (and a process of its
    own would take it off the interpreter lock too). Its `set_routes` and the
    `on_notify` callbacks it makes are safe across threads.
    """

    def __init__(self, relay: NotifyRelay, name: str = "notify-relay") -> None:
        self.relay = relay
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def start(self, host: str, port: int, timeout: float = 30.0) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.relay.start(host, port), self._loop).result(
                timeout
            )
        except BaseException:
            self._end(timeout)
            raise

    def call(self, coroutine: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine in the relay's loop and wait for its result (tests, tools)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the relay (fan-outs in flight finish), then its loop and thread."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self.relay.stop(), timeout)
        self._end(timeout)

    def _end(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
