"""Fixtures for the data-plane tier: real named processes, stopped after each test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.named import NamedFleet, PrimaryServer, TsigCredentials, make_zone
from tests.dataplane.engines import ENGINES, Engine
from tests.dataplane.rendered import (
    ZONE,
    ExampleSecondary,
    RenderedSecondary,
    start_example_secondary,
)

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.dataplane)


@pytest.fixture(scope="session")
def named_binary() -> str:
    path = shutil.which("named")
    if path is None:
        pytest.skip("named is not installed (Debian: apt-get install bind9 bind9-utils)")
    return path


@pytest.fixture(scope="session")
def knotd_binary() -> str:
    path = shutil.which("knotd")
    if path is None:
        pytest.skip("knotd is not installed (Debian: apt-get install knot knot-dnsutils)")
    return path


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each scenario once with named (BIND 9) and once with knotd (Knot DNS) as the secondary."""
    found = ENGINES[request.param]
    request.getfixturevalue("knotd_binary" if found.name == "knot" else "named_binary")
    return found


@pytest.fixture
def fleet(test_netns: str, named_binary: str, tmp_path: Path) -> Iterator[NamedFleet]:
    """The named processes of one test, inside the session's network namespace."""
    with NamedFleet(tmp_path, test_netns) as named_fleet:
        yield named_fleet


@pytest.fixture
def transfer_key() -> TsigCredentials:
    return TsigCredentials.generate("transfer-key.example.")


@pytest.fixture
def primary(fleet: NamedFleet, transfer_key: TsigCredentials) -> PrimaryServer:
    """A primary serving example.test (serial 1), transfers only with `transfer_key`."""
    return fleet.start_primary([make_zone(ZONE, serial=1)], transfer_key)


@pytest.fixture
def example_secondary(
    fleet: NamedFleet, primary: PrimaryServer, transfer_key: TsigCredentials, tmp_path: Path
) -> ExampleSecondary:
    """Starts the secondary most tests need: example.test. from `primary` with `transfer_key`.

    Rendered by `secondary-dns render` from manifests (see rendered.py); keyword
    arguments shape the Zone or the server, `engine=` picks its engine
    (`start_example_secondary`). It returns once the secondary serves serial 1.
    """

    def start(**options: Any) -> RenderedSecondary:
        return start_example_secondary(fleet, tmp_path / "edge", [primary], transfer_key, **options)

    return start
