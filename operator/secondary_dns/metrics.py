"""The operator's Prometheus metrics, all prefixed `secondarydns_`.

They live in one module so names and help texts are reviewed in one place and
documented in the README from here.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
RECONCILE_SECONDS = Histogram(
    "secondarydns_reconcile_duration_seconds",
    "Time to reconcile one SecondaryServer: read, render, apply, status.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
