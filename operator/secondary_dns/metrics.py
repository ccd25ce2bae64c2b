"""The operator's Prometheus metrics, all prefixed `secondarydns_`.

They live in one module so names and help texts are reviewed in one place and
documented in the README from here.
"""

from __future__ import annotations

import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import dns.name
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    ThreadingWSGIServer,
    generate_latest,
)
from prometheus_client.registry import Collector

API_WRITES = Counter(
    "secondarydns_api_writes_total",
    "Mutating requests (apply, status patch, delete, Event) the operator sent to the "
    "Kubernetes API, by method and resource (zones/status, configmaps, secrets, events, ...).",
    ["method", "resource"],
)
RECONCILES = Counter(
    "secondarydns_reconciles_total",
    "Reconciles of a SecondaryServer, by result (ok, invalid_spec, error).",
    ["result"],
)
STATUS_WRITE_ERRORS = Counter(
    "secondarydns_status_write_errors_total",
    "Zone status writes that failed (an API error or timeout); the next round or reconcile "
    "writes them, and other zones' writes and repairs go on.",
)
RECONCILE_SECONDS = Histogram(
    "secondarydns_reconcile_duration_seconds",
    "Time to reconcile one SecondaryServer: read, render, apply, status.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

LEADER = Gauge(
    "secondarydns_leader",
    "1 while this operator replica holds the leader Lease (reconciles, writes status), else 0.",
)

# ---- NOTIFY relay (secondary_dns.dns.relay). No per-replica or per-zone labels on
# counters: a fleet of 10^5 zones would make 10^5 series per counter.
NOTIFY_RECEIVED = Counter(
    "secondarydns_notify_received_total",
    "Messages the NOTIFY relay received, before any check, by transport (udp, tcp).",
    ["transport"],
)
NOTIFY_RELAYED = Counter(
    "secondarydns_notify_relayed_total",
    "NOTIFY messages the relay fanned out to a replica and the replica acknowledged (NOERROR).",
)
NOTIFY_REJECTED = Counter(
    "secondarydns_notify_rejected_total",
    "Messages the NOTIFY relay dropped, by reason (malformed, not_notify, unknown_zone, "
    "unknown_source, bad_tsig, replayed).",
    ["reason"],
)
NOTIFY_FANOUT_ERRORS = Counter(
    "secondarydns_notify_fanout_errors_total",
    "NOTIFY messages to replicas (relay fan-out and repairs) that got no NOERROR answer.",
)
REPAIR_NOTIFIES = Counter(
    "secondarydns_notify_repairs_total",
    "NOTIFY messages the serial monitor sent to a replica behind the primary, by result "
    "(ok, error).",
    ["result"],
)
SOA_PROBES = Counter(
    "secondarydns_soa_probes_total",
    "SOA queries the serial monitor sent, by target (primary, replica).",
    ["target"],
)
AGENT_REPORTS = Counter(
    "secondarydns_agent_zone_reports_total",
    "GET /zones the serial monitor made to replicas' agents (every zone's serial in one "
    "answer), by result (ok, error: the replica's zones are then asked by SOA).",
    ["result"],
)
REPORT_MISMATCHES = Counter(
    "secondarydns_replica_report_mismatches_total",
    "Spot checks where a replica answered an older serial (or none) than its agent reported.",
)
MONITOR_WAKEUPS = Counter(
    "secondarydns_monitor_wakeups_total",
    "NOTIFYs the relay forwarded to the leader (signed with a relay key): the serial "
    "monitor probes fast after each.",
)
RELAY_ZONES = Gauge(
    "secondarydns_relay_zones",
    "Zones the NOTIFY relay has a route for (from the operator's relay plans).",
)
RELAY_TARGETS = Gauge(
    "secondarydns_relay_targets",
    "Replica addresses the NOTIFY relay fans out to, over all zones.",
)
PROBE_ERRORS = Counter(
    "secondarydns_probe_errors_total",
    "SOA probes that got no authoritative answer, by target (primary, replica).",
    ["target"],
)

# ---- serial status, set from each evaluation (secondary_dns.status.serial)
#
# Per zone and per replica: at 10,000 zones of 3 replicas, 140,000 series. Kept
# as prometheus_client Gauge children (an object, a lock and a value each) they
# were about 9 KB a zone, the largest part of the operator's memory after the
# watch caches; kept here as one small record a zone and turned into samples
# only when scraped (a custom collector, prometheus_client's way for many series).


class _Family:
    """One serial metric's name, help text and labels (what a scrape describes)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)

    def describe(self) -> list[GaugeMetricFamily]:
        return [self.family()]

    def family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labels)


_ZONE_LABELS = ["namespace", "zone"]
_REPLICA_LABELS = ["namespace", "zone", "server", "pod", "engine"]
ZONE_PRIMARY_SERIAL = _Family(
    "secondarydns_zone_primary_serial",
    "The SOA serial the zone's primaries serve (the newest when they disagree).",
    _ZONE_LABELS,
)
ZONE_LAST_PROBE = _Family(
    "secondarydns_zone_last_probe_timestamp_seconds",
    "When a primary of the zone last answered an SOA probe (Unix time).",
    _ZONE_LABELS,
)
ZONE_SOA_REFRESH = _Family(
    "secondarydns_zone_soa_refresh_seconds",
    "The SOA refresh interval of the primary's copy of the zone: a replica behind for "
    "longer has missed a refresh (RFC 2182 section 7).",
    _ZONE_LABELS,
)
ZONE_SOA_EXPIRE = _Family(
    "secondarydns_zone_soa_expire_seconds",
    "The SOA expire interval of the primary's copy of the zone.",
    _ZONE_LABELS,
)
ZONE_SERIAL_REGRESSED = _Family(
    "secondarydns_zone_serial_regressed",
    "1 while the primary serves a serial older (RFC 1982) than the replicas: they keep "
    "the newer copy and will not transfer until the serial passes theirs.",
    _ZONE_LABELS,
)
REPLICA_SERIAL = _Family(
    "secondarydns_replica_serial",
    "The SOA serial a replica pod serves for the zone; absent while it does not answer.",
    _REPLICA_LABELS,
)
REPLICA_IN_SYNC = _Family(
    "secondarydns_replica_in_sync",
    "1 when the replica pod serves the primary's serial, else 0.",
    _REPLICA_LABELS,
)
REPLICA_SECONDS_BEHIND = _Family(
    "secondarydns_replica_seconds_behind",
    "How long the replica pod has been continuously behind the primary's serial (0 if not).",
    _REPLICA_LABELS,
)


# ---- setting the serial gauges from an evaluation (secondary_dns.status.serial). The
# evaluation is described structurally: this module sits below every layer.


class _ReplicaTargetLike(Protocol):
    @property
    def server(self) -> str: ...
    @property
    def pod(self) -> str: ...
    @property
    def engine(self) -> str: ...


class _ReplicaVerdictLike(Protocol):
    @property
    def target(self) -> _ReplicaTargetLike: ...
    @property
    def serial(self) -> int | None: ...
    @property
    def in_sync(self) -> bool: ...
    @property
    def seconds_behind(self) -> float: ...


class _ZoneHistoryLike(Protocol):
    @property
    def primary_seen_at(self) -> float | None: ...


class SerialEvaluationLike(Protocol):
    @property
    def primary_serial(self) -> int | None: ...
    @property
    def primary_refresh(self) -> int | None: ...
    @property
    def primary_expire(self) -> int | None: ...
    @property
    def regressed(self) -> bool: ...
    @property
    def history(self) -> _ZoneHistoryLike: ...
    @property
    def replicas(self) -> Sequence[_ReplicaVerdictLike]: ...


class _ZoneSeries:
    """One zone's serial samples; None: no sample (the series is absent)."""

    __slots__ = ("primary_serial", "refresh", "expire", "regressed", "seen_at", "replicas")

    def __init__(self) -> None:
        self.primary_serial: int | None = None
        self.refresh: int | None = None
        self.expire: int | None = None
        self.regressed: bool | None = None
        self.seen_at: float | None = None
        # (server, pod, engine, serial or None, in sync, seconds behind) per replica
        self.replicas: tuple[tuple[str, str, str, int | None, bool, float], ...] = ()


class _SerialCollector(Collector):
    """Every zone's serial series, made into samples at each scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zones: dict[tuple[str, str], _ZoneSeries] = {}

    def series(self, namespace: str, zone: str) -> _ZoneSeries:
        """The zone's record (created empty); call with the lock held."""
        key = (sys.intern(namespace), zone)
        found = self._zones.get(key)
        if found is None:
            found = self._zones[key] = _ZoneSeries()
        return found

    def forget(self, namespace: str, zone: str) -> None:
        with self._lock:
            self._zones.pop((namespace, zone), None)

    def describe(self) -> Iterable[Metric]:
        return [family.family() for family in _FAMILIES]

    def collect(self) -> Iterator[Metric]:
        """One family at a time: `serve_metrics` formats and sends each before the
        next is made, so only one family's samples are alive at once."""
        with self._lock:
            zones = [(key, _snapshot(series)) for key, series in self._zones.items()]
        for index, family in enumerate(_ZONE_FAMILIES):
            metric = family.family()
            for (namespace, zone), values in zones:
                value = values[index]
                if value is not None:
                    metric.add_metric([namespace, zone], float(value))
            yield metric
        for family, sample in (
            (REPLICA_SERIAL, _replica_serial),
            (REPLICA_IN_SYNC, _replica_in_sync),
            (REPLICA_SECONDS_BEHIND, _replica_seconds_behind),
        ):
            metric = family.family()
            for (namespace, zone), values in zones:
                for server, pod, engine, serial, in_sync, behind in values[-1]:
                    value = sample(serial, in_sync, behind)
                    if value is not None:
                        metric.add_metric([namespace, zone, server, pod, engine], value)
            yield metric


def _replica_serial(serial: int | None, in_sync: bool, behind: float) -> float | None:
    return None if serial is None else float(serial)


def _replica_in_sync(serial: int | None, in_sync: bool, behind: float) -> float | None:
    return 1.0 if in_sync else 0.0


def _replica_seconds_behind(serial: int | None, in_sync: bool, behind: float) -> float | None:
    return behind


def _snapshot(series: _ZoneSeries) -> tuple[Any, ...]:
    """The zone's values in the order of _ZONE_FAMILIES, then its replicas."""
    return (
        series.primary_serial,
        series.seen_at,
        series.refresh,
        series.expire,
        None if series.regressed is None else int(series.regressed),
        series.replicas,
    )


_ZONE_FAMILIES = (
    ZONE_PRIMARY_SERIAL,
    ZONE_LAST_PROBE,
    ZONE_SOA_REFRESH,
    ZONE_SOA_EXPIRE,
    ZONE_SERIAL_REGRESSED,
)
_FAMILIES = (*_ZONE_FAMILIES, REPLICA_SERIAL, REPLICA_IN_SYNC, REPLICA_SECONDS_BEHIND)
_SERIAL = _SerialCollector()
REGISTRY.register(_SERIAL)


def _zone_text(zone: dns.name.Name | str) -> str:
    return zone.to_text() if isinstance(zone, dns.name.Name) else zone


def record_serial_evaluation(
    namespace: str,
    zone: dns.name.Name | str,
    evaluation: SerialEvaluationLike,
    now: float | None = None,
) -> None:
    """Set the zone's and its replicas' samples; replicas no longer listed have none.

    The last-probe timestamp is when a primary last answered (the evaluation's
    memory), not `now`: a primary that stopped answering must show its age. A
    replica that does not answer has no serial sample (a remembered serial would
    look like one it still serves).
    """
    del now  # kept for the caller's convenience; the evaluation carries the time
    replicas = tuple(
        (
            replica.target.server,
            replica.target.pod,
            replica.target.engine,
            replica.serial,
            replica.in_sync,
            replica.seconds_behind,
        )
        for replica in evaluation.replicas
    )
    with _SERIAL._lock:
        series = _SERIAL.series(namespace, _zone_text(zone))
        series.primary_serial = evaluation.primary_serial
        series.refresh = evaluation.primary_refresh
        series.expire = evaluation.primary_expire
        series.regressed = evaluation.regressed
        seen_at = evaluation.history.primary_seen_at
        if seen_at is not None:
            series.seen_at = seen_at
        series.replicas = replicas


def record_primary_seen(namespace: str, zone: dns.name.Name | str, seen_at: float) -> None:
    """A primary answered what it answered before (the monitor evaluated nothing new)."""
    with _SERIAL._lock:
        _SERIAL.series(namespace, _zone_text(zone)).seen_at = seen_at


def forget_zone(namespace: str, zone: dns.name.Name | str) -> None:
    """Remove every serial series of a zone (deleted, or no longer served here)."""
    _SERIAL.forget(namespace, _zone_text(zone))


# ---- the /metrics server
#
# prometheus_client's own server formats every line of every family, joins them and
# sends the whole: at 10,000 Zones 140,000 samples, 17.4 MiB of text, a peak of
# ~68 MiB at every scrape (tracemalloc), and the small strings of its lines left
# Python's arenas partly used (bench/scale.py --allocators: 311 MiB after about ten
# scrapes, 52.6 MiB of it unused pools). This one sends the same text format a family
# at a time, each formatted by prometheus_client as it comes from its collector.


class _OneMetric(Collector):
    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterable[Metric]:
        return [self.metric]


def exposition(registry: Collector = REGISTRY, gzipped: bool = False) -> Iterator[bytes]:
    """The text format of `registry`, one family at a time (gzip's, when asked)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if gzipped else None
    for metric in registry.collect():
        text = generate_latest(_OneMetric(metric))
        yield compressor.compress(text) if compressor is not None else text
    if compressor is not None:
        yield compressor.flush()


def metrics_app(registry: Collector = REGISTRY) -> Callable[..., Iterable[bytes]]:
    """A WSGI app answering every GET with `exposition(registry)`, streamed."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        gzipped = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
        headers = [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return exposition(registry, gzipped)

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def serve_metrics(port: int, address: str = "0.0.0.0") -> WSGIServer:
    """/metrics of the default registry on `port`, in a daemon thread."""
    server = make_server(
        address, port, metrics_app(), ThreadingWSGIServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
