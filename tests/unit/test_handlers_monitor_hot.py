"""A hot zone's replicas are never compared with a primary answer older than their serial."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

import secondary_dns.handlers.monitor as monitor_module
from secondary_dns.api import ObjectRef
from secondary_dns.api.soa import ProbeResult
from tests.fake_cluster import FakeApiServer
from tests.handlers_harness import API, NS, Operator, condition
from tests.unit.test_handlers_monitor_recheck import Network, served_zone


@dataclass
class Watched:
    api: FakeApiServer
    operator: Operator
    network: Network
    ref: ObjectRef
    # "primary" or "replica", for every SOA probe sent, in order
    asked: list[str]

    def hot_step(self, primaries: bool = False) -> None:
        """A step of the monitor for the zone, hot (its replicas asked), with its primaries."""
        refs = {self.ref}
        asyncio.run(self.operator.monitor.observe(refs if primaries else set(), refs, False))

    def status(self) -> dict[str, Any]:
        zone = self.api.get(API, "Zone", NS, self.ref.name)
        assert zone is not None
        return dict(zone["status"])

    def condition(self, type_: str) -> tuple[str, str]:
        found = condition({"status": self.status()}, type_)
        return found["status"], found["reason"]

    def change(self, primary: int, replicas: int) -> None:
        """The primary serves `primary` now, every replica `replicas`."""
        for key in self.network.serials:
            self.network.serials[key] = primary if key[1] == "primary" else replicas


def zone_in_sync(monkeypatch: pytest.MonkeyPatch) -> Watched:
    """One Zone served by 3 replicas, all at serial 5 and Synced; the SOA probes it gets
    (primary or replica, in order) are counted."""
    api, operator, zones = served_zone()
    network = Network(zones)
    asked: list[str] = []

    async def probe_all(requests: Any, **kwargs: Any) -> list[ProbeResult]:
        asked.extend(
            "replica" if target.address in network.replicas else "primary" for _, target in requests
        )
        return await network.probe_all(requests, **kwargs)

    monkeypatch.setattr(monitor_module, "fetch_raw", network.fetch_raw)
    monkeypatch.setattr(monitor_module, "probe_all", probe_all)
    asyncio.run(operator.monitor.round())
    (ref,) = [zone.ref for zone in zones]
    assert condition(api.get(API, "Zone", NS, ref.name), "Synced")["status"] == "True"
    asked.clear()
    return Watched(api, operator, network, ref, asked)


def test_replicas_that_serve_a_change_first_seen_by_a_hot_probe_show_synced_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The primary changed and every replica transferred it; the hot step that sees them
    comes within HOT_PRIMARY_INTERVAL of the primaries' last probe, so it asks only the
    replicas. Compared with that probe's answer, the replicas were "newer than the
    primary's 5" (SerialWentBackwards, SerialRegressed) until the primaries' next probe:
    ~0.2 s of a false alarm after every change (bench/propagation.py: the status 275 ms
    after the last replica). A replica's serial comes from a primary: ask it again now."""
    watched = zone_in_sync(monkeypatch)
    watched.change(primary=6, replicas=6)
    watched.hot_step()
    assert watched.condition("Synced") == ("True", "InSync")
    assert watched.condition("SerialRegressed")[0] == "False"
    shown = watched.status()
    assert (shown["primarySerial"], shown["synced"]) == (6, "3/3")
    assert watched.asked == ["replica"] * 3 + ["primary"]
    # In sync: nothing more to ask of the primary at the next hot step.
    watched.asked.clear()
    watched.hot_step()
    assert watched.asked == ["replica"] * 3


def test_a_primary_that_went_backwards_is_asked_once_per_serial_the_replicas_show(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replicas ahead of the primary's fresh answer are a regression (RFC 2182 §7): the
    primary is asked again once, not at every step while the regression lasts."""
    watched = zone_in_sync(monkeypatch)
    watched.change(primary=4, replicas=5)
    watched.hot_step(primaries=True)
    assert sorted(watched.asked) == ["primary"] + ["replica"] * 3
    assert watched.condition("SerialRegressed")[0] == "True"
    # Asked after the replicas showed 5 (in the same step): not again for 5.
    watched.asked.clear()
    watched.hot_step()
    watched.hot_step()
    assert watched.asked == ["replica"] * 6
    # A replica showing a newer serial still: the primary is asked about that one, once.
    watched.change(primary=4, replicas=7)
    watched.asked.clear()
    watched.hot_step()
    watched.hot_step()
    assert watched.asked == ["replica"] * 3 + ["primary"] + ["replica"] * 3
    assert watched.condition("SerialRegressed")[0] == "True"
    assert watched.status()["primarySerial"] == 4
