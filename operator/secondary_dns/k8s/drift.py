"""Does a live object already hold what an apply would set? (pure)

Server-side apply is idempotent, but sending it costs a write; the operator skips
an apply only when the watch cache shows the live object already matches the
desired one, never from a memory of what it sent before (that hides drift: a
child deleted or edited by hand would stay so).

"Matches" is what an apply of `desired` by its only manager would leave
unchanged: every field `desired` sets is present in the live object with the
same value. Fields the API server defaulted (a container's
terminationMessagePath, a Service's clusterIP) and fields other managers own
(a label someone added, a sidecar a webhook injected) are not ours and do not
count. Lists:

- a list whose items all carry `name` (containers, volumes, env, ports) is a
  map keyed by it, as its merge key makes it for apply: each desired item must
  match the live item of that name, and items of other managers are ignored;
- any other list (RBAC rules, NetworkPolicy rules, command, ownerReferences by
  position) is atomic: it must have as many items, each matching in order;
- `data` of a ConfigMap or Secret must be equal as a whole (the agent hashes it).

Quantities compare by value ("0.5" CPU is stored as "500m"), and a Secret's
`stringData` is compared as the base64 `data` the API server stores it as.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from secondary_dns.api import quantity

_WHOLE_DATA_KINDS = ("ConfigMap", "Secret")


def _same_scalar(desired: object, live: object) -> bool:
    if desired == live and type(desired) is type(live):
        return True
    if isinstance(desired, bool) or isinstance(live, bool):
        return False
    wanted, found = quantity.value(desired), quantity.value(live)
    return wanted is not None and wanted == found


def _empty(value: object) -> bool:
    return value == {} or value == []


def _keyed(items: Sequence[Any]) -> bool:
    return bool(items) and all(isinstance(item, Mapping) and "name" in item for item in items)


def _list_matches(desired: Sequence[Any], live: Any) -> bool:
    if not isinstance(live, list):
        return False
    if _keyed(desired) and all(isinstance(item, Mapping) for item in live):
        by_name = {item.get("name"): item for item in live}
        return all(
            item["name"] in by_name and _value_matches(item, by_name[item["name"]])
            for item in desired
        )
    return len(desired) == len(live) and all(
        _value_matches(want, have) for want, have in zip(desired, live, strict=True)
    )


def _value_matches(desired: Any, live: Any) -> bool:
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        for key, value in desired.items():
            if key not in live:
                if _empty(value) or value is None:
                    continue
                return False
            if not _value_matches(value, live[key]):
                return False
        return True
    if isinstance(desired, list):
        return _list_matches(desired, live)
    return _same_scalar(desired, live)


def as_stored(desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` as the API server stores it: a Secret's stringData as base64 data."""
    result = dict(desired)
    if result.get("kind") == "Secret" and "stringData" in result:
        data = dict(result.get("data") or {})
        for key, text in dict(result.pop("stringData")).items():
            data[key] = base64.b64encode(str(text).encode()).decode()
        result["data"] = data
    return result


def matches(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """True when applying `desired` would change nothing this manager sets in `live`."""
    if live is None:
        return False
    wanted = as_stored(desired)
    if wanted.get("kind") in _WHOLE_DATA_KINDS:
        if dict(wanted.get("data") or {}) != dict(live.get("data") or {}):
            return False
        wanted = {key: value for key, value in wanted.items() if key != "data"}
    return _value_matches(
        {key: value for key, value in wanted.items() if key not in ("apiVersion", "kind")}, live
    )
