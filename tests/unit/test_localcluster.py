"""Pure parts of the local control plane: version pinning and the node layout."""

from __future__ import annotations

from collections import Counter
from ipaddress import ip_network

from localcluster import build
from localcluster.cluster import POD_CIDR, node_manifest, nodes

UPSTREAM_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/utils v0.0.0-20260210185600-b8788abfbbc2
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/kube-scheduler => ./staging/src/k8s.io/kube-scheduler
\tk8s.io/streaming => ./staging/src/k8s.io/streaming
)
"""


def test_staging_modules_are_derived_from_upstream_go_mod() -> None:
    assert build.staging_replacements(UPSTREAM_GO_MOD, "1.36.3") == {
        "k8s.io/api": "v0.36.3",
        "k8s.io/kube-scheduler": "v0.36.3",
        "k8s.io/streaming": "v0.36.3",
    }


def test_cache_is_keyed_by_version(tmp_path: object) -> None:
    bins = build.binaries()
    assert f"kubernetes-v{build.KUBERNETES_VERSION}" in str(bins.kube_apiserver)
    assert f"etcd-v{build.ETCD_VERSION}" in str(bins.etcd)
    assert f"kwok-v{build.KWOK_VERSION}" in str(bins.kwok)


def test_six_nodes_two_per_failure_zone_with_distinct_pod_cidrs() -> None:
    layout = nodes()
    assert Counter(n.zone for n in layout) == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    cidrs = [ip_network(n.pod_cidr) for n in layout]
    assert len(set(cidrs)) == 6
    assert all(c.prefixlen == 24 and c.subnet_of(ip_network(POD_CIDR)) for c in cidrs)  # type: ignore[arg-type]
    manifest = node_manifest(layout[0])
    labels = manifest["metadata"]["labels"]  # type: ignore[index]
    assert labels["topology.kubernetes.io/zone"] == "zone-a"
    assert labels["kubernetes.io/hostname"] == layout[0].name
