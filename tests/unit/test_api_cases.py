"""The table of invalid manifests through the Python models: same verdict, same field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from manifest_cases import (
    CASES,
    VALID_CASES,
    InvalidManifest,
    ValidManifest,
    valid_secondary_server,
    valid_zone,
)
from secondary_dns.api import SpecError, parse_secondary_server, parse_zone

PARSERS: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "Zone": parse_zone,
    "SecondaryServer": parse_secondary_server,
}


def test_the_table_is_big_and_ids_are_unique() -> None:
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.kind for case in CASES} == set(PARSERS)


def test_the_base_manifests_are_valid() -> None:
    parse_zone(valid_zone())
    parse_secondary_server(valid_secondary_server())


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_invalid_manifest_is_rejected_naming_the_field(case: InvalidManifest) -> None:
    with pytest.raises(SpecError) as caught:
        PARSERS[case.kind](case.manifest)
    assert caught.value.field == case.field, str(caught.value)
    assert str(caught.value) == f"{case.field}: {caught.value.message}"
    # A message for people: more than a bare "invalid".
    assert len(caught.value.message) > 15


@pytest.mark.parametrize("case", VALID_CASES, ids=[case.id for case in VALID_CASES])
def test_valid_edge_is_accepted(case: ValidManifest) -> None:
    PARSERS[case.kind](case.manifest)
