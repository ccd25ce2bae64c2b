"""Representative servers and zones for the renderer's unit tests and golden files."""

from __future__ import annotations

import difflib
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import dns.name
import dns.tsig
import pytest

from secondary_dns.api import (
    Limits,
    ObjectRef,
    Primary,
    SecondaryServerSpec,
    SecretKeyRef,
    TransferAclEntry,
    TsigKey,
    ZoneSpec,
    ZoneTimers,
)
from secondary_dns.api.agent_contract import SHARD_METADATA_FILES
from secondary_dns.render import EnginePaths, RenderedConfig, RenderRequest, TsigKeyUnavailable
from secondary_dns.render.engine import DEFAULT_RELAY_KEY_NAME

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("SDNS_UPDATE_GOLDEN") == "1"

NS = "dns"


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def key(
    key_name: str, fill: bytes = b"k", algorithm: dns.name.Name = dns.tsig.HMAC_SHA256
) -> TsigKey:
    # Fixed bytes: golden files must not change from run to run.
    return TsigKey(name(key_name), algorithm, fill * 32)


def zone(
    text: str,
    *primaries: Primary,
    allow_transfer: tuple[TransferAclEntry, ...] = (),
    notify_allow_from: tuple[str, ...] = (),
    timers: ZoneTimers | None = None,
    retransfer_request: str | None = None,
) -> ZoneSpec:
    return ZoneSpec(
        zone=name(text),
        primaries=primaries,
        servers=("edge",),
        server_selector=None,
        allow_transfer=allow_transfer,
        notify_allow_from=tuple(ipaddress.ip_network(n) for n in notify_allow_from),
        timers=timers or ZoneTimers(),
        retransfer_request=retransfer_request,
    )


def primary(address: str, port: int = 53, secret: str | None = None) -> Primary:
    return Primary(
        ipaddress.ip_address(address), port, SecretKeyRef(secret) if secret is not None else None
    )


def acl(
    cidr: str | None = None, secret: str | None = None, prefix: str | None = None
) -> TransferAclEntry:
    return TransferAclEntry(
        ipaddress.ip_network(cidr) if cidr else None,
        SecretKeyRef(secret, prefix) if secret is not None else None,
    )


def minimal_request() -> RenderRequest:
    """One zone from one primary without TSIG, pod defaults everywhere."""
    return RenderRequest(
        server=SecondaryServerSpec(),
        zones=[(ObjectRef(NS, "example"), zone("example.com.", primary("192.0.2.1")))],
        tsig_keys={},
        relay_key_name=DEFAULT_RELAY_KEY_NAME,
    )


def full_request() -> RenderRequest:
    """Several zones with every option, plus zones that must be left out."""
    transfer = key("transfer.example.com.")
    downstream = key("downstream.example.net.", b"d", dns.tsig.HMAC_SHA512)
    keys: dict[tuple[str, SecretKeyRef], TsigKey | TsigKeyUnavailable] = {
        (NS, SecretKeyRef("transfer")): transfer,
        (NS, SecretKeyRef("downstream")): downstream,
        # Two keys in one Secret, told apart by the key prefix.
        (NS, SecretKeyRef("bundle", "b")): key("bundle-b.example.com.", b"b"),
        (NS, SecretKeyRef("broken")): TsigKeyUnavailable('key "secret" is not base64'),
        (NS, SecretKeyRef("clash")): key("transfer.example.com.", b"x"),
    }
    zones = [
        (
            ObjectRef(NS, "example-com"),
            zone(
                "Example.COM.",  # RFC 4343: rendered lowercase
                primary("192.0.2.1", secret="transfer"),
                primary("2001:db8::53", 5353, secret="transfer"),
                allow_transfer=(
                    acl("198.51.100.0/24"),
                    acl(secret="downstream"),
                    acl("2001:db8:1::/48", secret="bundle", prefix="b"),
                ),
                notify_allow_from=("203.0.113.0/24", "192.0.2.1/32"),
                timers=ZoneTimers(60, 3600, 30, 600),
            ),
        ),
        (
            ObjectRef(NS, "reverse"),
            zone(
                "2.0.192.in-addr.arpa.",
                primary("192.0.2.1"),
                timers=ZoneTimers(max_refresh_seconds=120, max_retry_seconds=60),
            ),
        ),
        (ObjectRef(NS, "service-labels"), zone("_sites.example.org.", primary("192.0.2.9"))),
        # Left out: Secret missing, Secret unusable, key name clash, duplicate zone.
        (
            ObjectRef(NS, "missing-key"),
            zone("missing.example.", primary("192.0.2.1", secret="nope")),
        ),
        (
            ObjectRef(NS, "broken-key"),
            zone("broken.example.", primary("192.0.2.1", secret="broken")),
        ),
        (ObjectRef(NS, "clash"), zone("clash.example.", primary("192.0.2.1", secret="clash"))),
        (ObjectRef(NS, "a-duplicate"), zone("example.com.", primary("192.0.2.7"))),
    ]
    return RenderRequest(
        server=SecondaryServerSpec(limits=Limits(max_records=100_000, transfer_timeout_seconds=90)),
        zones=zones,
        tsig_keys=keys,
        relay_key_name=DEFAULT_RELAY_KEY_NAME,
        paths=EnginePaths(
            listen_addresses=(ipaddress.ip_address("10.244.1.5"), ipaddress.ip_address("fd00::5")),
            port=5353,
        ),
        # example-com was there first, so the newer a-duplicate loses despite its name.
        created={
            ObjectRef(NS, "example-com"): "2026-01-01T00:00:00Z",
            ObjectRef(NS, "a-duplicate"): "2026-02-01T00:00:00Z",
        },
    )


CASES = {"minimal": minimal_request, "full": full_request}


def assert_golden(actual: str, golden_name: str) -> None:
    """Compare with tests/unit/golden/<golden_name>; SDNS_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / golden_name
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual)
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; create it with SDNS_UPDATE_GOLDEN=1")
    expected = path.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"golden/{golden_name}",
                tofile="rendered",
            )
        )
        pytest.fail(
            f"rendered text differs from golden/{golden_name} "
            f"(SDNS_UPDATE_GOLDEN=1 rewrites it after review):\n{diff}",
            pytrace=False,
        )


# The key file's name among a case's golden files (not an engine file of the config dir).
GOLDEN_KEY_FILE = "tsig-keys.conf"


def zones_text(rendered: RenderedConfig) -> str:
    """Every shard's engine file, in shard order: all the zone statements of a configuration."""
    return "".join(
        text
        for shard in rendered.shards.values()
        for name, text in sorted(shard.files.items())
        if name not in SHARD_METADATA_FILES
    )


def assert_golden_config(rendered: RenderedConfig, key_file: str, case: str) -> None:
    """Every engine file of `rendered` (root and shards) and the key file against
    golden/<engine>-<case>/; the set of files must match too."""
    directory = f"{rendered.engine}-{case}"
    files = {**rendered.engine_files(), GOLDEN_KEY_FILE: key_file}
    if UPDATE_GOLDEN:
        (GOLDEN / directory).mkdir(parents=True, exist_ok=True)
        for stale in (GOLDEN / directory).iterdir():
            if stale.name not in files:
                stale.unlink()
    else:
        assert sorted(p.name for p in (GOLDEN / directory).iterdir()) == sorted(files)
    for name, text in files.items():
        assert_golden(text, f"{directory}/{name}")


def golden_config(engine: str, case: str) -> dict[str, str]:
    """The golden engine files of a case (file name -> text), without the key file."""
    directory = GOLDEN / f"{engine}-{case}"
    return {
        path.name: path.read_text()
        for path in sorted(directory.iterdir())
        if path.name != GOLDEN_KEY_FILE
    }


def golden_key_file(engine: str, case: str) -> str:
    return (GOLDEN / f"{engine}-{case}" / GOLDEN_KEY_FILE).read_text()


def named_checkconf(conf: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("named-checkconf")
    if binary is None:
        pytest.skip("named-checkconf is not installed (Debian: apt-get install bind9-utils)")
    return subprocess.run([binary, str(conf)], capture_output=True, text=True, check=False)


def knotc_conf_check(conf: Path) -> subprocess.CompletedProcess[str]:
    """`knotc conf-check`: Knot's own checker, as named-checkconf is BIND's."""
    binary = shutil.which("knotc")
    if binary is None:
        pytest.skip("knotc is not installed (Debian: apt-get install knot)")
    return subprocess.run(
        [binary, "-c", str(conf), "conf-check"], capture_output=True, text=True, check=False
    )


def relocate(text: str, root: Path) -> str:
    """Move every quoted absolute path under `root`: checks a pod config without chroot.

    named-checkconf -t would do the same but needs root; every path the renderer
    writes is quoted and every quoted string starting with "/" is a path.
    """
    return text.replace('"/', f'"{root}/')


def install_tree(root: Path, files: Mapping[PurePosixPath, str], dirs: list[PurePosixPath]) -> None:
    for directory in dirs:
        (root / directory.relative_to("/")).mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        target = root / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(relocate(text, root))
