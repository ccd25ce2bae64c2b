"""The NOTIFY relay: one stable address that primaries notify, fanned out to every replica.

A NOTIFY sent to a Kubernetes Service reaches one pod, and pod addresses change,
so primaries notify the relay instead (docs/notify-relay.md). For each Zone
object that serves the zone it accepts a NOTIFY (RFC 1996) only from that
Zone's primaries or allowFrom networks, or signed with one of its primaries'
TSIG keys; answers it at once as RFC 1996 §4.7 says; then sends a NOTIFY of its
own, signed with the server's relay key, to every replica of those Zone objects.

A self-contained component: routes in (`NotifyRelay.set_routes`, from any
thread), NOTIFYs out. `decide.py` is the pure decision on one message,
`server.py` the listeners, the fan-out and `RelayThread` (its own loop in its
own thread), `guards.py` the bounded memory of replays and drops.
"""

from secondary_dns.dns.relay.decide import (
    BAD_TSIG,
    MALFORMED,
    MAX_MESSAGE_SIZE,
    NOT_NOTIFY,
    REJECT_REASONS,
    REPLAYED,
    UNKNOWN_SOURCE,
    UNKNOWN_ZONE,
    Accepted,
    Rejected,
    RelayRoute,
    RouteTable,
    decide_notify,
    route_table,
)
from secondary_dns.dns.relay.server import NotifyRelay, RelayThread, later_serial

__all__ = [
    "BAD_TSIG",
    "MALFORMED",
    "MAX_MESSAGE_SIZE",
    "NOT_NOTIFY",
    "REJECT_REASONS",
    "REPLAYED",
    "UNKNOWN_SOURCE",
    "UNKNOWN_ZONE",
    "Accepted",
    "NotifyRelay",
    "RelayRoute",
    "RelayThread",
    "Rejected",
    "RouteTable",
    "decide_notify",
    "later_serial",
    "route_table",
]
