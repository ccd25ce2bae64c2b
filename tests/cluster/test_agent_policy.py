"""An agent's token changes its own Pod only (issue 13, item 3).

Against the real API server: the agent's Role (render/children.py) and the
ValidatingAdmissionPolicy of deploy/agent-own-pod-policy.yaml as the chart
installs it (agentPodPolicy.enabled, the default), with a token bound to one
pod as kubelet projects it into the agent container.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from localcluster import build, release
from localcluster.cluster import LocalCluster
from localcluster.constants import API_PORT
from localcluster.scenario import kubectl_json
from localcluster.waiting import wait_for
from secondary_dns.api import ObjectRef, agent_contract
from secondary_dns.render import children

POLICY = "secondary-dns-agent-own-pod"
OPERATOR_SOURCE = Path(__file__).parents[2] / "operator"


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
    release.ensure_installed(cluster)
    assert kubectl_json(cluster, "get", "validatingadmissionpolicy", POLICY) is not None
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


# The agent's own config source (agent/kube.py) with nothing but the agent's token,
# in the cluster namespace: it waits for the ConfigMaps given on stdin, one set per
# line ({name: shard hash, or null for the root}), and prints each set once it has
# seen it (or what it saw after 60 s).
_AGENT_SOURCE = """
import json, sys, time
import kubernetes
from secondary_dns.agent.kube import KubernetesConfigSource

host, ca, token, namespace = sys.argv[1:5]
configuration = kubernetes.client.Configuration()
configuration.host = host
configuration.ssl_ca_cert = ca
configuration.api_key = {"authorization": "Bearer " + token}
source = KubernetesConfigSource(kubernetes.client.ApiClient(configuration), namespace, "edge")
source.start(lambda: None)
for line in sys.stdin:
    wanted = json.loads(line)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        snapshot = source.snapshot()
        seen = {shard.name: shard.shard_hash for shard in snapshot.shards}
        if snapshot.synced and seen == wanted:
            break
        time.sleep(0.2)
    print(json.dumps(seen), flush=True)
source.stop()
"""


def _config_map(
    namespace: str, name: str, annotations: dict[str, str], data: dict[str, str]
) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "data": data,
    }


def _root(namespace: str, shards: dict[str, str]) -> Any:
    manifest = agent_contract.encode_shards_file(shards)
    return _config_map(namespace, "edge-config", {}, {agent_contract.SHARDS_FILE: manifest})


def _shard(namespace: str, shard: str, hash_: str) -> Any:
    annotations = {
        agent_contract.ANNOTATION_SHARD: shard,
        agent_contract.ANNOTATION_SHARD_HASH: hash_,
        agent_contract.ANNOTATION_SHARD_CONFIGMAPS: "1",
    }
    return _config_map(namespace, f"edge-zones-{shard}", annotations, {"zones-x.conf": ""})


def _start_agent_source(cluster: LocalCluster, token: str, namespace: str) -> Any:
    return subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            cluster.netns,
            sys.executable,
            "-c",
            _AGENT_SOURCE,
            f"https://127.0.0.1:{API_PORT}",
            str(cluster.pki / "ca.crt"),
            token,
            namespace,
        ],  # fmt: skip
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**cluster.environment(), "PYTHONPATH": str(OPERATOR_SOURCE)},
    )


def _stop_agent_source(agent: Any) -> None:
    agent.stdin.close()
    try:
        agent.wait(timeout=30)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()


def _seen(agent: Any, wanted: dict[str, str | None]) -> Any:
    """What the agent's source saw once it saw `wanted` (or after 60 s)."""
    agent.stdin.write(json.dumps(wanted) + "\n")
    agent.stdin.flush()
    return json.loads(agent.stdout.readline())


def _apply_list(cluster: LocalCluster, namespace: str, items: list[Any]) -> None:
    apply = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=apply)


def test_an_agent_token_reads_its_own_config_maps_by_name_and_no_other(
    cluster: LocalCluster, namespace: str
) -> None:
    """Issue 13, item 3: the root watched by name, its shards read by name; nothing listed."""
    identity = children.ServerIdentity(ObjectRef(namespace, "edge"), "uid-1", {})
    objects = [
        *children.build_agent_rbac(identity, replicas=1),
        _shard(namespace, "0a", "a" * 64),
        _root(namespace, {"0a": "a" * 64}),
        _config_map(namespace, "someone-else", {}, {"password": "x"}),
    ]
    for obj in objects:
        obj["metadata"].pop("ownerReferences", None)
    _apply_list(cluster, namespace, objects)
    token = cluster.kubectl(
        "create", "token", "-n", namespace, children.agent_service_account_name(identity)
    ).stdout.strip()

    listed = _as_token(cluster, token, "get", "configmaps", "-n", namespace)
    assert listed.returncode != 0 and "forbidden" in listed.stderr.lower()
    other = _as_token(cluster, token, "get", "configmap", "-n", namespace, "someone-else")
    assert other.returncode != 0 and "forbidden" in other.stderr.lower()

    agent = _start_agent_source(cluster, token, namespace)
    assert agent.stdin is not None and agent.stdout is not None
    try:
        first = {"edge-config": None, "edge-zones-0a": "a" * 64}
        assert _seen(agent, first) == first
        # A new shard, then the root that names it (the operator's order): the
        # watch of the root by name sees it, the shard is read by name.
        _apply_list(
            cluster,
            namespace,
            [_shard(namespace, "ff", "b" * 64), _root(namespace, {"ff": "b" * 64})],
        )
        second = {"edge-config": None, "edge-zones-ff": "b" * 64}
        assert _seen(agent, second) == second
    finally:
        _stop_agent_source(agent)

    # The next change's shard is already written (the operator writes its shards
    # back to back) when an agent reads the root that names the one before: the
    # agent reads that shard as of the root's resourceVersion, which its token may
    # (a list of one name), instead of waiting for a root that names what is there.
    ahead = [
        _shard(namespace, "ff", "c" * 64),
        _root(namespace, {"ff": "c" * 64}),
        _shard(namespace, "ff", "d" * 64),
    ]
    _apply_list(cluster, namespace, ahead)
    agent = _start_agent_source(cluster, token, namespace)
    try:
        third = {"edge-config": None, "edge-zones-ff": "c" * 64}
        assert _seen(agent, third) == third
    finally:
        _stop_agent_source(agent)
