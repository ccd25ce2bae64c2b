"""Start kopf with the operator's handlers, metrics and liveness endpoints."""

from __future__ import annotations

import asyncio
import logging
import os

import kopf
from prometheus_client import start_http_server


def run(namespaces: list[str], metrics_port: int, health_port: int, verbose: bool) -> int:
    # Importing registers the handlers with kopf's default registry.
    from secondary_dns.handlers import operator  # noqa: F401

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if metrics_port:
        start_http_server(metrics_port)
    # The operator's own watches (handlers/watches.py) cover the namespaces kopf does.
    os.environ["SDNS_WATCH_NAMESPACES"] = ",".join(namespaces)
    liveness = f"http://0.0.0.0:{health_port}/healthz" if health_port else None
    try:
        kopf.run(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    return 0
