"""The operator's Prometheus metrics, all prefixed `secondarydns_`.

They live in one module so names and help texts are reviewed in one place and
documented in the README from here.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import dns.name
from prometheus_client import Counter, Gauge, Histogram

API_WRITES = Counter(
    "secondarydns_api_writes_total",
    "Mutating requests (apply, status patch, delete) the operator sent to the Kubernetes API.",
    ["method"],
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

# ---- serial status, set from each evaluation (secondary_dns.dns.gauges)
ZONE_PRIMARY_SERIAL = Gauge(
    "secondarydns_zone_primary_serial",
    "The SOA serial the zone's primaries serve (the newest when they disagree).",
    ["namespace", "zone"],
)
ZONE_LAST_PROBE = Gauge(
    "secondarydns_zone_last_probe_timestamp_seconds",
    "When a primary of the zone last answered an SOA probe (Unix time).",
    ["namespace", "zone"],
)
ZONE_SOA_REFRESH = Gauge(
    "secondarydns_zone_soa_refresh_seconds",
    "The SOA refresh interval of the primary's copy of the zone: a replica behind for "
    "longer has missed a refresh (RFC 2182 section 7).",
    ["namespace", "zone"],
)
ZONE_SOA_EXPIRE = Gauge(
    "secondarydns_zone_soa_expire_seconds",
    "The SOA expire interval of the primary's copy of the zone.",
    ["namespace", "zone"],
)
ZONE_SERIAL_REGRESSED = Gauge(
    "secondarydns_zone_serial_regressed",
    "1 while the primary serves a serial older (RFC 1982) than the replicas: they keep "
    "the newer copy and will not transfer until the serial passes theirs.",
    ["namespace", "zone"],
)
REPLICA_SERIAL = Gauge(
    "secondarydns_replica_serial",
    "The SOA serial a replica pod serves for the zone; absent while it does not answer.",
    ["namespace", "zone", "server", "pod", "engine"],
)
REPLICA_IN_SYNC = Gauge(
    "secondarydns_replica_in_sync",
    "1 when the replica pod serves the primary's serial, else 0.",
    ["namespace", "zone", "server", "pod", "engine"],
)
REPLICA_SECONDS_BEHIND = Gauge(
    "secondarydns_replica_seconds_behind",
    "How long the replica pod has been continuously behind the primary's serial (0 if not).",
    ["namespace", "zone", "server", "pod", "engine"],
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


# Prometheus keeps a labelled series until it is removed: a pod gone by a scale-down
# would report its last serial forever. Remember which replica series each zone set.
_series_lock = threading.Lock()
_replica_series: dict[tuple[str, str], set[tuple[str, str, str]]] = {}


def _zone_text(zone: dns.name.Name | str) -> str:
    return zone.to_text() if isinstance(zone, dns.name.Name) else zone


def _remove(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass  # never set: nothing to remove


def _remove_replica(namespace: str, zone: str, server: str, pod: str, engine: str) -> None:
    for gauge in (REPLICA_SERIAL, REPLICA_IN_SYNC, REPLICA_SECONDS_BEHIND):
        _remove(gauge, namespace, zone, server, pod, engine)


def record_serial_evaluation(
    namespace: str,
    zone: dns.name.Name | str,
    evaluation: SerialEvaluationLike,
    now: float | None = None,
) -> None:
    """Set the zone's and its replicas' gauges; remove series of replicas no longer listed.

    The last-probe timestamp is when a primary last answered (the evaluation's
    memory), not `now`: a primary that stopped answering must show its age.
    """
    del now  # kept for the caller's convenience; the evaluation carries the time
    zone_text = _zone_text(zone)
    with _series_lock:
        if evaluation.primary_serial is not None:
            ZONE_PRIMARY_SERIAL.labels(namespace, zone_text).set(evaluation.primary_serial)
        else:
            _remove(ZONE_PRIMARY_SERIAL, namespace, zone_text)
        for gauge, value in (
            (ZONE_SOA_REFRESH, evaluation.primary_refresh),
            (ZONE_SOA_EXPIRE, evaluation.primary_expire),
        ):
            if value is not None:
                gauge.labels(namespace, zone_text).set(value)
            else:
                _remove(gauge, namespace, zone_text)
        ZONE_SERIAL_REGRESSED.labels(namespace, zone_text).set(1 if evaluation.regressed else 0)
        seen_at = evaluation.history.primary_seen_at
        if seen_at is not None:
            ZONE_LAST_PROBE.labels(namespace, zone_text).set(seen_at)
        current: set[tuple[str, str, str]] = set()
        for replica in evaluation.replicas:
            server, pod, engine = replica.target.server, replica.target.pod, replica.target.engine
            current.add((server, pod, engine))
            labels = (namespace, zone_text, server, pod, engine)
            if replica.serial is not None:
                REPLICA_SERIAL.labels(*labels).set(replica.serial)
            else:
                # No answer: a remembered serial would look like one it still serves.
                _remove(REPLICA_SERIAL, *labels)
            REPLICA_IN_SYNC.labels(*labels).set(1 if replica.in_sync else 0)
            REPLICA_SECONDS_BEHIND.labels(*labels).set(replica.seconds_behind)
        key = (namespace, zone_text)
        for server, pod, engine in _replica_series.get(key, set()) - current:
            _remove_replica(namespace, zone_text, server, pod, engine)
        _replica_series[key] = current


def record_primary_seen(namespace: str, zone: dns.name.Name | str, seen_at: float) -> None:
    """A primary answered what it answered before (the monitor evaluated nothing new)."""
    with _series_lock:
        ZONE_LAST_PROBE.labels(namespace, _zone_text(zone)).set(seen_at)


def forget_zone(namespace: str, zone: dns.name.Name | str) -> None:
    """Remove every serial series of a zone (deleted, or no longer served here)."""
    zone_text = _zone_text(zone)
    with _series_lock:
        for server, pod, engine in _replica_series.pop((namespace, zone_text), set()):
            _remove_replica(namespace, zone_text, server, pod, engine)
        for gauge in (
            ZONE_PRIMARY_SERIAL,
            ZONE_LAST_PROBE,
            ZONE_SOA_REFRESH,
            ZONE_SOA_EXPIRE,
            ZONE_SERIAL_REGRESSED,
        ):
            _remove(gauge, namespace, zone_text)
