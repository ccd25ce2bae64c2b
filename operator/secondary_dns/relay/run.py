"""`secondary-dns relay`: the NOTIFY relay as a stateless Deployment of its own.

Each replica watches, read-only, the relay plans the operator publishes in its
namespace (Secrets labelled `secondarydns.io/relay-plan`) and the Pods of every
SecondaryServer, derives its routes from them (relay/routes.py) and serves
NOTIFY on one port, UDP and TCP. It forwards every NOTIFY it accepts to the
operator's leader too (where its Lease says), whose serial monitor then probes
fast. It writes nothing to the API and keeps no state, so any number of
replicas sit behind one Service, and they keep relaying while the operator's
leader is being replaced. It is Ready once the plans and Pods have been listed
(a replica without routes would drop every NOTIFY).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Mapping
from typing import Any

import dns.name
import kubernetes
from prometheus_client import start_http_server

from secondary_dns import metrics
from secondary_dns.api import TsigKey
from secondary_dns.api.agent_contract import LABEL_SERVER
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.notify import send_notify
from secondary_dns.dns.relay import NotifyRelay, RelayRoute
from secondary_dns.health import serve_health
from secondary_dns.k8s.api import new_api_client
from secondary_dns.k8s.watch import ObjectWatch
from secondary_dns.relay.routes import relay_routes, replica_pods
from secondary_dns.render.relay import (
    ANNOTATION_WAKEUP_ADDRESS,
    LABEL_RELAY_PLAN,
    RelayPlan,
    RelayPlanError,
    parse_relay_plan_secret,
)

log = logging.getLogger(__name__)
EXIT_BAD_ARGUMENTS = 2


def listen_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class RelayInputs:
    """The watches and what they make of the relay's routes (and where the leader is)."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        namespace: str,
        relay: NotifyRelay,
        lease_name: str | None = None,
    ):
        core = kubernetes.client.CoreV1Api(api_client)
        self.relay = relay
        self.stop = threading.Event()
        self._guard = threading.Lock()
        self._unreadable: set[str] = set()
        # Where the operator's leader listens for forwarded NOTIFYs (its Lease says).
        self.leader: ProbeTarget | None = None
        self.lease: ObjectWatch | None = None
        if lease_name:
            self.lease = ObjectWatch(
                f"lease {lease_name}",
                kubernetes.client.CoordinationV1Api(api_client).list_namespaced_lease,
                {"namespace": namespace, "field_selector": f"metadata.name={lease_name}"},
                self.lease_changed,
                self.stop,
            )
        self.plans = ObjectWatch(
            "relay plans",
            core.list_namespaced_secret,
            {"namespace": namespace, "label_selector": LABEL_RELAY_PLAN},
            self.changed,
            self.stop,
        )
        self.pods = ObjectWatch(
            "replica pods",
            core.list_pod_for_all_namespaces,
            {"label_selector": LABEL_SERVER},
            self.changed,
            self.stop,
        )

    @property
    def synced(self) -> bool:
        return self.plans.synced and self.pods.synced

    def start(self) -> None:
        self.plans.start()
        self.pods.start()
        if self.lease is not None:
            self.lease.start()

    def lease_changed(self) -> None:
        assert self.lease is not None
        leases = self.lease.items()
        self.leader = wakeup_target(leases[0]) if leases else None

    def _plans(self) -> list[RelayPlan]:
        plans = []
        for secret in self.plans.items():
            name = str((secret.get("metadata") or {}).get("name"))
            try:
                plans.append(parse_relay_plan_secret(secret))
            except RelayPlanError as error:
                if name not in self._unreadable:
                    log.warning("ignoring a relay plan: %s", error)
                self._unreadable.add(name)
            else:
                self._unreadable.discard(name)
        return plans

    def changed(self) -> None:
        # Called from either watch thread: one recomputation at a time, from both.
        with self._guard:
            if not self.synced:
                return
            routes = relay_routes(self._plans(), replica_pods(self.pods.items()))
            self.relay.set_routes(routes)
            metrics.RELAY_ZONES.set(len(routes))
            metrics.RELAY_TARGETS.set(sum(len(route.targets) for route in routes))


def wakeup_target(lease: Mapping[str, Any]) -> ProbeTarget | None:
    """Where the Lease's holder listens for forwarded NOTIFYs; None while no one holds it."""
    if not (lease.get("spec") or {}).get("holderIdentity"):
        return None
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    host, _, port = str(annotations.get(ANNOTATION_WAKEUP_ADDRESS, "")).rpartition(":")
    if not host or not port.isdigit():
        return None
    return ProbeTarget(host.strip("[]"), int(port))


class LeaderForwarder:
    """Tells the operator's leader of every NOTIFY accepted, and again once its fan-out
    was acknowledged (with the serial announced): its serial monitor probes that zone
    fast (`SerialMonitor.notified`).

    Signed with the relay key of a server that serves the zone (the leader's
    listener accepts nothing else); one attempt, no retries: the monitor's
    steady probes catch anything a lost datagram misses.
    """

    def __init__(self, inputs: RelayInputs) -> None:
        self.inputs = inputs
        self.relay = inputs.relay
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, route: RelayRoute) -> None:
        """A NOTIFY was accepted (NotifyRelay.on_notify)."""
        self.fanned_out(route, None)

    def fanned_out(self, route: RelayRoute, serial: int | None) -> None:
        """The replicas acknowledged the fan-out (NotifyRelay.on_fanned_out)."""
        target = self.inputs.leader
        if target is None or not route.targets:
            return
        key = route.targets[0][1]
        task = asyncio.get_running_loop().create_task(self._send(route.zone, target, key, serial))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, zone: dns.name.Name, target: ProbeTarget, key: TsigKey, serial: int | None
    ) -> None:
        error = await send_notify(zone, target, key=key, soa_serial=serial, attempts=1, timeout=1.0)
        if error is not None:
            log.debug("forwarding the NOTIFY for %s to the leader failed: %s", zone, error)


async def serve(relay: NotifyRelay, host: str, port: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await relay.start(host, port)
    await stopping.wait()
    log.info("stopping: no more NOTIFYs accepted, fan-outs in flight finish")
    await relay.stop()


def run(
    namespace: str | None,
    listen: str,
    metrics_port: int,
    health_port: int,
    verbose: bool,
    lease_name: str | None = None,
) -> int:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not namespace:
        log.error("no namespace to read relay plans from: give --namespace (the operator's)")
        return EXIT_BAD_ARGUMENTS
    host, port = listen_address(listen)
    if metrics_port:
        start_http_server(metrics_port)
    relay = NotifyRelay()
    try:
        api_client = new_api_client(os.environ.get("KUBECONFIG") or None)
    except kubernetes.config.ConfigException as error:
        log.error(
            "no Kubernetes credentials (%s): run it in a pod with its service account, "
            "or set KUBECONFIG",
            error,
        )
        return EXIT_BAD_ARGUMENTS
    inputs = RelayInputs(api_client, namespace, relay, lease_name)
    forwarder = LeaderForwarder(inputs)
    relay.on_notify = forwarder
    relay.on_fanned_out = forwarder.fanned_out
    if health_port:
        serve_health(health_port, ready=lambda: inputs.synced)
    inputs.start()
    try:
        asyncio.run(serve(relay, host, port))
    finally:
        inputs.stop.set()
    return 0
