"""An agent's token changes its own Pod only (issue 13, item 3).

Against the real API server: the agent's Role (render/children.py) and the
ValidatingAdmissionPolicy in deploy/agent-own-pod-policy.yaml, with a token
bound to one pod as kubelet projects it into the agent container.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from localcluster import build
from localcluster.cluster import LocalCluster
from localcluster.constants import API_PORT
from localcluster.waiting import wait_for
from secondary_dns.api import ObjectRef
from secondary_dns.render import children

POLICY = Path(__file__).parents[2] / "deploy" / "agent-own-pod-policy.yaml"


def _pod(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"secondarydns.io/server": "edge"},
        },
        # kwok marks it Running; nothing is pulled or run.
        "spec": {
            # A token is bound only to a pod that runs as its ServiceAccount.
            "serviceAccountName": "edge-agent",
            "automountServiceAccountToken": False,
            "containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10"}],
        },
    }


def _as_token(cluster: LocalCluster, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with only the bearer token: no client certificate that would win."""
    return cluster.run_inside(
        [
            str(build.binaries().kubectl),
            "--kubeconfig=/dev/null",
            f"--server=https://127.0.0.1:{API_PORT}",
            f"--certificate-authority={cluster.pki / 'ca.crt'}",
            f"--token={token}",
            *args,
        ],
        check=False,
    )


def test_an_agent_token_patches_its_own_pod_and_not_a_sibling(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-f", str(POLICY))
    identity = children.ServerIdentity(ObjectRef(namespace, "edge"), "uid-1", {})
    objects = [
        *children.build_agent_rbac(identity, replicas=2),
        *(_pod(namespace, f"edge-{i}") for i in range(2)),
    ]
    for obj in objects:
        # No owner here: the garbage collector would remove what names a missing one.
        obj["metadata"].pop("ownerReferences", None)
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    uid = json.loads(cluster.kubectl("get", "pod", "-n", namespace, "edge-0", "-o", "json").stdout)[
        "metadata"
    ]["uid"]
    token = cluster.kubectl(
        "create",
        "token",
        "-n",
        namespace,
        children.agent_service_account_name(identity),
        "--bound-object-kind=Pod",
        "--bound-object-name=edge-0",
        f"--bound-object-uid={uid}",
    ).stdout.strip()

    def patch(pod: str, patch_: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return _as_token(
            cluster, token, "patch", "pod", "-n", namespace, pod, "-p", json.dumps(patch_)
        )

    relabel_patch = {"metadata": {"labels": {"secondarydns.io/server": "other"}}}

    def policy_in_effect() -> bool:
        # The API server's admission plugin sees a new policy through its own
        # informer, a moment after `apply` returns (longer on a busy machine):
        # wait until it refuses a relabelling (dry run, nothing changes), then
        # check each rule for real below.
        dry_run = _as_token(
            cluster,
            token,
            "patch",
            "pod",
            "-n",
            namespace,
            "edge-0",
            "--dry-run=server",
            "-p",
            json.dumps(relabel_patch),
        )
        return dry_run.returncode != 0 and "labels" in dry_run.stderr

    wait_for("the agent policy in effect", policy_in_effect, timeout=60)
    annotate = {"metadata": {"annotations": {"secondarydns.io/probe": "1"}}}
    own = patch("edge-0", annotate)
    assert own.returncode == 0, own.stderr
    # RBAC allows both pods of the server; the policy allows only the token's.
    sibling = patch("edge-1", annotate)
    assert sibling.returncode != 0
    assert "only the pod its token was issued for" in sibling.stderr
    relabel = patch("edge-0", relabel_patch)
    assert relabel.returncode != 0
    assert "labels" in relabel.stderr
