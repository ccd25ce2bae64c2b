"""`secondary-dns render`: manifests in, a self-contained named config out."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from secondary_dns.cli import main
from tests.unit.render_cases import knotc_conf_check

API = "secondarydns.io/v1alpha1"
SECRET = "c2VjcmV0LWJ5dGVzLWZvci10aGUtdW5pdC10ZXN0cy0wMDA="


def server(name: str = "edge", labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "dns"}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": API, "kind": "SecondaryServer", "metadata": metadata, "spec": spec}


def zone(name: str, zone_name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "zone": zone_name,
        "primaries": [{"address": "192.0.2.1", "tsigKeySecretRef": {"name": "transfer"}}],
    }
    body.update(spec)
    if "serverSelector" not in body:
        body.setdefault("servers", ["edge"])
    return {
        "apiVersion": API,
        "kind": "Zone",
        "metadata": {"name": name, "namespace": "dns"},
        "spec": body,
    }


SECRET_OBJ = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "transfer", "namespace": "dns"},
    "stringData": {"secret": SECRET, "name": "transfer.example"},
}


def write(tmp_path: Path, *objects: dict[str, Any]) -> Path:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return path


def test_renders_a_self_contained_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests = write(
        tmp_path,
        server(labels={"tier": "edge"}),
        zone("by-name", "example.com"),
        zone("by-label", "example.net", serverSelector={"matchLabels": {"tier": "edge"}}),
        zone("elsewhere", "example.org", servers=["other"]),
        SECRET_OBJ,
    )
    out = tmp_path / "out"
    assert (
        main(["render", "--output", str(out), "--listen", "127.0.0.53:5353", str(manifests)]) == 0
    )
    stdout = capsys.readouterr().out
    assert "serves example.com (Zone dns/by-name)" in stdout
    assert "serves example.net (Zone dns/by-label)" in stdout
    assert "example.org" not in stdout
    for name in ("named.conf", "zones.conf", "tsig-keys.conf", "rndc.key", "rndc.conf"):
        assert (out / name).is_file()
    for secret_file in ("tsig-keys.conf", "rndc.key", "rndc.conf"):
        assert stat.S_IMODE((out / secret_file).stat().st_mode) == 0o600
    assert (out / "data").is_dir() and (out / "run").is_dir()
    named_conf = (out / "named.conf").read_text()
    assert "listen-on port 5353 { 127.0.0.53; };" in named_conf
    assert "listen-on-v6 port 5353 { none; };" in named_conf
    # Every path points inside the output directory.
    for line in (out / "named.conf").read_text().splitlines():
        if '"/' in line:
            assert f'"{out}/' in line, line
    assert SECRET in (out / "tsig-keys.conf").read_text()
    assert SECRET not in named_conf + served_text(out)
    checkconf = shutil.which("named-checkconf")
    if checkconf is None:
        pytest.skip("named-checkconf is not installed (Debian: apt-get install bind9-utils)")
    result = subprocess.run([checkconf, str(out / "named.conf")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_renders_a_self_contained_knot_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests = write(
        tmp_path,
        server(engine={"type": "knot"}, limits={"maxRecords": 1000}),
        zone("by-name", "example.com"),
        SECRET_OBJ,
    )
    out = tmp_path / "out"
    assert (
        main(["render", "--output", str(out), "--listen", "127.0.0.53:5353", str(manifests)]) == 0
    )
    captured = capsys.readouterr()
    assert "(knot)" in captured.out and f"knotd -c {out}/knot.conf" in captured.out
    # What Knot does instead of a record count is said, not hidden.
    assert "Zone dns/by-name (knot): spec.limits.maxRecords is 1000" in captured.err
    for name in ("knot.conf", "zones.conf", "tsig-keys.conf"):
        assert (out / name).is_file()
    # knotd's control channel is a socket in run/, no rndc key.
    assert not (out / "rndc.key").exists()
    assert stat.S_IMODE((out / "tsig-keys.conf").stat().st_mode) == 0o600
    knot_conf = (out / "knot.conf").read_text()
    assert "listen: [ 127.0.0.53@5353 ]" in knot_conf
    for line in knot_conf.splitlines():
        if '"/' in line:
            assert f'"{out}/' in line, line
    assert SECRET in (out / "tsig-keys.conf").read_text()
    assert SECRET not in knot_conf + served_text(out)
    result = knotc_conf_check(out / "knot.conf")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rejected_zones_are_reported_and_strict_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests = write(
        tmp_path,
        server(),
        zone("good", "example.com"),
        zone(
            "nokey",
            "example.net",
            primaries=[{"address": "192.0.2.1", "tsigKeySecretRef": {"name": "missing"}}],
        ),
        zone("invalid", "example.org", primaries=[{"address": "not-an-address"}]),
        SECRET_OBJ,
    )
    out = tmp_path / "out"
    assert main(["render", "-o", str(out), str(manifests)]) == 0
    stderr = capsys.readouterr().err
    assert "left out Zone dns/nokey: SecretNotFound" in stderr
    assert "left out Zone dns/invalid: InvalidSpec: spec.primaries[0].address" in stderr
    assert "example.net" not in served_text(out)
    assert main(["render", "-o", str(out), "--strict", str(manifests)]) == 3


def served_text(out: Path) -> str:
    """The zones include and every shard's file `render` wrote."""
    return "".join(path.read_text() for path in sorted(out.glob("zones*.conf")))


def test_several_servers_need_server_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests = write(
        tmp_path, server("edge"), server("core"), zone("z", "example.com"), SECRET_OBJ
    )
    out = tmp_path / "out"
    assert main(["render", "-o", str(out), str(manifests)]) == 1
    assert "--server" in capsys.readouterr().err
    assert not out.exists()
    assert main(["render", "-o", str(out), "--server", "dns/edge", str(manifests)]) == 0
    assert "example.com" in served_text(out)


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n")
    assert main(["render", "-o", str(tmp_path / "out"), str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["render", "-o", str(tmp_path / "out"), str(tmp_path / "missing.yaml")]) == 2
    manifests = write(tmp_path, server())
    assert main(["render", "-o", str(tmp_path / "out"), "--listen", "nope", str(manifests)]) == 2


def test_invalid_server_renders_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = server()
    broken["spec"] = {"replicas": 0}
    assert main(["render", "-o", str(tmp_path / "out"), str(write(tmp_path, broken))]) == 1
    assert "spec.replicas" in capsys.readouterr().err
