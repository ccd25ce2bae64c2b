"""The agent's pure decisions: apply or not, readiness, and the Pod annotation patch."""

from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath

import dns.name
import pytest

from secondary_dns.agent.assemble import DesiredConfig
from secondary_dns.agent.decide import (
    Action,
    AppliedConfig,
    Rejection,
    annotation_patch,
    apply_delay,
    check_readiness,
    config_error,
    decide_apply,
    missing_zones,
    one_line,
    pod_annotations,
    refreshes_due,
    retransfers_due,
    zone_entries,
)
from secondary_dns.agent.named import parse_zone_states, parse_zone_statistics
from secondary_dns.agent.probe import ZoneState
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout
from secondary_dns.render.shards import shard_of
from tests.agent_configs import PrimaryZone, render_bundle

A = dns.name.from_text("a.test.")
B = dns.name.from_text("b.test.")
DESIRED = DesiredConfig("c1", "k1", {"named.conf": ""}, (A, B), "")


def test_same_config_and_keys_is_no_write_and_no_reload() -> None:
    assert decide_apply(DESIRED, AppliedConfig("c1", "k1"), None) is Action.UNCHANGED


def test_new_config_or_new_keys_are_applied() -> None:
    assert decide_apply(DESIRED, None, None) is Action.APPLY
    assert decide_apply(DESIRED, AppliedConfig("c0", "k1"), None) is Action.APPLY
    # Rotated TSIG secret, same config text: the key file changes, named reloads.
    assert decide_apply(DESIRED, AppliedConfig("c1", "k0"), None) is Action.APPLY


def test_a_rejected_config_is_not_checked_again_until_something_changes() -> None:
    rejected = Rejection("c1", "k1", "bad")
    assert decide_apply(DESIRED, AppliedConfig("c0", "k0"), rejected) is Action.ALREADY_REJECTED
    assert decide_apply(DESIRED, AppliedConfig("c0", "k0"), Rejection("c1", "k0", "bad")) is (
        Action.APPLY
    )


def test_readiness_needs_named_and_every_zone_until_first_ready() -> None:
    assert not check_readiness(False, [], True).ready
    fresh = check_readiness(True, missing_zones([A, B], [A]), has_been_ready=False)
    assert not fresh.ready and "b.test." in fresh.reason
    assert check_readiness(True, missing_zones([A, B], [A, B]), has_been_ready=False).ready
    # A zone added later that does not load does not empty the Service.
    assert check_readiness(True, missing_zones([A, B], [A]), has_been_ready=True).ready


def test_config_error_is_one_line_and_bounded() -> None:
    message = "zones.conf:3: unknown key 'x'\n\tzones.conf:9: " + "é" * 2000
    value = config_error(Rejection("abc", "k", message))
    assert value.startswith("abc: zones.conf:3: unknown key 'x' zones.conf:9: ")
    assert "\n" not in value and "\t" not in value
    assert len(value.encode()) <= agent_contract.CONFIG_ERROR_MAX_BYTES and value.endswith("...")
    assert one_line("short\nmessage") == "short message"
    assert config_error(None) == ""


def test_patch_holds_only_changed_annotations() -> None:
    wanted = pod_annotations(AppliedConfig("c1", "k1"), None, 1, 2)
    assert wanted == {
        agent_contract.ANNOTATION_APPLIED_CONFIG_HASH: "c1",
        agent_contract.ANNOTATION_CONFIG_ERROR: "",
        agent_contract.ANNOTATION_ZONES_LOADED: "1/2",
    }
    assert annotation_patch({}, wanted) == wanted
    assert annotation_patch(dict(wanted), wanted) == {}
    shown = {**wanted, agent_contract.ANNOTATION_ZONES_LOADED: "0/2"}
    assert annotation_patch(shown, wanted) == {agent_contract.ANNOTATION_ZONES_LOADED: "1/2"}
    rejected = pod_annotations(AppliedConfig("c1", "k1"), Rejection("c2", "k1", "bad"), 2, 2)
    assert annotation_patch(wanted, rejected) == {
        agent_contract.ANNOTATION_CONFIG_ERROR: "c2: bad",
        agent_contract.ANNOTATION_ZONES_LOADED: "2/2",
    }


def test_zone_statistics_count_only_zones_with_a_serial() -> None:
    document = {
        "views": {
            "_default": {
                "zones": [
                    {"name": "a.test", "class": "IN", "type": "secondary", "serial": 7},
                    {"name": "b.test", "class": "IN", "type": "secondary", "loaded": "1970"},
                ]
            },
            "_bind": {"zones": [{"name": "authors.bind", "class": "CH", "serial": 0}]},
        }
    }
    assert parse_zone_statistics(document) == {A}
    assert parse_zone_statistics({}) == set()


def test_a_changed_retransfer_request_is_due_only_for_zones_served_before() -> None:
    before = AppliedConfig("c0", "k1", (A,), {A: "ticket-1"})
    # A new request for a zone this replica served: due. A request on a zone
    # that is new to the replica: not due, it transfers in full anyway.
    after = AppliedConfig("c1", "k1", (A, B), {A: "ticket-2", B: "ticket-1"})
    assert retransfers_due(before, after) == [A]
    # The first request on a zone that had none is due too.
    assert retransfers_due(AppliedConfig("c0", "k1", (A, B)), after) == [A, B]
    # Same request, a removed request, or a replica with no configuration before: nothing.
    assert retransfers_due(before, AppliedConfig("c2", "k1", (A,), {A: "ticket-1"})) == []
    assert retransfers_due(before, AppliedConfig("c2", "k1", (A,))) == []
    assert retransfers_due(None, after) == []


def test_zones_of_changed_shards_served_before_are_due_for_a_refresh() -> None:
    # C shares A's shard; B has a shard of its own.
    c = next(
        name
        for name in (dns.name.from_text(f"c{index}.test.") for index in range(1000))
        if shard_of(name) == shard_of(A)
    )
    assert shard_of(A) != shard_of(B)
    shards = {shard_of(A): "1" * 64, shard_of(B): "2" * 64}
    before = AppliedConfig("c0", "k1", (A, B), {}, shards)
    a_changed = {**shards, shard_of(A): "3" * 64}
    assert refreshes_due(before, AppliedConfig("c1", "k1", (A, B), {}, a_changed)) == [A]
    # C is new to the replica (it transfers at once); A, in the same shard, is due.
    assert refreshes_due(before, AppliedConfig("c1", "k1", (A, B, c), {}, a_changed)) == [A]
    # A zone whose retransfer request changed gets a full transfer instead.
    requested = AppliedConfig("c1", "k1", (A, B), {A: "ticket-1"}, a_changed)
    assert refreshes_due(before, requested) == []
    # Nothing changed, a first configuration, or a previous manifest not known: nothing.
    assert refreshes_due(before, AppliedConfig("c2", "k2", (A, B), {}, shards)) == []
    assert refreshes_due(None, AppliedConfig("c1", "k1", (A, B), {}, a_changed)) == []
    unknown = AppliedConfig("c0", "k1", (A, B))
    assert refreshes_due(unknown, AppliedConfig("c1", "k1", (A, B), {}, a_changed)) == []


@pytest.mark.parametrize("engine", [agent_contract.ENGINE_BIND9, agent_contract.ENGINE_KNOT])
def test_only_zones_whose_entries_changed_are_refreshed(engine: str) -> None:
    c = next(
        name
        for name in (dns.name.from_text(f"c{index}.test.") for index in range(1000))
        if shard_of(name) == shard_of(A)
    )
    layout = PodLayout(PurePosixPath("/run/sdns"), PurePosixPath("/var/lib/sdns"))

    def applied(primary_of_a: str) -> tuple[AppliedConfig, dict[str, str]]:
        zones = [PrimaryZone("a.test.", primary_of_a), PrimaryZone(c.to_text(), "192.0.2.1")]
        bundle = render_bundle(
            layout,
            zones,
            dns.name.from_text("transfer-key."),
            b"0123456789abcdef0123456789abcdef",
            listen=ipaddress.ip_address("127.0.0.1"),
            engine=engine,
        )
        hashes = {shard: part.config_hash for shard, part in bundle.rendered().shards.items()}
        texts = {
            shard: "\n".join(files[name] for name in sorted(files) if name.endswith(".conf"))
            for shard, files in bundle.shards.items()
        }
        return AppliedConfig("c", "k", (A, c), {}, hashes), texts

    before, texts_before = applied("192.0.2.1")
    after, texts_after = applied("192.0.2.2")
    assert before.shards != after.shards
    # c shares A's changed shard; its own entries did not change.
    assert refreshes_due(before, after) == sorted([A, c])
    assert refreshes_due(before, after, texts_before, texts_after) == [A]
    # A zone whose entries cannot be found is refreshed, never skipped.
    assert refreshes_due(before, after, texts_before, {}) == sorted([A, c])
    assert zone_entries(texts_after[shard_of(A)], B) == []


def test_zone_states_carry_named_s_expire_and_refresh_times() -> None:
    document = {
        "views": {
            "_default": {
                "zones": [
                    {
                        "name": "a.test",
                        "class": "IN",
                        "serial": 5,
                        "type": "secondary",
                        "loaded": "2026-12-02T05:31:50Z",
                        "expires": "2026-12-03T05:31:50Z",
                        "refresh": "2026-12-02T06:20:24Z",
                    },
                    # Configured, never transferred: no serial, epoch times.
                    {
                        "name": "b.test",
                        "class": "IN",
                        "type": "secondary",
                        "expires": "1970-01-01T00:00:00Z",
                        "refresh": "garbage",
                    },
                    {"name": "version.bind", "class": "CH", "serial": 0},
                ]
            }
        }
    }
    states = parse_zone_states(document)
    assert states == {
        A: ZoneState(serial=5, expires=1796275910.0, refresh=1796192424.0),
        B: ZoneState(serial=None, expires=None, refresh=None),
    }
    assert parse_zone_statistics(document) == {A}


@pytest.mark.parametrize(
    ("pod", "last_apply", "delay"),
    [
        ("scale-0", 0.4, 0.0),  # the even wave applies at once
        ("scale-2", None, 0.0),
        ("scale-1", 0.4, 0.85),  # the odd wave: 1.5 times the last apply, plus 0.25 s
        ("scale-1", None, 2.0),  # nothing timed yet: the ceiling
        ("scale-3", 5.0, 2.0),  # never past the ceiling
        ("agent", 0.4, None),  # no ordinal: a random wait
        (None, 0.4, None),
    ],
)
def test_replicas_apply_in_two_waves_by_ordinal(
    pod: str | None, last_apply: float | None, delay: float | None
) -> None:
    assert apply_delay(pod, last_apply, 2.0) == (
        pytest.approx(delay) if delay is not None else None
    )
