"""The chart on a real API server: kubeconform, install, upgrade, uninstall.

kubeconform validates `helm template` (defaults, and every toggle on) against
schemas made from this cluster's own OpenAPI and our CRDs
(tests/kubeconform_schemas.py), and really rejects a wrong manifest. Then, as a
user would: `helm install`, the examples (a TSIG Secret, the SecondaryServer and
the Zone of examples/) reach Ready and the Service answers `dig`; with
`relay.service.type=LoadBalancer` the load balancer's address (written as a
cloud's controller would: the local cluster has none) becomes every status's
NOTIFY address; `helm upgrade`
changing a value rolls the operator; `helm uninstall` with crds.keep leaves the
CRDs and the users' resources. Here the chart's operator and relay run as users
run them: pods of this tree's image, run by the pod runner with runc, with
in-cluster credentials (the projected token, the API server through the
`kubernetes` Service); the relay pods behind the relay Service take the primary's
NOTIFY.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.name
import pytest
import yaml

from chart import ALL_TOGGLES, CHART, REPO, template_text, tool
from kubeconform_schemas import write as write_schemas
from localcluster import netns, release
from localcluster.cluster import LocalCluster
from localcluster.demo import example_objects, example_server
from localcluster.scenario import (
    apply,
    bump_and_measure,
    condition,
    demo_zone,
    kubectl_json,
    replica_addresses,
    start_primary,
    tree_image,
)
from localcluster.waiting import wait_for

pytestmark = pytest.mark.cluster
KINDS_WITHOUT_SCHEMA = "ServiceMonitor,PodMonitor,PrometheusRule"


@pytest.fixture(scope="module")
def schemas(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("kubeconform-schemas")
    openapi = json.loads(cluster.kubectl("get", "--raw", "/openapi/v2").stdout)
    count = write_schemas(directory, openapi, sorted((REPO / "crds").glob("*.yaml")))
    assert count > 100
    return directory


def kubeconform(schemas: Path, manifests: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            str(tool("kubeconform")),
            "-strict",
            "-summary",
            "-output",
            "json",
            # Prometheus Operator's kinds: no schema here (their CRDs are not
            # ours); promtool checks the rules themselves (test_chart_rules.py).
            "-skip",
            KINDS_WITHOUT_SCHEMA,
            "-schema-location",
            f"{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            "-",
        ],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    report["returncode"] = result.returncode
    return report


@pytest.mark.parametrize("toggles", [None, ALL_TOGGLES], ids=["defaults", "every-toggle"])
def test_kubeconform_validates_the_chart(
    schemas: Path, tmp_path: Path, toggles: dict[str, Any] | None
) -> None:
    manifests = template_text(tmp_path, toggles)
    documents = [d for d in yaml.safe_load_all(manifests) if d]
    report = kubeconform(schemas, manifests)
    summary = report["summary"]
    assert report["returncode"] == 0, report["resources"]
    assert summary["invalid"] == summary["errors"] == 0
    # Everything but the Prometheus Operator's kinds was checked against a schema.
    skipped = sum(d["kind"] in KINDS_WITHOUT_SCHEMA.split(",") for d in documents)
    assert summary["skipped"] == skipped == (3 if toggles else 0)
    assert summary["valid"] == len(documents) - skipped


def test_kubeconform_rejects_a_wrong_manifest(schemas: Path, tmp_path: Path) -> None:
    manifests = template_text(tmp_path)
    broken = manifests.replace("replicas: 2", "replicas: two", 1).replace(
        "containerPort:", "contianerPort:", 1
    )
    report = kubeconform(schemas, broken)
    assert report["returncode"] != 0
    messages = " ".join(r.get("msg", "") for r in report["resources"])
    assert "got string, want integer" in messages
    assert "additional properties 'contianerPort' not allowed" in messages
    # Our CRDs too: a Zone with a field the schema does not have.
    zone = yaml.safe_load((REPO / "examples" / "zone.yaml").read_text())
    zone["spec"]["primary"] = "192.0.2.1"
    report = kubeconform(schemas, yaml.safe_dump(zone))
    assert report["returncode"] != 0
    assert "additional properties 'primary' not allowed" in json.dumps(report)


def test_the_examples_validate(schemas: Path) -> None:
    for path in sorted((REPO / "examples").glob("*.yaml")):
        report = kubeconform(schemas, path.read_text())
        assert report["returncode"] == 0, (path.name, report["resources"])


# ---- install, upgrade, uninstall ------------------------------------------------------

NAMESPACE = "chart-examples"
ORIGIN = dns.name.from_text("example.com.")


def _deployment(cluster: LocalCluster, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kubectl_json(
        cluster, "get", "deployment", "-n", release.NAMESPACE, name
    )
    return found


@pytest.fixture
def fresh_release(cluster: LocalCluster) -> Iterator[None]:
    """The session's release uninstalled first (its pods gone); installed again with no
    replicas afterwards (run_operator scales it up as it needs)."""
    release.uninstall(cluster)
    try:
        yield
    finally:
        release.uninstall(cluster)
        release.install(cluster, release.PROCESS_MODE)
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_install_examples_ready_upgrade_rolls_uninstall_keeps(
    cluster: LocalCluster, tmp_path: Path, fresh_release: None
) -> None:
    netns.require_inside(cluster.netns)
    started = time.monotonic()
    # As a user: 2 operator and 2 relay replicas, pods of this tree's image run by
    # the pod runner as kubelet with containerd would (probes every 2 s, here).
    values = release.pod_values(tree_image(), probe_seconds=2)
    release.install(cluster, values, workdir=tmp_path)
    print(f"helm install: {time.monotonic() - started:.1f}s")
    release.wait_rolled_out(cluster)
    print(f"both Deployments rolled out: {time.monotonic() - started:.1f}s")
    operators = wait_for(
        "2 operator pods Ready",
        lambda: (found := release.release_pods(cluster, "operator")) and len(found) == 2 and found,
        timeout=120,
    )
    wait_for(
        "2 relay pods Ready",
        lambda: (found := release.release_pods(cluster, "relay")) and len(found) == 2 and found,
        timeout=120,
    )
    leader = wait_for("an operator pod holding the Lease", lambda: release.leader_pod(cluster))
    assert leader in {pod.name for pod in operators}
    print(f"{leader} leads: {time.monotonic() - started:.1f}s")
    first_hash = _deployment(cluster, release.OPERATOR)["spec"]["template"]

    primary = start_primary(cluster, tmp_path / "primary", demo_zone(ORIGIN.to_text()))
    try:
        cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        apply(cluster, NAMESPACE, *example_objects(primary.key, [example_server()]))

        def ready(kind: str, name: str) -> bool:
            found = condition(kubectl_json(cluster, "get", kind, "-n", NAMESPACE, name), "Ready")
            return bool(found and found["status"] == "True")

        wait_for("the SecondaryServer Ready", lambda: ready("sdns", "secondary-dns"), timeout=240)
        wait_for("the Zone Ready", lambda: ready("zone", "example-com"), timeout=120)
        zone = kubectl_json(cluster, "get", "zone", "-n", NAMESPACE, "example-com")
        assert zone["status"]["notifyAddress"] == release.relay_service_address(cluster)
        # The DNS pods run the operator's own image (its --image).
        (server_pod, *_) = kubectl_json(
            cluster,
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            "secondarydns.io/server=secondary-dns",
        )["items"]
        assert {c["image"] for c in server_pod["spec"]["containers"]} == {tree_image()}
        # dig the SecondaryServer's Service, as a resolver would.
        service_ip = kubectl_json(cluster, "get", "svc", "-n", NAMESPACE, "secondary-dns")["spec"][
            "clusterIP"
        ]
        dug = subprocess.run(
            ["dig", f"@{service_ip}", ORIGIN.to_text(), "SOA", "+norec", "+short", "+time=2"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert dug.stdout.split()[2] == str(primary.serial(ORIGIN)), dug.stdout + dug.stderr

        # A new serial: the primary NOTIFYs the relay Service; a relay pod accepts
        # it and fans it out; every replica and the status follow.
        def relayed() -> float:
            return sum(
                pod.metric("secondarydns_notify_relayed_total")
                for pod in release.release_pods(cluster, "relay")
            )

        before = relayed()
        moved = bump_and_measure(
            cluster, primary, ORIGIN, replica_addresses(cluster, NAMESPACE, "secondary-dns"),
            NAMESPACE, "example-com", "through-the-relay-pods",
        )  # fmt: skip
        print(f"new serial: replicas {moved.replicas_seconds:.2f}s", end=", ")
        print(f"status {moved.status_seconds:.2f}s")
        assert relayed() > before

        # relay.service.type=LoadBalancer: once the load balancer has an address
        # (written here as a cloud's controller would), that is the NOTIFY address.
        balanced = {**values, "relay": {**values["relay"], "service": {"type": "LoadBalancer"}}}
        release.install(cluster, balanced, workdir=tmp_path)
        cluster.kubectl(
            "patch", "service", release.RELAY, "-n", release.NAMESPACE, "--subresource=status",
            "--type=merge", "-p", '{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.53"}]}}}',
        )  # fmt: skip

        def notify_addresses() -> set[str]:
            return {
                (kubectl_json(cluster, "get", kind, "-n", NAMESPACE, name) or {})
                .get("status", {})
                .get("notifyAddress", "")
                for kind, name in (("zone", "example-com"), ("sdns", "secondary-dns"))
            }

        wait_for(
            "the load balancer's address in status",
            lambda: notify_addresses() == {"192.0.2.53"},
            timeout=60,
        )
    finally:
        primary.stop()

    # helm upgrade changing a value rolls the operator (a new ReplicaSet, new pods).
    rolled_values = {**values, "operator": {**values["operator"], "resyncSeconds": 30}}
    release.install(cluster, rolled_values, workdir=tmp_path)
    rolled = _deployment(cluster, release.OPERATOR)
    assert rolled["spec"]["template"] != first_hash
    assert "--resync-seconds=30" in rolled["spec"]["template"]["spec"]["containers"][0]["args"]
    wait_for(
        "the operator rolled out",
        lambda: release.rolled_out(cluster, release.OPERATOR),
        timeout=300,
    )
    sets = kubectl_json(
        cluster, "get", "replicasets", "-n", release.NAMESPACE,
        "-l", "app.kubernetes.io/component=operator",
    )["items"]  # fmt: skip
    assert sorted(s["status"].get("replicas", 0) for s in sets) == [0, 2]
    assert (
        len({s["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for s in sets}) == 2
    )

    # helm uninstall: the CRDs (crds.keep) and the users' resources stay.
    release.helm(cluster, "uninstall", release.RELEASE, "-n", release.NAMESPACE, "--wait")
    assert (
        kubectl_json(cluster, "get", "deployment", "-n", release.NAMESPACE, release.OPERATOR)
        is None
    )
    for crd in ("zones.secondarydns.io", "secondaryservers.secondarydns.io"):
        kept = kubectl_json(cluster, "get", "crd", crd)
        assert (
            kept is not None
            and kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        )
    assert kubectl_json(cluster, "get", "zone", "-n", NAMESPACE, "example-com") is not None
    assert kubectl_json(cluster, "get", "sdns", "-n", NAMESPACE, "secondary-dns") is not None
    assert kubectl_json(cluster, "get", "statefulset", "-n", NAMESPACE, "secondary-dns") is not None


def test_a_wrong_value_fails_helm_install(cluster: LocalCluster, tmp_path: Path) -> None:
    result = release.helm(
        cluster, "install", "wrong", str(CHART), "-n", "wrong-values", "--dry-run=server",
        "--set", "relay.service.type=External", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "at '/relay/service/type': value must be one of" in result.stderr
