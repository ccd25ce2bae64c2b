"""What rendering one SecondaryServer needs, from the objects that declare it (pure).

The operator reads Zones and Secrets from the API, `secondary-dns render` from
manifests; both hand the objects to these functions, so the two agree on which
Zones a server serves, what an unparseable Zone means, which Secrets matter and
how a TSIG key is read from one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from secondary_dns.api import (
    ObjectRef,
    SecretKeyRef,
    SpecError,
    TsigKey,
    ZoneSpec,
    parse_tsig_secret,
    parse_zone,
)
from secondary_dns.render.engine import TsigKeyLookup, TsigKeyUnavailable, secret_refs
from secondary_dns.render.selection import zones_for_server


@dataclass(frozen=True)
class ServedZones:
    """The Zones that select one server, parsed, in a deterministic order."""

    selected: tuple[tuple[ObjectRef, ZoneSpec], ...]
    # metadata.creationTimestamp of each parsed Zone: the older claim keeps a zone name.
    created: Mapping[ObjectRef, str]
    # Zones of the server's namespace that cannot be parsed (stored before a schema
    # change): they never reach a configuration; whether they select the server
    # cannot be told.
    invalid: Mapping[ObjectRef, SpecError]

    @property
    def secret_refs(self) -> frozenset[SecretKeyRef]:
        """The TSIG key references of the selected Zones (primaries and transfer ACLs)."""
        return frozenset(ref for _, zone in self.selected for ref in secret_refs(zone))

    @property
    def secret_names(self) -> frozenset[str]:
        """The Secrets to read (all in the server's namespace: Zones select their own)."""
        return frozenset(ref.name for ref in self.secret_refs)


def select_zones(
    zones: Iterable[tuple[ObjectRef, Mapping[str, Any]]],
    server_ref: ObjectRef,
    server_labels: Mapping[str, str],
) -> ServedZones:
    """Parse Zone objects (with their refs) and keep those that select the server."""
    parsed: list[tuple[ObjectRef, ZoneSpec]] = []
    created: dict[ObjectRef, str] = {}
    invalid: dict[ObjectRef, SpecError] = {}
    for ref, obj in zones:
        try:
            parsed.append((ref, parse_zone(obj)))
        except SpecError as error:
            if ref.namespace == server_ref.namespace:
                invalid[ref] = error
            continue
        timestamp = (obj.get("metadata") or {}).get("creationTimestamp")
        if isinstance(timestamp, str) and timestamp:
            created[ref] = timestamp
    selected = zones_for_server(parsed, server_ref, server_labels)
    refs = {ref for ref, _ in selected}
    return ServedZones(
        selected=tuple(selected),
        created={ref: stamp for ref, stamp in sorted(created.items()) if ref in refs},
        invalid=dict(sorted(invalid.items())),
    )


def tsig_keys(
    served: ServedZones, namespace: str, secrets: Mapping[str, Mapping[str, Any] | None]
) -> TsigKeyLookup:
    """Every key the selected Zones name, from the Secrets read (name -> object or None)."""
    return key_lookup(served.secret_refs, namespace, secrets)


def key_lookup(
    refs: Iterable[SecretKeyRef], namespace: str, secrets: Mapping[str, Mapping[str, Any] | None]
) -> TsigKeyLookup:
    """The keys `refs` name, from the Secrets read (name -> object or None).

    A missing Secret is simply absent (the renderer reports SecretNotFound on the
    Zones that use it); a Secret that cannot be used is a TsigKeyUnavailable
    with the reason, never the key material.
    """
    found: dict[tuple[str, SecretKeyRef], TsigKey | TsigKeyUnavailable] = {}
    for ref in sorted(set(refs), key=lambda r: (r.name, r.key or "")):
        secret = secrets.get(ref.name)
        if secret is None:
            continue
        try:
            found[(namespace, ref)] = parse_tsig_secret(secret, ref)
        except SpecError as error:
            found[(namespace, ref)] = TsigKeyUnavailable(str(error))
    return found
