"""kopf registrations: events in, `Controller` calls out; no logic of its own.

The controller, the serial monitor and the NOTIFY relay are made at startup and
kept in kopf's memo (the operator-wide one, of which every object's memo is a
copy), never in module globals. Only `on.event` handlers and a timer are used:
they keep no per-object state in annotations, so a resync (or an operator
restart) that finds nothing to do writes nothing. kopf's progress storage and
finalizer are still configured with the project's own prefix, for any handler
that may need them later.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from secondary_dns.api import GROUP, SECONDARY_SERVER_PLURAL, VERSION, ZONE_PLURAL
from secondary_dns.api.agent_contract import LABEL_SERVER
from secondary_dns.api.fields import REFUSED_PRIMARY_NETWORKS_ENV, parse_cidr_list
from secondary_dns.dns.relay import NotifyRelay, RelayThread
from secondary_dns.handlers.controller import Controller
from secondary_dns.handlers.events import post_kopf_event
from secondary_dns.handlers.monitor import SerialMonitor
from secondary_dns.k8s.api import Cluster, KubernetesTransport, new_api_client

PREFIX = "secondarydns.io"
log = logging.getLogger(__name__)


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
    cluster = Cluster(KubernetesTransport(new_api_client(os.environ.get("KUBECONFIG") or None)))
    memo["controller"] = Controller(
        cluster,
        post_kopf_event,
        notify_address=os.environ.get("SDNS_NOTIFY_ADDRESS") or None,
        # --refused-primary-networks (cli.py checked it): e.g. the Service range.
        refused_primary_networks=parse_cidr_list(
            os.environ.get(REFUSED_PRIMARY_NETWORKS_ENV, ""), REFUSED_PRIMARY_NETWORKS_ENV
        ),
        default_image=os.environ.get("SDNS_IMAGE") or None,
    )


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
        # A NOTIFY means a new serial is on its way: probe fast for a while.
        # poke() is thread-safe: the relay calls it from its own thread.
        relay = RelayThread(NotifyRelay(on_notify=lambda route: monitor.poke()))
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
    relay = memo.get("relay")
    if isinstance(relay, RelayThread):
        await asyncio.to_thread(relay.stop)


@kopf.on.event(GROUP, VERSION, SECONDARY_SERVER_PLURAL)
def server_event(
    type: str | None,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    if controller(memo).worth_reconciling(type, body):
        controller(memo).reconcile_server(str(namespace), name)


@kopf.timer(
    GROUP,
    VERSION,
    SECONDARY_SERVER_PLURAL,
    interval=float(os.environ.get("SDNS_RESYNC_SECONDS", "60")),
    sharp=False,
)
def server_resync(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    # Level-triggered: whatever drifted since the last event is put right here.
    controller(memo).reconcile_server(str(namespace), name)


@kopf.on.event(GROUP, VERSION, ZONE_PLURAL)
def zone_event(
    type: str | None,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    if controller(memo).worth_reconciling(type, body):
        controller(memo).zone_changed(str(namespace), name)


def _referenced_secret(namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> bool:
    return bool(namespace and name) and controller(memo).uses_secret(str(namespace), str(name))


@kopf.on.event("", "v1", "secrets", labels={LABEL_SERVER: kopf.ABSENT}, when=_referenced_secret)
def secret_event(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    # A TSIG key appeared, changed or went away: the servers using it re-render.
    controller(memo).secret_changed(str(namespace), name)


@kopf.on.event("", "v1", "pods", labels={LABEL_SERVER: kopf.PRESENT})
def pod_event(namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    controller(memo).refresh_server_status(str(namespace), labels[LABEL_SERVER])


@kopf.on.event("apps", "v1", "statefulsets", labels={LABEL_SERVER: kopf.PRESENT})
def statefulset_event(
    namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **_: Any
) -> None:
    controller(memo).refresh_server_status(str(namespace), labels[LABEL_SERVER])
