"""Installing the project's CRDs into a test cluster (reused by later cluster tests)."""

from __future__ import annotations

from pathlib import Path

from localcluster.cluster import LocalCluster

CRD_DIR = Path(__file__).resolve().parents[1] / "crds"
CRD_NAMES = ("zones.secondarydns.io", "secondaryservers.secondarydns.io")


def install_crds(cluster: LocalCluster) -> None:
    """Apply crds/ (idempotent: server-side apply) and wait until both are served."""
    # --force-conflicts: a CRD applied earlier by hand (kubectl apply without
    # --server-side) belongs to another field manager; the repository's copy wins.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"customresourcedefinition/{name}" for name in CRD_NAMES),
    )
