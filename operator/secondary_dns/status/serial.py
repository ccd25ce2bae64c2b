"""Serial status of one zone: probe results + memory -> Zone status, conditions, repairs.

PURE: no I/O and no clock. The caller probes (secondary_dns.dns.probe), passes the
results with the wall-clock time `now` (epoch seconds) and the `ZoneHistory` the
previous evaluation returned, and gets the new status fields, the new history and
the replicas to NOTIFY. After an operator restart the history is rebuilt from
the stored status (`history_from_status`, docs/serial-status.md). Whether the
zone is Ready is not decided here: `status.zone` reads these conditions.

Serial comparisons are RFC 1982 serial-number arithmetic (`dns.serial.Serial`):
"newer" means "less than 2^31 ahead, modulo 2^32", and two serials exactly 2^31
apart are not ordered at all. Secondaries transfer only a serial that is newer
than theirs (RFC 1034 §4.3.5), which is why a primary whose serial goes
backwards is never followed (RFC 2182 §7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import dns.serial

from secondary_dns.api import conditions
from secondary_dns.api.conditions import FALSE, TRUE, UNKNOWN
from secondary_dns.api.soa import ProbeResult, ProbeTarget, SoaAnswer
from secondary_dns.status.conditions import (
    Condition,
    find_condition,
    read_condition,
    set_conditions,
)
from secondary_dns.status.times import format_duration, parse_timestamp, timestamp_text

SERIAL_MODULUS = 2**32
# RFC 1982 §3.1: an addition of at most 2^31 - 1 is an increment.
MAX_SERIAL_INCREMENT = 2**31 - 1

DEFAULT_STALE_GRACE = 30.0
DEFAULT_REPAIR_GRACE = 5.0
DEFAULT_REPAIR_INTERVAL = 60.0
DEFAULT_EXPIRY_WARNING_FRACTION = 0.5

# The condition types this module owns; every other type in the status is left alone.
OWNED_CONDITIONS = (
    conditions.SYNCED,
    conditions.STALE,
    conditions.PRIMARY_UNREACHABLE,
    conditions.EXPIRING,
    conditions.SERIAL_REGRESSED,
    conditions.ENGINE_DIVERSE,
)
# The status fields this module owns. A field it cannot fill (no serial known) is
# left out of the evaluation's status, and `SerialStatus.apply` removes it from
# the stored one.
OWNED_FIELDS = (
    "primarySerial",
    "servedSerial",
    "replicasInSync",
    "replicasTotal",
    "synced",
    "replicas",
)


# ---------------------------------------------------------------- serial arithmetic


def _newer(serial: int, than: int) -> bool:
    """RFC 1982 §3.2: `serial` > `than` (False when the two are not ordered)."""
    return bool(dns.serial.Serial(serial) > dns.serial.Serial(than))


def _older(serial: int, than: int) -> bool:
    return bool(dns.serial.Serial(serial) < dns.serial.Serial(than))


def _at_least(serial: int, than: int) -> bool:
    """`serial` equals `than` or is newer; False also when the two are not ordered."""
    return bool(dns.serial.Serial(serial) >= dns.serial.Serial(than))


def newest(serials: Sequence[int]) -> int | None:
    """The serial no other one is newer than; the first such one when the order is undefined."""
    for candidate in serials:
        if not any(_newer(other, candidate) for other in serials):
            return candidate
    return serials[0] if serials else None


def oldest(serials: Sequence[int]) -> int | None:
    """The serial no other one is older than; the first such one when the order is undefined."""
    for candidate in serials:
        if not any(_older(other, candidate) for other in serials):
            return candidate
    return serials[0] if serials else None


def recovery_steps(replica_serial: int, wanted: int) -> tuple[int, ...]:
    """The serials to set on the primary, in order, to bring replicas from one serial to `wanted`.

    RFC 2182 §7: a serial can only be increased, so reaching a smaller one means
    increasing through the wrap-around. Each step here adds the largest increment
    RFC 1982 allows (2^31 - 1), which makes two steps enough unless `wanted` is
    exactly one below `replica_serial` (then three). The last step is `wanted`.
    Between steps every replica must have served the previous value.
    """
    current = dns.serial.Serial(replica_serial)
    target = dns.serial.Serial(wanted)
    steps: list[int] = []
    # Until the wanted serial is an increment from the current one (or equal to it).
    while not target >= current:
        current += MAX_SERIAL_INCREMENT
        steps.append(current.value)
    steps.append(target.value)
    return tuple(steps)


# ---------------------------------------------------------------- inputs and memory


@dataclass(frozen=True, slots=True)
class ReplicaTarget:
    """One replica pod of a SecondaryServer that serves the zone."""

    pod: str
    server: str
    failure_domain: str | None
    address: str | None
    port: int = 53
    # spec.engine.type of its SecondaryServer (bind9, knot).
    engine: str = ""

    @property
    def probe_target(self) -> ProbeTarget | None:
        return ProbeTarget(self.address, self.port) if self.address else None

    def describe(self) -> str:
        where = (
            f"failure domain {self.failure_domain}" if self.failure_domain else "no failure domain"
        )
        return f"{self.pod} ({where})"


@dataclass(frozen=True, slots=True)
class ReplicaHistory:
    """What is remembered about one replica pod between probes."""

    # The last serial it answered, and when that serial was first observed (the
    # replica's lastChange; at the first observation it is the observation time).
    serial: int | None = None
    serial_changed_at: float | None = None
    # Since when it has been continuously behind the primary's serial.
    behind_since: float | None = None
    # The last time it was seen serving the primary's serial while the primary answered.
    in_sync_at: float | None = None
    # The last evidence of a successful refresh: in sync with a reachable primary,
    # or its serial changed (a transfer completed). Starts SOA expire's clock.
    refreshed_at: float | None = None
    # Its own SOA timers, from its last answer (the values it works with).
    soa: SoaAnswer | None = None
    # When the monitor last asked the operator to NOTIFY it (repair).
    repaired_at: float | None = None


@dataclass(frozen=True, slots=True)
class ZoneHistory:
    """What is remembered about one zone between probes; start with `ZoneHistory()`."""

    # The primary's serial as last seen, when that was (any primary answering), and
    # since when that serial has been the primary's.
    primary_serial: int | None = None
    primary_seen_at: float | None = None
    primary_serial_changed_at: float | None = None
    # Since when no primary has answered; None while one does.
    primary_unreachable_since: float | None = None
    primary_soa: SoaAnswer | None = None
    # By pod name; pods that are no longer replicas of the zone are forgotten.
    replicas: Mapping[str, ReplicaHistory] = field(default_factory=dict)


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class ReplicaVerdict:
    """One replica as this evaluation sees it (for metrics, events and logs)."""

    target: ReplicaTarget
    serial: int | None
    in_sync: bool
    behind: bool
    # Seconds continuously behind the primary's serial; 0 when not behind.
    seconds_behind: float
    # Why no serial: "no address yet", or the probe's error text.
    error: str | None


@dataclass(frozen=True, slots=True)
class SerialStatus:
    """The serial monitor's part of a Zone status: its fields and its conditions, as stored.

    A field it could not fill (no primary serial yet, no replica answering) is
    absent; `apply` removes the stale value from a status, so an old
    servedSerial does not outlive the replicas that served it.
    """

    fields: Mapping[str, Any]
    conditions: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> SerialStatus | None:
        """What a stored status says (an operator restart); None before the first evaluation."""
        stored = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
        if find_condition(stored, conditions.SYNCED) is None:
            return None
        return cls(
            fields={key: status[key] for key in OWNED_FIELDS if key in status},
            conditions=tuple(c for c in stored if c.get("type") in OWNED_CONDITIONS),
        )

    def condition(self, type_: str) -> Condition | None:
        return read_condition(self.conditions, type_)

    def apply(self, status: Mapping[str, Any]) -> dict[str, Any]:
        """`status` with this part in place of its serial fields and conditions; the rest kept."""
        result = {key: value for key, value in status.items() if key not in OWNED_FIELDS}
        result.update(self.fields)
        merged = [dict(c) for c in status.get("conditions") or []]
        for condition in self.conditions:
            where = [i for i, c in enumerate(merged) if c.get("type") == condition.get("type")]
            if where:
                merged[where[0]] = dict(condition)
            else:
                merged.append(dict(condition))
        result["conditions"] = merged
        return result


@dataclass(frozen=True)
class SerialEvaluation:
    # The serial fields (OWNED_FIELDS) and "conditions": the previous status's
    # conditions with the serial ones (OWNED_CONDITIONS) set.
    status: dict[str, Any]
    history: ZoneHistory
    # Replicas behind the primary for longer than the repair grace: NOTIFY them.
    repairs: list[ReplicaTarget]
    primary_serial: int | None
    primary_reachable: bool
    primaries_disagree: bool
    regressed: bool
    replicas: tuple[ReplicaVerdict, ...]
    # The SOA refresh and expire of the primary's copy (the last one seen): what
    # "stale past its refresh" is measured against (metrics, alerts).
    primary_refresh: int | None = None
    primary_expire: int | None = None

    @property
    def serial_status(self) -> SerialStatus:
        part = SerialStatus.from_status(self.status)
        assert part is not None  # an evaluation always sets Synced
        return part


# ---------------------------------------------------------------- memory across restarts


def history_from_status(status: Mapping[str, Any]) -> ZoneHistory:
    """What a stored status still tells after the operator restarted (its memory is gone).

    Without it the first round after a restart would restart every clock: "since"
    times and lastChange would move to the restart and the status be rewritten for
    nothing. Recovered: the primary's serial, since when it is unreachable (the
    condition's lastTransitionTime), each replica's serial and lastChange, and since
    when a replica is behind when Stale says so; the last sign of a successful refresh
    is taken to be the replica's lastChange (a completed transfer).
    """
    conds = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}

    def since(type_: str) -> float | None:
        cond = conds.get(type_) or {}
        return (
            parse_timestamp(cond.get("lastTransitionTime"))
            if cond.get("status") == "True"
            else None
        )

    primary_serial = status.get("primarySerial")
    stale_since = since(conditions.STALE)
    replicas: dict[str, ReplicaHistory] = {}
    for entry in status.get("replicas") or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("pod"), str):
            continue
        serial = entry.get("serial")
        changed_at = parse_timestamp(entry.get("lastChange"))
        replicas[entry["pod"]] = ReplicaHistory(
            serial=serial if isinstance(serial, int) else None,
            serial_changed_at=changed_at,
            behind_since=stale_since if entry.get("inSync") is False else None,
            # Its serial changing was a completed transfer: a refresh no later
            # than that (so Expiring can only warn earlier, never later).
            refreshed_at=changed_at if isinstance(serial, int) else None,
        )
    return ZoneHistory(
        primary_serial=primary_serial if isinstance(primary_serial, int) else None,
        primary_unreachable_since=since(conditions.PRIMARY_UNREACHABLE),
        replicas=replicas,
    )


def recovery_advice(went_from: int | None, primary_serial: int, replica_serial: int) -> str:
    """The SerialRegressed message: what happened and the RFC 2182 §7 recovery in numbers."""
    steps = recovery_steps(replica_serial, primary_serial)
    if went_from is not None and went_from != primary_serial:
        what = f"the primary's serial went from {went_from} to {primary_serial}"
    else:
        what = f"the primary serves serial {primary_serial}"
    if _older(primary_serial, replica_serial):
        order = "older than"
    else:
        # Exactly 2^31 apart: RFC 1982 §3.2 leaves the comparison undefined and
        # secondaries (BIND's isc_serial_gt) treat it as not newer.
        order = "not comparable (exactly 2^31 apart) with"
    text = (
        f"{what}, which is {order} the {replica_serial} replicas have in RFC 1982 serial "
        f"arithmetic: replicas keep serving {replica_serial} and ignore the primary until its "
        f"serial is newer than {replica_serial}, or until their copy expires. "
        "To recover (RFC 2182 §7): "
    )
    parts: list[str] = []
    previous = replica_serial
    for index, step in enumerate(steps[:-1], start=1):
        parts.append(
            f"set the primary's serial to S{index} = ({previous} + 2^31 - 1) mod 2^32 = {step}, "
            f"wait until every replica serves {step}"
        )
        previous = step
    parts.append(
        f"then set it to the wanted {steps[-1]} (an increment from {previous})"
        if parts
        else f"set it to the wanted {steps[-1]}"
    )
    text += "; ".join(parts) + ". "
    following = (replica_serial + 1) % SERIAL_MODULUS
    text += (
        f"If the number itself does not matter, setting any serial newer than {replica_serial} "
        f"(e.g. {following}) is enough."
    )
    return text


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _PrimaryView:
    serial: int | None
    reachable: bool
    disagree: bool
    soa: SoaAnswer | None


def _primary_view(primaries: Sequence[ProbeResult], history: ZoneHistory) -> _PrimaryView:
    answered = [(result, result.answer) for result in primaries if result.answer is not None]
    if not answered:
        return _PrimaryView(history.primary_serial, False, False, history.primary_soa)
    serials = [answer.serial for _, answer in answered]
    # Several primaries are tried in order, and a secondary transfers from whichever
    # has a newer serial than its own; the newest one is what replicas converge to.
    primary_serial = newest(serials)
    assert primary_serial is not None
    soa = next(answer for _, answer in answered if answer.serial == primary_serial)
    disagree = len(set(serials)) > 1
    return _PrimaryView(primary_serial, True, disagree, soa)


def _unreachable_reason(primaries: Sequence[ProbeResult]) -> str:
    # A timeout or a network error is a dead server or path; a response with an
    # error (REFUSED, NOTAUTH, SERVFAIL, not authoritative) means the primary is up
    # but does not serve the zone to us, which needs a different fix.
    refused = any(r.responded and r.answer is None for r in primaries)
    return conditions.PRIMARY_REFUSED if refused else conditions.PRIMARY_TIMEOUT


def _primary_summary(primaries: Sequence[ProbeResult]) -> str:
    parts = []
    for result in primaries:
        if result.answer is not None:
            parts.append(f"{result.target} serial {result.answer.serial}")
        else:
            parts.append(f"{result.target} {result.error}")
    return "; ".join(parts)


def _remember_primary(history: ZoneHistory, primary: _PrimaryView, now: float) -> ZoneHistory:
    """The primary's part of the memory after this round."""
    if not primary.reachable:
        since = history.primary_unreachable_since
        return replace(history, primary_unreachable_since=since if since is not None else now)
    changed = primary.serial != history.primary_serial
    return replace(
        history,
        primary_serial=primary.serial,
        primary_seen_at=now,
        primary_serial_changed_at=(
            now
            if changed or history.primary_serial_changed_at is None
            else history.primary_serial_changed_at
        ),
        primary_unreachable_since=None,
        primary_soa=primary.soa,
    )


def _replica_round(
    target: ReplicaTarget,
    result: ProbeResult | None,
    before: ReplicaHistory,
    primary: _PrimaryView,
    now: float,
    engine_expires: float | None,
) -> tuple[ReplicaHistory, ReplicaVerdict, dict[str, Any]]:
    """One replica after this round: its memory, its verdict, its `replicas[]` entry."""
    entry: dict[str, Any] = {"pod": target.pod, "server": target.server}
    if target.engine:
        entry["engine"] = target.engine
    if target.failure_domain:
        entry["failureDomain"] = target.failure_domain
    if target.address:
        entry["address"] = target.address
    if result is None or result.answer is None:
        # No answer tells nothing about its copy: keep what is known, so that
        # the clocks (behind, expiry) keep running across a restart or outage.
        error = "no address yet" if result is None else result.error
        kept = replace(before, repaired_at=None) if before.behind_since is None else before
        entry["inSync"] = False
        return kept, ReplicaVerdict(target, None, False, False, 0.0, error), entry

    serial = result.answer.serial
    changed = before.serial is None or before.serial != serial
    serial_changed_at = (
        now if changed or before.serial_changed_at is None else before.serial_changed_at
    )
    in_sync = primary.serial is not None and serial == primary.serial
    behind = primary.serial is not None and _older(serial, primary.serial)
    behind_since = (
        (before.behind_since if before.behind_since is not None else now) if behind else None
    )
    refreshed_at = before.refreshed_at
    if engine_expires is not None:
        # named sets expire to "last successful refresh + SOA expire" of the
        # copy it serves, so this is the refresh itself, also one the probes
        # cannot see (a replica cut off from a primary that does not change).
        refreshed_at = min(now, engine_expires - result.answer.expire)
        if before.serial is not None and before.serial != serial:
            refreshed_at = now  # a new serial is a refresh, whatever an older timer said
    elif (in_sync and primary.reachable) or changed:
        refreshed_at = now
    remembered = ReplicaHistory(
        serial=serial,
        serial_changed_at=serial_changed_at,
        behind_since=behind_since,
        in_sync_at=now if in_sync and primary.reachable else before.in_sync_at,
        refreshed_at=refreshed_at,
        soa=result.answer,
        repaired_at=before.repaired_at if behind else None,
    )
    entry["serial"] = serial
    entry["inSync"] = in_sync
    entry["lastChange"] = timestamp_text(serial_changed_at)
    seconds_behind = now - behind_since if behind_since is not None else 0.0
    return (
        remembered,
        ReplicaVerdict(target, serial, in_sync, behind, seconds_behind, None),
        entry,
    )


def _repair_due(
    verdict: ReplicaVerdict,
    remembered: ReplicaHistory,
    primary: _PrimaryView,
    now: float,
    grace: float,
    interval: float,
) -> bool:
    """Behind an answering primary for the grace, and not NOTIFYed within the interval."""
    behind_since, repaired_at = remembered.behind_since, remembered.repaired_at
    return (
        verdict.behind
        and primary.reachable
        and behind_since is not None
        and now - behind_since >= grace
        and (repaired_at is None or now - repaired_at >= interval)
        and bool(verdict.target.address)
    )


def _serial_fields(
    primary_serial: int | None, verdicts: Sequence[ReplicaVerdict], entries: list[dict[str, Any]]
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if primary_serial is not None:
        fields["primarySerial"] = primary_serial
    served_serial = oldest([v.serial for v in verdicts if v.serial is not None])
    if served_serial is not None:
        # The oldest serial (RFC 1982) any answering replica serves: every replica
        # that answers serves this serial or a newer one.
        fields["servedSerial"] = served_serial
    in_sync = sum(1 for v in verdicts if v.in_sync)
    return fields | {
        "replicasInSync": in_sync,
        "replicasTotal": len(verdicts),
        "synced": f"{in_sync}/{len(verdicts)}",
        "replicas": entries,
    }


def evaluate(
    *,
    generation: int,
    primaries: Sequence[ProbeResult],
    replicas: Sequence[tuple[ReplicaTarget, ProbeResult | None]],
    history: ZoneHistory,
    previous_status: Mapping[str, Any],
    now: float,
    stale_grace: float = DEFAULT_STALE_GRACE,
    repair_grace: float = DEFAULT_REPAIR_GRACE,
    repair_interval: float = DEFAULT_REPAIR_INTERVAL,
    expiry_warning_fraction: float = DEFAULT_EXPIRY_WARNING_FRACTION,
    engine_expiry: Mapping[str, float] | None = None,
) -> SerialEvaluation:
    """Turn one round of probes into the zone's serial status (see docs/serial-status.md).

    `primaries` are the results of the zone's primaries in spec order; `replicas`
    pair every replica pod with its result, or None when it has no address yet.
    `engine_expiry` maps a pod to the time its engine says its copy of the zone
    expires (named's own timer, from the agent); where known it dates the last
    successful refresh instead of the probes' inference.
    """
    now_text = timestamp_text(now)
    primary = _primary_view(primaries, history)
    expiries = engine_expiry or {}
    verdicts: list[ReplicaVerdict] = []
    new_replicas: dict[str, ReplicaHistory] = {}
    repairs: list[ReplicaTarget] = []
    entries: list[dict[str, Any]] = []
    for target, result in sorted(replicas, key=lambda pair: pair[0].pod):
        before = history.replicas.get(target.pod, ReplicaHistory())
        remembered, verdict, entry = _replica_round(
            target, result, before, primary, now, expiries.get(target.pod)
        )
        if _repair_due(verdict, remembered, primary, now, repair_grace, repair_interval):
            repairs.append(target)
            remembered = replace(remembered, repaired_at=now)
        new_replicas[target.pod] = remembered
        verdicts.append(verdict)
        entries.append(entry)
    new_history = replace(_remember_primary(history, primary, now), replicas=new_replicas)

    # RFC 2182 §7: a primary regressed when it is not at least what the replicas
    # hold; before any replica told a serial, what the primary itself had.
    replica_serials = [h.serial for h in new_replicas.values() if h.serial is not None]
    reference = newest(replica_serials) if replica_serials else history.primary_serial
    regressed = (
        primary.reachable
        and primary.serial is not None
        and reference is not None
        and not _at_least(primary.serial, reference)
    )
    status = _serial_fields(primary.serial, verdicts, entries)
    unreachable_reason = _unreachable_reason(primaries)
    verdicts_now = [
        _synced(primaries, primary, verdicts, unreachable_reason, regressed),
        _stale(primary, verdicts, new_replicas, stale_grace, now),
        _primary_unreachable(primaries, primary, history, new_replicas, now),
        _expiring(verdicts, new_history, expiry_warning_fraction, now),
        engine_diverse(verdicts),
    ]
    previous_conditions = list(previous_status.get("conditions") or [])
    regression = _serial_regressed(primary, history, reference, regressed)
    if regression is not None:
        verdicts_now.append(regression)
    elif find_condition(previous_conditions, conditions.SERIAL_REGRESSED) is None:
        # No primary answers and there is no previous verdict to let stand.
        verdicts_now.append(
            Condition(
                conditions.SERIAL_REGRESSED,
                UNKNOWN,
                unreachable_reason,
                "cannot tell whether the primary's serial went backwards: no primary answers",
            )
        )
    status["conditions"] = set_conditions(previous_conditions, verdicts_now, generation, now_text)
    return SerialEvaluation(
        status=status,
        history=new_history,
        repairs=repairs,
        primary_serial=primary.serial,
        primary_reachable=primary.reachable,
        primaries_disagree=primary.disagree,
        regressed=regressed,
        replicas=tuple(verdicts),
        primary_refresh=primary.soa.refresh if primary.soa else None,
        primary_expire=primary.soa.expire if primary.soa else None,
    )


def _replica_line(verdict: ReplicaVerdict, primary_serial: int) -> str:
    who = verdict.target.describe()
    if verdict.serial is None:
        if verdict.error == "no address yet":
            return f"{who} has no address yet"
        return f"{who} does not answer for the zone: {verdict.error}"
    if verdict.behind:
        return f"{who} serves {verdict.serial} (behind)"
    return f"{who} serves {verdict.serial}, newer than the primary's {primary_serial}"


def _synced(
    primaries: Sequence[ProbeResult],
    primary: _PrimaryView,
    verdicts: Sequence[ReplicaVerdict],
    unreachable_reason: str,
    regressed: bool,
) -> Condition:
    if primary.serial is None:
        return Condition(
            conditions.SYNCED,
            UNKNOWN,
            unreachable_reason,
            "the primary's serial is not known yet: no primary has answered "
            f"({_primary_summary(primaries) or 'no primaries configured'})",
        )
    total = len(verdicts)
    in_sync = sum(1 for v in verdicts if v.in_sync)
    prefix = ""
    if primary.disagree:
        prefix = (
            f"primaries disagree ({_primary_summary(primaries)}); replicas are compared with "
            f"the newest, {primary.serial}. "
        )
    suffix = ""
    if not primary.reachable:
        suffix = " (compared with the primary's last known serial: no primary answers now)"
    if total == 0:
        return Condition(
            conditions.SYNCED,
            FALSE,
            conditions.NOT_TRANSFERRED,
            prefix + "no replica serves the zone yet (0 replicas)" + suffix,
        )
    head = f"{in_sync}/{total} replicas serve serial {primary.serial}"
    if in_sync == total and not primary.disagree:
        return Condition(conditions.SYNCED, TRUE, conditions.IN_SYNC, head + suffix)
    laggards = [_replica_line(v, primary.serial) for v in verdicts if not v.in_sync]
    message = prefix + head + ("; " + "; ".join(laggards) if laggards else "") + suffix
    if primary.disagree:
        reason = conditions.PRIMARIES_DISAGREE
    elif regressed:
        reason = conditions.SERIAL_WENT_BACKWARDS
    elif not any(v.serial is not None for v in verdicts):
        reason = conditions.NOT_TRANSFERRED
    else:
        reason = conditions.REPLICAS_BEHIND
    return Condition(conditions.SYNCED, FALSE, reason, message)


# RFC 2182 §3.1 asks that a zone's secondaries be chosen so that no single likely
# failure makes all of them unavailable. One engine on every replica is one bug away
# from that (a crash or an authentication bypass on a crafted NOTIFY or transfer:
# CVE-2018-5736 in BIND, CVE-2017-11104 in Knot DNS), whatever the failure domains.
RFC_2182_DIVERSITY = (
    "RFC 2182 §3.1: no single likely failure should make every secondary of a zone unavailable"
)
ENGINE_BUG = (
    "a bug of one engine (say, a crash on a crafted NOTIFY or transfer) hits every replica "
    "that runs it"
)


def engine_diverse(verdicts: Sequence[ReplicaVerdict]) -> Condition:
    """`EngineDiverse`: do the zone's replicas run, and answer with, more than one engine?

    Advice, like a SecondaryServer's `Spread`: it never makes the zone unready.
    A replica counts as answering when it answers for the zone with a serial.
    """
    engines: dict[str, tuple[int, int]] = {}
    for verdict in verdicts:
        engine = verdict.target.engine or "unknown"
        total, up = engines.get(engine, (0, 0))
        engines[engine] = (total + 1, up + (verdict.serial is not None))
    counts = ", ".join(f"{e} {up}/{total}" for e, (total, up) in sorted(engines.items()))
    answering = sorted(e for e, (_, up) in engines.items() if up)
    if len(engines) < 2:
        only = next(iter(engines), "one engine")
        return Condition(
            conditions.ENGINE_DIVERSE,
            FALSE,
            conditions.SINGLE_ENGINE,
            f"every replica runs {only} (answering: {counts or 'none'}), and {ENGINE_BUG} "
            f"({RFC_2182_DIVERSITY}): serve the zone from a SecondaryServer of another "
            "spec.engine.type (bind9, knot) as well",
        )
    if len(answering) < 2:
        return Condition(
            conditions.ENGINE_DIVERSE,
            FALSE,
            conditions.ENGINES_NOT_ANSWERING,
            f"replicas of {len(engines)} engines are configured, but only "
            f"{', '.join(answering) or 'no'} replicas answer for the zone now (answering: "
            f"{counts}): one bug of that engine would take the zone down "
            f"({RFC_2182_DIVERSITY})",
        )
    return Condition(
        conditions.ENGINE_DIVERSE,
        TRUE,
        conditions.MULTIPLE_ENGINES,
        f"replicas of {len(answering)} engines answer for the zone (answering: {counts}), "
        f"so a bug of one engine cannot take every replica down ({RFC_2182_DIVERSITY})",
    )


def _since(histories: Mapping[str, ReplicaHistory], verdict: ReplicaVerdict, now: float) -> str:
    # An absolute time, not "for 2m5s": a message that changes every probe
    # round would make every round a status write while a replica stays behind.
    behind_since = histories[verdict.target.pod].behind_since
    return timestamp_text(behind_since if behind_since is not None else now)


def _stale(
    primary: _PrimaryView,
    verdicts: Sequence[ReplicaVerdict],
    histories: Mapping[str, ReplicaHistory],
    stale_grace: float,
    now: float,
) -> Condition:
    if primary.serial is None:
        return Condition(
            conditions.STALE,
            UNKNOWN,
            conditions.PRIMARY_TIMEOUT,
            "cannot tell whether replicas are behind: the primary's serial is not known yet",
        )
    behind = [v for v in verdicts if v.behind]
    stale = [v for v in behind if v.seconds_behind > stale_grace]
    if not stale:
        if behind:
            names = ", ".join(
                f"{v.target.pod} ({v.serial}, behind since {_since(histories, v, now)})"
                for v in behind
            )
            return Condition(
                conditions.STALE,
                FALSE,
                conditions.SERIAL_ADVANCING,
                f"catching up with serial {primary.serial}: {names}; Stale after "
                f"{format_duration(stale_grace)}",
            )
        return Condition(
            conditions.STALE,
            FALSE,
            conditions.IN_SYNC,
            f"no replica is behind the primary's serial {primary.serial}",
        )
    lines = []
    overdue = False
    for verdict in stale:
        replica_soa = histories[verdict.target.pod].soa
        refresh = (
            replica_soa.refresh if replica_soa else (primary.soa.refresh if primary.soa else None)
        )
        line = (
            f"{verdict.target.describe()} serves {verdict.serial}, the primary {primary.serial}, "
            f"behind since {_since(histories, verdict, now)}"
        )
        if refresh is not None and verdict.seconds_behind > refresh:
            overdue = True
            # RFC 2182 §7: a secondary still on the old serial after its SOA refresh
            # interval did not follow the primary: transfers fail (ACL, TSIG, network)
            # or it does not implement serial arithmetic.
            line += (
                f"; it has not caught up within its SOA refresh interval ({refresh}s), "
                "which RFC 2182 §7 calls defective: check its transfers from the primary "
                "(ACL, TSIG key, network)"
            )
        lines.append(line)
    reason = conditions.REFRESH_OVERDUE if overdue else conditions.REPLICAS_BEHIND
    return Condition(conditions.STALE, TRUE, reason, "; ".join(lines))


def _primary_unreachable(
    primaries: Sequence[ProbeResult],
    primary: _PrimaryView,
    before: ZoneHistory,
    replicas: Mapping[str, ReplicaHistory],
    now: float,
) -> Condition:
    if primary.reachable:
        answered = sum(1 for r in primaries if r.answer is not None)
        return Condition(
            conditions.PRIMARY_UNREACHABLE,
            FALSE,
            conditions.PRIMARY_REACHABLE,
            f"{answered}/{len(primaries)} primaries answer: {_primary_summary(primaries)}",
        )
    since = before.primary_unreachable_since if before.primary_unreachable_since else now
    summary = _primary_summary(primaries) or "no primaries configured"
    served = sorted({h.serial for h in replicas.values() if h.serial is not None})
    # The primary's SOA as last seen, else the replicas' own (after a restart).
    soa = before.primary_soa or next((h.soa for h in replicas.values() if h.soa), None)
    expire = soa.expire if soa else None
    keep = "Replicas keep serving their copy"
    if served:
        keep += f" (serial {', '.join(str(s) for s in served)})"
    keep += " until SOA expire"
    keep += f" ({expire}s)" if expire is not None else ""
    keep += " after their last successful refresh; see Expiring."
    return Condition(
        conditions.PRIMARY_UNREACHABLE,
        TRUE,
        _unreachable_reason(primaries),
        f"no primary has answered since {timestamp_text(since)}: {summary}. {keep}",
    )


def _expiring(
    verdicts: Sequence[ReplicaVerdict],
    history: ZoneHistory,
    fraction: float,
    now: float,
) -> Condition:
    expired: list[str] = []
    approaching: list[str] = []
    smallest_expire: int | None = None
    for verdict in verdicts:
        replica = history.replicas.get(verdict.target.pod)
        if replica is None or replica.refreshed_at is None:
            continue
        soa = replica.soa or history.primary_soa
        if soa is None:
            continue
        expire = soa.expire
        smallest_expire = expire if smallest_expire is None else min(smallest_expire, expire)
        age = now - replica.refreshed_at
        who = verdict.target.describe()
        if age >= expire:
            expired.append(
                f"{who}: no sign of a successful refresh since "
                f"{timestamp_text(replica.refreshed_at)}, longer than SOA expire ({expire}s); "
                "its copy has expired and it stops answering for the zone (RFC 1035 §3.3.13)"
            )
        elif age >= fraction * expire:
            approaching.append(
                f"{who}: its copy expires at {timestamp_text(replica.refreshed_at + expire)} "
                f"(SOA expire {expire}s after the last sign of a successful refresh, "
                f"{timestamp_text(replica.refreshed_at)}) unless a refresh from the primary "
                "succeeds"
            )
    if expired:
        return Condition(
            conditions.EXPIRING, TRUE, conditions.EXPIRED, "; ".join(expired + approaching)
        )
    if approaching:
        return Condition(
            conditions.EXPIRING, TRUE, conditions.EXPIRY_APPROACHING, "; ".join(approaching)
        )
    if smallest_expire is None:
        message = "no replica has served the zone yet, so no copy can expire"
    else:
        message = f"every replica refreshed within {fraction:g} of SOA expire ({smallest_expire}s)"
    return Condition(conditions.EXPIRING, FALSE, conditions.IN_SYNC, message)


def _serial_regressed(
    primary: _PrimaryView,
    before: ZoneHistory,
    reference: int | None,
    regressed: bool,
) -> Condition | None:
    """None when no primary answers: the previous verdict stands (it cannot be re-checked)."""
    if not primary.reachable or primary.serial is None:
        return None
    if regressed:
        assert reference is not None
        went_from = before.primary_serial
        if went_from is not None and not _older(primary.serial, went_from):
            went_from = None
        return Condition(
            conditions.SERIAL_REGRESSED,
            TRUE,
            conditions.SERIAL_WENT_BACKWARDS,
            recovery_advice(went_from, primary.serial, reference),
        )
    return Condition(
        conditions.SERIAL_REGRESSED,
        FALSE,
        conditions.SERIAL_ADVANCING,
        f"the primary's serial {primary.serial} is not older than any replica's "
        "(RFC 1982 serial arithmetic)",
    )
