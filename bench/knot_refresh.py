"""A Knot DNS replica and a zone changed several times a second: NOTIFY -> served.

One knotd, configured by `secondary-dns render` from a SecondaryServer (engine
knot) and a Zone manifest as the operator renders a pod's configuration, is a
secondary of one real BIND primary (TSIG, SOA refresh 86400). Each bump is a
TSIG-signed dynamic update at the primary; as soon as the primary is seen
serving the new serial, a NOTIFY signed with the relay key is sent to knotd, as
the relay sends it; the next bump comes --gap seconds after knotd served the
previous one. Printed per variant: from the primary serving serial S to knotd
serving S, p50 / p99 / max over the bumps, and how many took over 300 ms.

Variants (--variants):
- rendered:        the configuration as rendered;
- without-block:   the same with `block-notify-after-transfer` taken out of the
                   primaries' `remote` entries (the configuration before it was
                   rendered: knotd 3.2 then plans an empty NOTIFY event 1 s after
                   each transfer, and a NOTIFY in the next wall-clock second waits
                   for it; docs/render.md, "Knot DNS");
- without-repeat:  that configuration, and a second NOTIFY sent --repeat-ms after
                   the first while knotd has not served the serial (would the
                   relay repeating its NOTIFY help?).

--knot-zone-item adds a Knot setting to the zone in every variant (other
candidates, e.g. `zonefile-sync: -1`, `refresh-min-interval: 2`).

Runs in a network namespace of its own (198.18.0.0/15 test addresses on its
loopback); nothing leaves it. **Resolution:** the primary, then knotd, is polled
with an SOA query every --poll-ms (2 ms) from one connected UDP socket, the
serial read off the answer's wire (localcluster/serial_watch.py), so a figure is
exact to one poll interval plus the answer's round trip (the largest is printed).

    PYTHONPATH=.:hack:operator .venv/bin/python bench/knot_refresh.py --bumps 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import dns.name
import dns.query
import dns.rcode
import dns.update
from tests.dataplane.rendered import (
    RenderedSecondary,
    primary_entry,
    render,
    secret_manifest,
    server_manifest,
    zone_manifest,
)

from localcluster import netns
from localcluster.knot import KnotProcess
from localcluster.named import NamedFleet, PrimaryServer, TsigCredentials, make_zone, send_notify
from localcluster.scenario import percentile
from localcluster.serial_watch import poll_serials
from secondary_dns.api import agent_contract

NETNS = "sdns-bench-knot-refresh"
ZONE = dns.name.from_text("bench.example.")
VARIANTS = ("rendered", "without-block", "without-repeat")
BLOCK_LINE = "    block-notify-after-transfer: on\n"
SLOW_MS = 300.0


def start_knot(
    fleet: NamedFleet,
    config_dir: Path,
    primary: PrimaryServer,
    key: TsigCredentials,
    block: bool,
    zone_items: list[str],
) -> RenderedSecondary:
    manifests = [
        # No response rate limiting: the poller asks every few ms from one address.
        server_manifest(engine=agent_contract.ENGINE_KNOT, responses_per_second=0),
        secret_manifest(key),
        zone_manifest("bench", ZONE.to_text(), [primary_entry(primary)]),
    ]
    address = fleet.address()
    stdout, stderr = render(config_dir, manifests, address)
    shards = sorted(config_dir.glob("zones-*.conf"))
    if not any(BLOCK_LINE in shard.read_text() for shard in shards):
        raise SystemExit("the rendered configuration has no block-notify-after-transfer")
    for shard in shards:
        text = shard.read_text()
        if not block:
            text = text.replace(BLOCK_LINE, "")
        # Other Knot settings to try, appended to the zone entry (the last section).
        shard.write_text(text + "".join(f"    {item}\n" for item in zone_items))
    conf = config_dir / agent_contract.ENGINE_CONFIG_FILES[agent_contract.ENGINE_KNOT]
    process = fleet.start_secondary(
        conf, address, label=f"knotd-{address}", process_class=KnotProcess
    )
    return RenderedSecondary(config_dir, stdout, stderr, process)


def update(primary: PrimaryServer, key: TsigCredentials, bump: int) -> None:
    message = dns.update.UpdateMessage(
        ZONE, keyring=key.keyring, keyname=key.name, keyalgorithm=key.algorithm
    )
    message.replace("bumped", 300, "TXT", f'"{bump}"')
    response = dns.query.tcp(message, primary.address, port=primary.port, timeout=5)
    if response.rcode() != dns.rcode.NOERROR:
        raise RuntimeError(f"update refused: {dns.rcode.to_text(response.rcode())}")


class Watch:
    """When a server is first seen serving a serial; keeps the largest round trip."""

    def __init__(self, poll: float) -> None:
        self.poll = poll
        self.max_rtt = 0.0

    def serving(self, address: str, port: int, serial: int, timeout: float = 30.0) -> float:
        """The monotonic time `address` was first seen serving `serial`."""
        result = asyncio.run(
            poll_serials(
                ZONE, {address: address}, serial, time.monotonic() + timeout, self.poll, port
            )
        )
        if address not in result.at:
            raise TimeoutError(f"{address} did not serve serial {serial} within {timeout} s")
        self.max_rtt = max(self.max_rtt, result.max_rtt)
        return result.at[address]


def measure(
    fleet: NamedFleet,
    workdir: Path,
    key: TsigCredentials,
    variant: str,
    args: argparse.Namespace,
    watch: Watch,
) -> list[float]:
    primary = fleet.start_primary([make_zone(ZONE, refresh=86400)], key, allow_update=True)
    secondary = start_knot(
        fleet, workdir / variant, primary, key, variant == "rendered", args.knot_zone_item
    )
    relay_key = secondary.relay_key()
    relay_address = fleet.address()
    knot = secondary.process
    serial = primary.serial(ZONE)
    assert serial is not None
    watch.serving(knot.address, knot.port, serial)
    delays: list[float] = []
    try:
        for bump in range(args.bumps):
            time.sleep(args.gap)
            update(primary, key, bump)
            serial += 1
            primary_at = watch.serving(primary.address, primary.port, serial)
            if send_notify(knot, ZONE, relay_address, relay_key) is None:
                raise RuntimeError("knotd did not answer the NOTIFY")
            if variant == "without-repeat":
                repeat_at = time.monotonic() + args.repeat_ms / 1000
                try:
                    knot_at = watch.serving(knot.address, knot.port, serial, args.repeat_ms / 1000)
                except TimeoutError:
                    time.sleep(max(0.0, repeat_at - time.monotonic()))
                    send_notify(knot, ZONE, relay_address, relay_key)
                    knot_at = watch.serving(knot.address, knot.port, serial)
            else:
                knot_at = watch.serving(knot.address, knot.port, serial)
            delays.append((knot_at - primary_at) * 1000)
            print(f"  {variant} serial {serial}: {delays[-1]:7.1f} ms", file=sys.stderr)
    finally:
        knot.stop()
        primary.stop()
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bumps", type=int, default=60)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds after knotd served")
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--repeat-ms", type=float, default=50.0)
    parser.add_argument("--variants", default="rendered,without-block")
    parser.add_argument(
        "--knot-zone-item",
        action="append",
        default=[],
        help="a Knot zone setting to add in every variant, e.g. 'zonefile-sync: -1' (repeatable)",
    )
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    netns.create(NETNS)
    results: dict[str, list[float]] = {}
    watch = Watch(args.poll_ms / 1000)
    load_before = os.getloadavg()[0]
    try:
        netns.enter(NETNS)
        key = TsigCredentials.generate("transfer-key")
        with tempfile.TemporaryDirectory(prefix="sdns-knot-refresh-") as tmp:
            with NamedFleet(Path(tmp), NETNS) as fleet:
                for variant in variants:
                    results[variant] = measure(fleet, Path(tmp), key, variant, args, watch)
    finally:
        netns.delete(NETNS)
    load_after = os.getloadavg()[0]
    print(
        f"\nknotd {args.bumps} bumps, the next {args.gap} s after knotd served the last; "
        f"ms from the primary serving a serial to knotd serving it (load average "
        f"{load_before:.1f} -> {load_after:.1f}; resolution {args.poll_ms:g} ms poll + "
        f"round trip, largest {watch.max_rtt * 1000:.1f} ms)"
    )
    print(f"  {'variant':16} {'p50':>8} {'p99':>8} {'max':>8} {'>300 ms':>8}")
    for variant, delays in results.items():
        print(
            f"  {variant:16} {percentile(delays, 0.5):8.1f} {percentile(delays, 0.99):8.1f} "
            f"{max(delays):8.1f} {sum(d > SLOW_MS for d in delays):5d}/{len(delays)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
