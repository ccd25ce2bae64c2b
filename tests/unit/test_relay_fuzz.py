"""A short run of bench/fuzz_relay.py: 20 000 random, mutated, stranger and oversized datagrams.

The relay runs in its RelayThread in a child process, as in the operator; a
stranger must never get an answer, the relay must not crash and must still
answer its primary afterwards. The figures are printed (pytest -s); the full
run (1 million datagrams) is `python3 bench/fuzz_relay.py`.
"""

from __future__ import annotations

from bench.fuzz_relay import run_fuzz


def test_twenty_thousand_hostile_datagrams() -> None:
    report = run_fuzz(count=20_000, seconds=300)
    print("\n".join(report.lines()))
    assert report.crashed is None
    assert report.total == 20_000
    assert report.answers["stranger"] == 0
    # The primary's valid NOTIFYs were answered throughout, and after the run.
    assert report.answers["primary"] > 0 and report.alive_after
    assert report.received > 0.9 * report.total
    # Bounded memory: the replay cache and the log's source counts have caps.
    assert report.rss_after_kib - report.rss_before_kib < 64 * 1024
