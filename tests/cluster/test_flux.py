"""Flux's real controllers on the local cluster: a git repository applied, updated, pruned.

source-controller and kustomize-controller (built from the Go module proxy) run
in the cluster's network namespace and clone from the in-cluster git server;
kwok simulates the Deployments' pods. The kstatus checker is the library Flux's
health checks use, run on objects whose status the tests control. These are the
parts the GitOps tests of issue 14 stand on (the operator installed by its chart
comes with issue 12).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from localcluster import flux as local_flux
from localcluster import gitserver, kstatus, netns
from localcluster.cluster import LocalCluster
from localcluster.gitserver import ManifestRepository
from localcluster.processes import pid_alive
from localcluster.waiting import wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"


@pytest.fixture(scope="module")
def flux(cluster: LocalCluster) -> Iterator[local_flux.Flux]:
    with local_flux.running(cluster) as running:
        yield running


def _get(cluster: LocalCluster, *args: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise RuntimeError(result.stderr)
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for condition in (obj or {}).get("status", {}).get("conditions", []):
        if condition["type"] == kind:
            found: dict[str, Any] = condition
            return found
    return {}


def _apply(cluster: LocalCluster, *objects: dict[str, Any]) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))


def configmap_yaml(namespace: str, name: str, greeting: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"greeting": greeting},
        }
    )


def deployment(namespace: str, name: str, node_selector: dict[str, str]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": node_selector,
                    "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                },
            },
        },
    }


# kwok runs pods on its nodes (label type=kwok) and makes them Ready; no node
# carries this label, so such pods stay Pending.
ON_KWOK = {"type": "kwok"}
NOWHERE = {"type": "no-such-node"}


def git_repository(namespace: str, repository: ManifestRepository) -> dict[str, Any]:
    return {
        "apiVersion": SOURCE_API,
        "kind": "GitRepository",
        "metadata": {"name": "manifests", "namespace": namespace},
        # A long interval: each commit is announced (`announce`), as a push
        # webhook through Flux's notification-controller would.
        "spec": {"url": repository.url, "interval": "10m", "ref": {"branch": "main"}},
    }


def kustomization(namespace: str, name: str, path: str, timeout: str) -> dict[str, Any]:
    return {
        "apiVersion": KUSTOMIZE_API,
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "interval": "10m",
            "sourceRef": {"kind": "GitRepository", "name": "manifests"},
            "path": path,
            "prune": True,
            "wait": True,
            "timeout": timeout,
        },
    }


def announce(cluster: LocalCluster, namespace: str) -> None:
    """What Flux's webhook Receiver does on a push: ask for a reconcile of the source now."""
    now = datetime.now(UTC).isoformat()
    cluster.kubectl(
        "annotate", "--overwrite", "-n", namespace, "gitrepository/manifests",
        f"reconcile.fluxcd.io/requestedAt={now}",
    )  # fmt: skip


def wait_applied(
    cluster: LocalCluster, namespace: str, name: str, sha: str, timeout: float = 120
) -> dict[str, Any]:
    """The Kustomization once it is Ready at commit `sha`."""

    def ready_at_commit() -> dict[str, Any] | None:
        obj = _get(cluster, "-n", namespace, "kustomization", name)
        status = (obj or {}).get("status", {})
        applied = status.get("lastAppliedRevision", "").endswith(f":{sha}")
        return obj if applied and _condition(obj, "Ready").get("status") == "True" else None

    found: dict[str, Any] = wait_for(
        f"Kustomization {name} Ready at {sha[:8]}", ready_at_commit, timeout
    )
    return found


@pytest.fixture
def flux_objects(cluster: LocalCluster, namespace: str) -> Iterator[str]:
    """The namespace; its Flux objects are deleted while the controllers still run.

    Kustomizations carry a finalizer that only kustomize-controller removes.
    """
    yield namespace
    for kind in ("kustomizations", "gitrepositories"):
        cluster.kubectl("delete", "-n", namespace, kind, "--all", "--timeout=60s", check=False)


def test_running_starts_flux_and_stops_it_leaving_nothing(cluster: LocalCluster) -> None:
    if any(local_flux.Flux(cluster).running_components().values()):
        pytest.skip("Flux was already running on this cluster (hack/local-flux up)")
    with local_flux.running(cluster) as flux:
        pids = list(flux.running_components().values())
        assert all(pids) and flux.healthy()
    assert not any(pid_alive(pid) for pid in pids if pid)
    assert not any(flux.running_components().values())
    commands = []
    for pid in netns.pids(cluster.netns):
        try:
            commands.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except FileNotFoundError:  # exited meanwhile (`ip netns pids` itself, for one)
            pass
    for name in (b"source-controller", b"kustomize-controller", b"localcluster.gitserver"):
        assert not any(name in command for command in commands)
    addresses = subprocess.run(
        ["ip", "-n", cluster.netns, "-o", "addr", "show", "dev", "lo"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for address in (gitserver.ADDRESS, local_flux.SOURCE_CONTROLLER_ADDRESS):
        assert f" {address}/32 " not in addresses


def test_git_server_serves_commits_over_smart_http(flux: local_flux.Flux, namespace: str) -> None:
    repository = flux.git.create_repository(f"probe-{namespace}")
    sha = repository.commit({"README": "hello\n"}, "first")
    listed = subprocess.run(
        ["git", "ls-remote", repository.url, "refs/heads/main"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert listed.split() == [sha, "refs/heads/main"]
    assert repository.head() == sha


def test_a_kustomization_applies_follows_commits_and_prunes(
    cluster: LocalCluster, flux: local_flux.Flux, flux_objects: str
) -> None:
    namespace = flux_objects
    repository = flux.git.create_repository(f"apps-{namespace}")
    first = repository.commit(
        {
            "app/configmap.yaml": configmap_yaml(namespace, "settings", "hello"),
            "app/deployment.yaml": json.dumps(deployment(namespace, "web", ON_KWOK)),
        },
        "settings and web",
    )
    started = time.monotonic()
    _apply(
        cluster,
        git_repository(namespace, repository),
        kustomization(namespace, "apps", "./app", timeout="2m"),
    )
    applied = wait_applied(cluster, namespace, "apps", first)
    print(f"\nfirst commit to Kustomization Ready (wait: true): {time.monotonic() - started:.1f}s")
    inventory = {entry["id"] for entry in applied["status"]["inventory"]["entries"]}
    assert inventory == {f"{namespace}_settings__ConfigMap", f"{namespace}_web_apps_Deployment"}
    web = _get(cluster, "-n", namespace, "deployment", "web")
    assert web is not None and web["status"].get("availableReplicas") == 2
    # Flux applied them with its own field manager, server-side.
    settings = _get(cluster, "-n", namespace, "configmap", "settings", "--show-managed-fields")
    assert settings is not None
    managers = {entry["manager"] for entry in settings["metadata"]["managedFields"]}
    assert managers == {"kustomize-controller"}

    # A new commit is applied.
    second = repository.commit(
        {"app/configmap.yaml": configmap_yaml(namespace, "settings", "hello again")},
        "new greeting",
    )
    started = time.monotonic()
    announce(cluster, namespace)
    wait_applied(cluster, namespace, "apps", second)
    print(f"commit to Kustomization Ready: {time.monotonic() - started:.1f}s")
    settings = _get(cluster, "-n", namespace, "configmap", "settings")
    assert settings is not None and settings["data"] == {"greeting": "hello again"}

    # An object removed from git is pruned; the rest stays.
    third = repository.commit({}, "drop the settings", remove=["app/configmap.yaml"])
    started = time.monotonic()
    announce(cluster, namespace)
    wait_applied(cluster, namespace, "apps", third)
    print(f"commit (removal) to Kustomization Ready: {time.monotonic() - started:.1f}s")
    assert _get(cluster, "-n", namespace, "configmap", "settings") is None
    assert _get(cluster, "-n", namespace, "deployment", "web") is not None


@pytest.mark.parametrize(
    ("progress_deadline", "status", "verdict"),
    [
        (None, kstatus.IN_PROGRESS, "timeout waiting for"),
        (1, kstatus.FAILED, "failed early due to stalled resources"),
    ],
    ids=["in-progress-until-timeout", "failed-fails-fast"],
)
def test_wait_reports_what_is_unhealthy(
    cluster: LocalCluster,
    flux: local_flux.Flux,
    flux_objects: str,
    progress_deadline: int | None,
    status: str,
    verdict: str,
) -> None:
    """`wait: true` fails on an object kstatus does not call Current, and names it.

    An object that stays InProgress fails the Kustomization at its timeout
    (30 s at the least: `Kustomization.GetTimeout`); one that kstatus calls
    Failed (a Stalled condition, here a Deployment past its progress deadline)
    fails it at once: kustomize-controller's fail-fast, on by default.
    """
    namespace = flux_objects
    stuck = deployment(namespace, "stuck", NOWHERE)
    if progress_deadline is not None:
        stuck["spec"]["progressDeadlineSeconds"] = progress_deadline
    repository = flux.git.create_repository(f"stuck-{namespace}")
    sha = repository.commit(
        {"stuck/deployment.yaml": json.dumps(stuck)}, "a Deployment no node can run"
    )
    started = time.monotonic()
    _apply(
        cluster,
        git_repository(namespace, repository),
        kustomization(namespace, "stuck", "./stuck", timeout="30s"),
    )

    def failed() -> dict[str, Any] | None:
        obj = _get(cluster, "-n", namespace, "kustomization", "stuck")
        attempted = (obj or {}).get("status", {}).get("lastAttemptedRevision", "")
        ready = _condition(obj, "Ready")
        return ready if ready.get("status") == "False" and attempted.endswith(sha) else None

    ready = wait_for("the Kustomization to fail its health check", failed, timeout=120)
    print(f"\napplied to Kustomization failed ({status}): {time.monotonic() - started:.1f}s")
    assert ready["reason"] == "HealthCheckFailed"
    # The object and its kstatus, not the object's own message: that stays on the object.
    assert ready["message"].endswith(
        f"{verdict}: [Deployment/{namespace}/stuck status: '{status}']"
    )


# ---- the kstatus checker ---------------------------------------------------------------


def _statuses(cluster: LocalCluster, namespace: str, *get_args: str) -> dict[str, str]:
    return {
        f"{s.kind}/{s.name}": s.status
        for s in kstatus.of_objects(cluster, "-n", namespace, *get_args)
    }


def test_kstatus_of_builtin_objects(cluster: LocalCluster, namespace: str) -> None:
    _apply(
        cluster,
        json.loads(configmap_yaml(namespace, "plain", "hi")),
        deployment(namespace, "ready", ON_KWOK),
        deployment(namespace, "pending", NOWHERE),
        # progressDeadlineSeconds turns "never ready" into Failed once it passes.
        {
            **deployment(namespace, "deadline", NOWHERE),
            "spec": {
                **deployment(namespace, "deadline", NOWHERE)["spec"],
                "progressDeadlineSeconds": 1,
            },
        },
    )
    expected = {
        "ConfigMap/plain": kstatus.CURRENT,
        "Deployment/ready": kstatus.CURRENT,
        "Deployment/pending": kstatus.IN_PROGRESS,
        "Deployment/deadline": kstatus.FAILED,
    }

    def settled() -> dict[str, str] | None:
        seen = _statuses(cluster, namespace, "configmaps,deployments")
        # The namespace's own kube-root-ca.crt is no concern here.
        seen = {key: status for key, status in seen.items() if key in expected}
        return seen if seen == expected else None

    wait_for(f"kstatus {expected}", settled, timeout=90)
    by_name = {s.name: s for s in kstatus.of_objects(cluster, "-n", namespace, "deployments")}
    assert by_name["pending"].message == "Available: 0/2"
    assert by_name["deadline"].message == "Progress deadline exceeded"


ZONE = {
    "apiVersion": "secondarydns.io/v1alpha1",
    "kind": "Zone",
    "spec": {
        "zone": "example.com",
        "primaries": [{"address": "192.0.2.53"}],
        "servers": ["secondary-dns"],
    },
}


def _condition_entry(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


@pytest.fixture(scope="module")
def our_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/zones.secondarydns.io"
    )


@pytest.mark.parametrize(
    ("conditions", "observed_offset", "expected", "message"),
    [
        (
            [_condition_entry("Ready", "True", "InSync", "3/3 replicas serve 2026010101")],
            0,
            kstatus.CURRENT,
            "Resource is Ready",
        ),
        (
            [
                _condition_entry("Ready", "False", "TransferPending", "0/3 in sync"),
                _condition_entry("Reconciling", "True", "TransferPending", "0/3 in sync"),
            ],
            0,
            kstatus.IN_PROGRESS,
            "0/3 in sync",
        ),
        (
            [
                _condition_entry("Ready", "False", "SecretNotFound", 'Secret "tsig" not found'),
                _condition_entry("Stalled", "True", "SecretNotFound", 'Secret "tsig" not found'),
            ],
            0,
            kstatus.FAILED,
            'Secret "tsig" not found',
        ),
        ([_condition_entry("Ready", "True", "InSync", "")], -1, kstatus.IN_PROGRESS, None),
        # Ready=False alone reads as InProgress, never Failed: only Stalled=True
        # makes Flux fail at once with our message instead of waiting for its
        # timeout. What the operator's conditions must keep in mind (issue 14).
        (
            [_condition_entry("Ready", "False", "Stale", "1/3 behind")],
            0,
            kstatus.IN_PROGRESS,
            "1/3 behind",
        ),
        # Conditions empty at the observed generation: Current. A Zone the
        # operator has not looked at yet is not this: see the test below.
        ([], 0, kstatus.CURRENT, "Resource is current"),
    ],
    ids=[
        "ready",
        "reconciling",
        "stalled",
        "generation-not-observed",
        "ready-false-only",
        "no-conditions",
    ],
)
@pytest.mark.usefixtures("our_crds")
def test_kstatus_of_a_zone_follows_its_conditions(
    cluster: LocalCluster,
    namespace: str,
    conditions: list[dict[str, str]],
    observed_offset: int,
    expected: str,
    message: str | None,
) -> None:
    zone = {**ZONE, "metadata": {"name": "example-com", "namespace": namespace}}
    _apply(cluster, zone)
    stored = _get(cluster, "-n", namespace, "zone", "example-com")
    assert stored is not None
    generation = stored["metadata"]["generation"]
    status = {"observedGeneration": generation + observed_offset, "conditions": conditions}
    cluster.kubectl(
        "patch", "-n", namespace, "zone", "example-com", "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip
    [result] = kstatus.of_objects(cluster, "-n", namespace, "zone", "example-com")
    assert (result.kind, result.name, result.status) == ("Zone", "example-com", expected)
    if message is not None:
        assert result.message == message


@pytest.mark.usefixtures("our_crds")
def test_a_zone_nobody_has_looked_at_is_in_progress(cluster: LocalCluster, namespace: str) -> None:
    """The CRD defaults status to observedGeneration 0: Flux's wait cannot pass it
    before the operator has written a status (no operator runs here)."""
    _apply(cluster, {**ZONE, "metadata": {"name": "example-com", "namespace": namespace}})
    stored = _get(cluster, "-n", namespace, "zone", "example-com")
    assert stored is not None and stored["status"] == {"observedGeneration": 0}
    [result] = kstatus.of_objects(cluster, "-n", namespace, "zone", "example-com")
    assert result.status == kstatus.IN_PROGRESS
    assert result.message == "Zone generation is 1, but latest observed generation is 0"
