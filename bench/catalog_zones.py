"""Catalog zones (RFC 9432) against whole-configuration reloads: one zone added among N.

Issue 16 asks for one Zone added, changed or deleted among 10,000 to be served by
every replica within 2 s, and for a design in which catalog zones are the next
step. Today the agent rewrites the engine's configuration and reloads it
(`rndc reconfig`, `knotc reload`): at 10,000 zones each reload takes 0.5–2 s,
named answers no query meanwhile, so replicas reload in two waves
(docs/agent.md). This benchmark measures, in one run and on the same machine,
what a catalog zone would change, for the engines the operator runs:

- *reload*: the engine's configuration lists the N zones (one statement each);
  one more is appended and the engine reloads (`rndc reconfig` /
  `knotc reload`); time from the reload command until the engine answers the
  new zone's SOA authoritatively, and the reload command's own duration;
- for both, the slowest answer to back-to-back SOA queries for another zone
  while the change is applied (until 0.2 s after the new zone is served): how
  long the engine answered nothing;
- *catalog*: the engine consumes a catalog zone (`catalog-zones` in named,
  `catalog-role: interpret` in Knot) listing the N zones; one member is added
  to the catalog by a dynamic update at the catalog's primary, which NOTIFYs the
  engine; time from the update until the engine answers the new zone's SOA
  authoritatively; then the member is removed, time until it answers no more.

Polled every 2 ms with single SOA queries (resolution ~2 ms plus one query's
round trip on loopback). One real BIND primary serves the member zones and the
catalog. Everything runs in a network namespace of its own (127.0.0.x on its
loopback); nothing leaves it. This is a measurement for the design
(docs/catalog-zones.md), not the operator's code path: the agent does not
serve a catalog yet.

    PYTHONPATH=hack:operator .venv/bin/python bench/catalog_zones.py --zones 10000
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.update

from localcluster import netns

NETNS = "sdns-bench-catalog"
PRIMARY = "127.0.0.1"
CONSUMER = {"bind9": "127.0.0.2", "knot": "127.0.0.3"}
CATALOG = "catalog.invalid"
DOMAIN = "bench.test"
# Members added by the rounds: served by the primary from the start.
SPARE_ZONES = 40
POLL_SECONDS = 0.002
STALL_TIMEOUT_SECONDS = 5.0
TIMEOUT_SECONDS = 60.0
RNDC_PORT = 9953
ZONE_FILE = (
    "$TTL 3600\n@ SOA ns.{domain}. hostmaster.{domain}. 1 86400 3600 864000 300\n"
    "@ NS ns.{domain}.\n@ A 192.0.2.1\n"
)


def member(index: int) -> str:
    return f"m{index:05d}.{DOMAIN}"


def serves(address: str, zone: str) -> bool:
    """The engine at `address` answers `zone`'s SOA authoritatively."""
    query = dns.message.make_query(zone, "SOA")
    try:
        answer = dns.query.udp(query, address, timeout=0.05)
    except (OSError, dns.exception.Timeout):
        return False
    return (
        answer.rcode() == dns.rcode.NOERROR
        and bool(answer.flags & dns.flags.AA)
        and bool(answer.answer)
    )


def gone(address: str, zone: str) -> bool:
    return not serves(address, zone)


def wait(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_SECONDS) -> float:
    """Seconds until `condition` holds, polled every POLL_SECONDS."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


class StallProbe:
    """Asks the engine for an existing zone's SOA back to back while a change is
    applied: the slowest answer is how long the engine answered nothing (the
    reason replicas reload in two waves, docs/agent.md)."""

    def __init__(self, address: str, zone: str) -> None:
        self.address, self.zone = address, zone
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = dns.message.make_query(self.zone, "SOA")
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                dns.query.udp(query, self.address, timeout=STALL_TIMEOUT_SECONDS)
            except (OSError, dns.exception.Timeout):
                pass
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(POLL_SECONDS)

    def __enter__(self) -> StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Engine:
    """One engine process: how to start it, reload it and add a zone statement."""

    name: str
    workdir: Path
    address: str
    # How the zone is added: "reload", "catalog" or "addzone" (printed with the name).
    mode: str
    process: subprocess.Popen[bytes] | None = None
    figures: dict[str, list[float]] = field(default_factory=dict)

    def record(self, figure: str, value: float) -> None:
        self.figures.setdefault(figure, []).append(value)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class Primary:
    """A BIND primary serving the member zones and the catalog (dynamic updates)."""

    def __init__(self, workdir: Path, zones: int, notify: list[str]) -> None:
        self.workdir = workdir
        data = workdir / "data"
        data.mkdir(parents=True)
        statements = []
        for index in range(zones + SPARE_ZONES):
            (data / f"{member(index)}.db").write_text(ZONE_FILE.format(domain=DOMAIN))
            statements.append(
                f'zone "{member(index)}" {{ type primary; file "{member(index)}.db"; }};'
            )
        catalog = [
            "$TTL 0",
            "@ SOA invalid. invalid. 1 3600 600 2147483646 0",
            "@ NS invalid.",
            'version TXT "2"',
            *(f"{index}.zones PTR {member(index)}." for index in range(zones)),
        ]
        (data / "catalog.db").write_text("\n".join(catalog) + "\n")
        also_notify = "; ".join(notify)
        (workdir / "named.conf").write_text(
            f'options {{ directory "{data}"; pid-file "{workdir}/named.pid";'
            f" listen-on port 53 {{ {PRIMARY}; }}; listen-on-v6 {{ none; }};"
            " recursion no; dnssec-validation no; notify no; allow-transfer { any; };"
            f" transfers-out 200; notify-source {PRIMARY}; }};\n"
            f'zone "{CATALOG}" {{ type primary; file "catalog.db"; allow-update {{ {PRIMARY}; }};'
            f" notify explicit; also-notify {{ {also_notify}; }}; notify-delay 0; }};\n"
            + "\n".join(statements)
            + "\n"
        )
        self.process = subprocess.Popen(
            ["named", "-g", "-u", "root", "-c", str(workdir / "named.conf")],
            stdout=(workdir / "log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait(lambda: serves(PRIMARY, CATALOG), "the primary serves the catalog", 300)

    def catalog_update(self, index: int, add: bool) -> None:
        update = dns.update.UpdateMessage(CATALOG)
        if add:
            update.add(f"{index}.zones", 0, "PTR", f"{member(index)}.")
        else:
            update.delete(f"{index}.zones", "PTR")
        answer = dns.query.tcp(update, PRIMARY, timeout=10)
        assert answer.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(answer.rcode())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def rndc_conf(workdir: Path, address: str) -> tuple[str, str]:
    """The rndc key statement and the controls for named at `address`."""
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    key = f'key "rndc" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
    (workdir / "rndc.conf").write_text(
        key + f'options {{ default-key "rndc"; default-server {address};'
        f" default-port {RNDC_PORT}; }};\n"
    )
    return key, (
        f"controls {{ inet {address} port {RNDC_PORT} allow {{ {address}; }}"
        ' keys { "rndc"; }; };\n'
    )


def bind_zone_statement(workdir: Path, index: int) -> str:
    return (
        f'zone "{member(index)}" {{ type secondary; file "{workdir}/data/{member(index)}.db";'
        f" primaries {{ {PRIMARY}; }}; }};\n"
    )


def knot_zone_statement(index: int) -> str:
    return f"  - domain: {member(index)}\n    master: primary\n    acl: notify\n"


@contextmanager
def running(engine: Engine, argv: list[str]) -> Iterator[Engine]:
    """The engine started by `argv`, stopped after."""
    engine.process = subprocess.Popen(
        argv,
        stdout=(engine.workdir / "log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield engine
    finally:
        engine.stop()


@contextmanager
def bind9(workdir: Path, zones: int, mode: str) -> Iterator[Engine]:
    address = CONSUMER["bind9"]
    workdir.mkdir(parents=True)
    (workdir / "data").mkdir()
    key, controls = rndc_conf(workdir, address)
    options = (
        f'directory "{workdir}/data"; pid-file "{workdir}/named.pid";'
        f" listen-on port 53 {{ {address}; }}; listen-on-v6 {{ none; }};"
        # As the operator renders it (render/bind9.py): 500 refresh queries a second.
        " recursion no; dnssec-validation no; notify no; serial-query-rate 500;"
        " transfers-per-ns 10; transfer-source " + address + ";"
    )
    if mode == "addzone":
        options += " allow-new-zones yes;"
    if mode == "catalog":
        options += (
            " allow-new-zones yes; catalog-zones { zone "
            f'"{CATALOG}" default-primaries {{ {PRIMARY}; }} min-update-interval 0; }};'
        )
        zone_statements = (
            f'zone "{CATALOG}" {{ type secondary; file "{workdir}/data/catalog.db";'
            f" primaries {{ {PRIMARY}; }}; }};\n"
        )
    else:
        zone_statements = "".join(bind_zone_statement(workdir, index) for index in range(zones))
    (workdir / "zones.conf").write_text(zone_statements)
    (workdir / "named.conf").write_text(
        key + controls + f"options {{ {options} }};\n" + f'include "{workdir}/zones.conf";\n'
    )
    engine = Engine("bind9", workdir, address, mode)
    argv = ["named", "-g", "-u", "root", "-c", str(workdir / "named.conf")]
    with running(engine, argv):
        yield engine


@contextmanager
def knot(workdir: Path, zones: int, mode: str) -> Iterator[Engine]:
    catalog = mode == "catalog"
    address = CONSUMER["knot"]
    workdir.mkdir(parents=True)
    (workdir / "data").mkdir()
    conf = [
        "server:",
        f'    rundir: "{workdir}"',
        f"    listen: {address}@53",
        "control:",
        f'    listen: "{workdir}/knot.sock"',
        "log:",
        "  - target: stderr",
        "    any: info",
        "database:",
        f'    storage: "{workdir}/data"',
        "remote:",
        "  - id: primary",
        f"    address: {PRIMARY}@53",
        f"    via: {address}",
        "acl:",
        "  - id: notify",
        f"    address: {PRIMARY}",
        "    action: notify",
        "template:",
        "  - id: default",
        f'    storage: "{workdir}/data"',
        '    file: "%s.db"',
        # As the operator renders it (render/knot.py).
        "    zonefile-sync: 0",
        "    journal-content: changes",
        "  - id: member",
        f'    storage: "{workdir}/data"',
        '    file: "%s.db"',
        "    zonefile-sync: 0",
        "    journal-content: changes",
        "    master: primary",
        "    acl: notify",
        "zone:",
    ]
    if catalog:
        conf += [
            f"  - domain: {CATALOG}",
            "    master: primary",
            "    acl: notify",
            "    catalog-role: interpret",
            "    catalog-template: member",
        ]
    conf_text = "\n".join(conf) + "\n"
    if not catalog:
        conf_text += "".join(knot_zone_statement(index) for index in range(zones))
    (workdir / "knot.conf").write_text(conf_text)
    engine = Engine("knot", workdir, address, mode)
    with running(engine, ["knotd", "-c", str(workdir / "knot.conf")]):
        yield engine


def reload_command(engine: Engine) -> list[str]:
    if engine.name == "bind9":
        return ["rndc", "-c", str(engine.workdir / "rndc.conf"), "reconfig"]
    return ["knotc", "-s", str(engine.workdir / "knot.sock"), "-t", "120", "reload"]


def append_zone(engine: Engine, index: int) -> None:
    if engine.name == "bind9":
        with (engine.workdir / "zones.conf").open("a") as zones:
            zones.write(bind_zone_statement(engine.workdir, index))
    else:
        with (engine.workdir / "knot.conf").open("a") as conf:
            conf.write(knot_zone_statement(index))


def rndc(engine: Engine, *args: str) -> None:
    subprocess.run(
        ["rndc", "-c", str(engine.workdir / "rndc.conf"), *args], check=True, capture_output=True
    )


def addzone(engine: Engine, index: int) -> None:
    """One zone added to the running named by `rndc addzone` (its statement's body)."""
    statement = bind_zone_statement(engine.workdir, index)
    body = statement[statement.index("{") :].strip()
    started = time.monotonic()
    rndc(engine, "addzone", member(index), body)
    engine.record("rndc command", time.monotonic() - started)


def delzone(engine: Engine, index: int) -> None:
    rndc(engine, "delzone", member(index))


def all_served(engine: Engine, zones: int) -> float:
    """Seconds until a sample of the N zones (every 1/50th and the last) is served."""
    sample = [*range(0, zones, max(1, zones // 50)), zones - 1]
    return wait(
        lambda: all(serves(engine.address, member(index)) for index in sample),
        f"{engine.name}: {zones} zones served",
        1800,
    )


def reload_with_zone(engine: Engine, index: int) -> None:
    """Append the zone's statement and reload the engine (what the agent does today)."""
    append_zone(engine, index)
    started = time.monotonic()
    subprocess.run(reload_command(engine), check=True, capture_output=True)
    engine.record(
        "rndc command" if engine.name == "bind9" else "reload command", time.monotonic() - started
    )


def measure(
    engine: Engine,
    zones: int,
    rounds: int,
    next_index: Iterator[int],
    add: Callable[[int], None],
    remove: Callable[[int], None] | None,
) -> None:
    """Per round: one zone added by `add` (timed until served, with the stall probe),
    then removed by `remove` if given (timed until gone)."""
    engine.record("first served", all_served(engine, zones))
    time.sleep(2)
    assert engine.process is not None
    engine.record("rss", rss_mib(engine.process.pid))
    for _ in range(rounds):
        index = next(next_index)
        with StallProbe(engine.address, member(0)) as probe:
            started = time.monotonic()
            add(index)
            wait(partial(serves, engine.address, member(index)), "added zone served")
            engine.record("added, served", time.monotonic() - started)
            time.sleep(0.2)
        engine.record("slowest answer", probe.slowest)
        time.sleep(1)
        if remove is not None:
            started = time.monotonic()
            remove(index)
            wait(partial(gone, engine.address, member(index)), "deleted zone gone")
            engine.record("deleted, gone", time.monotonic() - started)
            time.sleep(1)


def milliseconds(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"
        f"  ({', '.join(f'{value * 1000:.0f}' for value in values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zones", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engines", default="bind9,knot")
    parser.add_argument(
        "--modes",
        default="reload,catalog,addzone",
        help="how a zone is added: reload, catalog, addzone (rndc addzone/delzone; bind9 only)",
    )
    parser.add_argument("--keep", action="store_true", help="keep configurations and logs")
    args = parser.parse_args()
    engines = [name for name in args.engines.split(",") if name]
    assert args.rounds * 2 <= SPARE_ZONES, f"at most {SPARE_ZONES // 2} rounds"
    netns.create(NETNS)
    for address in CONSUMER.values():
        netns.add_address(NETNS, address)
    netns.enter(NETNS)
    results: list[Engine] = []
    workdir = Path(tempfile.mkdtemp(prefix="sdns-catalog-"))
    try:
        primary = Primary(workdir / "primary", args.zones, [CONSUMER[name] for name in engines])
        try:
            spare = iter(range(args.zones, args.zones + SPARE_ZONES))
            for name in engines:
                start = bind9 if name == "bind9" else knot
                modes = [m for m in args.modes.split(",") if name == "bind9" or m != "addzone"]
                for mode in modes:
                    with start(workdir / f"{name}-{mode}", args.zones, mode) as engine:
                        if mode == "catalog":
                            add = partial(primary.catalog_update, add=True)
                            remove = partial(primary.catalog_update, add=False)
                            measure(engine, args.zones, args.rounds, spare, add, remove)
                        elif mode == "addzone":
                            measure(
                                engine,
                                args.zones,
                                args.rounds,
                                spare,
                                partial(addzone, engine),
                                partial(delzone, engine),
                            )
                        else:
                            add = partial(reload_with_zone, engine)
                            measure(engine, args.zones, args.rounds, spare, add, None)
                    results.append(engine)
                    load = os.getloadavg()[0]
                    print(f"{name}, {mode}: done (load average {load:.1f})", flush=True)
        finally:
            primary.stop()
    finally:
        netns.delete(NETNS)
        if args.keep:
            print(f"engines' configurations and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nOne zone added among {args.zones}: reload vs catalog zone "
        f"(polled every {POLL_SECONDS * 1000:.0f} ms; load average {os.getloadavg()[0]:.1f})"
    )
    for engine in results:
        print(
            f"\n{engine.name}, {engine.mode}: {args.zones} zones served"
            f" {engine.figures['first served'][0]:.1f} s after start;"
            f" engine RSS {engine.figures['rss'][0]:.1f} MiB"
        )
        for figure, values in engine.figures.items():
            if figure not in ("first served", "rss"):
                print(f"  {figure:15} {milliseconds(values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
