"""Which Zone objects a SecondaryServer serves (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from secondary_dns.api import ObjectRef, ZoneSpec


def zone_selects_server(
    zone_ref: ObjectRef,
    zone: ZoneSpec,
    server_ref: ObjectRef,
    server_labels: Mapping[str, str],
) -> bool:
    """A Zone selects servers of its own namespace, by name or by label selector."""
    return zone_ref.namespace == server_ref.namespace and zone.serves_on(
        server_ref.name, server_labels
    )


def zones_for_server(
    zones: Iterable[tuple[ObjectRef, ZoneSpec]],
    server_ref: ObjectRef,
    server_labels: Mapping[str, str],
) -> list[tuple[ObjectRef, ZoneSpec]]:
    return sorted(
        (
            (ref, spec)
            for ref, spec in zones
            if zone_selects_server(ref, spec, server_ref, server_labels)
        ),
        key=lambda item: item[0],
    )
