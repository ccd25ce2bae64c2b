"""Sending a DNS NOTIFY (RFC 1996): the relay's fan-out and the monitor's repair.

A NOTIFY only tells a secondary to check the zone's SOA at its primaries now
instead of at the next refresh (RFC 1996 §3.11); it carries no zone data, so a
lost or refused one costs a refresh interval, never correctness.
"""

from __future__ import annotations

import asyncio

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

from secondary_dns.api import TsigKey
from secondary_dns.api.soa import ProbeTarget

DEFAULT_TIMEOUT = 1.0
DEFAULT_ATTEMPTS = 3


def make_notify(
    zone: dns.name.Name, *, key: TsigKey | None = None, soa_serial: int | None = None
) -> dns.message.Message:
    """A NOTIFY for `zone` as RFC 1996 §3.7 describes it.

    QUERY is NOTIFY, the question is the zone's SOA, AA is set (§3.7) and RD is
    not. With `soa_serial` the answer section holds an SOA carrying that serial:
    §3.7 lets the notifier include the new SOA as a hint, and secondaries use
    only its serial (BIND skips the refresh when it already has that serial), so
    the other SOA fields are placeholders.
    """
    message = dns.message.make_query(zone, dns.rdatatype.SOA, dns.rdataclass.IN)
    message.flags = dns.flags.AA
    message.set_opcode(dns.opcode.NOTIFY)
    if soa_serial is not None:
        soa = dns.rdata.from_text(
            dns.rdataclass.IN,
            dns.rdatatype.SOA,
            f"{zone.to_text()} {zone.to_text()} {soa_serial % 2**32} 0 0 0 0",
        )
        message.answer.append(dns.rrset.from_rdata(zone, 0, soa))
    if key is not None:
        message.use_tsig(key.to_dnspython())
    return message


async def send_notify(
    zone: dns.name.Name,
    target: ProbeTarget,
    *,
    key: TsigKey | None,
    soa_serial: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = DEFAULT_ATTEMPTS,
) -> str | None:
    """Send a NOTIFY for `zone` to `target`; None when it answered NOERROR, else why not.

    RFC 1996 §3.6: the notifier retransmits until it gets a response; here each
    of `attempts` waits `timeout` seconds. A response other than NOERROR (REFUSED:
    not a secondary of this zone or the key is not allowed; NOTAUTH: TSIG
    rejected, RFC 8945 §5.2) is final: retransmitting would not change it.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    message = make_notify(zone, key=key, soa_serial=soa_serial)
    last_error = "no attempt made"
    for _ in range(attempts):
        try:
            # Same message id on every attempt: these are retransmissions of one
            # NOTIFY (§3.6), and dnspython re-signs it with a fresh TSIG time.
            response = await asyncio.wait_for(
                dns.asyncquery.udp(
                    message,
                    target.address,
                    timeout=timeout,
                    port=target.port,
                    ignore_unexpected=True,
                ),
                timeout=timeout + 0.5,
            )
        except (dns.exception.Timeout, TimeoutError):
            last_error = f"timeout after {attempts} attempt(s) of {timeout:g}s"
            continue
        except ConnectionRefusedError:
            # ICMP port unreachable: nothing listens there; a retry will not help soon.
            return "connection refused (nothing listening)"
        except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadTime) as error:
            return f"TSIG verification of the response failed: {type(error).__name__}"
        except (dns.exception.DNSException, OSError, ValueError, EOFError) as error:
            return f"{type(error).__name__}: {error}"
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return None
        return str(dns.rcode.to_text(rcode))
    return last_error
