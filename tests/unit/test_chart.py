"""The Helm chart without a cluster: lint, what it renders, its values schema, its docs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import image
from chart import (
    ALL_TOGGLES,
    CHART,
    REPO,
    documented_table,
    find,
    helm,
    rbac_rows,
    rbac_table,
    template,
    values_file,
)
from secondary_dns import __version__
from secondary_dns.render.children import DEFAULT_IMAGE, RUN_AS_USER

CRDS = sorted((REPO / "crds").glob("*.yaml"))


def test_the_chart_ships_the_crds_byte_for_byte() -> None:
    shipped = sorted((CHART / "files" / "crds").glob("*.yaml"))
    assert [p.name for p in shipped] == [p.name for p in CRDS]
    for ours, theirs in zip(CRDS, shipped, strict=True):
        assert ours.read_bytes() == theirs.read_bytes(), (
            f"{theirs} differs from {ours}: copy crds/*.yaml into the chart's files/crds/"
        )


POLICY = REPO / "deploy" / "agent-own-pod-policy.yaml"


def test_the_chart_ships_the_agent_pod_policy_byte_for_byte(tmp_path: Path) -> None:
    shipped = CHART / "files" / POLICY.name
    assert shipped.read_bytes() == POLICY.read_bytes(), (
        f"{shipped} differs from {POLICY}: copy deploy/{POLICY.name} into the chart's files/"
    )
    # Rendered as it is (cluster-scoped, no release labels), and left out when off.
    source = [d for d in yaml.safe_load_all(POLICY.read_text()) if d]
    kinds = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    rendered = [o for o in template(tmp_path) if o["kind"] in kinds]
    assert rendered == source
    off = template(tmp_path, {"agentPodPolicy": {"enabled": False}})
    assert not [o for o in off if o["kind"] in kinds]


def _crds(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in find(objects, "CustomResourceDefinition")}


def test_rendered_crds_are_the_files_plus_labels_and_the_keep_policy(tmp_path: Path) -> None:
    rendered = _crds(template(tmp_path))
    assert len(rendered) == len(CRDS)
    for path in CRDS:
        source = yaml.safe_load(path.read_text())
        crd = rendered[source["metadata"]["name"]]
        metadata = crd.pop("metadata")
        source_metadata = source.pop("metadata")
        assert crd == source
        assert metadata["name"] == source_metadata["name"]
        assert metadata["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert metadata["labels"]["app.kubernetes.io/instance"] == "sdns"


def test_crds_can_be_left_out_or_not_kept(tmp_path: Path) -> None:
    assert _crds(template(tmp_path, {"crds": {"enabled": False}})) == {}
    for crd in _crds(template(tmp_path, {"crds": {"keep": False}})).values():
        assert "annotations" not in crd["metadata"]


@pytest.mark.parametrize("toggles", [None, ALL_TOGGLES], ids=["defaults", "every-toggle"])
def test_helm_lint_strict(tmp_path: Path, toggles: dict[str, Any] | None) -> None:
    args = ["lint", "--strict", str(CHART)]
    if toggles:
        args += ["--values", str(values_file(toggles, tmp_path))]
    result = helm(*args)
    assert "0 chart(s) failed" in result.stdout


def test_every_toggle_renders_its_object(tmp_path: Path) -> None:
    kinds = {o["kind"] for o in template(tmp_path, ALL_TOGGLES)}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} & {
        o["kind"] for o in template(tmp_path)
    }
    rule = find(template(tmp_path, ALL_TOGGLES), "PrometheusRule")[0]
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            assert alert["labels"]["team"] == "dns" and alert["labels"]["severity"]


def test_the_default_image_is_what_make_image_tags(tmp_path: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert yaml.safe_load((CHART / "values.yaml").read_text())["image"]["repository"] == (
        image.REPOSITORY
    )
    for deployment in find(template(tmp_path), "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == DEFAULT_IMAGE == f"{image.REPOSITORY}:{__version__}"
    pinned = find(template(tmp_path, ALL_TOGGLES), "Deployment")[0]
    assert pinned["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        "@sha256:" + "0" * 64
    )


@pytest.mark.parametrize("toggles", [None, ALL_TOGGLES], ids=["default", "all-toggles"])
def test_the_dns_pods_run_the_operators_own_image(
    tmp_path: Path, toggles: dict[str, Any] | None
) -> None:
    operator = find(template(tmp_path, toggles), "Deployment", "sdns-secondary-dns-operator")[0]
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    assert f"--image={container['image']}" in container["args"]


def test_refused_primary_networks_reach_the_operator(tmp_path: Path) -> None:
    operator = find(template(tmp_path, ALL_TOGGLES), "Deployment", "sdns-secondary-dns-operator")[0]
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--refused-primary-networks=10.96.0.0/12,fd00:10:96::/112" in args
    default = find(template(tmp_path), "Deployment", "sdns-secondary-dns-operator")[0]
    assert not any(
        "refused" in a for a in default["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_pods_run_as_restricted_as_the_dns_pods(tmp_path: Path) -> None:
    deployments = find(template(tmp_path), "Deployment")
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments} == {
        "operator",
        "relay",
    }
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["replicas"] == 2
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert container["resources"]["requests"] and container["resources"]["limits"]
        # Unprivileged: nothing listens below 1024 inside the pod.
        assert all(port["containerPort"] >= 1024 for port in container["ports"])
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for key in ("name", "instance", "component", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels


def test_the_relay_service_maps_port_53_to_the_unprivileged_port(tmp_path: Path) -> None:
    (service,) = find(template(tmp_path), "Service", "sdns-secondary-dns-operator-relay")
    assert service["spec"]["type"] == "ClusterIP"
    assert {(p["protocol"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("UDP", 53, "dns-udp"),
        ("TCP", 53, "dns-tcp"),
    }
    (balanced,) = find(
        template(tmp_path, ALL_TOGGLES), "Service", "sdns-secondary-dns-operator-relay"
    )
    assert balanced["spec"]["type"] == "LoadBalancer"
    # The relay accepts unsigned NOTIFY by source address: keep it.
    assert balanced["spec"]["externalTrafficPolicy"] == "Local"


def test_both_deployments_have_a_disruption_budget(tmp_path: Path) -> None:
    objects = template(tmp_path)
    budgets = find(objects, "PodDisruptionBudget")
    deployments = find(objects, "Deployment")
    assert {b["spec"]["maxUnavailable"] for b in budgets} == {1}
    assert sorted(
        b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for b in budgets
    ) == [
        "operator",
        "relay",
    ]
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert any(b["spec"]["selector"]["matchLabels"] == selector for b in budgets)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"replicas": "two"}}, "at '/operator/replicas': got string, want integer"),
        (
            {"operator": {"replica": 2}},
            "at '/operator': additional properties 'replica' not allowed",
        ),
        (
            {"relay": {"service": {"type": "External"}}},
            "at '/relay/service/type': value must be one of",
        ),
        ({"relay": {"containerPort": 53}}, "at '/relay/containerPort': minimum"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
        ({"image": {"digest": "latest"}}, "at '/image/digest'"),
        ({"crds": {"keep": "yes"}}, "at '/crds/keep': got string, want boolean"),
        (
            {"metrics": {"serviceMonitor": {"interval": "often"}}},
            "at '/metrics/serviceMonitor/interval'",
        ),
        (
            {"operator": {"leaderElection": {"renewDeadlineSeconds": 20}}},
            "leaseDurationSeconds > renewDeadlineSeconds > retryPeriodSeconds is required",
        ),
    ],
)
def test_a_wrong_value_fails_with_its_path(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    result = helm(
        "template", "sdns", str(CHART), "--values", str(values_file(values, tmp_path)), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_values_yaml_documents_every_value() -> None:
    """Each leaf value has a `# --` comment line above it (or above its block)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w]*):\s*(\S.*)?$", line)
        if not match or match.group(3) is None:
            continue  # a block: its children are documented
        if match.group(1) and lines[number - 1].strip().startswith("- "):
            continue
        above = [lines[i].strip() for i in range(number - 1, -1, -1)]
        comment = next(
            (text for text in above if not text.startswith("#") or text.startswith("# --")), ""
        )
        parent_list_item = line.strip().startswith(("cpu:", "memory:", "grafana_dashboard:"))
        assert comment.startswith("# --") or parent_list_item, (
            f"values.yaml:{number + 1} {line.strip()}"
        )


def test_the_permissions_table_in_the_docs_is_the_charts(tmp_path: Path) -> None:
    objects = template(tmp_path)
    table = rbac_table(objects)
    assert "UNEXPLAINED" not in table, f"a rule without a reason in tests/chart.py WHY:\n{table}"
    assert documented_table() == table, (
        "run `python3 tests/chart.py` to regenerate docs/operator.md"
    )


def test_nothing_cluster_wide_that_a_namespaced_role_can_do(tmp_path: Path) -> None:
    rows = rbac_rows(template(tmp_path))
    cluster = {(who, resource) for who, scope, resource, _, _ in rows if scope == "ClusterRole"}
    # The Lease and the relay's plans exist only in the release namespace.
    assert ("operator", "coordination.k8s.io/leases") not in cluster
    assert ("relay", "secrets") not in cluster
    # Secrets: never listed or watched cluster-wide, by anyone.
    for who, scope, resource, verbs, _ in rows:
        if resource == "secrets" and scope == "ClusterRole":
            assert "list" not in verbs and "watch" not in verbs, (who, verbs)
    # Nothing may escalate or impersonate.
    assert not any(
        v in verbs for *_, verbs, _ in rows for v in ("escalate", "bind", "impersonate", "*")
    )
