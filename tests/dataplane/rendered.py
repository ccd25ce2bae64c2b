"""Secondaries started from configuration the project renders from manifests.

The tests write SecondaryServer, Zone and Secret manifests as a user would,
run `secondary-dns render` on them (in process), and start the server's engine
(named or knotd, its `spec.engine.type`) from the directory it writes: the same
path from manifest to packets as in a pod.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.name
import yaml

from localcluster.knot import KnotProcess
from localcluster.named import (
    NamedFleet,
    NamedProcess,
    PrimaryServer,
    TsigCredentials,
    free_port,
    zone_serial,
)
from secondary_dns.api import API_VERSION, agent_contract
from secondary_dns.cli import build_parser, run_render

NAMESPACE = "dns"
SERVER = "edge"
# The zone most data-plane tests transfer (the `primary` fixture serves it).
ZONE = "example.test."


def server_manifest(
    name: str = SERVER,
    *,
    engine: str = agent_contract.ENGINE_BIND9,
    max_records: int | None = None,
    transfer_timeout: int | None = None,
    responses_per_second: int | None = None,
) -> dict[str, Any]:
    limits: dict[str, int] = {}
    if responses_per_second is not None:
        limits["responsesPerSecond"] = responses_per_second
    if max_records is not None:
        limits["maxRecords"] = max_records
    if transfer_timeout is not None:
        limits["transferTimeoutSeconds"] = transfer_timeout
    spec: dict[str, Any] = {"replicas": 3, "engine": {"type": engine}}
    if limits:
        spec["limits"] = limits
    return {
        "apiVersion": API_VERSION,
        "kind": "SecondaryServer",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def primary_entry(primary: PrimaryServer, secret: str | None = "transfer-key") -> dict[str, Any]:
    entry: dict[str, Any] = {"address": primary.address, "port": primary.port}
    if secret is not None:
        entry["tsigKeySecretRef"] = {"name": secret}
    return entry


def zone_manifest(
    name: str,
    zone: str,
    primaries: list[dict[str, Any]],
    *,
    allow_transfer: list[dict[str, Any]] | None = None,
    notify_allow_from: list[str] | None = None,
    timers: dict[str, int] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"zone": zone, "primaries": primaries, "servers": [SERVER]}
    if allow_transfer is not None:
        spec["allowTransfer"] = allow_transfer
    if notify_allow_from is not None:
        spec["notify"] = {"allowFrom": notify_allow_from}
    if timers is not None:
        spec["timers"] = timers
    return {
        "apiVersion": API_VERSION,
        "kind": "Zone",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def secret_manifest(key: TsigCredentials, name: str = "transfer-key") -> dict[str, Any]:
    return key.secret_manifest(name, NAMESPACE)


@dataclass
class RenderedSecondary:
    config_dir: Path
    stdout: str
    stderr: str
    process: NamedProcess

    @property
    def data_dir(self) -> Path:
        return self.config_dir / "data"

    def relay_key(self) -> TsigCredentials:
        """The NOTIFY relay key `secondary-dns render` generated into the key file."""
        text = (self.config_dir / "tsig-keys.conf").read_text()
        match = re.search(
            # BIND's `key "name" { algorithm A; secret "S"; };`, Knot's `- id: name` items.
            r'key "secondary-dns-relay" \{\s*algorithm ([a-z0-9-]+);\s*secret "([^"]+)";'
            r"|- id: secondary-dns-relay\n\s+algorithm: ([a-z0-9-]+)\n\s+secret: (\S+)\n",
            text,
        )
        assert match, text
        algorithm, secret = (
            (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
        )
        return TsigCredentials(
            dns.name.from_text("secondary-dns-relay."),
            dns.name.from_text(algorithm),
            base64.b64decode(secret),
        )


def render(config_dir: Path, manifests: list[dict[str, Any]], address: str) -> tuple[str, str]:
    """Run `secondary-dns render` for `address`; returns (stdout, stderr)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    manifest_file = config_dir.parent / f"{config_dir.name}-manifests.yaml"
    manifest_file.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    args = build_parser().parse_args(
        [
            "render",
            "--output",
            str(config_dir),
            "--listen",
            f"{address}:53",
            "--control-port",
            str(free_port()),
            "--statistics-port",
            str(free_port()),
            str(manifest_file),
        ]
    )
    out, err = io.StringIO(), io.StringIO()
    code = run_render(args, out, err)
    assert code == 0, f"secondary-dns render exited {code}: {err.getvalue()}"
    return out.getvalue(), err.getvalue()


def engine_of(manifests: list[dict[str, Any]]) -> str:
    """spec.engine.type of the (one) SecondaryServer among the manifests."""
    (server,) = (m for m in manifests if m.get("kind") == "SecondaryServer")
    engine: str = server.get("spec", {}).get("engine", {}).get("type", "bind9")
    return engine


def start_rendered_secondary(
    fleet: NamedFleet, config_dir: Path, manifests: list[dict[str, Any]]
) -> RenderedSecondary:
    address = fleet.address()
    stdout, stderr = render(config_dir, manifests, address)
    engine = engine_of(manifests)
    knot = engine == agent_contract.ENGINE_KNOT
    process = fleet.start_secondary(
        config_dir / agent_contract.ENGINE_CONFIG_FILES[engine],
        address,
        rndc_conf=None if knot else config_dir / "rndc.conf",
        label=f"{'knotd' if knot else 'named'}-{address}",
        process_class=KnotProcess if knot else NamedProcess,
    )
    return RenderedSecondary(config_dir, stdout, stderr, process)


# The `example_secondary` fixture (conftest.py): keyword arguments as below.
ExampleSecondary = Callable[..., RenderedSecondary]


def start_example_secondary(
    fleet: NamedFleet,
    config_dir: Path,
    primaries: Sequence[PrimaryServer],
    key: TsigCredentials,
    *,
    server: dict[str, Any] | None = None,
    engine: str = agent_contract.ENGINE_BIND9,
    extra: Sequence[dict[str, Any]] = (),
    **zone_options: Any,
) -> RenderedSecondary:
    """A rendered secondary of example.test. from `primaries`, transfers signed with `key`.

    The key is a Secret, as a user would create it; `zone_options` go to the
    Zone (`zone_manifest`), `extra` manifests (more Secrets) along; the server
    runs `engine` unless `server` is given. Returns once the secondary serves
    the primaries' serial.
    """
    manifests = [
        server or server_manifest(engine=engine),
        zone_manifest("example", ZONE, [primary_entry(p) for p in primaries], **zone_options),
        secret_manifest(key),
        *extra,
    ]
    secondary = start_rendered_secondary(fleet, config_dir, manifests)
    secondary.process.wait_for_serial(ZONE, zone_serial(primaries[0].zone(ZONE)))
    return secondary
