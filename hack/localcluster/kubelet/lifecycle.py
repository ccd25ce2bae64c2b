"""Handlers shared by probes and lifecycle hooks: exec, httpGet, tcpSocket, sleep.

What each does is kubelet's (pkg/kubelet/prober, pkg/kubelet/lifecycle): an
HTTP GET from the node to the pod's IP (2xx and 3xx succeed), a TCP connect,
a command run inside the container (the runtime's ExecSync, here `runc
exec`), or for a hook a sleep. gRPC probes are not supported here: such a
probe fails with a message saying so.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

USER_AGENT = "kube-probe/1.36"
# kubelet reads at most this much of a probe's HTTP body or exec output.
MAX_OUTPUT = 10 * 1024


@dataclass(frozen=True)
class HandlerResult:
    ok: bool
    output: str = ""


@dataclass(frozen=True)
class Handler:
    kind: str  # exec, httpGet, tcpSocket, grpc, sleep
    command: tuple[str, ...] = ()
    host: str | None = None
    port: int | str | None = None
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    seconds: float = 0

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> Handler:
        if "exec" in spec:
            return cls("exec", command=tuple(str(c) for c in spec["exec"].get("command") or []))
        if "httpGet" in spec:
            http = spec["httpGet"]
            return cls(
                "httpGet",
                host=http.get("host"),
                port=http.get("port"),
                path=str(http.get("path") or "/"),
                scheme=str(http.get("scheme") or "HTTP"),
                headers=tuple(
                    (str(h["name"]), str(h["value"])) for h in http.get("httpHeaders") or []
                ),
            )
        if "tcpSocket" in spec:
            tcp = spec["tcpSocket"]
            return cls("tcpSocket", host=tcp.get("host"), port=tcp.get("port"))
        if "grpc" in spec:
            return cls("grpc", port=spec["grpc"].get("port"))
        if "sleep" in spec:
            return cls("sleep", seconds=float(spec["sleep"].get("seconds") or 0))
        return cls("unknown")


def resolve_port(port: int | str | None, container: Mapping[str, Any]) -> int:
    """A port number, or a name looked up in the container's ports (kubelet's findPortByName)."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for entry in container.get("ports") or []:
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise ValueError(f"couldn't find port: {port} in {container.get('name')}")


def http_get(
    host: str, port: int, path: str, scheme: str, headers: Mapping[str, str], timeout: float
) -> HandlerResult:
    """kubelet's HTTP probe: 2xx and 3xx are success (a redirect is not followed)."""
    connection: http.client.HTTPConnection
    if scheme.upper() == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    url = f"{scheme.lower()}://{host}:{port}{path}"
    try:
        connection.request(
            "GET",
            urllib.parse.quote(path or "/", safe="/?&=%:@!$'()*+,;~"),
            headers={"User-Agent": USER_AGENT, "Accept": "*/*", **headers},
        )
        response = connection.getresponse()
        body = response.read(MAX_OUTPUT).decode(errors="replace")
    except TimeoutError:
        return HandlerResult(
            False,
            f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting '
            "headers)",
        )
    except ConnectionRefusedError:
        refused = f"dial tcp {host}:{port}: connect: connection refused"
        return HandlerResult(False, f'Get "{url}": {refused}')
    except (OSError, http.client.HTTPException) as error:
        return HandlerResult(False, f'Get "{url}": {error}')
    finally:
        connection.close()
    if 200 <= response.status < 400:
        return HandlerResult(True, body)
    return HandlerResult(False, f"HTTP probe failed with statuscode: {response.status}")


def tcp_connect(host: str, port: int, timeout: float) -> HandlerResult:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return HandlerResult(True)
    except ConnectionRefusedError:
        return HandlerResult(False, f"dial tcp {host}:{port}: connect: connection refused")
    except OSError as error:
        return HandlerResult(False, f"dial tcp {host}:{port}: {error}")
