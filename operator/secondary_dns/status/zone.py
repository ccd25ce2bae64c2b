"""A Zone's status: one function of what the configuration path and the serial monitor saw.

Two observers know different halves: the reconciler knows the configuration
(did every server render the zone, do its replicas run it: `ZoneConfig`), the
serial monitor knows what the replicas serve (`serial.SerialStatus`). Both
writers call `zone_status` with both halves, so `Ready` is decided here and
nowhere else, by `READY_RULES`: an ordered chain of small named checks, as
cert-manager's `policies.Chain`. The first check that fails gives Ready its
status, reason and message; when none fails the zone is Ready.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from secondary_dns.api import ObjectRef, SpecError, ZoneSpec, conditions
from secondary_dns.api.conditions import FALSE, TRUE, UNKNOWN
from secondary_dns.render.engine import RenderedConfig, ZoneRejection
from secondary_dns.status.conditions import Condition, set_conditions
from secondary_dns.status.serial import SerialStatus
from secondary_dns.status.server import ObservedPod

# ---------------------------------------------------------------- the configuration's half


@dataclass(frozen=True, slots=True)
class ServerVerdict:
    """What one SecondaryServer made of one Zone."""

    server: str
    config_hash: str
    served: bool
    rejection: ZoneRejection | None
    replicas: int
    replicas_current: int
    pod_errors: tuple[str, ...] = ()
    # The zone's spec.retransferRequest in this server's rendered configuration.
    retransfer_request: str | None = None
    # spec.engine.type of the server, and what that engine does differently from
    # what the Zone (or the server's limits) ask, in words (RenderedConfig.limitations).
    engine: str = ""
    limitations: tuple[str, ...] = ()


def verdict_for(
    zone_ref: ObjectRef,
    server: str,
    rendered: RenderedConfig,
    pods: Iterable[ObservedPod],
    replicas: int,
) -> ServerVerdict:
    pods = list(pods)
    planned = rendered.plan.zone(zone_ref)
    current = [p for p in pods if p.ready and p.applied_config_hash == rendered.config_hash]
    errors = tuple(
        f"pod {p.name}: {p.config_error}"
        for p in sorted(pods, key=lambda p: p.name)
        if p.config_error and rendered.config_hash in p.config_error
    )
    return ServerVerdict(
        server=server,
        config_hash=rendered.config_hash,
        served=planned is not None,
        rejection=rendered.rejected.get(zone_ref),
        replicas=replicas,
        replicas_current=len(current),
        pod_errors=errors,
        retransfer_request=planned.retransfer_request if planned is not None else None,
        engine=rendered.engine,
        limitations=rendered.limitations(zone_ref),
    )


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """What the configuration path observed of one Zone."""

    generation: int
    zone_name: str | None
    spec_error: SpecError | None = None
    # Named in spec.servers but not found in the namespace.
    missing_servers: tuple[str, ...] = ()
    # One per SecondaryServer that selects the Zone and has been reconciled.
    verdicts: tuple[ServerVerdict, ...] = ()
    # SecondaryServers that select the Zone but have not been reconciled yet: a
    # Zone applied together with its server is seen first, and must not read as
    # served by none (NoServersSelected, a configuration fault) meanwhile.
    pending_servers: tuple[str, ...] = ()
    # Where the zone's primaries send NOTIFY (the operator's relay), when known.
    notify_address: str | None = None
    # spec.retransferRequest of the Zone as read now.
    retransfer_request: str | None = None
    # allowTransfer entries open to any address (open_transfer_entries); None when
    # the spec could not be read.
    open_transfer: tuple[str, ...] | None = None

    @property
    def servers(self) -> str:
        return ", ".join(verdict.server for verdict in self.verdicts)

    @property
    def lagging(self) -> tuple[ServerVerdict, ...]:
        """Servers some of whose replicas do not run the configuration with this zone yet."""
        return tuple(v for v in self.verdicts if v.replicas_current < v.replicas)


# ---------------------------------------------------------------- the Ready chain


@dataclass(frozen=True)
class ReadyInputs:
    config: ZoneConfig
    # None while the serial monitor has not evaluated the zone in its current
    # configuration: then only the rollout tells how far it is.
    serial: SerialStatus | None


@dataclass(frozen=True)
class Failure:
    """Why a Zone is not Ready (status False, or Unknown while it cannot be told)."""

    reason: str
    message: str
    status: str = FALSE


Rule = Callable[[ReadyInputs], Failure | None]


def spec_invalid(inputs: ReadyInputs) -> Failure | None:
    error = inputs.config.spec_error
    if error is None:
        return None
    return Failure(
        conditions.INVALID_SPEC,
        f"{error}; fix the Zone and apply it again (no server serves it meanwhile)",
    )


def server_not_found(inputs: ReadyInputs) -> Failure | None:
    missing = inputs.config.missing_servers
    if not missing:
        return None
    return Failure(
        conditions.SERVER_NOT_FOUND,
        f"spec.servers names {', '.join(missing)}, but no SecondaryServer of that name exists "
        "in this namespace: create it or correct spec.servers",
    )


def no_servers_selected(inputs: ReadyInputs) -> Failure | None:
    if inputs.config.verdicts or inputs.config.pending_servers:
        return None
    return Failure(
        conditions.NO_SERVERS_SELECTED,
        "no SecondaryServer in this namespace matches spec.serverSelector: "
        "label a SecondaryServer to match it or change the selector",
    )


def rejected_by_a_server(inputs: ReadyInputs) -> Failure | None:
    for verdict in inputs.config.verdicts:
        if verdict.rejection is not None:
            return Failure(
                verdict.rejection.reason,
                f"SecondaryServer {verdict.server}: {verdict.rejection.message}",
            )
    return None


def engine_rejected_config(inputs: ReadyInputs) -> Failure | None:
    for verdict in inputs.config.verdicts:
        if verdict.pod_errors:
            return Failure(
                conditions.CONFIG_REJECTED,
                f"SecondaryServer {verdict.server}: the engine rejected the configuration and "
                f"keeps its last good one; {verdict.pod_errors[0]}",
            )
    return None


def servers_pending(inputs: ReadyInputs) -> Failure | None:
    pending = inputs.config.pending_servers
    if not pending:
        return None
    return Failure(
        conditions.SERVER_NOT_RECONCILED,
        f"SecondaryServer {', '.join(pending)} selects this zone and has not rendered it "
        "yet; it does at its next reconcile (if its Stalled condition is True, fix that "
        "SecondaryServer)",
        UNKNOWN,
    )


def rollout_in_progress(inputs: ReadyInputs) -> Failure | None:
    # Only until the monitor has looked: afterwards what the replicas serve says
    # more than rollout progress (a change of any zone on a server rolls a new
    # configuration to all of them, and must not make every zone unready).
    lagging = inputs.config.lagging
    if inputs.serial is not None or not lagging:
        return None
    return Failure(
        conditions.PROGRESSING,
        "; ".join(
            f"SecondaryServer {v.server}: {v.replicas_current}/{v.replicas} replicas serve "
            f"the configuration with this zone"
            for v in lagging
        ),
    )


def _serial_fault(type_: str) -> Rule:
    """A rule that fails while the serial condition `type_` is True, with its reason."""

    def rule(inputs: ReadyInputs) -> Failure | None:
        found = inputs.serial.condition(type_) if inputs.serial is not None else None
        if found is None or not found.is_true:
            return None
        return Failure(found.reason, found.message)

    rule.__name__ = re.sub(r"(?<!^)(?=[A-Z])", "_", type_).lower()
    return rule


serial_regressed = _serial_fault(conditions.SERIAL_REGRESSED)
primary_unreachable = _serial_fault(conditions.PRIMARY_UNREACHABLE)
stale = _serial_fault(conditions.STALE)
# In sync but about to expire (a replica whose refreshes fail while the zone does
# not change) is not Ready: it will stop answering.
expiring = _serial_fault(conditions.EXPIRING)


def not_synced(inputs: ReadyInputs) -> Failure | None:
    """Replicas behind, not transferred yet, or primaries that disagree (Synced's reason)."""
    synced = inputs.serial.condition(conditions.SYNCED) if inputs.serial is not None else None
    if synced is None or synced.is_true:
        return None
    return Failure(synced.reason, synced.message)


def awaiting_serials(inputs: ReadyInputs) -> Failure | None:
    if inputs.serial is not None:
        return None
    return Failure(
        conditions.AWAITING_SERIALS,
        f"every replica of {inputs.config.servers} has the configuration with this zone; "
        "waiting for the serial monitor to see them serve the primary's serial",
        UNKNOWN,
    )


# What makes a Zone's configuration invalid, in the order its message is chosen.
CONFIG_RULES: tuple[Rule, ...] = (
    spec_invalid,
    server_not_found,
    no_servers_selected,
    rejected_by_a_server,
    engine_rejected_config,
)
READY_RULES: tuple[Rule, ...] = (
    *CONFIG_RULES,
    servers_pending,
    rollout_in_progress,
    serial_regressed,
    primary_unreachable,
    stale,
    expiring,
    not_synced,
    awaiting_serials,
)


def first_failure(rules: Iterable[Rule], inputs: ReadyInputs) -> Failure | None:
    for rule in rules:
        failure = rule(inputs)
        if failure is not None:
            return failure
    return None


def ready(inputs: ReadyInputs) -> Condition:
    failure = first_failure(READY_RULES, inputs)
    if failure is not None:
        return Condition(conditions.READY, failure.status, failure.reason, failure.message)
    # Every check passed, so the monitor has evaluated the zone and Synced is True.
    assert inputs.serial is not None
    synced = inputs.serial.condition(conditions.SYNCED)
    return Condition(conditions.READY, TRUE, conditions.IN_SYNC, synced.message if synced else "")


# What Ready waits for while it is False for a reason that passes by itself:
# the rollout, the first probes, a transfer. Reconciling=True then, so GitOps
# tools show progress; anything else is a fault for someone to look at.
PROGRESS_RULES: tuple[Rule, ...] = (
    servers_pending,
    rollout_in_progress,
    not_synced,
    awaiting_serials,
)


def reconciling(inputs: ReadyInputs) -> Condition:
    """Reconciling=True while Ready is False (or Unknown) only because work is under way."""
    for rule in READY_RULES:
        failure = rule(inputs)
        if failure is None:
            continue
        if rule in PROGRESS_RULES:
            return Condition(conditions.RECONCILING, TRUE, failure.reason, failure.message)
        return Condition(
            conditions.RECONCILING,
            FALSE,
            failure.reason,
            "nothing is under way that would make this Zone Ready by itself; Ready says why",
        )
    return Condition(conditions.RECONCILING, FALSE, conditions.IN_SYNC, "every replica in sync")


def config_verdicts(config: ZoneConfig) -> tuple[Condition, Condition]:
    """ConfigValid and Stalled: Stalled for every configuration the operator cannot serve.

    A missing or bad TSIG Secret, an unknown server, a conflict, a refused primary
    or a configuration the engine rejects need someone to change something, as an
    invalid spec does: kstatus reads Stalled=True as Failed, so Flux's health check
    fails at once naming the Zone (instead of waiting for its timeout) and Argo CD
    shows Degraded. Stalled goes back to False by itself once the cause is fixed
    (the Secret created, the server applied): the operator looks again.
    """
    failure = first_failure(CONFIG_RULES, ReadyInputs(config, None))
    pending = servers_pending(ReadyInputs(config, None))
    if failure is None and pending is not None:
        # Not a fault: the server's reconcile is on its way (or the server itself
        # is Stalled, and says why). Unknown, so GitOps tools keep waiting.
        return (
            Condition(conditions.CONFIG_VALID, UNKNOWN, pending.reason, pending.message),
            Condition(
                conditions.STALLED, FALSE, pending.reason, "the operator can act on this Zone"
            ),
        )
    if failure is None:
        limited = [v for v in config.verdicts if v.limitations]
        return (
            Condition(
                conditions.CONFIG_VALID,
                TRUE,
                conditions.ENGINE_LIMITATIONS if limited else conditions.RENDERED,
                "; ".join(
                    [
                        f"rendered for {config.servers}",
                        *(
                            f"SecondaryServer {v.server} ({v.engine}): {note}"
                            for v in limited
                            for note in v.limitations
                        ),
                    ]
                ),
            ),
            Condition(
                conditions.STALLED, FALSE, conditions.RENDERED, "the operator can act on this Zone"
            ),
        )
    return (
        Condition(conditions.CONFIG_VALID, FALSE, failure.reason, failure.message),
        Condition(conditions.STALLED, TRUE, failure.reason, failure.message),
    )


def completed_retransfer(config: ZoneConfig) -> str | None:
    """spec.retransferRequest once every replica applied the configuration that carries it.

    The agent tells named to retransfer before it reports that configuration,
    so this is when every replica was told.
    """
    request = config.retransfer_request
    if (
        not request
        or first_failure(CONFIG_RULES, ReadyInputs(config, None)) is not None
        or config.lagging
        or any(v.retransfer_request != request for v in config.verdicts)
    ):
        return None
    return request


def follows_rollout(
    config: ZoneConfig, serial: SerialStatus | None, status: Mapping[str, Any]
) -> bool:
    """Whether this Zone's status (as `zone_status` made it) depends on its servers' rollout.

    A new configuration of a server (any zone changed) and each replica applying
    it change every verdict's config hash and replicas_current, but a Zone's
    status looks at them only before the serial monitor has evaluated it
    (rollout_in_progress) and until its retransfer request is done
    (completed_retransfer; once `status` shows it, it stays). So after a rollout
    step only these Zones are computed again, not every Zone of the server. A
    change of the engines' rejections (pod_errors) concerns every Zone and is
    looked at apart.
    """
    if serial is None:
        return True
    request = config.retransfer_request
    return bool(request) and status.get("retransferRequest") != request


# ---------------------------------------------------------------- TransferOpen


def open_transfer_entries(spec: ZoneSpec) -> tuple[str, ...]:
    """The allowTransfer entries that let any address transfer the zone: a /0 with no key."""
    return tuple(
        f"spec.allowTransfer[{index}] ({entry.cidr.compressed})"
        for index, entry in enumerate(spec.allow_transfer)
        if entry.cidr is not None
        and entry.cidr.prefixlen == 0
        and entry.tsig_key_secret_ref is None
    )


def transfer_open(config: ZoneConfig) -> Condition | None:
    """A warning, never a failure: a public secondary may serve transfers to everyone.

    Zone data is often not meant for everyone (internal names, the whole of a
    zone at once), and a full transfer costs the replicas far more than a query.
    """
    if config.open_transfer is None:
        return None
    if config.open_transfer:
        return Condition(
            conditions.TRANSFER_OPEN,
            TRUE,
            conditions.OPEN_TO_ANY_ADDRESS,
            f"{', '.join(config.open_transfer)} lets any address that reaches the replicas "
            "transfer the whole zone (AXFR/IXFR); if that is not meant, add a "
            "tsigKeySecretRef to the entry or narrow its cidr",
        )
    return Condition(
        conditions.TRANSFER_OPEN,
        FALSE,
        conditions.TRANSFER_RESTRICTED,
        "no entry of spec.allowTransfer admits every address without a key (an empty "
        "allowTransfer admits nobody)",
    )


# ---------------------------------------------------------------- the whole status


def zone_status(
    previous: Mapping[str, Any],
    config: ZoneConfig,
    serial: SerialStatus | None,
    now: str,
) -> dict[str, Any]:
    """The Zone's status from both halves; fields of neither half are kept as they were."""
    base = serial.apply(previous) if serial is not None else dict(previous)
    status: dict[str, Any] = {
        key: value
        for key, value in base.items()
        if key not in ("conditions", "observedGeneration", "zone")
    }
    if config.zone_name:
        status["zone"] = config.zone_name
    if config.notify_address:
        status["notifyAddress"] = config.notify_address
    request = completed_retransfer(config)
    if request is not None:
        status["retransferRequest"] = request
    config_valid, stalled = config_verdicts(config)
    inputs = ReadyInputs(config, serial)
    verdicts = [config_valid, ready(inputs), stalled, reconciling(inputs)]
    open_condition = transfer_open(config)
    if open_condition is not None:
        verdicts.append(open_condition)
    status["conditions"] = set_conditions(
        base.get("conditions") or [], verdicts, config.generation, now
    )
    status["observedGeneration"] = config.generation
    return status
