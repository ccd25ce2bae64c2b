"""Probes as kubelet's prober workers run them: one thread per probe of a running container.

A worker probes every `periodSeconds` once `initialDelaySeconds` have passed
since the container started, each attempt bounded by `timeoutSeconds`, and
flips its result after `successThreshold` successes or `failureThreshold`
failures in a row. Readiness starts failed, liveness and startup start
successful and unknown; while a startup probe has not succeeded, the
container's liveness and readiness probes do not run (kubelet's rule). The
pod worker reads the results: readiness is the container's `ready`, a failed
liveness or startup probe restarts the container.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from localcluster.kubelet.lifecycle import Handler, HandlerResult

READINESS, LIVENESS, STARTUP = "readiness", "liveness", "startup"


@dataclass(frozen=True)
class ProbeSpec:
    kind: str
    handler: Handler
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: int | None = None

    @classmethod
    def parse(cls, container: Mapping[str, Any], kind: str) -> ProbeSpec | None:
        probe = container.get(f"{kind}Probe")
        if not probe:
            return None
        return cls(
            kind=kind,
            handler=Handler.parse(probe),
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=float(probe.get("periodSeconds") or 10),
            timeout=float(probe.get("timeoutSeconds") or 1),
            success_threshold=int(probe.get("successThreshold") or 1),
            failure_threshold=int(probe.get("failureThreshold") or 3),
            termination_grace=probe.get("terminationGracePeriodSeconds"),
        )


class ProbeWorker:
    """Probes one container with one probe until stopped; `result` is True, False or None."""

    def __init__(
        self,
        spec: ProbeSpec,
        run: Callable[[Handler, float], HandlerResult],
        started_monotonic: float,
        may_run: Callable[[], bool],
        on_failure: Callable[[ProbeWorker, HandlerResult], None],
        on_result: Callable[[ProbeWorker], None],
    ) -> None:
        self.spec = spec
        self.run = run
        self.started = started_monotonic
        self.may_run = may_run
        self.on_failure = on_failure
        self.on_result = on_result
        self.result: bool | None = {READINESS: False, LIVENESS: True, STARTUP: None}[spec.kind]
        self.stopped = threading.Event()
        self._last: bool | None = None
        self._run = 0
        self.thread = threading.Thread(target=self._loop, name=f"probe-{spec.kind}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            if time.monotonic() - self.started >= self.spec.initial_delay and self.may_run():
                if not self.probe_once():
                    return
            self.stopped.wait(self.spec.period)

    def probe_once(self) -> bool:
        """One attempt (kubelet's worker.doProbe); False once this container needs no more."""
        outcome = self.run(self.spec.handler, self.spec.timeout)
        if self.stopped.is_set():
            return False
        if not outcome.ok:
            self.on_failure(self, outcome)
        self._run = self._run + 1 if self._last == outcome.ok else 1
        self._last = outcome.ok
        threshold = self.spec.success_threshold if outcome.ok else self.spec.failure_threshold
        if self._run < threshold:
            return True
        changed = self.result != outcome.ok
        self.result = outcome.ok
        if changed:
            self.on_result(self)
        if self.spec.kind == STARTUP and outcome.ok:
            return False  # a started container is not probed for its start again
        # A failed liveness or startup probe: the container is restarted; a new
        # container gets new workers.
        return outcome.ok or self.spec.kind == READINESS
