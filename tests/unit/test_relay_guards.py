"""The relay's bounded memory: the replay cache and the rate-limited rejection log."""

from __future__ import annotations

import logging

import dns.name
import pytest

from secondary_dns.dns.relay.guards import RejectionLog, ReplayCache, Seen

KEY = dns.name.from_text("transfer-key.")


def test_a_signed_message_again_is_a_retransmission_from_its_sender_else_a_replay() -> None:
    cache = ReplayCache()
    assert cache.check(KEY, b"mac-1", "192.0.2.1", now=1000, expires=1300) is Seen.NEW
    assert cache.check(KEY, b"mac-1", "192.0.2.1", now=1001, expires=1301) is Seen.RETRANSMISSION
    assert cache.check(KEY, b"mac-1", "198.51.100.9", now=1002, expires=1302) is Seen.REPLAY
    assert cache.check(KEY, b"mac-2", "198.51.100.9", now=1002, expires=1302) is Seen.NEW
    other_key = dns.name.from_text("other-key.")
    assert cache.check(other_key, b"mac-1", "198.51.100.9", now=1002, expires=1302) is Seen.NEW


def test_the_replay_cache_forgets_expired_entries_and_stays_bounded() -> None:
    cache = ReplayCache(capacity=100)
    assert cache.check(KEY, b"old", "192.0.2.1", now=1000, expires=1300) is Seen.NEW
    # After its expiry the signature's time check refuses it anyway: forgotten.
    assert cache.check(KEY, b"new", "192.0.2.1", now=1301, expires=1601) is Seen.NEW
    assert len(cache) == 1
    for n in range(1000):
        cache.check(KEY, n.to_bytes(4, "big"), "192.0.2.1", now=1400, expires=1700)
    assert len(cache) <= 100


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rejections_are_summed_into_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rejections = RejectionLog(logging.getLogger("test.relay"), interval=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.relay"):
        # The first after a quiet interval is logged at once.
        assert rejections.note("unknown_source", "192.0.2.9", "may not notify") is None
        assert len(caplog.records) == 1
        # The next ones wait for the interval's end: the caller schedules a flush.
        clock.now = 1
        assert rejections.note("malformed", "192.0.2.9", "5 octets") == 9
        for n in range(500):
            assert rejections.note("malformed", f"198.51.100.{n % 200}", "5 octets") is None
        assert len(caplog.records) == 1 and rejections.pending == 501
        clock.now = 10
        rejections.flush()
    assert len(caplog.records) == 2
    summary = caplog.records[1].getMessage()
    assert summary.startswith("NOTIFY relay dropped 501 messages: malformed=501;")
    assert "192.0.2.9 (1)" not in summary and "(3)" in summary  # the top senders
    assert summary.endswith("last from 198.51.100.99: 5 octets")
    assert rejections.pending == 0


def test_the_rejection_log_keeps_a_bounded_number_of_sources() -> None:
    rejections = RejectionLog(logging.getLogger("test.relay"), interval=10, clock=lambda: 0.0)
    for n in range(10_000):
        rejections.note("malformed", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", "x")
    assert len(rejections._sources) <= RejectionLog.MAX_SOURCES
    assert rejections.pending == 9_999  # the first was logged at once
