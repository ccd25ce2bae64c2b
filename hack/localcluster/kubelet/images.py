"""Images: what kubelet's image manager decides, against podman's local store.

The machines have no registry (and the cluster's namespace no route out), so
a "pull" can only find what is already in local storage (`make image` puts
the project's image there). `imagePullPolicy` is honoured as far as that
allows: `Never` never looks further than local storage, `IfNotPresent` uses a
local image and otherwise fails to pull, and `Always` resolves the tag again
in local storage at every container start (a kubelet would ask the registry)
and fails to pull when it is not there. A failed pull gives the container the
`ErrImagePull` and then `ImagePullBackOff` waiting reasons, with kubelet's
back-off (10 s doubling to 5 min) between attempts.

Each container gets its own root filesystem: a podman container created
from the image (never started: runc runs it) and mounted, so a container
that may write to its root gets a fresh writable layer at every start, as
with containerd's snapshotter.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import image as image_build

ALWAYS = "Always"
IF_NOT_PRESENT = "IfNotPresent"
NEVER = "Never"
# Label of the podman containers the pod runner creates (root filesystems),
# with the cluster's name: `down` removes them by it.
CLUSTER_LABEL = "io.secondarydns.podrunner.cluster"


def normalize(reference: str) -> str:
    """A fully qualified reference, as containerd resolves the name a Pod gives.

    `debian:bookworm-slim` is `docker.io/library/debian:bookworm-slim`; a name
    without tag or digest gets `:latest`.
    """
    name, at, digest = reference.partition("@")
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = "docker.io", name
    else:
        domain, path = first, rest
    if domain == "docker.io" and "/" not in path.split(":", 1)[0]:
        path = f"library/{path}"
    last = path.rsplit("/", 1)[-1]
    if not at and ":" not in last:
        path += ":latest"
    return f"{domain}/{path}{at}{digest}"


def pull_policy(container: Mapping[str, Any]) -> str:
    """The container's policy; the API server defaults it, this only covers a Pod that lacks it."""
    policy = container.get("imagePullPolicy")
    if policy in (ALWAYS, IF_NOT_PRESENT, NEVER):
        return str(policy)
    reference = normalize(str(container.get("image") or ""))
    tag = reference.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
    return ALWAYS if tag in ("", "latest") and "@" not in reference else IF_NOT_PRESENT


def pull_failure_message(reference: str) -> str:
    """What the container's waiting state says when no pull can succeed (containerd's wording)."""
    return (
        f'failed to pull and unpack image "{normalize(reference)}": no registry here: the '
        "local cluster runs only images in the machine's local storage (`make image` builds "
        "this project's)"
    )


def never_pull_message(reference: str) -> str:
    return f'Container image "{reference}" is not present with pull policy of Never'


def backoff_message(reference: str) -> str:
    return f'Back-off pulling image "{reference}"'


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image's config a container's spec is made from."""

    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    stop_signal: str = ""

    @classmethod
    def parse(cls, config: Mapping[str, Any] | None) -> ImageConfig:
        config = config or {}
        return cls(
            user=str(config.get("User") or ""),
            env=tuple(str(e) for e in config.get("Env") or []),
            entrypoint=tuple(str(e) for e in config.get("Entrypoint") or []),
            cmd=tuple(str(e) for e in config.get("Cmd") or []),
            working_dir=str(config.get("WorkingDir") or ""),
            stop_signal=str(config.get("StopSignal") or ""),
        )


@dataclass(frozen=True)
class Image:
    reference: str  # as the Pod names it
    id: str
    repo_digests: tuple[str, ...] = ()
    config: ImageConfig = field(default_factory=ImageConfig)

    @property
    def image_id(self) -> str:
        """containerStatuses[].imageID: the digest reference, else the image's ID."""
        return self.repo_digests[0] if self.repo_digests else f"sha256:{self.id}"


class ImageStore:
    """podman's local storage (the images every checkout on the machine builds)."""

    def inspect(self, reference: str) -> Image | None:
        result = image_build.podman("image", "inspect", normalize(reference), check=False)
        if result.returncode != 0:
            return None
        found: list[dict[str, Any]] = json.loads(result.stdout or "[]")
        if not found:
            return None
        data = found[0]
        return Image(
            reference=reference,
            id=str(data["Id"]),
            repo_digests=tuple(str(d) for d in data.get("RepoDigests") or []),
            config=ImageConfig.parse(data.get("Config")),
        )

    def create_rootfs(self, image: Image, name: str, cluster: str) -> str:
        """A fresh root filesystem of `image`: a podman container (never started), mounted."""
        self.remove(name)
        image_build.podman(
            "create", "--pull=never", "--network=none", "--name", name,
            "--label", f"{CLUSTER_LABEL}={cluster}", image.id,
        )  # fmt: skip
        return image_build.podman("mount", name).stdout.strip()

    def remove(self, name: str) -> None:
        image_build.podman("rm", "--force", "--ignore", name, check=False)


def remove_cluster_rootfs(cluster: str) -> int:
    """Every root filesystem the pod runner of `cluster` created; for `down`."""
    try:
        listed = image_build.podman(
            "ps", "--all", "--format", "{{.Names}}", "--filter", f"label={CLUSTER_LABEL}={cluster}",
            check=False,
        ).stdout.split()  # fmt: skip
    except FileNotFoundError:  # no podman: nothing was ever created
        return 0
    for name in listed:
        image_build.podman("rm", "--force", "--ignore", name, check=False)
    return len(listed)


def podman_available() -> bool:
    try:
        return image_build.podman("--version", check=False).returncode == 0
    except (FileNotFoundError, subprocess.SubprocessError):
        return False
