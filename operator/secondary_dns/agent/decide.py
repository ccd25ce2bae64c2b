"""Pure decisions of the agent: apply or not, ready or not, what to report on the Pod."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dns.name

from secondary_dns.agent.assemble import DesiredConfig
from secondary_dns.api import agent_contract
from secondary_dns.render.shards import shard_of


@dataclass(frozen=True)
class AppliedConfig:
    """The configuration on disk (and, after a successful reload, in the engine)."""

    config_hash: str
    keys_hash: str
    zones: tuple[dns.name.Name, ...] = ()
    retransfer: Mapping[dns.name.Name, str] = field(default_factory=dict)
    # shard -> its hash (the manifest); empty when not known (a version directory
    # written before the manifest was kept).
    shards: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    """A configuration the engine or its checker refused; kept so it is not retried per event."""

    config_hash: str
    keys_hash: str
    message: str


class Action(enum.Enum):
    APPLY = "apply"
    UNCHANGED = "unchanged"  # same config and keys as on disk: no write, no reload
    ALREADY_REJECTED = "already-rejected"  # refused before; waits for a new hash


# A StatefulSet pod's name ends in its ordinal ("<server>-<ordinal>").
_ORDINAL = re.compile(r"-(\d+)$")
# The odd wave waits as long as this replica's last apply took, this many times
# over plus a margin: the even wave's apply of the same change takes about as long.
STAGGER_FACTOR = 1.5
STAGGER_MARGIN_SECONDS = 0.25


def apply_delay(pod: str | None, last_apply: float | None, ceiling: float) -> float | None:
    """How long a running replica waits before it applies a change everyone sees at once.

    The engines answer no query while they reconfigure (named's exclusive mode), so
    the replicas of a server apply in two waves by ordinal: even ordinals at once,
    odd ones once the even ones are done (`last_apply` seconds, this replica's own
    last check + write + reload, times STAGGER_FACTOR plus STAGGER_MARGIN_SECONDS;
    `ceiling` before any apply was timed, and at most `ceiling`). With two replicas
    or more one wave always answers, and the last replica serves a change after
    about two applies, where a random wait of up to `ceiling` could take all of it
    and still let every replica pause together. None when the pod has no ordinal
    (then a random wait).
    """
    match = _ORDINAL.search(pod or "")
    if match is None:
        return None
    if int(match.group(1)) % 2 == 0:
        return 0.0
    if last_apply is None:
        return ceiling
    return min(ceiling, last_apply * STAGGER_FACTOR + STAGGER_MARGIN_SECONDS)


def decide_apply(
    desired: DesiredConfig, applied: AppliedConfig | None, rejection: Rejection | None
) -> Action:
    identity = desired.identity
    if applied is not None and (applied.config_hash, applied.keys_hash) == identity:
        return Action.UNCHANGED
    if rejection is not None and (rejection.config_hash, rejection.keys_hash) == identity:
        return Action.ALREADY_REJECTED
    return Action.APPLY


def retransfers_due(previous: AppliedConfig | None, applied: AppliedConfig) -> list[dns.name.Name]:
    """Zones whose spec.retransferRequest changed between two applied configurations.

    Only zones the previous configuration already served: a zone that is new
    to this replica, or a replica with no configuration before (a new pod),
    transfers the zone in full anyway. A request that was removed asks for
    nothing.
    """
    if previous is None:
        return []
    served = set(previous.zones)
    return sorted(
        zone
        for zone, request in applied.retransfer.items()
        if zone in served and zone in applied.zones and previous.retransfer.get(zone) != request
    )


def refreshes_due(
    previous: AppliedConfig | None,
    applied: AppliedConfig,
    shard_texts_before: Mapping[str, str] | None = None,
    shard_texts: Mapping[str, str] | None = None,
) -> list[dns.name.Name]:
    """Zones to refresh (an SOA query to their primaries now) after `applied` replaced
    `previous`: the zones both serve whose entries in their shard's text changed.

    A reload applies a zone's new statement (new primaries, a new key) but does not
    refresh the zone: BIND and Knot keep its refresh timer, up to the SOA refresh
    (an hour, often a day) before the new primaries are asked. Not: zones new to the
    replica (they transfer at once), zones whose spec.retransferRequest changed
    (`retransfers_due`: a full transfer anyway), a first configuration, or a previous
    one whose manifest is unknown. With the changed shards' texts before and after
    (shard -> its engine files joined), only zones whose entries differ
    (`zone_entries`); without them, every zone of a changed shard.
    """
    if previous is None or not previous.shards:
        return []
    served = set(previous.zones)
    changed = {
        shard for shard, digest in applied.shards.items() if previous.shards.get(shard) != digest
    }
    retransferred = set(retransfers_due(previous, applied))
    candidates = [
        zone
        for zone in sorted(applied.zones)
        if zone in served and zone not in retransferred and shard_of(zone) in changed
    ]
    if shard_texts_before is None or shard_texts is None:
        return candidates
    return [
        zone
        for zone in candidates
        if shard_of(zone) not in shard_texts_before
        or shard_of(zone) not in shard_texts
        or not zone_entries(shard_texts[shard_of(zone)], zone)
        or zone_entries(shard_texts_before[shard_of(zone)], zone)
        != zone_entries(shard_texts[shard_of(zone)], zone)
    ]


def zone_entries(text: str, zone: dns.name.Name) -> list[str]:
    """The entries of a shard's text that name `zone`, sorted.

    An entry starts at a comment, a blank or an unindented line: a BIND `zone`
    statement, a Knot `remote`, `acl` or `zone` item (each named after its zone,
    docs/agent.md). Matching the name as text can take in a neighbour's entry
    (`a.test` in `ba.test`): that only refreshes a zone more; a zone none of whose
    entries is found is refreshed (the caller's fallback), never skipped.
    """
    name = zone.to_text(omit_final_dot=True).lower()
    entries: list[list[str]] = []
    for line in text.splitlines():
        if (
            not entries
            or not line.strip()
            or line.lstrip().startswith("#")
            or line[:1] not in " \t"
        ):
            entries.append([])
        entries[-1].append(line)
    return sorted(
        joined for joined in ("\n".join(entry) for entry in entries) if name in joined.lower()
    )


def missing_zones(
    configured: Iterable[dns.name.Name], loaded: Iterable[dns.name.Name]
) -> list[dns.name.Name]:
    have = set(loaded)
    return sorted(zone for zone in set(configured) if zone not in have)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


def check_readiness(
    answering: bool, missing: list[dns.name.Name], has_been_ready: bool
) -> Readiness:
    """Ready: the engine answers, and every zone has loaded once, at least until the first Ready.

    A fresh replica is not Ready until it holds every zone of its config. After
    that, a zone added later that does not load (say, its primary is down) is
    reported in zones-loaded and the metrics but does not make the replica
    unready: otherwise one bad Zone would empty the Service of every replica at
    once, and the design promises that one bad zone never takes down the others.
    """
    if not answering:
        return Readiness(False, "the engine does not answer queries")
    if missing and not has_been_ready:
        shown = ", ".join(zone.to_text() for zone in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        return Readiness(False, f"zones not loaded yet: {shown}{more}")
    return Readiness(True, "ok")


def one_line(message: str, max_bytes: int = agent_contract.CONFIG_ERROR_MAX_BYTES) -> str:
    """Whitespace collapsed to single spaces, cut to max_bytes of UTF-8 (with an ellipsis)."""
    text = re.sub(r"\s+", " ", message).strip()
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    cut = encoded[: max_bytes - len("...")].decode(errors="ignore")
    return cut + "..."


def config_error(rejection: Rejection | None) -> str:
    if rejection is None:
        return ""
    return one_line(f"{rejection.config_hash}: {rejection.message}")


def pod_annotations(
    applied: AppliedConfig | None, rejection: Rejection | None, loaded: int, configured: int
) -> dict[str, str]:
    return {
        agent_contract.ANNOTATION_APPLIED_CONFIG_HASH: applied.config_hash if applied else "",
        agent_contract.ANNOTATION_CONFIG_ERROR: config_error(rejection),
        agent_contract.ANNOTATION_ZONES_LOADED: f"{loaded}/{configured}",
    }


def annotation_patch(
    reported: Mapping[str, str | None], wanted: Mapping[str, str]
) -> dict[str, str]:
    """Only the annotations whose value differs from what the Pod already shows."""
    return {key: value for key, value in sorted(wanted.items()) if reported.get(key) != value}
