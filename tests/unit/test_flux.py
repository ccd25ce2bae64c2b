"""Pure parts of the local Flux: builds, CRD bundles, flags, the git server's CGI glue."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from localcluster import flux, gitserver, kstatus
from localcluster.cluster import LocalCluster
from localcluster.constants import (
    CONTROL_PLANE_ADDRESS,
    POD_CIDR,
    PRIMARY_ADDRESS,
    RELAY_ADDRESSES,
    SERVICE_CIDR,
)


def test_controllers_are_cached_by_name_and_version(tmp_path: Path) -> None:
    source = flux.Controller("source-controller", "1.9.3")
    assert source.module == "github.com/fluxcd/source-controller"
    assert source.binary(tmp_path) == tmp_path / "source-controller-v1.9.3" / "source-controller"
    assert source.crds(tmp_path) == tmp_path / "source-controller-v1.9.3" / "crds.yaml"


def test_a_cached_controller_is_not_built_again(tmp_path: Path) -> None:
    controller = flux.Controller("kustomize-controller", "0.0.0-test")
    controller.binary(tmp_path).parent.mkdir(parents=True)
    controller.binary(tmp_path).write_text("")
    controller.crds(tmp_path).write_text("")
    # Nothing is downloaded or built: that would fail for this made-up version.
    assert flux.build_controller(controller, tmp_path) is False


def test_the_api_submodule_is_taken_from_the_proxy() -> None:
    assert flux.api_module_edit(flux.SOURCE_CONTROLLER) == [
        "mod",
        "edit",
        "-dropreplace=github.com/fluxcd/source-controller/api",
    ]


def test_crd_files_become_one_multi_document_yaml() -> None:
    bundle = flux.crd_bundle(["---\nkind: A\n", "kind: B\n\n"])
    assert bundle == "kind: A\n---\nkind: B\n"


def test_controllers_run_local_single_instance_and_cluster_wide() -> None:
    cluster = LocalCluster("unit")
    source = flux.source_controller_argv(cluster, Path("/bin/source-controller"))
    kustomize = flux.kustomize_controller_argv(cluster, Path("/bin/kustomize-controller"))
    for argv in (source, kustomize):
        assert "--enable-leader-election=false" in argv
        assert "--watch-all-namespaces=true" in argv
    assert flux.controller_environment(cluster)["KUBECONFIG"] == str(cluster.kubeconfig)
    # kustomize-controller downloads artifacts from the address source-controller advertises.
    assert f"--storage-adv-addr={flux.SOURCE_CONTROLLER_ADDRESS}:{flux.STORAGE_PORT}" in source
    assert f"--storage-path={cluster.state_dir / 'flux' / 'artifacts'}" in source


def test_flux_addresses_stay_apart_from_every_other_local_address() -> None:
    ours = [gitserver.ADDRESS, flux.SOURCE_CONTROLLER_ADDRESS, flux.KUSTOMIZE_CONTROLLER_ADDRESS]
    others = [CONTROL_PLANE_ADDRESS, PRIMARY_ADDRESS, *RELAY_ADDRESSES]
    assert len(set(ours + others)) == len(ours + others)
    for address in ours:
        ip = ipaddress.ip_address(address)
        assert ip.is_private
        assert ip not in ipaddress.ip_network(POD_CIDR)
        assert ip not in ipaddress.ip_network(SERVICE_CIDR)


def test_cgi_environment_for_a_smart_http_fetch() -> None:
    env = gitserver.cgi_environment(
        "POST",
        "/apps.git/git-upload-pack?x=1",
        {
            "Content-Type": "application/x-git-upload-pack-request",
            "Git-Protocol": "version=2",
            "Proxy": "http://attacker.invalid",
            "Content-Length": "12",
        },
        Path("/srv/git"),
        "10.250.0.21",
        12,
    )
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/apps.git/git-upload-pack"
    assert env["QUERY_STRING"] == "x=1"
    assert env["CONTENT_TYPE"] == "application/x-git-upload-pack-request"
    assert env["CONTENT_LENGTH"] == "12"
    assert env["HTTP_GIT_PROTOCOL"] == "version=2"
    assert env["GIT_PROJECT_ROOT"] == "/srv/git"
    assert env["GIT_HTTP_EXPORT_ALL"] == "1"
    assert "HTTP_PROXY" not in env


def test_cgi_response_is_split_into_status_headers_and_body() -> None:
    status, headers, body = gitserver.parse_cgi_response(
        b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno\r\n\r\nsuch"
    )
    assert (status, headers, body) == (404, [("Content-Type", "text/plain")], b"no\r\n\r\nsuch")
    assert gitserver.parse_cgi_response(b"Expires: 0\n\nPACK")[0] == 200
    with pytest.raises(ValueError, match="blank line"):
        gitserver.parse_cgi_response(b"Content-Type: text/plain\r\n")


def test_the_kstatus_cache_key_follows_its_source(tmp_path: Path) -> None:
    for name in kstatus.SOURCE_FILES:
        (tmp_path / name).write_text(name)
    before = kstatus.binary_path(tmp_path, tmp_path)
    assert before.parent.name.startswith("kstatus-")
    (tmp_path / "main.go").write_text("package main // changed")
    assert kstatus.binary_path(tmp_path, tmp_path) != before


def test_the_kstatus_source_is_gofmt_clean() -> None:
    gofmt = shutil.which("gofmt")
    if gofmt is None:
        pytest.skip("gofmt is not installed")
    result = subprocess.run(
        [gofmt, "-l", str(kstatus.SOURCE_DIR)], capture_output=True, text=True, check=True
    )
    assert result.stdout == ""
