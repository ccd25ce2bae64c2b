"""The kstatus checker (hack/kstatus): built, cached by content, and run on objects.

kstatus is how Flux's kustomize-controller decides that what it applied is
healthy (`wait: true`, `healthChecks`): Current, InProgress, Failed,
Terminating, NotFound or Unknown, with a message. hack/kstatus/main.go computes
it with the same library for objects read with `kubectl get -o json`, so a test
can say what Flux will say about every object the chart and the operator create.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from localcluster import build
from localcluster.cluster import HACK_DIR, LocalCluster

SOURCE_DIR = HACK_DIR / "kstatus"
SOURCE_FILES = ("go.mod", "go.sum", "main.go")

CURRENT = "Current"
IN_PROGRESS = "InProgress"
FAILED = "Failed"


def source_digest(source: Path = SOURCE_DIR) -> str:
    """A digest of the program's source: the cache key, so an edit rebuilds it."""
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        digest.update(name.encode() + b"\0" + (source / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def binary_path(root: Path | None = None, source: Path = SOURCE_DIR) -> Path:
    return (root or build.cache_root() / "bin") / f"kstatus-{source_digest(source)}" / "kstatus"


def ensure_binary(root: Path | None = None) -> Path:
    target = binary_path(root)
    if target.exists():
        return target
    print(f"[local-flux] building kstatus -> {target}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="sdns-kstatus-build-") as tmp:
        out = Path(tmp) / "kstatus"
        # -mod=readonly: the committed go.sum is the whole truth; the build never edits it.
        # -buildvcs=false: the binary is keyed by its source, not by the checkout's commit.
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false")
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."],
            cwd=SOURCE_DIR,
            env=env,
            check=True,
        )
        build._install(out, target)
    return target


@dataclass(frozen=True)
class ObjectStatus:
    kind: str
    namespace: str
    name: str
    status: str
    message: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.status:<11} {self.kind}/{where}: {self.message}"


def compute(objects_json: str, binary: Path | None = None) -> list[ObjectStatus]:
    """kstatus of every object in `objects_json` (one object, or a List)."""
    result = subprocess.run(
        [str(binary or ensure_binary()), "-json"],
        input=objects_json,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kstatus failed: {result.stderr.strip()}")
    return [ObjectStatus(**item) for item in json.loads(result.stdout)]


def of_objects(cluster: LocalCluster, *get_args: str) -> list[ObjectStatus]:
    """kstatus of what `kubectl get <get_args> -o json` returns from the cluster."""
    listed = cluster.kubectl("get", *get_args, "-o", "json").stdout
    return compute(listed)
