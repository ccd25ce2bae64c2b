"""Fixtures shared by the tiers.

Tests that need addresses (data plane, cluster) run inside a private network
namespace: the pytest process enters it once per session, so every socket it
opens and every process it starts can only reach addresses inside it. Unit
tests never ask for it and run anywhere, without root.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import image
from localcluster import netns
from localcluster.cluster import LocalCluster

CLUSTER_TIER = Path(__file__).parent / "cluster"

# Property tests judge the code, not the machine: on a CI machine busy with the
# other tiers' clusters, Hypothesis' per-example deadline and its "input
# generation is slow" health check failed tests that found nothing wrong.
settings.register_profile(
    "secondary-dns", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("secondary-dns")


def pytest_collection_finish(session: pytest.Session) -> None:
    """The image of this tree, built before any test runs, when a cluster test will.

    Every cluster test runs the project's pods from this tree's image. It is
    built here, before a fixture moves the session into a network namespace
    with no route to the package registries the build needs; unchanged, it is
    not rebuilt (about 0.3 s).
    """
    cluster_tests = any(CLUSTER_TIER in Path(str(i.path)).parents for i in session.items)
    if os.geteuid() != 0 or not cluster_tests:
        return
    try:
        # Kept for the whole session (scenario.tree_image), whatever is edited meanwhile.
        os.environ["SDNS_IMAGE"] = image.ensure_image().content_tag
    except (image.ImageError, OSError, subprocess.CalledProcessError) as error:
        pytest.exit(f"cannot build the image the cluster tests run: {error}", returncode=3)


def test_cluster_name() -> str:
    return os.environ.get("SDNS_TEST_CLUSTER", "sdns-test")


@pytest.fixture(scope="session")
def test_netns() -> Iterator[str]:
    """The session's network namespace; the test process is inside it from here on."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (the data-plane and cluster tiers run as root)")
    name = test_cluster_name()
    # Two sessions in one namespace hand out the same loopback addresses and
    # kill each other's processes at the end: refuse the second one plainly.
    lock = Path(f"/run/secondary-dns-{name}.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        pytest.exit(
            f"another test session (pid {holder}) is using the network namespace {name}; "
            f"wait for it, or run this one with SDNS_TEST_CLUSTER=<another name>",
            returncode=3,
        )
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    netns.create(name)
    netns.enter(name)
    yield name
    # A cluster kept running on purpose keeps its namespace; otherwise nothing
    # the session started may outlive it.
    try:
        if LocalCluster(name).healthy():
            return
        for pid in set(netns.pids(name)) - {os.getpid()}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        netns.delete(name)
    finally:
        lock.close()
