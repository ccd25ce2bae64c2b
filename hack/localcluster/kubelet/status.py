"""The Pod's status as kubelet writes it (generateAPIPodStatus, getPhase), from what the runner saw.

Pure: the runner describes each container (ContainerView); this module turns
that into `status`: phase, conditions (lastTransitionTime kept while a
condition does not change), pod and host IPs, and container statuses with
kubelet's reasons and messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    started_at: str | None
    finished_at: str | None
    container_id: str | None = None
    message: str | None = None
    signal: int | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"exitCode": self.exit_code, "reason": self.reason}
        for key, value in (
            ("startedAt", self.started_at),
            ("finishedAt", self.finished_at),
            ("containerID", self.container_id),
            ("message", self.message),
            ("signal", self.signal),
        ):
            if value is not None:
                data[key] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Terminated:
        return cls(
            exit_code=int(data["exitCode"]),
            reason=str(data.get("reason") or ""),
            started_at=data.get("startedAt"),
            finished_at=data.get("finishedAt"),
            container_id=data.get("containerID"),
            message=data.get("message"),
            signal=data.get("signal"),
        )


@dataclass(frozen=True)
class ContainerView:
    """One container as the runner sees it now."""

    name: str
    image: str
    image_id: str = ""
    container_id: str | None = None
    running_since: str | None = None  # running when set
    waiting_reason: str | None = None
    waiting_message: str | None = None
    terminated: Terminated | None = None  # the current state, when it stopped for good
    last_terminated: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    user: Mapping[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.running_since is not None

    def status(self) -> dict[str, Any]:
        state: dict[str, Any]
        if self.running_since is not None:
            state = {"running": {"startedAt": self.running_since}}
        elif self.terminated is not None:
            state = {"terminated": self.terminated.as_dict()}
        else:
            waiting: dict[str, Any] = {"reason": self.waiting_reason or "ContainerCreating"}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        entry: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": state,
            "lastState": (
                {"terminated": self.last_terminated.as_dict()} if self.last_terminated else {}
            ),
        }
        if self.container_id is not None:
            entry["containerID"] = self.container_id
        if self.user is not None:
            entry["user"] = {"linux": dict(self.user)}
        return entry


@dataclass(frozen=True)
class PodView:
    """What the status says about the pod as a whole."""

    pod_ip: str | None
    host_ip: str | None
    sandbox_ready: bool
    containers: Sequence[ContainerView]
    init_containers: Sequence[ContainerView] = ()
    restart_policy: str = "Always"
    # Set when the kubelet failed the pod itself (admission, eviction).
    failed_reason: str | None = None
    failed_message: str | None = None
    extra_conditions: Sequence[Mapping[str, str]] = field(default_factory=tuple)
    # The pod was deleted and its containers have stopped: a terminal phase
    # follows (kubelet, since 1.27).
    terminated: bool = False


def init_done(views: Sequence[ContainerView]) -> bool:
    return all(v.terminated is not None and v.terminated.exit_code == 0 for v in views)


def phase(view: PodView) -> str:
    """kubelet's getPhase for the regular containers (init containers first)."""
    if view.failed_reason:
        return FAILED
    if view.terminated:
        exits = [c.terminated or c.last_terminated for c in view.containers]
        return SUCCEEDED if all(e and e.exit_code == 0 for e in exits) else FAILED
    for init in view.init_containers:
        term = init.terminated
        if term is not None and term.exit_code != 0 and view.restart_policy == "Never":
            return FAILED
    if not init_done(view.init_containers):
        return PENDING
    running = waiting = stopped = succeeded = 0
    for container in view.containers:
        if container.running:
            running += 1
        elif container.terminated is not None:
            stopped += 1
            if container.terminated.exit_code == 0:
                succeeded += 1
        elif container.last_terminated is not None:
            stopped += 1  # waiting to restart after it ran
        else:
            waiting += 1
    if waiting:
        return PENDING
    if running:
        return RUNNING
    if stopped:
        if view.restart_policy == "Always":
            return RUNNING
        if stopped == succeeded:
            return SUCCEEDED
        return FAILED if view.restart_policy == "Never" else RUNNING
    return PENDING


def _condition(
    type_: str,
    ok: bool,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(type_) or {}
    # lastTransitionTime moves only when the status does.
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    condition: dict[str, Any] = {
        "type": type_,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": since or now,
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def pod_status(pod: Mapping[str, Any], view: PodView, now: str) -> dict[str, Any]:
    current = pod.get("status") or {}
    previous = {c.get("type"): c for c in current.get("conditions") or []}
    pod_phase = phase(view)
    owned = {"PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"}
    owned |= {str(extra["type"]) for extra in view.extra_conditions}
    # Conditions others own (the scheduler's PodScheduled, a DisruptionTarget) stay.
    conditions: list[dict[str, Any]] = [
        dict(c) for c in current.get("conditions") or [] if c.get("type") not in owned
    ]
    conditions.append(_condition("PodReadyToStartContainers", view.sandbox_ready, previous, now))
    pending_init = [
        v.name for v in view.init_containers if v.terminated is None or v.terminated.exit_code != 0
    ]
    init_reason = init_message = None
    if pending_init:
        init_reason = "ContainersNotInitialized"
        init_message = f"containers with incomplete status: [{' '.join(pending_init)}]"
    conditions.append(
        _condition("Initialized", not pending_init, previous, now, init_reason, init_message)
    )
    unready = [v.name for v in view.containers if not v.ready]
    ready = not unready and bool(view.containers)
    reason = message = None
    if pod_phase == SUCCEEDED:
        reason = "PodCompleted"
    elif unready:
        reason = "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(unready)}]"
    ready = ready and pod_phase == RUNNING
    conditions.append(_condition("ContainersReady", ready, previous, now, reason, message))
    conditions.append(_condition("Ready", ready, previous, now, reason, message))
    for extra in view.extra_conditions:
        conditions.append(
            _condition(
                str(extra["type"]),
                extra.get("status") == "True",
                previous,
                now,
                extra.get("reason"),
                extra.get("message"),
            )
        )
    status: dict[str, Any] = {
        "phase": pod_phase,
        "conditions": conditions,
        "startTime": current.get("startTime") or now,
        "containerStatuses": [v.status() for v in view.containers],
    }
    if view.init_containers:
        status["initContainerStatuses"] = [v.status() for v in view.init_containers]
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if view.host_ip:
        status["hostIP"] = view.host_ip
        status["hostIPs"] = [{"ip": view.host_ip}]
    if view.failed_reason:
        status["reason"] = view.failed_reason
        status["message"] = view.failed_message or ""
    return status


def _without_times(value: Any) -> Any:
    """The status with the timestamps that only say when we looked left out."""
    if isinstance(value, Mapping):
        return {k: _without_times(v) for k, v in value.items() if k != "lastProbeTime"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def status_differs(desired: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """True when a field the runner owns differs from what the Pod shows."""
    return any(
        _without_times(current.get(key)) != _without_times(value) for key, value in desired.items()
    )
