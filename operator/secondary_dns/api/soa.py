"""What a name server answered for a zone's SOA: the values SOA probes produce.

The probes (dns/probe.py) fill these in; the serial rules (status/serial.py)
read them. They live at the bottom so the pure rules never depend on the I/O
that produced their input.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """A name server address to query: a primary, a replica pod, or the relay's targets."""

    address: str
    port: int = 53

    def __str__(self) -> str:
        # RFC 3986 style brackets keep an IPv6 address readable next to its port.
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SoaAnswer:
    """The SOA timers a server answered (RFC 1035 §3.3.13); all are 32-bit unsigned."""

    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe: either an answer or a short error text, and the round-trip time."""

    target: ProbeTarget
    answer: SoaAnswer | None
    error: str | None
    rtt_seconds: float
    # True when the answer came over TCP after a truncated UDP answer (RFC 7766 §5).
    used_tcp: bool = False
    # True when a DNS response came back, also one with an error (REFUSED, ...):
    # the server is up and says no, as opposed to a timeout or a network error.
    responded: bool = False

    @property
    def serial(self) -> int | None:
        return self.answer.serial if self.answer is not None else None

    @property
    def timed_out(self) -> bool:
        return self.error is not None and self.error.startswith("timeout")
