"""/metrics sends prometheus_client's text format a family at a time (metrics.py).

prometheus_client's own server formats every line of every family, joins them and
sends the whole: at 10,000 Zones a peak of ~68 MiB at every scrape. The text must
stay exactly what prometheus_client would send.
"""

from __future__ import annotations

import gzip
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from secondary_dns import metrics


def registry_with_zones(zones: int) -> tuple[CollectorRegistry, metrics._SerialCollector]:
    registry = CollectorRegistry()
    Counter("secondarydns_test_total", "A counter beside the zones' series.", registry=registry)
    serial = metrics._SerialCollector()
    with serial._lock:
        for index in range(zones):
            series = serial.series("ns", f"z{index}.example.")
            series.primary_serial, series.refresh, series.expire = 5, 3600, 86400
            series.regressed, series.seen_at = bool(index % 2), 1000.0 + index
            series.replicas = tuple(
                ("edge", f"edge-{pod}", "bind9", None if pod == 2 else 5, pod == 0, 1.5 * pod)
                for pod in range(3)
            )
    registry.register(serial)
    return registry, serial


def test_the_text_is_prometheus_client_s_sent_a_family_at_a_time() -> None:
    registry, _ = registry_with_zones(4)
    chunks = list(metrics.exposition(registry))
    assert b"".join(chunks) == generate_latest(registry)
    assert len(chunks) == len(list(registry.collect()))  # one chunk a family
    assert gzip.decompress(b"".join(metrics.exposition(registry, gzipped=True))) == b"".join(chunks)


def test_the_zones_series_are_made_one_family_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next family's samples are made only once the last one is sent."""
    made: list[str] = []
    family = metrics._Family.family

    def counted(self: metrics._Family) -> Any:
        made.append(self.name)
        return family(self)

    monkeypatch.setattr(metrics._Family, "family", counted)
    _, serial = registry_with_zones(3)
    registry = CollectorRegistry()
    registry.register(serial)
    made.clear()  # registering described every family
    chunks = metrics.exposition(registry)
    first = next(chunks)
    assert made == [metrics.ZONE_PRIMARY_SERIAL.name]
    assert first.count(b"\nsecondarydns_zone_primary_serial{") == 3
    rest = list(chunks)
    assert made == [f.name for f in metrics._FAMILIES]
    assert len(rest) == len(metrics._FAMILIES) - 1


def test_metrics_are_served_over_http_plain_and_gzipped() -> None:
    server = metrics.serve_metrics(0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            plain = answer.read()
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.headers["Content-Encoding"] == "gzip"
            unzipped = gzip.decompress(answer.read())
    finally:
        server.shutdown()
        server.server_close()
    for text in (plain, unzipped):
        assert b"# TYPE secondarydns_api_writes_total counter" in text
        assert text.endswith(b"\n")
