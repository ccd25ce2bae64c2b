"""A SecondaryServer's status and events: observe its pods, write only what changed.

The pods, their nodes' failure-domain labels, the StatefulSet's rollout and what
each pod's agent reports (api.agent_contract annotations) are read here and
handed to the pure `status.server.server_status`; the Events people see in
`kubectl describe` (a pod reloaded or rejected a configuration, the server
scaled) come from the same observation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from secondary_dns.api import (
    SECONDARY_SERVER_PLURAL,
    ObjectRef,
    SecondaryServerSpec,
    SpecError,
)
from secondary_dns.handlers.events import EventPoster
from secondary_dns.k8s.api import Cluster
from secondary_dns.render import RenderedConfig, children
from secondary_dns.status.server import ObservedPod, ServerObservation, server_status


class ServerStatusWriter:
    def __init__(
        self,
        cluster: Cluster,
        post_event: EventPoster,
        now: Callable[[], str],
        notify_address: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.post_event = post_event
        self.now = now
        self.notify_address = notify_address
        self._guard = threading.Lock()
        # server -> pod -> what its agent last reported (applied hash, config error),
        # so each reload or rejection is told once.
        self._reported: dict[ObjectRef, dict[str, tuple[str | None, str | None]]] = {}

    def observe(
        self,
        obj: Mapping[str, Any],
        spec: SecondaryServerSpec,
        rendered: RenderedConfig,
        apply_error: str | None,
        previous_replicas: int | None,
    ) -> tuple[ObservedPod, ...]:
        """Observe the server's pods, post what changed as Events, write its status."""
        ref = ObjectRef.of(obj)
        pods = self._pods(obj, spec)
        if previous_replicas is not None and previous_replicas != spec.replicas:
            self.post_event(
                obj,
                "Normal",
                "Scaled",
                f"scaled from {previous_replicas} to {spec.replicas} replicas",
            )
        self._pod_events(obj, pods)
        statefulset = self.cluster.get_child("apps/v1", "StatefulSet", ref.namespace, ref.name)
        self._write(
            obj,
            ServerObservation(
                generation=_generation(obj),
                replicas=spec.replicas,
                topology_key=spec.spread.topology_key,
                pods=pods,
                config_hash=rendered.config_hash,
                zones=len(rendered.plan),
                rollout_complete=rollout_complete(statefulset, spec.replicas),
                notify_address=self.notify_address,
                apply_error=apply_error,
                engine=rendered.engine,
                limitations=rendered.server_limitations,
            ),
        )
        return pods

    def invalid_spec(self, obj: Mapping[str, Any], error: SpecError) -> None:
        """Nothing is changed in the cluster; the status and an Event say which field and why."""
        observation = ServerObservation(
            generation=_generation(obj),
            replicas=0,
            topology_key="",
            pods=(),
            config_hash=None,
            zones=0,
            rollout_complete=False,
            spec_error=error,
        )
        if self._write(obj, observation):
            self.post_event(obj, "Warning", "InvalidSpec", str(error))

    def render_failed(
        self,
        obj: Mapping[str, Any],
        spec: SecondaryServerSpec,
        pods: tuple[ObservedPod, ...],
        error: Exception,
    ) -> None:
        observation = ServerObservation(
            generation=_generation(obj),
            replicas=spec.replicas,
            topology_key=spec.spread.topology_key,
            pods=pods,
            config_hash=None,
            zones=0,
            rollout_complete=False,
            apply_error=f"the configuration cannot be rendered: {error}",
        )
        if self._write(obj, observation):
            self.post_event(obj, "Warning", "RenderFailed", str(error))

    def forget(self, ref: ObjectRef) -> None:
        with self._guard:
            self._reported.pop(ref, None)

    def _pods(self, obj: Mapping[str, Any], spec: SecondaryServerSpec) -> tuple[ObservedPod, ...]:
        ref = ObjectRef.of(obj)
        labels = children.selector_labels(children.ServerIdentity(ref, obj["metadata"]["uid"], {}))
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        pods = self.cluster.list_pods(ref.namespace, selector)
        nodes = self.cluster.node_labels(
            p["spec"]["nodeName"] for p in pods if (p.get("spec") or {}).get("nodeName")
        )
        observed = (
            ObservedPod.from_object(
                pod, nodes.get(pod["spec"].get("nodeName", ""), {}), spec.spread.topology_key
            )
            for pod in pods
        )
        return tuple(sorted(observed, key=lambda pod: pod.name))

    def _pod_events(self, obj: Mapping[str, Any], pods: tuple[ObservedPod, ...]) -> None:
        with self._guard:
            reported = self._reported.setdefault(ObjectRef.of(obj), {})
            events = []
            for pod in pods:
                applied, error = pod.applied_config_hash or "", pod.config_error or ""
                before_applied, before_error = reported.get(pod.name, (None, None))
                if applied and before_applied not in (None, applied):
                    events.append(
                        (
                            "Normal",
                            "ConfigReloaded",
                            f"pod {pod.name} reloaded configuration {applied[:12]} "
                            "without a restart",
                        )
                    )
                if error and error != before_error:
                    events.append(
                        (
                            "Warning",
                            "ConfigRejected",
                            f"pod {pod.name} rejected a configuration and keeps its last good "
                            f"one: {error}",
                        )
                    )
                reported[pod.name] = (applied, error)
        for event_type, reason, message in events:
            self.post_event(obj, event_type, reason, message)

    def _write(self, obj: Mapping[str, Any], observation: ServerObservation) -> bool:
        now = self.now()
        ref = ObjectRef.of(obj)

        def compute(current: Mapping[str, Any]) -> Mapping[str, Any]:
            return server_status(observation, dict(current.get("status") or {}), now)

        return self.cluster.update_status(
            SECONDARY_SERVER_PLURAL, ref.namespace, ref.name, compute, cached=obj
        )


def rollout_complete(statefulset: Mapping[str, Any] | None, replicas: int) -> bool:
    """The StatefulSet has caught up with its own spec."""
    if statefulset is None:
        return False
    status = statefulset.get("status") or {}
    generation = statefulset["metadata"].get("generation", 0)
    return (
        status.get("observedGeneration", 0) >= generation
        and status.get("updatedReplicas", 0) == replicas
        and status.get("currentRevision") == status.get("updateRevision")
    )


def _generation(obj: Mapping[str, Any]) -> int:
    return int(obj["metadata"].get("generation", 0))
