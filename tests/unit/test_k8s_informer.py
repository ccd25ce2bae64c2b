"""Watch caches (k8s/informer.py) against the in-memory API server's list and watch."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from secondary_dns.api.sharing import RecentValues
from secondary_dns.k8s import informer as informer_module
from secondary_dns.k8s import resources
from secondary_dns.k8s.informer import Informer, ObjectCache, WatchExpired, selected, trim
from tests.fake_cluster import FakeApiServer
from tests.handlers_harness import NS, zone_manifest

Event = tuple[str, str | None, str | None]


def recorder() -> tuple[list[Event], Any]:
    """A handler that keeps (event, old name and version, new name and version)."""
    seen: list[Event] = []

    def handler(event: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        def named(obj: Mapping[str, Any] | None) -> str | None:
            if obj is None:
                return None
            return f"{obj['metadata']['name']}@{obj['metadata']['resourceVersion']}"

        seen.append((event, named(old), named(new)))

    return seen, handler


def zones_informer(api: FakeApiServer, **kwargs: Any) -> tuple[Informer, list[Event]]:
    seen, handler = recorder()
    return Informer(api, resources.ZONES, handler=handler, **kwargs), seen


def version(api: FakeApiServer, name: str) -> str:
    obj = api.get(resources.ZONES.api_version, "Zone", NS, name)
    assert obj is not None
    return str(obj["metadata"]["resourceVersion"])


def test_a_list_then_a_watch_report_every_change_once() -> None:
    api = FakeApiServer()
    api.apply(zone_manifest("a", "a.example"))
    informer, seen = zones_informer(api)
    informer.watch_once()  # lists first (no version yet), then watches
    assert informer.synced.is_set()
    assert seen == [("ADDED", None, f"a@{version(api, 'a')}")]
    cached = informer.get(NS, "a")
    assert cached is not None and cached["kind"] == "Zone"  # a list's items get their kind

    first = version(api, "a")
    api.apply(zone_manifest("a", "a.example", primaries=[{"address": "192.0.2.9"}]))
    api.apply(zone_manifest("b", "b.example"))
    api.delete(resources.ZONES.api_version, "Zone", NS, "a")
    seen.clear()
    informer.watch_once()
    assert [event for event, _, _ in seen] == ["MODIFIED", "ADDED", "DELETED"]
    assert seen[0][1] == f"a@{first}"
    assert [obj["metadata"]["name"] for obj in informer.items(NS)] == ["b"]
    # Nothing new: the watch ends with a bookmark, and no event is reported.
    seen.clear()
    informer.watch_once()
    assert seen == []
    assert ("GET", resources.ZONES.path()) in api.requests  # listed once, at the start
    assert api.requests.count(("GET", resources.ZONES.path())) == 1


def test_a_list_is_read_page_by_page() -> None:
    api = FakeApiServer()
    for index in range(5):
        api.apply(zone_manifest(f"z{index}", f"z{index}.example"))
    informer, seen = zones_informer(api, page_size=2)
    informer.relist()
    assert len(informer) == 5 and len(seen) == 5
    assert api.requests.count(("GET", resources.ZONES.path())) == 3


def test_a_bookmark_moves_the_version_on_so_a_quiet_watch_resumes_where_it_stopped() -> None:
    api = FakeApiServer()
    api.apply(zone_manifest("a", "a.example"))
    informer, seen = zones_informer(api)
    informer.watch_once()
    # Other kinds change: the Zone watch sees no event, but the bookmark carries the version.
    api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": NS}})
    informer.watch_once()
    api.compact()  # history before now is gone: a watch from an old version would get 410
    seen.clear()
    informer.watch_once()  # from the bookmark's version: still valid
    assert seen == []


def test_410_gone_relists_and_reports_what_changed_meanwhile_as_events() -> None:
    api = FakeApiServer()
    api.apply(zone_manifest("a", "a.example"))
    api.apply(zone_manifest("b", "b.example"))
    informer, seen = zones_informer(api)
    informer.watch_once()
    api.delete(resources.ZONES.api_version, "Zone", NS, "a")
    api.apply(zone_manifest("b", "b.example", primaries=[{"address": "192.0.2.9"}]))
    api.apply(zone_manifest("c", "c.example"))
    api.compact()  # the changes above are no longer in the watch history
    seen.clear()
    with pytest.raises(WatchExpired):
        informer.watch_once()
    informer.watch_once()  # lists again
    assert sorted(event for event, _, _ in seen) == ["ADDED", "DELETED", "MODIFIED"]
    assert sorted(obj["metadata"]["name"] for obj in informer.items()) == ["b", "c"]


def test_our_own_writes_are_kept_at_once_and_their_watch_event_is_no_news() -> None:
    api = FakeApiServer()
    api.apply(zone_manifest("a", "a.example"))
    informer, seen = zones_informer(api)
    informer.watch_once()
    written = api.set_status(
        api.get(resources.ZONES.api_version, "Zone", NS, "a") or {}, {"zone": "a.example."}
    )
    informer.observe(written)
    assert (informer.get(NS, "a") or {}).get("status") == {"zone": "a.example."}
    seen.clear()
    informer.watch_once()
    assert seen == []
    # An older copy never replaces a newer one.
    stale = api.get(resources.ZONES.api_version, "Zone", NS, "a") or {}
    stale["metadata"]["resourceVersion"] = "1"
    informer.observe(stale)
    assert (informer.get(NS, "a") or {})["metadata"]["resourceVersion"] == version(api, "a")


def test_a_failing_watch_is_an_error_for_run_to_back_off_from() -> None:
    api = FakeApiServer()
    informer, _ = zones_informer(api)
    informer.watch_once()
    api.fail("WATCH", "/zones", TimeoutError("read timed out"), times=1)
    with pytest.raises(TimeoutError):
        informer.watch_once()
    informer.watch_once()  # the next one works


def test_objects_are_kept_without_managed_fields_and_last_applied() -> None:
    obj = {
        "metadata": {
            "name": "a",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                "keep": "me",
            },
        },
        "spec": {"zone": "a.example"},
    }
    assert trim(obj) == {"metadata": {"name": "a", "annotations": {"keep": "me"}}, **{
        "spec": {"zone": "a.example"}
    }}  # fmt: skip
    assert obj["metadata"]["managedFields"]  # the input is not changed


def test_trimmed_objects_share_their_keys_and_strings() -> None:
    # Each object decoded from its own JSON: equal strings, distinct objects.
    condition = {"type": "Synced", "status": "True", "message": "x" * 100}
    document = json.dumps({"metadata": {"name": "a"}, "status": {"conditions": [condition]}})
    first, second = trim(json.loads(document)), trim(json.loads(document))
    (one,), (two,) = first["status"]["conditions"], second["status"]["conditions"]
    assert one == two
    assert [k for k in one] == ["type", "status", "message"]
    assert all(a is b for a, b in zip(one, two, strict=True))  # the keys
    assert one["status"] is two["status"] and one["type"] is two["type"]
    assert one["message"] is two["message"]


def test_equal_list_entries_of_trimmed_objects_are_one_object() -> None:
    """Zones that converge together have equal conditions and replicas entries: the
    cache keeps one of each, not one per Zone; an entry that differs in the type of
    a value (True is not 1 in JSON) is its own."""

    def zone(name: str, in_sync: Any) -> dict[str, Any]:
        document = {
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Synced", "status": "True", "observedGeneration": 1}],
                "replicas": [{"pod": "edge-0", "inSync": in_sync, "address": {"nested": "x"}}],
            },
        }
        return trim(json.loads(json.dumps(document)))

    first, second, third = zone("a", True), zone("b", True), zone("c", 1)
    assert first["status"]["conditions"][0] is second["status"]["conditions"][0]
    assert first["status"]["conditions"][0] is third["status"]["conditions"][0]
    # An entry holding a mapping is not shared (only flat ones are).
    assert first["status"]["replicas"][0] is not second["status"]["replicas"][0]
    flat = [trim({"spec": {"entries": [{"inSync": value}]}}) for value in (True, 1, True)]
    assert flat[0]["spec"]["entries"][0] is flat[2]["spec"]["entries"][0]
    assert flat[1]["spec"]["entries"][0] is not flat[0]["spec"]["entries"][0]
    assert json.dumps(flat[1]["spec"]) == '{"entries": [{"inSync": 1}]}'


def test_the_entries_remembered_for_sharing_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer_module, "_shared_entries", RecentValues(3))
    objects = [trim({"spec": {"entries": [{"index": index}]}}) for index in range(10)]
    assert len(informer_module._shared_entries) == 3
    again = trim({"spec": {"entries": [{"index": 9}]}})
    assert again["spec"]["entries"][0] is objects[9]["spec"]["entries"][0]
    # Forgotten, not lost: equal to the one kept before, no longer the same object.
    old = trim({"spec": {"entries": [{"index": 0}]}})
    assert old == objects[0] and old["spec"]["entries"][0] is not objects[0]["spec"]["entries"][0]


def test_label_selectors_of_the_operator() -> None:
    obj = {"metadata": {"labels": {"secondarydns.io/server": "edge", "role": "config"}}}
    assert selected(obj, "secondarydns.io/server")
    assert selected(obj, "secondarydns.io/server=edge,role=config")
    assert not selected(obj, "secondarydns.io/server=core")
    assert not selected(obj, "other")


def test_kinds_without_an_informer_are_read_by_name_and_kept_until_they_expire() -> None:
    api = FakeApiServer()
    cache = ObjectCache(api)
    secret_path = resources.SECRETS.path(NS, "tsig")
    assert cache.get(resources.SECRETS, NS, "tsig") is None
    assert cache.get(resources.SECRETS, NS, "tsig") is None
    assert api.requests.count(("GET", secret_path)) == 1  # a missing one is remembered too
    api.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tsig", "namespace": NS}})
    cache.expire(resources.SECRETS, NS, {"other"})
    assert cache.get(resources.SECRETS, NS, "tsig") is None  # not that one
    cache.expire(resources.SECRETS, NS, {"tsig"})
    assert cache.get(resources.SECRETS, NS, "tsig") is not None
    cache.expire()
    cache.get(resources.SECRETS, NS, "tsig")
    assert api.requests.count(("GET", secret_path)) == 3
