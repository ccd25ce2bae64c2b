"""The built image, run with podman and runc the way a pod runs it.

One container runs tests/image/inside.py and reports what it sees (ids, which
paths can be written, the engines' tools, a real named and a real knotd each
serving a zone, checked first by its own checker); one
more runs the ENTRYPOINT with `--version`. No network: the container has only
its own loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import image
from secondary_dns import __version__
from secondary_dns.render.children import POD_PATHS, RUN_AS_USER

pytestmark = pytest.mark.image

INSIDE = Path(__file__).with_name("inside.py")
# The pod's volumes (build_statefulset): everything else is read-only.
VOLUMES = (str(POD_PATHS.run_dir), str(POD_PATHS.data_dir), "/tmp")


def pod_like_run(ref: image.ImageRef, *args: str, stdin: str | None = None) -> str:
    """`podman run` with a pod's restrictions; returns stdout, removes the container."""
    name = f"sdns-image-test-{os.getpid()}"
    argv = [
        "run",
        "--rm",
        "--interactive",
        f"--name={name}",
        "--network=none",
        "--read-only",
        # podman would add tmpfs on /run, /tmp and /var/tmp; a kubelet adds nothing.
        "--read-only-tmpfs=false",
        *(f"--tmpfs={path}" for path in VOLUMES),
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        *args,
    ]
    try:
        result = subprocess.run(
            ["podman", *argv],
            input=stdin,
            env=image.container_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        image.podman("rm", "--force", name, check=False)
        raise
    assert result.returncode == 0, f"podman {' '.join(argv)}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def inside(built_image: image.ImageRef) -> dict[str, Any]:
    out = pod_like_run(
        built_image, "--entrypoint=python", built_image.content_tag, "-", stdin=INSIDE.read_text()
    )
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def test_runs_as_the_pods_non_root_user(inside: dict[str, Any]) -> None:
    assert (inside["uid"], inside["gid"]) == (RUN_AS_USER, RUN_AS_USER)
    assert inside["groups"] == [RUN_AS_USER]
    # Real, effective, saved and filesystem ids: nothing of root is left.
    assert inside["status_uid"] == [RUN_AS_USER] * 4
    assert inside["status_gid"] == [RUN_AS_USER] * 4


def test_only_the_pods_volumes_are_writable(inside: dict[str, Any]) -> None:
    assert inside["write_root"] == "EROFS"
    assert inside["write_etc"] in ("EROFS", "EACCES")
    assert inside["write_volumes"] == {path: None for path in VOLUMES}


def test_entrypoint_version_is_the_package_version(built_image: image.ImageRef) -> None:
    out = pod_like_run(built_image, built_image.content_tag, "--version")
    assert out.strip() == f"secondary-dns {__version__}"


def test_every_module_imports(inside: dict[str, Any]) -> None:
    assert inside["python"] == "/opt/secondary-dns/bin/python"
    assert inside["import_failures"] == []


def test_engine_tools_are_there(inside: dict[str, Any]) -> None:
    assert all(inside["tools"].values()), inside["tools"]
    assert inside["named_v"]["returncode"] == 0, inside["named_v"]
    assert inside["named_v"]["output"].startswith("BIND 9."), inside["named_v"]
    assert inside["knotd_v"]["returncode"] == 0, inside["knotd_v"]
    assert inside["knotd_v"]["output"].startswith("knotd (Knot DNS), version 3."), inside["knotd_v"]
    # Debian's postinst makes one; in an image it would be every copy's secret.
    assert inside["baked_rndc_key"] is False


# What each engine's control channel answers about a healthy engine serving the zone.
CONTROL_ANSWERS = {"bind9": "server is up and running", "knot": "serial: 2026120301"}


@pytest.mark.parametrize("engine", sorted(CONTROL_ANSWERS))
def test_engine_serves_on_a_read_only_root(inside: dict[str, Any], engine: str) -> None:
    """named -g and knotd with the rendered config write only to the pod's volumes."""
    run = inside[engine]
    assert "serve_error" not in run, run["serve_error"]
    assert run["render"]["returncode"] == 0, run["render"]
    # The engine's own checker, as the agent runs it, as the image's user.
    assert run["checkconf"]["returncode"] == 0, run["checkconf"]
    log = "\n".join(run["log"])
    assert run["soa_serial"] == 2026120301, log
    assert run["engine_uids"] == [RUN_AS_USER] * 4, run["engine_uids"]
    assert CONTROL_ANSWERS[engine] in run["control"]["output"], run["control"]
    for trouble in ("read-only file system", "permission denied", "fatal", "critical"):
        assert trouble not in log.lower(), log


def test_image_config(image_config: dict[str, Any], built_image: image.ImageRef) -> None:
    config = image_config["Config"]
    assert config["User"] == f"{RUN_AS_USER}:{RUN_AS_USER}"
    assert config["Entrypoint"] == ["secondary-dns"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels[image.CONTENT_HASH_LABEL] == built_image.content_hash
    for label in ("title", "description", "source", "licenses"):
        assert labels[f"org.opencontainers.image.{label}"], label
    # The StatefulSet's default image name exists (`make image` points it at
    # this tree's image; another checkout's build may have moved it since).
    assert image.image_exists(built_image.version_tag)
