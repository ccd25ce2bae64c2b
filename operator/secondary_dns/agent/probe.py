"""What the engine serves right now, asked over loopback: a DNS query, and its zones.

Every engine answers DNS the same way; each tells its zones' state its own way
(named: the statistics channel, named.py; knotd: `knotc zone-status`, knot.py).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query

from secondary_dns.api.agent_contract import ZoneState

PROBE_TIMEOUT_SECONDS = 1.0


def loaded_zones(states: Mapping[dns.name.Name, ZoneState]) -> set[dns.name.Name]:
    """Zones the engine has loaded at least once (transferred, or read from disk).

    Both engines list every configured zone; one without a copy yet has no serial.
    """
    return {name for name, state in states.items() if state.serial is not None}


class EngineProbe(abc.ABC):
    def __init__(
        self,
        *,
        dns_address: str = "127.0.0.1",
        dns_port: int = 53,
        timeout: float = PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self.dns_address = dns_address
        self.dns_port = dns_port
        self.timeout = timeout

    def answering(self) -> bool:
        """Any DNS answer counts (REFUSED for `.` too): the engine is up and serving."""
        query = dns.message.make_query(".", "SOA")
        query.flags &= ~dns.flags.RD
        try:
            dns.query.udp(query, self.dns_address, port=self.dns_port, timeout=self.timeout)
        except (dns.exception.DNSException, OSError):
            return False
        return True

    @abc.abstractmethod
    def zone_states(self) -> dict[dns.name.Name, ZoneState] | None:
        """Every configured zone with its serial and timers; None when the engine does not say."""
