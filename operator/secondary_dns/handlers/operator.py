"""kopf registrations: startup and cleanup, and the one watch kopf keeps; no logic of its own.

The controller, its watch caches and workers, the serial monitor and the NOTIFY
relay are made at startup and kept in kopf's memo (the operator-wide one),
never in module globals. SecondaryServers, Zones, Pods and the servers'
children are watched by the operator's own informers (handlers/watches.py),
whose events mark work in the controller's queue; worker threads do it. kopf
watches only Secrets (filtered to the ones a Zone uses), and a resync thread
marks every server at SDNS_RESYNC_SECONDS so drift is put right. Nothing is kept
in annotations, so a resync (or an operator restart) that finds nothing to do
writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import kopf

from secondary_dns.api.agent_contract import LABEL_SERVER
from secondary_dns.api.fields import REFUSED_PRIMARY_NETWORKS_ENV, parse_cidr_list
from secondary_dns.dns.relay import NotifyRelay, RelayThread
from secondary_dns.handlers.controller import Controller
from secondary_dns.handlers.events import ApiEventPoster
from secondary_dns.handlers.monitor import SerialMonitor
from secondary_dns.handlers.watches import add_watches
from secondary_dns.k8s.api import Cluster, KubernetesTransport, new_api_client

PREFIX = "secondarydns.io"
log = logging.getLogger(__name__)
# Worker threads doing the queued work (servers and Zones in parallel, one key at a time).
WORKERS = int(os.environ.get("SDNS_WORKERS", "4"))
RESYNC_SECONDS = float(os.environ.get("SDNS_RESYNC_SECONDS", "60"))


def controller(memo: kopf.Memo) -> Controller:
    found = memo.get("controller")
    if not isinstance(found, Controller):
        raise RuntimeError("the operator has not started")
    return found


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.posting.level = logging.INFO
    # Watches are re-established well before load balancers cut idle streams.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    transport = KubernetesTransport(new_api_client(os.environ.get("KUBECONFIG") or None))
    cluster = Cluster(transport)
    operator = Controller(
        cluster,
        ApiEventPoster(cluster),
        notify_address=os.environ.get("SDNS_NOTIFY_ADDRESS") or None,
        # --refused-primary-networks (cli.py checked it): e.g. the Service range.
        refused_primary_networks=parse_cidr_list(
            os.environ.get(REFUSED_PRIMARY_NETWORKS_ENV, ""), REFUSED_PRIMARY_NETWORKS_ENV
        ),
        default_image=os.environ.get("SDNS_IMAGE") or None,
        # The chart sets it from the downward API; outside a cluster there is none.
        operator_namespace=os.environ.get("SDNS_OPERATOR_NAMESPACE") or None,
    )
    memo["controller"] = operator
    namespaces = [n for n in os.environ.get("SDNS_WATCH_NAMESPACES", "").split(",") if n]
    add_watches(transport, operator, namespaces)


@kopf.on.startup()
async def start_watches(memo: kopf.Memo, **_: Any) -> None:
    """Informers, then (once every cache is filled) the workers and the resync."""
    operator = controller(memo)
    stop = threading.Event()
    memo["stop"] = stop
    operator.cluster.cache.start(stop)
    while not await asyncio.to_thread(operator.cluster.cache.wait_synced, 1.0):
        log.info("waiting for the watch caches to list everything")
    for index in range(WORKERS):
        threading.Thread(
            target=operator.run_worker, args=(stop,), name=f"worker-{index}", daemon=True
        ).start()

    def resync() -> None:
        # The first resync at once: whatever changed while no operator ran.
        while not stop.is_set():
            operator.resync()
            stop.wait(RESYNC_SECONDS)

    threading.Thread(target=resync, name="resync", daemon=True).start()


def _listen_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


@kopf.on.startup()
async def start_dns(memo: kopf.Memo, **_: Any) -> None:
    """The serial monitor in kopf's event loop; the NOTIFY relay in a thread of its own.

    The relay parses whatever anyone sends it: in its own event loop, a flood of
    it never delays a reconcile or a status write (docs/notify-relay.md).
    """
    operator = controller(memo)
    monitor = SerialMonitor(
        operator.monitored_zones,
        operator.zone_status,
        None,
        steady_interval=float(os.environ.get("SDNS_PROBE_SECONDS", "10")),
        # Off only to measure the refresh timer alone (bench/propagation.py).
        repair=os.environ.get("SDNS_REPAIR", "on") != "off",
    )
    operator.on_change = monitor.poke
    relay: RelayThread | None = None
    listen = os.environ.get("SDNS_RELAY_LISTEN", "0.0.0.0:5353")
    if listen != "off":
        # A NOTIFY means a new serial of that zone is on its way: probe it (only it)
        # fast, and once more the moment the replicas acknowledged the fan-out.
        # notified() is thread-safe: the relay calls it from its own thread.
        relay = RelayThread(
            NotifyRelay(
                on_notify=lambda route: monitor.notified(route.ref),
                on_fanned_out=lambda route, serial: monitor.notified(route.ref, serial),
            )
        )
        host, port = _listen_address(listen)
        await asyncio.to_thread(relay.start, host, port)
        log.info("NOTIFY relay listening on %s:%d", host, relay.relay.bound_port)
        monitor.relay = relay.relay
    memo["relay"] = relay
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
    relay = memo.get("relay")
    if isinstance(relay, RelayThread):
        await asyncio.to_thread(relay.stop)


def _referenced_secret(namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> bool:
    return bool(namespace and name) and controller(memo).uses_secret(str(namespace), str(name))


@kopf.on.event("", "v1", "secrets", labels={LABEL_SERVER: kopf.ABSENT}, when=_referenced_secret)
def secret_event(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    # A TSIG key appeared, changed or went away: the servers using it re-render.
    controller(memo).secret_changed(str(namespace), name)
