"""/healthz, /readyz and /metrics for the kubelet and Prometheus; /zones for the operator."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# (ok, reason): the reason is the body, so `kubectl describe pod` shows it.
Check = Callable[[], tuple[bool, str]]


def parse_listen(value: str) -> tuple[str, int]:
    """`ADDRESS:PORT` or `[IPv6]:PORT`."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {value}: expected ADDRESS:PORT, e.g. 0.0.0.0:8081")
    return host, int(port)


class AgentHTTPServer:
    def __init__(
        self,
        listen: str,
        healthz: Check,
        readyz: Check,
        registry: CollectorRegistry,
        zones: Callable[[], bytes] | None = None,
    ) -> None:
        checks = {"/healthz": healthz, "/readyz": readyz}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                    return
                if path == "/zones" and zones is not None:
                    self._send(200, zones(), "application/json")
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

        self.server = ThreadingHTTPServer(parse_listen(listen), Handler)
        self.server.daemon_threads = True
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
