"""/healthz, /readyz and /metrics for the kubelet and Prometheus; /zones for the operator.

Every request has a thread of its own (a probe must not wait behind a scrape),
so what a client can hold is bounded: a request must arrive within
REQUEST_TIMEOUT seconds of silence, and connections take slots shared fairly
between sources (`secondary_dns.connections`), so clients that open many and
send nothing crowd out only themselves, never the kubelet's probes.
"""

from __future__ import annotations

import math
import socket
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from secondary_dns.api.agent_contract import ZONES_MAX_AGE_PARAMETER, ZONES_PATH
from secondary_dns.connections import ConnectionSlots

# (ok, reason): the reason is the body, so `kubectl describe pod` shows it.
Check = Callable[[], tuple[bool, str]]

# Seconds a client may stay silent while sending a request (and while reading the
# answer). The kubelet's probes and Prometheus send a request at once.
REQUEST_TIMEOUT = 5.0
# Connections served at once, and by one source (kubelet, Prometheus and the
# operator are three sources; each needs a few at most).
MAX_CONNECTIONS = 32
MAX_CONNECTIONS_PER_SOURCE = 8


def _seconds(text: str) -> float | None:
    """`maxAge`: a finite, non-negative number of seconds; anything else is absent."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_listen(value: str) -> tuple[str, int]:
    """`ADDRESS:PORT` or `[IPv6]:PORT`."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {value}: expected ADDRESS:PORT, e.g. 0.0.0.0:8081")
    return host, int(port)


class AgentHTTPServer:
    def __init__(
        self,
        listen: str,
        healthz: Check,
        readyz: Check,
        registry: CollectorRegistry,
        zones: Callable[[float | None], bytes] | None = None,
    ) -> None:
        checks = {"/healthz": healthz, "/readyz": readyz}

        class Handler(BaseHTTPRequestHandler):
            # Applied to the socket (socketserver.StreamRequestHandler.setup): a read
            # that waits longer ends the request and closes the connection.
            timeout = REQUEST_TIMEOUT

            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                    return
                if path == ZONES_PATH and zones is not None:
                    query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                    max_age = _seconds(query.get(ZONES_MAX_AGE_PARAMETER, [""])[-1])
                    self._send(200, zones(max_age), "application/json")
                    return
                check = checks.get(path)
                if check is None:
                    self._send(404, b"not found\n", "text/plain")
                    return
                ok, reason = check()
                self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                # Probes every few seconds would drown the agent's own log.
                return

        self.server = _BoundedHTTPServer(parse_listen(listen), Handler)
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="agent-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, for the connections that get a slot; others are closed."""

    daemon_threads = True
    # The listen backlog (socketserver's default is 5): a burst of connections
    # waits for accept() instead of being dropped into SYN retransmissions.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        super().__init__(address, handler)
        self.slots: ConnectionSlots[socket.socket] = ConnectionSlots(
            MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE
        )

    def process_request(self, request: Any, client_address: Any) -> None:
        admission = self.slots.admit(str(client_address[0]), request)
        if admission.evict is not None:
            # Wakes the thread blocked reading it; that thread then closes it.
            _shut(admission.evict)
        if not admission.admitted:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release(request)


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its own thread
