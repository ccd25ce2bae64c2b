"""Runs INSIDE the image (piped to its python by test_image.py); prints one JSON report.

The container runs as a pod would: the image's own user, a read-only root
filesystem, the pod's three volumes as tmpfs mounts, no capabilities, no
network but its own loopback. Everything here only observes and reports; the
test asserts.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

RUN_DIR = Path("/run/secondary-dns")
DATA_DIR = Path("/var/lib/secondary-dns")
CONFIG_DIR = RUN_DIR / "config"
PORT = 5353
SERIAL = 2026120301
# A SecondaryServer and a Zone whose primary cannot be reached (TEST-NET-1; the
# container has no network but its loopback, and the API refuses a primary on
# loopback): named serves the zone from the copy in its data directory, as after
# a restart.
MANIFESTS = """
apiVersion: secondarydns.io/v1alpha1
kind: SecondaryServer
metadata: {name: image-check, namespace: default}
spec: {}
---
apiVersion: secondarydns.io/v1alpha1
kind: Zone
metadata: {name: example-test, namespace: default}
spec:
  zone: example.test
  primaries: [{address: 192.0.2.1}]
  servers: [image-check]
"""
ZONE = f"""$TTL 300
@ IN SOA ns.example.test. hostmaster.example.test. {SERIAL} 3600 600 86400 300
@ IN NS ns.example.test.
ns IN A 192.0.2.1
"""


def _run(argv: list[str], stdin: str | None = None) -> dict[str, Any]:
    try:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except OSError as error:
        return {"returncode": None, "output": str(error)}
    return {"returncode": result.returncode, "output": (result.stdout + result.stderr).strip()}


def _write_error(path: Path) -> str | None:
    """None when `path` can be created; the errno name otherwise."""
    try:
        path.write_text("probe")
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error))
    path.unlink()
    return None


def _status_ids(field: str, status: Path = Path("/proc/self/status")) -> list[int]:
    """The real, effective, saved and filesystem ids from a process's status file."""
    try:
        text = status.read_text()
    except OSError:
        return []
    match = re.search(rf"^{field}:\s+(.*)$", text, re.MULTILINE)
    return [int(value) for value in match.group(1).split()] if match else []


def _import_everything() -> list[str]:
    """Import every module of the package: the image has all their dependencies."""
    import secondary_dns

    failures = []
    for module in pkgutil.walk_packages(secondary_dns.__path__, "secondary_dns."):
        try:
            importlib.import_module(module.name)
        except Exception as error:  # noqa: BLE001 - reported, the test asserts on it
            failures.append(f"{module.name}: {error!r}")
    try:
        import kubernetes.client

        kubernetes.client.CoreV1Api  # noqa: B018 - generated APIs load lazily
    except Exception as error:  # noqa: BLE001
        failures.append(f"kubernetes.client.CoreV1Api: {error!r}")
    return failures


# How each engine is checked, run and asked, with the configuration `secondary-dns
# render` wrote into `out` (named.conf or knot.conf and their includes).
ENGINES: dict[str, dict[str, Any]] = {
    "bind9": {
        "main": "named.conf",
        "check": lambda conf, out: ["named-checkconf", str(conf)],
        "run": lambda conf, out: ["named", "-g", "-c", str(conf)],
        "control": lambda conf, out: ["rndc", "-c", str(out / "rndc.conf"), "status"],
    },
    "knot": {
        "main": "knot.conf",
        "check": lambda conf, out: ["knotc", "-c", str(conf), "conf-check"],
        "run": lambda conf, out: ["knotd", "-c", str(conf)],
        "control": lambda conf, out: [
            "knotc", "-s", str(out / "run" / "knot.sock"), "zone-status", "example.test."
        ],
    },
}  # fmt: skip


def _serve_a_zone(engine: str) -> dict[str, Any]:
    """Render a config, check it, start the engine, ask it for the SOA, stop it."""
    tools = ENGINES[engine]
    out = CONFIG_DIR / engine
    report: dict[str, Any] = {}
    report["render"] = _run(
        [
            "secondary-dns",
            "render",
            "--output",
            str(out),
            "--listen",
            f"127.0.0.1:{PORT}",
            "--control-port",
            "9953",
            "--statistics-port",
            "9853",
            "-",
        ],
        stdin=MANIFESTS.replace("spec: {}", f"spec: {{engine: {{type: {engine}}}}}"),
    )
    conf = out / tools["main"]
    report["checkconf"] = _run(tools["check"](conf, out))
    # Both engines keep the zone as <data dir>/<zone>.db, as a restarted replica finds it.
    (out / "data" / "example.test.db").write_text(ZONE)

    process = subprocess.Popen(
        tools["run"](conf, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    serial = None
    deadline = time.monotonic() + 20
    while serial is None and time.monotonic() < deadline and process.poll() is None:
        query = dns.message.make_query("example.test.", dns.rdatatype.SOA)
        try:
            answer = dns.query.udp(query, "127.0.0.1", port=PORT, timeout=1)
        except (OSError, dns.exception.Timeout):
            time.sleep(0.2)
            continue
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                serial = rrset[0].serial
        if serial is None:
            time.sleep(0.2)
    report["soa_serial"] = serial
    # The running engine's real, effective, saved and filesystem uids.
    report["engine_uids"] = _status_ids("Uid", Path(f"/proc/{process.pid}/status"))
    report["control"] = _run(tools["control"](conf, out))
    process.terminate()
    try:
        output, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    report["exit"] = process.returncode
    report["log"] = output.splitlines()
    return report


def main() -> None:
    report: dict[str, Any] = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "status_uid": _status_ids("Uid"),
        "status_gid": _status_ids("Gid"),
        "write_root": _write_error(Path("/image-probe")),
        "write_etc": _write_error(Path("/etc/bind/image-probe")),
        "write_volumes": {
            str(d): _write_error(d / "image-probe") for d in (RUN_DIR, DATA_DIR, Path("/tmp"))
        },
        "tools": {
            tool: shutil.which(tool)
            for tool in ("named", "named-checkconf", "rndc", "knotd", "knotc", "kdig")
        },
        "named_v": _run(["named", "-V"]),
        "knotd_v": _run(["knotd", "-V"]),
        "baked_rndc_key": Path("/etc/bind/rndc.key").exists(),
        "import_failures": _import_everything(),
        "python": sys.executable,
    }
    for engine in ENGINES:
        try:
            report[engine] = _serve_a_zone(engine)
        except Exception as error:  # noqa: BLE001 - reported, the test asserts on it
            report[engine] = {"serve_error": repr(error)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
