"""The agent's loop: configuration in, engine reloaded, readiness and Pod annotations out.

The same loop for every engine: what differs (checker, reload, retransfer, how
zones are observed) is behind `EngineControl` and `EngineProbe`.

One thread does the work; watches only wake it. Each pass is level-triggered:
it looks at the whole current snapshot, so a missed or duplicated event
changes nothing.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import dns.name

from secondary_dns.agent.assemble import (
    Assembly,
    DesiredConfig,
    Invalid,
    Pending,
    ShardReads,
    assemble,
)
from secondary_dns.agent.control import EngineControl, ZoneChanges
from secondary_dns.agent.decide import (
    Action,
    AppliedConfig,
    Readiness,
    Rejection,
    annotation_patch,
    apply_delay,
    check_readiness,
    decide_apply,
    missing_zones,
    pod_annotations,
    refreshes_due,
    retransfers_due,
)
from secondary_dns.agent.files import ApplyOutcome, ConfigDirectory
from secondary_dns.agent.metrics import AgentMetrics
from secondary_dns.agent.probe import EngineProbe, loaded_zones
from secondary_dns.agent.source import ConfigSource, Snapshot
from secondary_dns.api.agent_contract import PodLayout, ZonesDocument, ZoneState

log = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 1.0
# /healthz fails when the loop has not finished a pass for this long (a hung
# checker or control command is bounded by their own timeouts, well below this).
STALL_SECONDS = 300.0
# Once Ready, the flag survives agent restarts in the run directory (see check_readiness).
READY_ONCE_FILE = "ready-once"
# Every replica sees a new configuration at the same moment; named answers no
# query while it reconfigures (exclusive mode). Running replicas apply in two
# waves by ordinal (decide.apply_delay), the odd wave waiting at most this long;
# a pod without an ordinal waits a random part of it. A fresh replica applies at once.
APPLY_JITTER_SECONDS = 2.0
# The steps of an apply the other wave waits for (the refresh comes after, apart).
APPLY_STEPS = ("check", "write", "reload")
# How often a replica whose zones are all loaded asks the engine for every zone's
# state (BIND's statistics channel, knotc zone-status: at 10,000 zones megabytes of
# JSON or text). The operator's /zones?maxAge requests take a fresh look when they
# need one; until every zone is loaded, and after a new configuration, every pass looks.
STEADY_LOOK_SECONDS = 10.0
# A pass skips its look at the engine's zones when a new change came while it
# worked on the configuration (the next pass applies it first), unless the last
# look is older than this. At 10,000 zones a look is named's 1.7 MB statistics
# document, 0.1-0.6 s in the cluster: a root arriving just before its shard made
# the pass look first and apply the change after (bench/scale.py, one Zone added).
LOOK_DEFER_SECONDS = 2.0


def shard_texts(desired: DesiredConfig) -> dict[str, str]:
    """shard -> its engine files' text, joined (what `refreshes_due` compares)."""
    return {
        shard: "\n".join(desired.files.get(name, "") for name in names)
        for shard, names in desired.shard_files.items()
    }


class PodReporter(Protocol):
    def current(self) -> Mapping[str, str | None]: ...

    def patch(self, annotations: Mapping[str, str]) -> None: ...


class MemoryPodReporter:
    """Keeps the annotations in memory (tests, runs without a Pod); counts the patches."""

    def __init__(self) -> None:
        self.annotations: dict[str, str | None] = {}
        self.patches: list[dict[str, str]] = []

    def current(self) -> Mapping[str, str | None]:
        return dict(self.annotations)

    def patch(self, annotations: Mapping[str, str]) -> None:
        self.patches.append(dict(annotations))
        self.annotations.update(annotations)


class Agent:
    def __init__(
        self,
        layout: PodLayout,
        source: ConfigSource,
        reporter: PodReporter,
        control: EngineControl,
        probe: EngineProbe,
        metrics: AgentMetrics | None = None,
        *,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
        apply_jitter: float = 0.0,
        uniform: Callable[[float, float], float] = random.uniform,
        pod: str | None = None,
    ) -> None:
        self.layout = layout
        self.source = source
        self.reporter = reporter
        self.control = control
        self.probe = probe
        self.metrics = metrics or AgentMetrics()
        self.poll_interval = poll_interval
        self.clock = clock
        self.apply_jitter = apply_jitter
        self.uniform = uniform
        self.pod = pod
        # (config hash, keys hash) of a change seen, and when it is due (clock time).
        self._due: tuple[tuple[str, str], float] | None = None
        self.directory = ConfigDirectory(layout)
        self.changed = threading.Event()
        self.applied: AppliedConfig | None = None
        self.rejection: Rejection | None = None
        self.reload_pending = False
        # The last successful apply: its steps' durations and how much was checked.
        self.last_apply: ApplyOutcome | None = None
        # The last successful apply by a reload: how long the even wave takes.
        self.last_reload_apply: ApplyOutcome | None = None
        # A change's zone-by-zone changes against the running configuration, or None
        # for a reload, worked out once per (change, running configuration).
        self._changes: tuple[object, ZoneChanges | None] | None = None
        # Zones whose new spec.retransferRequest the engine has not been told about yet.
        self.retransfers_pending: set[dns.name.Name] = set()
        # Zones of changed shards the engine has not been asked to refresh yet.
        self.refreshes_pending: set[dns.name.Name] = set()
        # The configuration last applied by this process: its shards' texts tell which
        # zones the next one changes (after a restart, every zone of a changed shard).
        self._applied_desired: DesiredConfig | None = None
        # The last refresh asked: how many zones, and the seconds it took.
        self.last_refresh: tuple[int, float] | None = None
        self.readiness = Readiness(False, "starting")
        self.zones_loaded = 0
        self.zone_states: dict[dns.name.Name, ZoneState] = {}
        # One look at the engine's zones at a time (the loop's, or a /zones request's).
        self._look_lock = threading.Lock()
        self._looked_at = -math.inf
        # What the last look saw (every zone the engine has), and under which configuration.
        self._states: dict[dns.name.Name, ZoneState] | None = None
        # Looks in a row the engine did not answer (what the last answer said stands).
        self._failed_looks = 0
        self._looked_config: str | None = None
        # The last snapshot assembled and what it gave: assembling is pure, and at
        # 10,000 zones it parses and sorts every zone name (tenths of a second), so an
        # unchanged snapshot is not assembled again at every pass.
        self._assembled: tuple[Snapshot, Assembly] | None = None
        # The shards as last read, by hash: an assembly reads only the changed ones.
        self._shard_reads: ShardReads = {}
        self._reported: dict[str, str | None] | None = None
        self._pending_reason = ""
        self._last_pass = time.monotonic()
        self._ready_once = Path(layout.run_dir) / READY_ONCE_FILE

    # ---- HTTP checks -----------------------------------------------------------------

    def healthz(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self._last_pass
        if stalled > STALL_SECONDS:
            return False, f"agent loop has not run for {stalled:.0f}s"
        return True, "ok"

    def readyz(self) -> tuple[bool, str]:
        return self.readiness.ready, self.readiness.reason

    def zones_document(self, max_age: float | None = None) -> bytes:
        """GET /zones: what the engine says of each configured zone (see docs/agent.md).

        With `max_age`, a look older than that many seconds is taken again now
        (the serial monitor reads replicas' serials this way). Concurrent
        requests wait for one look instead of each asking the engine.
        """
        if max_age is not None:
            with self._look_lock:
                if time.monotonic() - self._looked_at > max_age:
                    self._look_at_zones()
        applied = self.applied.config_hash if self.applied else None
        return ZonesDocument(applied, self.zone_states).encode()

    def _look_at_zones(self) -> dict[dns.name.Name, ZoneState] | None:
        """The engine's zones now; the configured ones are published for /zones.

        A look that gets no answer keeps what the last one saw (the caller knows
        the engine answers queries): named at 10,000 zones, busy transferring them
        after a new configuration, has let its statistics channel's 1.7 MB of JSON
        wait longer than the read's timeout; each such look published no zone, so
        the pod turned unready and the operator's monitor queried each of its
        10,000 zones one by one, for a minute (bench/scale.py). Serials a few
        seconds old are behind, never ahead: the monitor shows the replica behind
        at worst, and its next look catches up.
        """
        states = self.probe.zone_states()
        if states is None and self._states is not None:
            self._failed_looks += 1
            if self._failed_looks == 1:
                log.warning(
                    "%s did not say which zones it has loaded in time; "
                    "keeping what it said %.0fs ago",
                    self.control.engine,
                    time.monotonic() - self._looked_at,
                )
            self.metrics.failed_looks.inc()
            states = self._states
        else:
            self._failed_looks = 0
        configured: tuple[dns.name.Name, ...] = self.applied.zones if self.applied else ()
        # Replaced whole (the HTTP threads read it); unknown when the engine does not say.
        self.zone_states = {z: states[z] for z in configured if z in states} if states else {}
        self._looked_at = time.monotonic()
        self._states = states
        self._looked_config = self.applied.config_hash if self.applied else None
        return states

    # ---- loop ------------------------------------------------------------------------

    def start(self) -> None:
        self.directory.prepare()
        prepared = self.control.prepare()
        if prepared:
            log.info("%s", prepared)
        self.applied = self.directory.applied()
        if self.applied is not None:
            log.info("configuration on disk: %s", self.applied.config_hash)
            self.metrics.set_applied(self.applied.config_hash)
            self.metrics.zones_configured.set(len(self.applied.zones))
        self.source.start(self.changed.set)

    def run(self, stop: threading.Event) -> None:
        self.start()
        try:
            while not stop.is_set():
                self.changed.wait(self.poll_interval)
                self.changed.clear()
                if stop.is_set():
                    break
                self.step()
        finally:
            self.source.stop()

    def step(self) -> None:
        """One level-triggered pass; never raises (a failing pass is retried on the next)."""
        try:
            # Set here: the loop was woken by something not handled yet (the loop
            # clears the flag before a pass); set only after the configuration's
            # part: a change came during the pass.
            woken = self.changed.is_set()
            self.reconcile_config()
            if woken or not self._look_deferred():
                self.observe_engine()
            self.report()
        except Exception:
            log.exception("agent pass failed; retrying")
        self._last_pass = time.monotonic()

    def reconcile_config(self) -> None:
        snapshot = self.source.snapshot()
        if not snapshot.synced:
            return
        if self._assembled is None or self._assembled[0] != snapshot:
            assembled = assemble(snapshot.shards, snapshot.secret, self._shard_reads)
            self._assembled = (snapshot, assembled)
        result = self._assembled[1]
        if isinstance(result, Pending):
            if result.reason != self._pending_reason:
                log.info("configuration pending: %s", result.reason)
                self._pending_reason = result.reason
        elif isinstance(result, Invalid):
            rejection = Rejection(result.config_hash, "", result.reason)
            if rejection != self.rejection:
                log.error("configuration %s is invalid: %s", result.config_hash, result.reason)
                self.metrics.reloads.labels(result="rejected").inc()
                self.rejection = rejection
        else:
            self._pending_reason = ""
            self._apply(result)
        if self.reload_pending:
            outcome = self.control.reload()
            engine = self.control.engine
            if outcome.ok:
                log.info("%s reloaded (retried)", engine)
                self.reload_pending = False
            elif not outcome.unreachable:
                log.error("%s refused the configuration on retry: %s", engine, outcome.message)
                self.reload_pending = False
        if not self.reload_pending:
            self._retransfer()
            self._refresh()

    def _refresh(self) -> None:
        """Zones of changed shards: an SOA query to their (maybe new) primaries now."""
        served = set(self.applied.zones) if self.applied else set()
        zones = sorted(self.refreshes_pending & served)
        if not zones:
            self.refreshes_pending.clear()
            return
        started = time.monotonic()
        outcome = self.control.refresh(zones)
        if outcome.unreachable:
            log.warning(
                "%s not reachable to refresh %d zones (%s); will retry",
                self.control.engine,
                len(zones),
                outcome.message,
            )
            return
        self.refreshes_pending.clear()
        took = time.monotonic() - started
        self.last_refresh = (len(zones), took)
        self.metrics.apply_seconds.labels(step="refresh").observe(took)
        self.metrics.refreshes.labels(result="requested" if outcome.ok else "refused").inc(
            len(zones)
        )
        if outcome.ok:
            log.info("refresh of %d zones of changed shards requested in %.3fs", len(zones), took)
        else:
            log.error("%s refused a refresh: %s", self.control.engine, outcome.message)

    def _retransfer(self) -> None:
        served = set(self.applied.zones) if self.applied else set()
        self.retransfers_pending &= served
        for zone in sorted(self.retransfers_pending):
            outcome = self.control.retransfer(zone)
            if outcome.unreachable:
                log.warning(
                    "%s not reachable for retransfer of %s (%s); will retry",
                    self.control.engine,
                    zone,
                    outcome.message,
                )
                return
            self.retransfers_pending.discard(zone)
            if outcome.ok:
                log.info("retransfer of %s requested (spec.retransferRequest changed)", zone)
                self.metrics.retransfers.labels(result="requested").inc()
            else:
                log.error(
                    "%s refused the retransfer of %s: %s",
                    self.control.engine,
                    zone,
                    outcome.message,
                )
                self.metrics.retransfers.labels(result="refused").inc()

    def _apply(self, desired: DesiredConfig) -> None:
        action = decide_apply(desired, self.applied, self.rejection)
        if action is Action.UNCHANGED:
            self.rejection = None
            return
        if action is Action.ALREADY_REJECTED:
            return
        changes = self._zone_changes(desired)
        # Zone by zone the engine keeps answering: every replica applies at once.
        if changes is None and self._waiting(desired):
            return
        started = time.monotonic()
        try:
            outcome = self.directory.apply(desired, self.control, changes)
        except OSError as error:
            log.error("could not write configuration %s: %s", desired.config_hash, error)
            self.metrics.reloads.labels(result="failed").inc()
            return
        if not outcome.applied:
            log.error("configuration %s rejected: %s", desired.config_hash, outcome.message)
            self.rejection = Rejection(desired.config_hash, desired.keys_hash, outcome.message)
            self.metrics.reloads.labels(result="rejected").inc()
            return
        log.info(
            "configuration %s applied in %.3fs (%d zones; checked %d of %d shards; %s): %s",
            desired.config_hash,
            time.monotonic() - started,
            len(desired.zones),
            outcome.shards_checked,
            outcome.shards,
            ", ".join(f"{step} {value:.3f}s" for step, value in outcome.seconds.items()),
            outcome.message,
        )
        self.last_apply = outcome
        if "reload" in outcome.seconds:
            self.last_reload_apply = outcome
        for step, value in outcome.seconds.items():
            self.metrics.apply_seconds.labels(step=step).observe(value)
        previous = self.applied
        self.applied = AppliedConfig(
            desired.config_hash,
            desired.keys_hash,
            desired.zones,
            desired.retransfer,
            desired.shards,
        )
        self.retransfers_pending.update(retransfers_due(previous, self.applied))
        self.refreshes_pending.update(
            refreshes_due(
                previous,
                self.applied,
                shard_texts(self._applied_desired) if self._applied_desired else None,
                shard_texts(desired),
            )
        )
        self._applied_desired = desired
        self.rejection = None
        self.reload_pending = outcome.reload_pending
        self.metrics.reloads.labels(result="success").inc()
        self.metrics.last_reload.set(self.clock())
        self.metrics.set_applied(desired.config_hash)
        self.metrics.zones_configured.set(len(desired.zones))

    def _zone_changes(self, desired: DesiredConfig) -> ZoneChanges | None:
        """The zone statements `desired` changes against what the engine runs, when
        the engine can take them one zone at a time; None: a reload.

        Only against a configuration this process applied and the engine took
        (after an agent restart, or while a reload is pending, the engine's
        state is not known zone by zone), with the same keys."""
        running = self._applied_desired
        identity = (desired.identity, running and running.identity, self.reload_pending)
        if self._changes is not None and self._changes[0] == identity:
            return self._changes[1]
        changes = None
        if running is not None and not self.reload_pending and running.key_file == desired.key_file:
            changes = self.control.zone_changes(running.files, desired.files)
        self._changes = (identity, changes)
        return changes

    def _waiting(self, desired: DesiredConfig) -> bool:
        """True while a running replica waits for its wave (or its jitter) for this change.

        Only for an engine that stops answering while it reloads (named): all the
        replicas of one that answers throughout (knotd) apply at once."""
        if self.applied is None or self.apply_jitter <= 0:
            return False
        if self.control.answers_while_reloading:
            return False
        change = (desired.config_hash, desired.keys_hash)
        if self._due is None or self._due[0] != change:
            # A reload's duration when one was timed (a zone-by-zone apply says
            # nothing of how long the even wave pauses), else the last apply's.
            last = self.last_reload_apply or self.last_apply
            took = sum(last.seconds.get(step, 0.0) for step in APPLY_STEPS) if last else None
            delay = apply_delay(self.pod, took, self.apply_jitter)
            if delay is None:
                delay = self.uniform(0.0, self.apply_jitter)
            self._due = (change, self.clock() + delay)
            log.info("configuration %s seen; applying in %.1fs", desired.config_hash, delay)
            # The loop polls every poll_interval; wake it at the due time instead.
            timer = threading.Timer(delay, self.changed.set)
            timer.daemon = True
            timer.start()
        return self.clock() < self._due[1]

    def _look_deferred(self) -> bool:
        """A change came while this pass worked on the configuration: apply it first
        (the flag wakes the loop again at once), unless the last look is too old."""
        return (
            self.changed.is_set()
            and self._states is not None
            and time.monotonic() - self._looked_at < LOOK_DEFER_SECONDS
        )

    def _look_due(self) -> bool:
        """A new look at the engine's zones: at once while something is to be seen
        (a new configuration, zones not loaded yet), else every STEADY_LOOK_SECONDS."""
        applied = self.applied.config_hash if self.applied else None
        return (
            self._states is None
            or applied != self._looked_config
            or self.zones_loaded < len(self.applied.zones if self.applied else ())
            or time.monotonic() - self._looked_at >= STEADY_LOOK_SECONDS
        )

    def observe_engine(self) -> None:
        configured: tuple[dns.name.Name, ...] = self.applied.zones if self.applied else ()
        answering = self.applied is not None and self.probe.answering()
        with self._look_lock:
            if not answering:
                states, self.zone_states, self._states = None, {}, None
            elif self._look_due():
                states = self._look_at_zones()
            else:
                states = self._states
        loaded = None if states is None else loaded_zones(states)
        missing = missing_zones(configured, loaded or set())
        self.metrics.set_zone_expiry(
            {zone: state.expires for zone, state in self.zone_states.items() if state.expires}
        )
        self.zones_loaded = len(configured) - len(missing)
        has_been_ready = self._ready_once.exists()
        if self.applied is None:
            readiness = Readiness(False, "no configuration applied yet")
        elif answering and loaded is None:
            readiness = Readiness(
                False, f"{self.control.engine} does not say which zones it has loaded"
            )
        else:
            readiness = check_readiness(answering, missing, has_been_ready)
        if readiness.ready and not has_been_ready:
            self._ready_once.write_text(f"{self.applied.config_hash if self.applied else ''}\n")
        if readiness != self.readiness:
            log.info("ready=%s: %s", readiness.ready, readiness.reason)
        self.readiness = readiness
        self.metrics.zones_loaded.set(self.zones_loaded)
        self.metrics.ready.set(1 if readiness.ready else 0)
        self.metrics.config_rejected.set(1 if self.rejection else 0)

    def report(self) -> None:
        if self._reported is None:
            # Read once at start, so a restarted agent writes nothing that is already shown.
            self._reported = dict(self.reporter.current())
        configured = len(self.applied.zones) if self.applied else 0
        wanted = pod_annotations(self.applied, self.rejection, self.zones_loaded, configured)
        patch = annotation_patch(self._reported, wanted)
        if not patch:
            return
        self.reporter.patch(patch)
        self._reported.update(patch)
