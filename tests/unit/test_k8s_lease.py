"""Leader election's rules against an in-memory Lease (resourceVersions, 409 on a stale write)."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from secondary_dns.k8s.lease import LeaderElector, LeaseConfig


class LeaseServer:
    """One Lease: GET, POST (create), PUT (update with a resourceVersion precondition)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.writes = 0

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        if method == "GET":
            if self.lease is None:
                raise ApiException(status=404, reason="NotFound")
            return copy.deepcopy(self.lease)
        self.writes += 1
        if method == "POST":
            if self.lease is not None:
                raise ApiException(status=409, reason="AlreadyExists")
        elif method == "PUT":
            assert self.lease is not None
            if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
                raise ApiException(status=409, reason="Conflict")
        self.version += 1
        self.lease = json.loads(json.dumps(body))
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _elector(server: LeaseServer, identity: str, clock: Clock) -> LeaderElector:
    config = LeaseConfig("secondary-dns", "operator", identity, 15, 10, 2)
    return LeaderElector(server, config, monotonic=clock, wall=clock)


def test_one_leader_until_its_lease_runs_out_on_the_standby_s_clock() -> None:
    server, clock = LeaseServer(), Clock()
    a, b = _elector(server, "a", clock), _elector(server, "b", clock)
    assert a.try_acquire_or_renew()
    assert server.lease is not None and server.lease["spec"]["holderIdentity"] == "a"
    assert not b.try_acquire_or_renew()
    clock.now += 10
    assert a.try_acquire_or_renew()  # renewed
    clock.now += 14
    assert not b.try_acquire_or_renew()  # b sees the renewal now (its clock: 1024)
    clock.now += 14
    assert not b.try_acquire_or_renew()  # 14 s since b saw a change: not yet
    clock.now += 2
    assert b.try_acquire_or_renew()  # 16 s without a change seen: taken
    assert server.lease["spec"]["holderIdentity"] == "b"
    assert server.lease["spec"]["leaseTransitions"] == 1
    assert not a.try_acquire_or_renew()  # a lost it


def test_a_clock_skewed_holder_cannot_shorten_its_lease() -> None:
    """The standby trusts its own clock from when it saw the record change, not renewTime."""
    server, clock = LeaseServer(), Clock()
    a, b = _elector(server, "a", clock), _elector(server, "b", clock)
    assert a.try_acquire_or_renew()
    assert server.lease is not None
    server.lease["spec"]["renewTime"] = "1970-01-01T00:00:00.000000Z"  # a wall clock far off
    assert not b.try_acquire_or_renew()


def test_two_candidates_racing_for_an_expired_lease_cannot_both_win() -> None:
    server, clock = LeaseServer(), Clock()
    a, b, c = (_elector(server, n, clock) for n in "abc")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew() and not c.try_acquire_or_renew()
    clock.now += 20
    stale = copy.deepcopy(server.lease)

    # b reads, then c takes it first with the same resourceVersion: b's write is refused.
    original = server.request

    def get_stale_for_b(method: str, path: str, **kwargs: Any) -> Any:
        if method == "GET":
            return copy.deepcopy(stale)
        return original(method, path, **kwargs)

    assert c.try_acquire_or_renew()
    server.request = get_stale_for_b  # type: ignore[method-assign]
    assert not b.try_acquire_or_renew()
    server.request = original  # type: ignore[method-assign]
    assert server.lease is not None and server.lease["spec"]["holderIdentity"] == "c"


def test_release_hands_over_at_once() -> None:
    server, clock = LeaseServer(), Clock()
    a, b = _elector(server, "a", clock), _elector(server, "b", clock)
    assert a.acquire()
    assert not b.try_acquire_or_renew()
    a.release()
    assert server.lease is not None and server.lease["spec"]["holderIdentity"] is None
    assert b.try_acquire_or_renew()


def test_the_timings_must_leave_no_overlap() -> None:
    with pytest.raises(ValueError, match="leaseDuration > renewDeadline > retryPeriod"):
        LeaseConfig("ns", "lease", "me", lease_duration=10, renew_deadline=10, retry_period=2)


def _fast(server: LeaseServer, identity: str) -> LeaderElector:
    # Real clocks, short times: the renewal thread runs as it does in the operator.
    return LeaderElector(server, LeaseConfig("ns", "operator", identity, 0.6, 0.4, 0.02))


def test_a_leader_that_cannot_renew_gives_up_within_its_renew_deadline() -> None:
    server = LeaseServer()
    leader = _fast(server, "a")
    assert leader.acquire()
    lost = threading.Event()
    original = server.request

    def api_down(method: str, path: str, **kwargs: Any) -> Any:
        raise ApiException(status=503, reason="ServiceUnavailable")

    server.request = api_down  # type: ignore[method-assign]
    started = time.monotonic()
    leader.keep_renewing(lost.set)
    assert lost.wait(5)
    # It keeps trying until the renew deadline (0.4 s), not a moment less.
    assert time.monotonic() - started >= 0.4
    assert not leader.leading
    server.request = original  # type: ignore[method-assign]


def test_a_leader_that_sees_another_holder_stops_at_once() -> None:
    server = LeaseServer()
    leader = _fast(server, "a")
    assert leader.acquire()
    lost = threading.Event()
    assert server.lease is not None
    server.lease["spec"]["holderIdentity"] = "b"  # taken while we were too slow
    server.lease["metadata"]["resourceVersion"] = "99"
    leader.keep_renewing(lost.set)
    assert lost.wait(0.3)
    leader.stop()
