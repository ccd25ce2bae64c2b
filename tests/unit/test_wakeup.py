"""The relay wakes the leader's serial monitor: forwarded NOTIFYs, signed with a relay key."""

from __future__ import annotations

import dns.name

from secondary_dns.api import ObjectRef
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.notify import make_notify
from secondary_dns.dns.wakeup import NotifyListener
from secondary_dns.relay.run import wakeup_target
from secondary_dns.render.relay import ANNOTATION_WAKEUP_ADDRESS
from secondary_dns.routes import MonitoredZone, wakeup_routes
from secondary_dns.status.serial import ReplicaTarget
from tests.unit.render_cases import key

ZONE = dns.name.from_text("example.com.")
RELAY_KEY = key("secondary-dns-relay.", b"r")
OTHER_SERVER_KEY = key("secondary-dns-relay.", b"o")


def _zone() -> MonitoredZone:
    replicas = tuple(
        (
            ReplicaTarget(pod=f"edge-{i}", server="edge", failure_domain=None, address=None),
            RELAY_KEY,
        )
        for i in range(3)
    ) + (
        (
            ReplicaTarget(pod="core-0", server="core", failure_domain=None, address=None),
            OTHER_SERVER_KEY,
        ),
    )
    return MonitoredZone(
        ref=ObjectRef("dns", "example"),
        name=ZONE,
        primaries=(ProbeTarget("192.0.2.1"),),
        primary_keys=(),
        notify_sources=(),
        replicas=replicas,
    )


def test_only_a_relay_key_of_the_zone_s_servers_wakes_the_monitor() -> None:
    woken: list[tuple[ObjectRef, int | None]] = []
    listener = NotifyListener(on_notify=lambda ref, serial: woken.append((ref, serial)))
    routes = wakeup_routes([_zone()])
    assert len(routes[0].allowed_keys) == 2  # each server's key once
    listener.set_routes(routes)

    signed = make_notify(ZONE, key=RELAY_KEY).to_wire()
    assert listener.handle_message(signed, "10.250.0.61") is not None
    assert listener.handle_message(make_notify(ZONE, key=OTHER_SERVER_KEY).to_wire(), "::1")
    # The serial of the SOA in the answer section, as the relay forwards a fan-out.
    announced = make_notify(ZONE, key=RELAY_KEY, soa_serial=42).to_wire()
    assert listener.handle_message(announced, "10.250.0.61") is not None
    ref = ObjectRef("dns", "example")
    assert woken == [(ref, None), (ref, None), (ref, 42)]
    # Unsigned, even from a relay's address; another key; another zone: nothing.
    assert listener.handle_message(make_notify(ZONE).to_wire(), "10.250.0.61") is None
    stranger = key("secondary-dns-relay.", b"x")
    assert listener.handle_message(make_notify(ZONE, key=stranger).to_wire(), "10.250.0.61") is None
    other = make_notify(dns.name.from_text("other.test."), key=RELAY_KEY).to_wire()
    assert listener.handle_message(other, "10.250.0.61") is None
    assert len(woken) == 3


def _lease(holder: str | None, address: str | None) -> dict[str, object]:
    annotations = {ANNOTATION_WAKEUP_ADDRESS: address} if address else {}
    return {"metadata": {"annotations": annotations}, "spec": {"holderIdentity": holder}}


def test_the_relay_finds_the_leader_on_its_lease() -> None:
    assert wakeup_target(_lease("operator-0_1", "10.244.1.7:5354")) == ProbeTarget(
        "10.244.1.7", 5354
    )
    assert wakeup_target(_lease("operator-0_1", "[fd00::7]:5354")) == ProbeTarget("fd00::7", 5354)
    # Released (no holder), or a holder that published nothing: no one to wake.
    assert wakeup_target(_lease(None, "10.244.1.7:5354")) is None
    assert wakeup_target(_lease("operator-0_1", None)) is None
    assert wakeup_target(_lease("operator-0_1", "garbage")) is None
