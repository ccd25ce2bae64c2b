"""Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does.

Two or more operator replicas run; only the holder of the Lease reconciles and
writes status. kopf's peering is not leader election: peers of equal priority
all pause, so it is not used. The rules are client-go's (and so
controller-runtime's):

- a candidate takes the Lease when nobody holds it, or when the holder has not
  renewed it for `lease_duration` seconds as measured on the candidate's own
  monotonic clock since it last saw the record change (no trust in the holder's
  wall clock: clock skew between nodes never shortens a lease);
- every write carries the resourceVersion it was computed from, so two
  candidates racing for an expired Lease cannot both win (409 for the loser);
- the leader renews every `retry_period`; when it has not renewed successfully
  for `renew_deadline` (< lease_duration, so it gives up before anyone else may
  take over) it must stop at once: the caller exits and its Deployment starts it
  again as a candidate;
- a leader that stops cleanly releases the Lease (holder emptied, duration 1 s),
  so a rolling update hands over in about a retry period instead of a lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from secondary_dns.k8s.api import ApiTransport

log = logging.getLogger(__name__)

DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD
    # Written on the Lease by whoever holds it (e.g. where the relay reaches the leader).
    annotations: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # client-go's own checks: otherwise two leaders can overlap.
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "leader election needs leaseDuration > renewDeadline > retryPeriod > 0, got "
                f"{self.lease_duration} > {self.renew_deadline} > {self.retry_period}"
            )

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"


def micro_time(seconds: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds), as the Lease's times are."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: Mapping[str, Any]) -> tuple[Any, ...]:
    spec = lease.get("spec") or {}
    return (
        spec.get("holderIdentity") or "",
        spec.get("leaseDurationSeconds"),
        spec.get("acquireTime"),
        spec.get("renewTime"),
        spec.get("leaseTransitions"),
    )


class LeaderElector:
    def __init__(
        self,
        transport: ApiTransport,
        config: LeaseConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.config = config
        self.monotonic = monotonic
        self.wall = wall
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renewal = -float("inf")
        self._leading = False
        self._stop = threading.Event()

    @property
    def leading(self) -> bool:
        return self._leading

    # ---- one attempt ---------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the Lease; True when this candidate holds it now."""
        now = self.wall()
        try:
            lease = self.transport.request("GET", self.config.path)
        except ApiException as error:
            if error.status != 404:
                raise
            return self._create(now)
        record = _record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, self.monotonic()
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        me = self.config.identity
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration)
        if holder and holder != me and self.monotonic() < self._observed_at + duration:
            return False  # held, and renewed within its duration as far as we have seen
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec = {
            "holderIdentity": me,
            "leaseDurationSeconds": int(self.config.lease_duration),
            "acquireTime": spec.get("acquireTime") if holder == me else micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions if holder == me else transitions + 1,
        }
        if holder != me:
            log.info("taking the lease %s from %r", self.config.name, holder or "nobody")
        body = self._lease(new_spec)
        # The precondition: refused (409) if anyone wrote since we read it.
        body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        try:
            self.transport.request("PUT", self.config.path, body=body)
        except ApiException as error:
            if error.status == 409:
                return False  # another candidate wrote first
            raise
        self._observed, self._observed_at = _record({"spec": new_spec}), self.monotonic()
        return True

    def _lease(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.config.name,
                "namespace": self.config.namespace,
                "annotations": dict(self.config.annotations),
            },
            "spec": dict(spec),
        }

    def _create(self, now: float) -> bool:
        body = self._lease(
            {
                "holderIdentity": self.config.identity,
                "leaseDurationSeconds": int(self.config.lease_duration),
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": 0,
            }
        )
        path = self.config.path.rsplit("/", 1)[0]
        try:
            self.transport.request("POST", path, body=body)
        except ApiException as error:
            if error.status == 409:
                return False  # created by another candidate meanwhile
            raise
        return True

    # ---- the loops -------------------------------------------------------------------

    def acquire(self) -> bool:
        """Block until this candidate leads (True), or until stop() (False)."""
        log.info(
            "waiting for the lease %s/%s as %s",
            self.config.namespace,
            self.config.name,
            self.config.identity,
        )
        while not self._stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    self._leading = True
                    self._last_renewal = self.monotonic()
                    log.info("became the leader (lease %s)", self.config.name)
                    return True
            except Exception as error:  # the API server may be restarting: keep trying
                log.warning("leader election: %s", error)
            self._stop.wait(self.config.retry_period)
        return False

    def keep_renewing(self, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew in a thread; call on_lost() once the Lease cannot be held any longer."""

        def renew() -> None:
            while not self._stop.wait(self.config.retry_period):
                try:
                    renewed = self.try_acquire_or_renew()
                except Exception as error:
                    log.warning("renewing the lease failed: %s", error)
                    renewed = False
                if renewed:
                    self._last_renewal = self.monotonic()
                    continue
                holder = self._observed[0] if self._observed else ""
                if holder not in ("", self.config.identity):
                    reason = f"it is held by {holder}"  # we were too slow: over at once
                elif self.monotonic() - self._last_renewal >= self.config.renew_deadline:
                    reason = f"not renewed for {self.config.renew_deadline:.0f} s"
                else:
                    continue  # try again within the renew deadline
                self._leading = False
                log.error("lost the lease %s: %s; stopping", self.config.name, reason)
                on_lost()
                return

        thread = threading.Thread(target=renew, name="lease-renewal", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def release(self) -> None:
        """Give the Lease up (clean shutdown), so a standby takes over within a retry period."""
        self._stop.set()
        if not self._leading:
            return
        self._leading = False
        try:
            lease = self.transport.request("GET", self.config.path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.config.identity:
                return
            now = micro_time(self.wall())
            lease["spec"] = {
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": spec.get("leaseTransitions") or 0,
            }
            self.transport.request("PUT", self.config.path, body=lease)
            log.info("released the lease %s", self.config.name)
        except Exception as error:  # the standby takes over when the lease expires
            log.warning("releasing the lease failed: %s", error)
