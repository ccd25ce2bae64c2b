"""Fixtures for the cluster tier: a real control plane, a fresh namespace per test."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.cluster import LocalCluster

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster(test_netns: str) -> Iterator[LocalCluster]:
    """The session's cluster: started once, reused when already up, stopped at the end.

    A cluster that was already running when the session began (a developer's
    `SDNS_TEST_CLUSTER=... hack/local-cluster up`) is left running; so is any
    cluster when SDNS_KEEP_CLUSTER=1, to look at it after a failure.
    """
    local = LocalCluster(test_netns)
    # Running = its control plane is: a cluster that lacks a newer node
    # component is repaired by `up` (not restarted) and still not the session's.
    was_running = local.control_plane_healthy()
    local.up()
    yield local
    if not was_running and os.environ.get("SDNS_KEEP_CLUSTER") != "1":
        local.down()


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A Kubernetes namespace of its own for one test, deleted afterwards even on failure."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
