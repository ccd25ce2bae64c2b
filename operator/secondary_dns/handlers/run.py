"""Start the operator: metrics and health first, then the Lease, then kopf.

Every replica serves /metrics and /healthz from the start; only the replica
that holds the Lease (k8s/lease.py) starts kopf, and with it the watch caches,
the workers and the serial monitor (handlers/operator.py): only the leader
reconciles and writes status. A standby keeps no caches (no API traffic and no
memory for objects it does not work on); the takeover time includes one list
of each watched kind. A leader that cannot renew its Lease exits at once with status 1 (its
Deployment restarts it as a candidate), as controller-runtime does: carrying on
would make two leaders. A leader stopped by SIGTERM releases the Lease on its
way out, so a rolling update hands over within a retry period.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import kopf

from secondary_dns import metrics
from secondary_dns.handlers.malloc import limit_malloc_arenas
from secondary_dns.handlers.operator import OperatorOptions
from secondary_dns.health import serve_health
from secondary_dns.k8s.api import KubernetesTransport, new_api_client
from secondary_dns.k8s.lease import LeaderElector, LeaseConfig

log = logging.getLogger(__name__)
EXIT_LOST_LEASE = 1


def _lost_lease() -> None:
    logging.shutdown()
    sys.stderr.flush()
    # Stop now, in the middle of whatever kopf does: another replica leads.
    os._exit(EXIT_LOST_LEASE)


def run(
    options: OperatorOptions,
    metrics_port: int,
    health_port: int,
    verbose: bool,
    lease: LeaseConfig | None,
) -> int:
    # Before any thread starts (each would take an arena of its own).
    limit_malloc_arenas()
    # Importing registers the handlers with kopf's default registry.
    from secondary_dns.handlers import operator  # noqa: F401

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if metrics_port:
        metrics.serve_metrics(metrics_port)
    if health_port:
        serve_health(health_port)
    elector: LeaderElector | None = None
    metrics.LEADER.set(0)
    if lease is not None:
        transport = KubernetesTransport(new_api_client(options.kubeconfig), count_writes=False)
        elector = LeaderElector(transport, lease)
        try:
            if not elector.acquire():
                return 0
        except KeyboardInterrupt:
            return 0
        elector.keep_renewing(_lost_lease)
    metrics.LEADER.set(1)
    memo = kopf.Memo(options=options)
    try:
        kopf.run(
            standalone=True,
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
            memo=memo,
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        metrics.LEADER.set(0)
        if elector is not None:
            elector.release()
    return 0
