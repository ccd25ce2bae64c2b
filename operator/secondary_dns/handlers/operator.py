"""kopf registrations: events in, `Reconciler` calls out; no logic of its own.

Only `on.event` handlers and a timer are used: they keep no per-object state
in annotations, so a resync (or an operator restart) that finds nothing to do
writes nothing. kopf's progress storage and finalizer are still configured
with the project's own prefix, for any handler that may need them later.
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
from secondary_dns.dns.relay import NotifyRelay
from secondary_dns.handlers.monitor import SerialMonitor
from secondary_dns.handlers.reconcile import Reconciler
from secondary_dns.k8s.api import Cluster, KubernetesTransport, new_api_client

PREFIX = "secondarydns.io"
log = logging.getLogger(__name__)

_reconciler: Reconciler | None = None
_monitor: SerialMonitor | None = None
_relay: NotifyRelay | None = None
_tasks: list[asyncio.Task[None]] = []


def reconciler() -> Reconciler:
    if _reconciler is None:
        raise RuntimeError("the operator has not started")
    return _reconciler


def _post_event(obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
    body: kopf.RawBody = {
        "apiVersion": str(obj.get("apiVersion")),
        "kind": str(obj.get("kind")),
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
        },
    }
    kopf.event(kopf.Body(body), type=event_type, reason=reason, message=message[:1024])


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _reconciler
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
    _reconciler = Reconciler(
        cluster, _post_event, notify_address=os.environ.get("SDNS_NOTIFY_ADDRESS") or None
    )


def _listen_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


@kopf.on.startup()
async def start_dns(**_: Any) -> None:
    """The NOTIFY relay and the serial monitor, in kopf's own event loop."""
    global _monitor, _relay
    listen = os.environ.get("SDNS_RELAY_LISTEN", "0.0.0.0:5353")
    if listen != "off":
        _relay = NotifyRelay(on_notify=lambda zone: _monitor.poke() if _monitor else None)
        host, port = _listen_address(listen)
        await _relay.start(host, port)
        log.info("NOTIFY relay listening on %s:%d", host, _relay.bound_port)
    _monitor = SerialMonitor(
        reconciler(),
        _relay,
        steady_interval=float(os.environ.get("SDNS_PROBE_SECONDS", "10")),
        # Off only to measure the refresh timer alone (bench/propagation.py).
        repair=os.environ.get("SDNS_REPAIR", "on") != "off",
    )
    reconciler().on_change = _monitor.poke
    _tasks.append(asyncio.create_task(_monitor.run(), name="serial-monitor"))


@kopf.on.cleanup()
async def stop_dns(**_: Any) -> None:
    for task in _tasks:
        task.cancel()
    await asyncio.gather(*_tasks, return_exceptions=True)
    if _relay is not None:
        await _relay.stop()


@kopf.on.event(GROUP, VERSION, SECONDARY_SERVER_PLURAL)
def server_event(
    type: str | None, body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> None:
    if reconciler().worth_reconciling(type, body):
        reconciler().reconcile_server(str(namespace), name)


@kopf.timer(
    GROUP,
    VERSION,
    SECONDARY_SERVER_PLURAL,
    interval=float(os.environ.get("SDNS_RESYNC_SECONDS", "60")),
    sharp=False,
)
def server_resync(namespace: str | None, name: str, **_: Any) -> None:
    # Level-triggered: whatever drifted since the last event is put right here.
    reconciler().reconcile_server(str(namespace), name)


@kopf.on.event(GROUP, VERSION, ZONE_PLURAL)
def zone_event(
    type: str | None, body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> None:
    if reconciler().worth_reconciling(type, body):
        reconciler().zone_changed(str(namespace), name)


def _referenced_secret(namespace: str | None, name: str | None, **_: Any) -> bool:
    return bool(namespace and name) and reconciler().uses_secret(str(namespace), str(name))


@kopf.on.event("", "v1", "secrets", labels={LABEL_SERVER: kopf.ABSENT}, when=_referenced_secret)
def secret_event(namespace: str | None, name: str, **_: Any) -> None:
    # A TSIG key appeared, changed or went away: the servers using it re-render.
    reconciler().secret_changed(str(namespace), name)


@kopf.on.event("", "v1", "pods", labels={LABEL_SERVER: kopf.PRESENT})
def pod_event(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    reconciler().refresh_server_status(str(namespace), labels[LABEL_SERVER])


@kopf.on.event("apps", "v1", "statefulsets", labels={LABEL_SERVER: kopf.PRESENT})
def statefulset_event(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    reconciler().refresh_server_status(str(namespace), labels[LABEL_SERVER])
