"""The Helm chart as the tiers see it: `helm template`, its objects, its RBAC as a table.

Shared by tests/unit/test_chart*.py (lint, render, schema, docs) and the cluster
tier (install, upgrade, uninstall, kubeconform).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.build import binaries

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "secondary-dns-operator"
# Every toggle of the chart on (and the relay behind a load balancer).
ALL_TOGGLES = {
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "alertLabels": {"team": "dns"}},
        "dashboard": {"enabled": True},
    },
    "relay": {"service": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["192.0.2.0/24"]}},
    "operator": {
        "watchNamespaces": ["dns"],
        "verbose": True,
        "notifyAddress": "notify.example",
        "refusedPrimaryNetworks": ["10.96.0.0/12", "fd00:10:96::/112"],
    },
    "image": {"digest": "sha256:" + "0" * 64},
    "imagePullSecrets": [{"name": "registry"}],
}


def tool(name: str) -> Path:
    path: Path = getattr(binaries(), name)
    if not path.exists():
        pytest.skip(f"{name} is not built: run `make binaries` (hack/local-cluster build)")
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(tool("helm")), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def values_file(values: Mapping[str, Any], directory: Path) -> Path:
    path = directory / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return path


def template_text(
    directory: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "sdns",
    namespace: str = "secondary-dns",
    extra: Sequence[str] = (),
) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace, *extra]
    if values:
        args += ["--values", str(values_file(values, directory))]
    return helm(*args).stdout


def template(
    directory: Path,
    values: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(template_text(directory, values, **kwargs)) if doc]


def find(objects: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> list[Any]:
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


# ---- RBAC, as docs/operator.md shows it ----------------------------------------------

# Why each permission is there. A rule the chart grants without a reason here
# fails tests/unit/test_chart.py: every verb must be justified in the docs.
WHY: dict[tuple[str, str, str], str] = {
    ("operator", "ClusterRole", "secondarydns.io/secondaryservers"): (
        "list, watch: the operator's watch cache (handlers/watches.py), from which "
        "the reconciler and the resync read them; get: a server outside the cache"
    ),
    ("operator", "ClusterRole", "secondarydns.io/zones"): (
        "list, watch: the operator's watch cache, from which reconcile reads them; "
        "get: a Zone outside the cache"
    ),
    ("operator", "ClusterRole", "secondarydns.io/secondaryservers/status"): "status",
    ("operator", "ClusterRole", "secondarydns.io/zones/status"): "status",
    ("operator", "ClusterRole", "pods"): (
        "list, watch: the watch cache of the servers' pods (status from them); get, "
        "patch: held only so that it may grant the agent's Role (get and annotate its "
        "own pods): RBAC escalation prevention"
    ),
    ("operator", "ClusterRole", "configmaps"): (
        "create, patch: apply the configuration shards (server-side apply creates with "
        "create); list, watch: the children's watch cache (stale shards are found there); "
        "delete: remove stale shards; get: held to grant the agent's Role (it reads its "
        "shards)"
    ),
    ("operator", "ClusterRole", "secrets"): (
        "get: the TSIG Secrets Zones reference, by name (no list, no watch), and each "
        "server's relay key; create, patch: apply `NAME-keys`, `NAME-relay-key` and the "
        "relay plans; also held to grant the agent `get` on its keys Secret"
    ),
    ("operator", "ClusterRole", "services"): (
        "apply (create, patch) a server's client and headless Services; list, watch: "
        "the watch cache of the servers' children (drift is seen and put right)"
    ),
    ("operator", "ClusterRole", "serviceaccounts"): (
        "apply the agent's ServiceAccount; list, watch: the children's watch cache"
    ),
    ("operator", "ClusterRole", "nodes"): "failure-domain labels of the nodes pods run on",
    ("operator", "ClusterRole", "events"): (
        "Events on SecondaryServers and Zones, posted with the operator's own client"
    ),
    ("operator", "ClusterRole", "apps/statefulsets"): (
        "apply; list, watch: the children's watch cache (rollouts, drift); get: a "
        "StatefulSet outside the cache"
    ),
    ("operator", "ClusterRole", "policy/poddisruptionbudgets"): (
        "apply; list, watch: the children's watch cache"
    ),
    ("operator", "ClusterRole", "networking.k8s.io/networkpolicies"): (
        "apply; list, watch: the children's watch cache"
    ),
    ("operator", "ClusterRole", "rbac.authorization.k8s.io/roles"): (
        "apply the agent's Role; list, watch: the children's watch cache"
    ),
    ("operator", "ClusterRole", "rbac.authorization.k8s.io/rolebindings"): (
        "bind the agent's Role to its ServiceAccount; list, watch: the children's watch cache"
    ),
    ("operator", "Role:default", "discovery.k8s.io/endpointslices"): (
        "the API server's own addresses (the `kubernetes` Service's EndpointSlices), the "
        "only egress each server's NetworkPolicy gives the agents besides the primaries"
    ),
    ("operator", "Role", "coordination.k8s.io/leases"): (
        "leader election: create the Lease once, then get and update only it"
    ),
    ("operator", "Role", "secrets"): (
        "list, delete: the relay plans of servers deleted while no operator led "
        "(in the release namespace only)"
    ),
    ("operator", "Role", "services"): (
        "watch the relay Service (its address, status.notifyAddress), release namespace only"
    ),
    ("relay", "ClusterRole", "pods"): "where the replicas are (read-only)",
    ("relay", "Role", "coordination.k8s.io/leases"): (
        "where the leader listens (the Lease's annotation), to forward accepted NOTIFYs"
    ),
    ("relay", "Role", "secrets"): (
        "the relay plans in the release namespace (read-only; no other Secret anywhere)"
    ),
}


def _component(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def _scope(obj: Mapping[str, Any]) -> str:
    """ClusterRole, Role (the release namespace) or Role:NS for a Role in another one."""
    if obj["kind"] == "Role" and obj["metadata"].get("name", "").endswith("-api-endpoints"):
        return f"Role:{obj['metadata']['namespace']}"
    return str(obj["kind"])


def rbac_rows(objects: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """(who, scope, resource, verbs, resourceNames) per resource of every rule."""
    rows = []
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in obj["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    rows.append(
                        (
                            _component(obj),
                            _scope(obj),
                            f"{group}/{resource}" if group else resource,
                            ", ".join(rule["verbs"]),
                            ", ".join(rule.get("resourceNames", [])),
                        )
                    )
    return rows


def rbac_table(objects: Iterable[Mapping[str, Any]]) -> str:
    lines = [
        "| who | scope | resource | verbs | why |",
        "|---|---|---|---|---|",
    ]
    for who, scope, resource, verbs, names in rbac_rows(objects):
        where = {"ClusterRole": "cluster", "Role": "release namespace"}.get(
            scope, f"namespace `{scope.partition(':')[2]}`"
        )
        only = " (only the operator's Lease)" if names else ""
        why = WHY.get((who, scope, resource), "UNEXPLAINED")
        lines.append(f"| {who} | {where} | `{resource}` | {verbs}{only} | {why} |")
    return "\n".join(lines) + "\n"


TABLE_START = "<!-- rbac-table: generated from the chart by tests/chart.py; do not edit -->\n"
TABLE_END = "<!-- rbac-table end -->\n"
OPERATOR_DOC = REPO / "docs" / "operator.md"


def documented_table() -> str:
    text = OPERATOR_DOC.read_text()
    start = text.index(TABLE_START) + len(TABLE_START)
    return text[start : text.index(TABLE_END)]


def write_documented_table(table: str) -> None:
    text = OPERATOR_DOC.read_text()
    start = text.index(TABLE_START) + len(TABLE_START)
    OPERATOR_DOC.write_text(text[:start] + table + text[text.index(TABLE_END) :])


if __name__ == "__main__":
    # python3 tests/chart.py: rewrite the table in docs/operator.md from the chart.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_documented_table(rbac_table(template(Path(tmp))))
