"""kopf registrations: startup and cleanup; no logic of its own.

The controller, its watch caches and workers and the serial monitor are made at
startup and kept in kopf's memo (the operator-wide one), never in module
globals; the options come in that memo from `handlers/run.py`. kopf starts
only once this replica holds the Lease (handlers/run.py), so the caches, the
workers, every write and every status are the leader's alone.

SecondaryServers, Zones, Pods and the servers' children are watched by the
operator's own informers (handlers/watches.py), whose events mark work in the
controller's queue; worker threads do it. Secrets are not watched at all (that
would need list/watch on every Secret of the watched namespaces): a Zone's key
Secret is read by name, servers with a Zone waiting for its Secret are looked
at again every `secret_retry_seconds`, and a full resync every
`resync_seconds` puts drift right and picks up keys changed in place. Nothing
is kept in annotations, so a resync (or an operator restart) that finds
nothing to do writes nothing.

The NOTIFY relay is not here: it is its own Deployment (`secondary-dns
relay`), fed with the relay plans the reconciler publishes; it forwards what
it accepts and what it fanned out to the leader's NOTIFY listener
(dns/wakeup.py), which heats that zone in the serial monitor.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import kopf
import kubernetes

from secondary_dns.api.fields import parse_cidr_list
from secondary_dns.dns.wakeup import NotifyListener
from secondary_dns.handlers.controller import Controller
from secondary_dns.handlers.events import ApiEventPoster
from secondary_dns.handlers.malloc import release_free_memory
from secondary_dns.handlers.monitor import SerialMonitor
from secondary_dns.handlers.watches import add_watches
from secondary_dns.k8s.api import Cluster, KubernetesTransport, new_api_client
from secondary_dns.k8s.watch import ObjectWatch
from secondary_dns.render.relay import notify_address

PREFIX = "secondarydns.io"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorOptions:
    """What `secondary-dns operator` was asked to do (cli.py -> handlers/run.py -> memo)."""

    # The namespaces watched; none: every namespace.
    namespaces: tuple[str, ...] = ()
    kubeconfig: str | None = None
    # Every server is reconciled this often (drift, keys changed in place).
    resync_seconds: float = 60.0
    # How often servers with a Zone waiting for its TSIG Secret are looked at again.
    secret_retry_seconds: float = 5.0
    probe_seconds: float = 10.0
    repair: bool = True
    # Worker threads doing the queued work (servers and Zones in parallel, one key at a time).
    workers: int = 4
    # The operator's own namespace: the relay's plans go there, its Service is there.
    operator_namespace: str | None = None
    relay_service: str | None = None
    # An explicit NOTIFY address (overrides the relay Service's).
    notify_address: str | None = None
    # Networks no Zone's primary may be in (CIDR list text; e.g. the Service range).
    refused_primary_networks: str = ""
    # The DNS pods' image when a SecondaryServer names none (--image).
    image: str | None = None
    # Where the relay's forwarded NOTIFYs arrive (HOST:PORT; dns/wakeup.py), if anywhere.
    wakeup_listen: str | None = None


def controller(memo: kopf.Memo) -> Controller:
    found = memo.get("controller")
    if not isinstance(found, Controller):
        raise RuntimeError("the operator has not started")
    return found


def options(memo: kopf.Memo) -> OperatorOptions:
    found = memo.get("options")
    return found if isinstance(found, OperatorOptions) else OperatorOptions()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.posting.level = logging.INFO
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    # No watching of CRDs and namespaces for ones that appear later (it needs
    # list/watch on every CRD of the cluster): kopf watches nothing here.
    settings.scanning.disabled = True
    opts = options(memo)
    transport = KubernetesTransport(new_api_client(opts.kubeconfig))
    cluster = Cluster(transport)
    operator = Controller(
        cluster,
        ApiEventPoster(cluster),
        notify_address=opts.notify_address,
        relay_plans_namespace=opts.operator_namespace,
        # --refused-primary-networks (cli.py checked it): e.g. the Service range.
        refused_primary_networks=parse_cidr_list(
            opts.refused_primary_networks, "--refused-primary-networks"
        ),
        default_image=opts.image,
        # The chart's namespace (the pod's): the agents' port admits only it.
        operator_namespace=opts.operator_namespace,
    )
    memo["controller"] = operator
    add_watches(transport, operator, list(opts.namespaces))


@kopf.on.startup()
async def start_watches(memo: kopf.Memo, **_: Any) -> None:
    """Informers, then (once every cache is filled) the workers, the resync, the relay Service."""
    operator = controller(memo)
    opts = options(memo)
    stop = threading.Event()
    memo["stop"] = stop
    operator.listing = True
    operator.cluster.cache.start(stop)
    while not await asyncio.to_thread(operator.cluster.cache.wait_synced, 1.0):
        log.info("waiting for the watch caches to list everything")
    operator.caches_synced()
    await asyncio.to_thread(operator.sweep_relay_plans)
    if opts.relay_service and opts.operator_namespace and opts.notify_address is None:
        # The NOTIFY address before the first reconcile: a status written without it
        # and again with it would be two writes a restart has no reason to make.
        relay_service = _watch_relay_service(operator, opts, stop)
        log.info("reading the relay Service %s", opts.relay_service)
        while not relay_service.synced:
            await asyncio.sleep(0.1)
        # Its listing's callback may still be running: the same (idempotent) update here.
        _relay_service_changed(operator, relay_service)
    for index in range(opts.workers):
        threading.Thread(
            target=operator.run_worker, args=(stop,), name=f"worker-{index}", daemon=True
        ).start()
    threading.Thread(
        target=_resync, args=(operator, opts, stop), name="resync", daemon=True
    ).start()


def _resync(operator: Controller, opts: OperatorOptions, stop: threading.Event) -> None:
    """Level-triggered catch-up: every server at once (whatever changed while no operator
    ran), then every `resync_seconds`; in between, the servers waiting for a Secret."""
    last_full = -float("inf")
    while not stop.is_set():
        full = time.monotonic() - last_full >= opts.resync_seconds
        if full:
            last_full = time.monotonic()
        try:
            operator.resync(full)
        except Exception:  # the next round tries again; one failure must not end resyncs
            log.exception("resync failed")
        # What a burst freed (a round's reports, a publish, the status writes of many
        # Zones) stays in glibc's heaps otherwise; a few ms each time (handlers/malloc.py).
        release_free_memory()
        stop.wait(min(opts.secret_retry_seconds, opts.resync_seconds))


def _watch_relay_service(
    operator: Controller, opts: OperatorOptions, stop: threading.Event
) -> ObjectWatch:
    """Follow the relay Service (its ClusterIP, its load balancer's ingress) into status."""
    assert opts.relay_service and opts.operator_namespace
    core = kubernetes.client.CoreV1Api(new_api_client(opts.kubeconfig))

    watch = ObjectWatch(
        f"service {opts.relay_service}",
        core.list_namespaced_service,
        {
            "namespace": opts.operator_namespace,
            "field_selector": f"metadata.name={opts.relay_service}",
        },
        lambda: _relay_service_changed(operator, watch),
        stop,
    )
    watch.start()
    return watch


def _relay_service_changed(operator: Controller, watch: ObjectWatch) -> None:
    services = watch.items()
    operator.set_notify_address(notify_address(services[0] if services else None))


@kopf.on.startup()
async def start_dns(memo: kopf.Memo, **_: Any) -> None:
    """The serial monitor in kopf's event loop; the listener for the relay's NOTIFYs."""
    operator = controller(memo)
    opts = options(memo)
    monitor = SerialMonitor(
        operator.monitored_zones,
        operator.zone_status,
        None,
        steady_interval=opts.probe_seconds,
        # Off only to measure the refresh timer alone (bench/propagation.py).
        repair=opts.repair,
    )
    wakeup: NotifyListener | None = None
    if opts.wakeup_listen:
        # A NOTIFY the relay accepted means a new serial of that zone is on its way:
        # probe it (only it) fast, and once more when the relay's fan-out was
        # acknowledged (it forwards that too, with the serial).
        wakeup = NotifyListener(on_notify=monitor.notified)
        listen_host, _colon, listen_port = opts.wakeup_listen.rpartition(":")
        await wakeup.start(listen_host.strip("[]") or "0.0.0.0", int(listen_port))
        monitor.wakeup = wakeup
    memo["wakeup"] = wakeup
    operator.on_change = monitor.poke
    operator.zone_status.on_stale_serial = monitor.notified
    memo["tasks"] = [asyncio.create_task(monitor.run(), name="serial-monitor")]


@kopf.on.cleanup()
async def stop_dns(memo: kopf.Memo, **_: Any) -> None:
    tasks: list[asyncio.Task[None]] = memo.get("tasks") or []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stop = memo.get("stop")
    if isinstance(stop, threading.Event):
        stop.set()
    wakeup = memo.get("wakeup")
    if isinstance(wakeup, NotifyListener):
        await wakeup.stop()
