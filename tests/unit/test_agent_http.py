"""The agent's HTTP server under hostile clients: bounded threads, timeouts, probes answered."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from secondary_dns.agent.endpoints import AgentHTTPServer


@pytest.fixture
def server() -> Iterator[AgentHTTPServer]:
    http = AgentHTTPServer(
        "127.0.0.1:0",
        healthz=lambda: (True, "ok"),
        readyz=lambda: (False, "zone example.com. not loaded"),
        registry=CollectorRegistry(),
        zones=lambda _max_age: b'{"zones": {}}',
    )
    http.start()
    try:
        yield http
    finally:
        http.stop()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def half_open(port: int, source: str, count: int) -> list[socket.socket]:
    """Requests that start and never finish: a request line and no end of headers."""
    opened = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((source, 0))
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n")
        except OSError:
            sock.close()
            continue
        opened.append(sock)
    return opened


def handler_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("Thread-"))


def test_half_open_requests_do_not_take_a_thread_each_and_probes_still_answer(
    server: AgentHTTPServer,
) -> None:
    before = handler_threads()
    held = half_open(server.port, "127.0.0.2", 300)
    try:
        time.sleep(0.5)  # the server has accepted (or closed) them all
        threads = handler_threads() - before
        print(f"300 half-open requests from one source: {threads} handler threads")
        assert threads <= 32
        # The kubelet's probe, from another address, is still answered.
        assert get(server.port, "/healthz") == (200, b"ok\n")
        assert get(server.port, "/readyz") == (503, b"zone example.com. not loaded\n")
    finally:
        for sock in held:
            sock.close()


def test_a_request_that_never_finishes_is_closed(server: AgentHTTPServer) -> None:
    (sock,) = half_open(server.port, "127.0.0.2", 1)
    with sock:
        sock.settimeout(60)
        started = time.monotonic()
        # No answer to a request that never ended, and the connection is closed.
        assert sock.recv(65536) == b""
        print(f"a half-open request was closed after {time.monotonic() - started:.1f}s")


def test_many_sources_cannot_lock_out_the_probe(server: AgentHTTPServer) -> None:
    held = []
    try:
        for n in range(1, 41):
            held += half_open(server.port, f"127.0.2.{n}", 4)
        time.sleep(0.5)
        assert get(server.port, "/healthz") == (200, b"ok\n")
    finally:
        for sock in held:
            sock.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.binary(max_size=2048))
def test_random_requests_never_stop_the_server(server: AgentHTTPServer, request: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    # Whatever came in, the answer is small (HTTP/0.9 requests get a bare body) and the
    # server keeps serving.
    assert len(answer) < 65536
    assert get(server.port, "/healthz") == (200, b"ok\n")


@pytest.mark.parametrize(
    ("query", "passed"),
    [
        ("", None),
        ("?maxAge=0.5", 0.5),
        ("?maxAge=0", 0.0),
        ("?maxAge=-1", None),
        ("?maxAge=nan", None),
        ("?maxAge=x", None),
    ],
)
def test_zones_pass_max_age_when_it_is_a_number_of_seconds(
    query: str, passed: float | None
) -> None:
    asked: list[float | None] = []

    def zones(max_age: float | None) -> bytes:
        asked.append(max_age)
        return b'{"zones": {}}'

    http = AgentHTTPServer(
        "127.0.0.1:0", lambda: (True, "ok"), lambda: (True, "ok"), CollectorRegistry(), zones
    )
    http.start()
    try:
        assert get(http.port, "/zones" + query) == (200, b'{"zones": {}}')
    finally:
        http.stop()
    assert asked == [passed]
