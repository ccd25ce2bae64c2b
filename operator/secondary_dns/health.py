"""/healthz and /readyz for the operator and the relay (probes of their Deployments)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_health(port: int, ready: Callable[[], bool] = lambda: True) -> ThreadingHTTPServer:
    """/healthz: the process serves; /readyz: `ready()` says it can do its work."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?")[0]
            if path == "/healthz":
                ok = True
            elif path == "/readyz":
                ok = ready()
            else:
                self.send_error(404)
                return
            body = b"ok\n" if ok else b"not ready\n"
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # probes every few seconds would fill the log

    server = ThreadingHTTPServer(("0.0.0.0", port), Health)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
