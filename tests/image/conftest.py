"""Fixtures for the image tier: the image of this tree, run with podman and runc.

The tier does not build: `make test` (through `make setup`) and `make image`
do, before pytest starts. Building here would also fail once the session has
entered the data-plane tier's network namespace, which has no route out to the
package registries a build needs.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest

import image


@pytest.fixture(scope="session")
def built_image() -> image.ImageRef:
    """This tree's image, by its content tag; fails when it has not been built."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (make system-packages installs podman and runc)")
    if os.geteuid() != 0:
        pytest.skip("the image is in root's container storage (/var/lib/containers): run as root")
    ref = image.image_ref()
    if not image.cached(ref):
        pytest.fail(
            f"{ref.content_tag}, the image of this tree, is not built: run `make image` "
            "(the tree changed since the last build, or it never ran)"
        )
    return ref


@pytest.fixture(scope="session")
def image_config(built_image: image.ImageRef) -> dict[str, Any]:
    """`podman image inspect` of the image: its config, labels and size."""
    out = image.podman("image", "inspect", built_image.content_tag).stdout
    inspected: list[dict[str, Any]] = json.loads(out)
    return inspected[0]
