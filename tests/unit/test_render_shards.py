"""The incremental configuration: one Zone's change touches its shard and the root only."""

from __future__ import annotations

import dataclasses
import random

import pytest

from secondary_dns.api import ObjectRef, SecretKeyRef, ZoneSpec, conditions
from secondary_dns.render import renderer_for
from secondary_dns.render.engine import PlanContext, RenderRequest, RenderSettings, plan_zones
from secondary_dns.render.shards import SHARD_COUNT, ConfigBuilder, render_at_once, shard_of
from tests.unit.render_cases import NS, key, minimal_request, name, primary, zone

ENGINES = ["bind9", "knot"]


def request_of(zones: dict[ObjectRef, ZoneSpec], **kwargs: object) -> RenderRequest:
    return dataclasses.replace(minimal_request(), zones=list(zones.items()), **kwargs)  # type: ignore[arg-type]


def builder_for(engine: str, request: RenderRequest) -> ConfigBuilder:
    return ConfigBuilder(
        renderer_for(engine),
        RenderSettings(request.server, request.relay_key_name, request.paths),
        PlanContext.of(request),
    )


def many(count: int) -> dict[ObjectRef, ZoneSpec]:
    return {
        ObjectRef(NS, f"z{i}"): zone(f"z{i}.example.", primary("192.0.2.1")) for i in range(count)
    }


def test_shards_are_stable_and_spread() -> None:
    assert shard_of(name("Example.COM.")) == shard_of(name("example.com."))
    shards = {shard_of(name(f"z{i}.example.")) for i in range(2000)}
    assert len(shards) == SHARD_COUNT  # 2,000 names reach every shard


@pytest.mark.parametrize("engine", ENGINES)
def test_one_changed_zone_rebuilds_its_shard_and_the_root_and_nothing_else(engine: str) -> None:
    zones = many(300)
    request = request_of(zones)
    builder = builder_for(engine, request)
    builder.update({ref: (spec, None) for ref, spec in zones.items()})
    before = builder.rendered()

    changed = ObjectRef(NS, "z7")
    spec = zone("z7.example.", primary("192.0.2.99"))
    assert builder.update({changed: (spec, None)}) == {changed}
    after = builder.rendered()
    shard = shard_of(name("z7.example."))
    assert {s for s in after.shards if after.shards[s] != before.shards.get(s)} == {shard}
    assert after.config_hash != before.config_hash
    assert "192.0.2.99" in after.shards[shard].files[f"zones-{shard}.conf"]

    # The same as rendering everything at once (what `secondary-dns render` does).
    at_once = render_at_once(renderer_for(engine), request_of({**zones, changed: spec}))
    assert at_once.config_hash == after.config_hash
    assert at_once.shards == after.shards

    # Deleted: it leaves its shard; an empty shard leaves the manifest.
    builder.update({changed: None})
    assert changed not in builder.rendered().plan.by_ref
    single = builder_for(engine, request_of({}))
    only = ObjectRef(NS, "z1")
    single.update({only: (zones[only], None)})
    single.update({only: None})
    assert single.rendered().shards == {}


def test_a_random_sequence_of_changes_equals_the_plan_made_at_once() -> None:
    """Claims and key names shared between zones: the incremental planner decides as
    `plan_zones` does on the whole set, whatever the order of the changes."""
    rng = random.Random(16)
    keys = {
        (NS, SecretKeyRef("a")): key("shared.example.", b"a"),
        (NS, SecretKeyRef("b")): key("shared.example.", b"b"),  # same name, other secret
        (NS, SecretKeyRef("c")): key("other.example.", b"c"),
    }
    names = ["one.example.", "two.example.", "three.example."]
    secrets = [None, "a", "b", "c"]
    current: dict[ObjectRef, tuple[ZoneSpec, str | None]] = {}
    base = request_of({}, tsig_keys=keys)
    builder = builder_for("bind9", base)
    for step in range(300):
        ref = ObjectRef(NS, f"z{rng.randrange(8)}")
        if rng.random() < 0.2:
            change: tuple[ZoneSpec, str | None] | None = None
            current.pop(ref, None)
        else:
            spec = zone(rng.choice(names), primary("192.0.2.1", secret=rng.choice(secrets)))
            change = (spec, f"2026-01-01T00:00:{rng.randrange(60):02d}Z")
            current[ref] = change
        builder.update({ref: change}, keys)
        whole = plan_zones(
            dataclasses.replace(
                base,
                zones=[(r, spec) for r, (spec, _) in current.items()],
                created={r: created for r, (_, created) in current.items() if created},
            )
        )
        incremental = builder.rendered().plan
        assert incremental.by_ref == whole.by_ref, step
        assert incremental.rejected == whole.rejected, step
        assert incremental.tsig_keys == whole.tsig_keys, step
    reasons = {rejection.reason for rejection in builder.rendered().plan.rejected.values()}
    assert reasons <= {conditions.ZONE_CONFLICT, conditions.INVALID_TSIG_KEY}


def test_the_objects_an_operator_keeps_per_zone_have_no_instance_dict() -> None:
    """The operator keeps these for every Zone (parsed spec, plan, rendered part,
    status halves); a __dict__ each was about 100 bytes a piece, a dozen pieces a
    Zone (bench/memory.py). Memory is measured there; this keeps the shape."""
    from secondary_dns.api import ObjectRef, Primary, SecretKeyRef, TsigKey, ZoneSpec
    from secondary_dns.api.zone import TransferAclEntry, ZoneTimers
    from secondary_dns.render import engine
    from secondary_dns.routes import MonitoredZone
    from secondary_dns.status.zone import ServerVerdict, ZoneConfig

    kept = [
        ObjectRef, SecretKeyRef, Primary, TransferAclEntry, ZoneTimers, ZoneSpec, TsigKey,
        MonitoredZone, engine.TsigKeyUnavailable, engine.ZoneRejection, engine.PlannedPrimary,
        engine.PlannedAclEntry, engine.PlannedZone, engine.RenderedShard, engine.RenderedZone,
        engine.KeyUse, engine.ZoneDraft, ServerVerdict, ZoneConfig,
    ]  # fmt: skip
    assert [cls.__name__ for cls in kept if "__slots__" not in vars(cls)] == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_zone_s_part_keeps_each_section_as_one_text_of_its_shard(engine: str) -> None:
    """The builder keeps every zone's part: one string a section, not one a line,
    and the shard's file holds each one as it is."""
    zones = many(3)
    builder = builder_for(engine, request_of(zones))
    builder.update({ref: (spec, None) for ref, spec in zones.items()})
    shards = builder.rendered().shards
    for members in builder._members.values():
        for planned, part in members.values():
            for _, text in part.sections:
                assert isinstance(text, str) and text
                assert text in "".join(shards[shard_of(planned.zone)].files.values())
