"""Availability benchmark: failed queries while the service changes (issue 13).

Runs on the local cluster: a real primary, the real operator, a SecondaryServer
of three replicas run by the pod runner from the image, and a Zone. `dnsperf`
(Debian's) sends a steady, bounded query load to the SecondaryServer's Service
(a real ClusterIP through kube-proxy) while, in turn:

  baseline       nothing happens
  config-roll    a change of the engine's global configuration rolls the StatefulSet
  pod-delete     one replica pod is deleted (the StatefulSet makes it again)
  operator       the operator is stopped and started again
  zones          a second Zone is added, served, and removed again
  primary-away   the primary is stopped for longer than the zone's refresh, then back

Meanwhile a prober asks every replica's pod address directly for the zone's SOA
a few times a second and notes any replica that answers SERVFAIL, NXDOMAIN or
REFUSED after it had answered the zone (bindy's issue #486: a restarted pod
served an empty zone). Timeouts of a replica that is being replaced are not
failures of the service and are counted apart.

Two clients load the Service at once, because kube-proxy balances UDP by
flow (its conntrack entry), not by query: dnsperf keeps one source port per
client (`--clients`) for its whole run, as a forwarder or a load generator
does, so a flow stays on one replica until kube-proxy deletes its entry;
a second client sends each query from a new socket (`--fresh-qps`), a new
source port and flow per query, as stub and recursive resolvers do (RFC 5452).

For each step it prints, per client, queries sent and failed (lost, i.e. timed
out, SERVFAIL, REFUSED, or any other code than NOERROR). The queries are A
queries for the zone's host names, spread over many names, so the default
response rate limit (20 identical answers a second per client network) is not
what is measured.

    make bench-availability BENCH_ARGS="--qps 500 --clients 10"
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode

from localcluster import netns
from localcluster.cluster import LocalCluster
from localcluster.scenario import (
    apply,
    build_pod_image,
    demo_zone,
    ensure_namespace,
    install_crds,
    kubectl_json,
    replica_addresses,
    run_operator,
    server_manifest,
    start_primary,
    wait_synced,
    zone_manifest,
)
from localcluster.waiting import wait_for

SERVER = "avail"
ORIGIN = "avail.test."
SECOND_ORIGIN = "added.test."
HOSTS = 200
# Short enough that "away longer than the refresh" fits in a benchmark.
REFRESH, RETRY = 10, 5


@dataclass
class DnsperfResult:
    sent: int = 0
    completed: int = 0
    lost: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return self.lost + sum(n for code, n in self.codes.items() if code != "NOERROR")

    @property
    def answered(self) -> int:
        return self.codes.get("NOERROR", 0)


def parse_dnsperf(text: str) -> DnsperfResult:
    """The summary dnsperf prints: `Queries sent:`, `Queries lost:`, `Response codes:`."""

    def number(label: str) -> int:
        found = re.search(rf"{label}:\s+(\d+)", text)
        if found is None:
            raise ValueError(f"dnsperf printed no {label!r}:\n{text[-2000:]}")
        return int(found.group(1))

    codes: dict[str, int] = {}
    line = re.search(r"Response codes:\s+(.*)", text)
    if line:
        for code, count in re.findall(r"([A-Z]+) (\d+) \(", line.group(1)):
            codes[code] = int(count)
    return DnsperfResult(
        number("Queries sent"), number("Queries completed"), number("Queries lost"), codes
    )


@dataclass
class ReplicaProber:
    """Asks every replica (by pod address) for the zone's SOA, notes how each answered."""

    cluster: LocalCluster
    namespace: str
    origins: Callable[[], Sequence[str]]
    outcomes: Counter[str] = field(default_factory=Counter)
    # (pod, zone) that answered the zone authoritatively at least once.
    served: set[tuple[str, str]] = field(default_factory=set)
    regressions: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> tuple[Counter[str], list[str]]:
        with self.lock:
            outcomes, regressions = self.outcomes, self.regressions
            self.outcomes, self.regressions = Counter(), []
        return outcomes, regressions

    def run(self) -> None:
        addresses: dict[str, str] = {}
        refreshed = 0.0
        while not self.stop.is_set():
            if time.monotonic() - refreshed > 2:
                try:
                    addresses = replica_addresses(self.cluster, self.namespace, SERVER)
                except subprocess.CalledProcessError:
                    pass
                refreshed = time.monotonic()
            for pod, address in sorted(addresses.items()):
                for origin in self.origins():
                    self._probe(pod, address, origin)
            self.stop.wait(0.25)

    def _probe(self, pod: str, address: str, origin: str) -> None:
        query = dns.message.make_query(origin, "SOA")
        query.flags &= ~dns.flags.RD
        try:
            response = dns.query.udp(query, address, timeout=1)
        except (dns.exception.Timeout, OSError):
            with self.lock:
                self.outcomes["timeout"] += 1
            return
        rcode = dns.rcode.to_text(response.rcode())
        key = (pod, origin)
        with self.lock:
            self.outcomes[rcode] += 1
            if rcode == "NOERROR" and response.answer and response.flags & dns.flags.AA:
                self.served.add(key)
            elif rcode != "NOERROR" and key in self.served:
                self.regressions.append(f"{pod} answered {rcode} for {origin}")


def write_queries(path: Path) -> None:
    path.write_text("".join(f"host{i}.{ORIGIN} A\n" for i in range(HOSTS)))


async def _fresh_port_load(
    server: str, names: Sequence[str], qps: int, seconds: int, timeout: float
) -> DnsperfResult:
    loop = asyncio.get_running_loop()
    result = DnsperfResult()
    wires = []
    for name in names:
        query = dns.message.make_query(name, "A")
        query.flags &= ~dns.flags.RD
        wires.append(bytearray(query.to_wire()))

    async def one(index: int) -> None:
        wire = bytes(wires[index % len(wires)])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            # Connected: the kernel picks a fresh ephemeral port, a flow of its own.
            sock.connect((server, 53))
            try:
                await loop.sock_sendall(sock, wire)
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
                response = dns.message.from_wire(data)
            except (TimeoutError, OSError, dns.exception.DNSException):
                result.lost += 1  # ECONNREFUSED (an ICMP port unreachable) included
                return
        result.completed += 1
        code = dns.rcode.to_text(response.rcode())
        result.codes[code] = result.codes.get(code, 0) + 1

    tasks = []
    started = loop.time()
    for index in range(qps * seconds):
        delay = started + index / qps - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        result.sent += 1
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return result


def run_fresh_ports(server: str, qps: int, seconds: int, timeout: float = 2.0) -> DnsperfResult:
    """Queries each from a new socket, so a new source port and conntrack flow per query.

    What stub resolvers and recursive resolvers do (RFC 5452 §9.2: a random
    source port per query), so kube-proxy balances every query afresh, where
    dnsperf keeps one source port per client for its whole run.
    """
    names = [f"host{i}.{ORIGIN}" for i in range(HOSTS)]
    return asyncio.run(_fresh_port_load(server, names, qps, seconds, timeout))


def run_dnsperf(server: str, queries: Path, qps: int, seconds: int, clients: int) -> DnsperfResult:
    """dnsperf's load; each of `clients` has a socket of its own (a flow kube-proxy balances)."""
    argv = ["dnsperf", "-s", server, "-d", str(queries), "-Q", str(qps), "-l", str(seconds)]
    done = subprocess.run(
        [*argv, "-c", str(clients), "-t", "2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    return parse_dnsperf(done.stdout)


def _failures(result: DnsperfResult) -> str:
    return f"lost {result.lost}" + "".join(
        f", {code} {n}" for code, n in sorted(result.codes.items()) if code != "NOERROR"
    )


def _pods(cluster: LocalCluster, namespace: str) -> list[dict[str, object]]:
    found = kubectl_json(
        cluster, "get", "pods", "-n", namespace, "-l", f"secondarydns.io/server={SERVER}"
    )
    return list((found or {}).get("items", []))


def all_ready(cluster: LocalCluster, namespace: str, replicas: int, exclude: set[str]) -> bool:
    """`replicas` pods, none of them in `exclude` (by UID), all Ready and not terminating."""
    pods = _pods(cluster, namespace)
    fresh = [
        p
        for p in pods
        if p["metadata"]["uid"] not in exclude  # type: ignore[index]
        and not p["metadata"].get("deletionTimestamp")  # type: ignore[attr-defined]
    ]
    ready = [
        p
        for p in fresh
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []  # type: ignore[attr-defined]
        )
    ]
    return len(pods) == replicas and len(ready) == replicas


def pod_uids(cluster: LocalCluster, namespace: str) -> set[str]:
    return {str(p["metadata"]["uid"]) for p in _pods(cluster, namespace)}  # type: ignore[index]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cluster", default="sdns-bench")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--qps", type=int, default=500, help="queries per second to the Service")
    parser.add_argument("--seconds", type=int, default=120, help="load per step")
    parser.add_argument("--clients", type=int, default=1, help="dnsperf clients (sockets)")
    parser.add_argument(
        "--fresh-qps",
        type=int,
        default=200,
        help="queries per second to the Service from a new source port each (0: none)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args(argv)
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is not installed (Debian: apt-get install dnsperf; make setup)")

    cluster = LocalCluster(args.cluster)
    was_running = cluster.control_plane_healthy()
    cluster.up()
    build_pod_image()  # before the namespace: a build needs the package registries
    workdir = Path(f"/tmp/sdns-bench-avail-{uuid.uuid4().hex[:6]}")
    workdir.mkdir()
    queries = workdir / "queries.txt"
    write_queries(queries)
    rows: list[tuple[str, DnsperfResult, DnsperfResult | None, Counter[str], list[str]]] = []
    try:
        netns.enter(cluster.netns)
        install_crds(cluster)
        namespace = f"bench-avail-{uuid.uuid4().hex[:4]}"
        ensure_namespace(cluster, namespace)
        primary = start_primary(
            cluster, workdir / "primary", demo_zone(ORIGIN, HOSTS, REFRESH, RETRY)
        )
        second = demo_zone(SECOND_ORIGIN, 2, REFRESH, RETRY)
        primary.zones[dns.name.from_text(SECOND_ORIGIN)] = second
        primary.stop()
        primary.start()
        served = [ORIGIN]
        server = server_manifest(SERVER, replicas=args.replicas)
        # One node in the local cluster: no zones to spread over.
        del server["spec"]["spread"]
        log = workdir / "operator.log"
        operator = run_operator(cluster, log)
        operator.__enter__()
        try:
            apply(
                cluster,
                namespace,
                primary.key.secret_manifest("transfer", namespace),
                server,
                zone_manifest("avail", ORIGIN, SERVER, "transfer"),
            )
            wait_synced(cluster, namespace, "avail", timeout=300)
            wait_for(
                "every replica Ready",
                lambda: all_ready(cluster, namespace, args.replicas, set()),
                timeout=300,
            )
            service = kubectl_json(cluster, "get", "service", "-n", namespace, SERVER)
            address = str(service["spec"]["clusterIP"])
            prober = ReplicaProber(cluster, namespace, lambda: list(served))
            threading.Thread(target=prober.run, daemon=True).start()

            def roll() -> None:
                before = pod_uids(cluster, namespace)
                server["spec"]["limits"] = {"responsesPerSecond": 25}
                apply(cluster, namespace, server)
                wait_for(
                    "the StatefulSet rolled",
                    lambda: all_ready(cluster, namespace, args.replicas, before),
                    timeout=300,
                )

            def delete_pod() -> None:
                before = pod_uids(cluster, namespace)
                cluster.kubectl("delete", "pod", "-n", namespace, f"{SERVER}-0", "--wait=false")
                wait_for(
                    "the pod made again",
                    lambda: (
                        all_ready(
                            cluster, namespace, args.replicas, before - pod_uids(cluster, namespace)
                        )
                        and len(pod_uids(cluster, namespace) - before) == 1
                    ),
                    timeout=300,
                )

            def restart_operator() -> None:
                nonlocal operator
                operator.__exit__(None, None, None)
                time.sleep(2)
                operator = run_operator(cluster, log)
                operator.__enter__()

            def zones() -> None:
                apply(cluster, namespace, zone_manifest("added", SECOND_ORIGIN, SERVER, "transfer"))
                wait_synced(cluster, namespace, "added", timeout=300)
                served.append(SECOND_ORIGIN)
                time.sleep(5)
                served.remove(SECOND_ORIGIN)
                cluster.kubectl("delete", "zone", "-n", namespace, "added")

            def primary_away() -> None:
                primary.stop()
                time.sleep(REFRESH * 3)
                primary.start()

            steps: list[tuple[str, Callable[[], None] | None]] = [
                ("baseline", None),
                ("config-roll", roll),
                ("pod-delete", delete_pod),
                ("operator", restart_operator),
                ("zones", zones),
                ("primary-away", primary_away),
            ]
            for name, action in steps:
                prober.reset()
                result: list[DnsperfResult] = []
                load = threading.Thread(
                    daemon=True,
                    target=lambda out=result: out.append(
                        run_dnsperf(address, queries, args.qps, args.seconds, args.clients)
                    ),
                )
                fresh: list[DnsperfResult] = []
                fresh_load = threading.Thread(
                    daemon=True,
                    target=lambda out=fresh: out.append(
                        run_fresh_ports(address, args.fresh_qps, args.seconds)
                    ),
                )
                load.start()
                if args.fresh_qps:
                    fresh_load.start()
                time.sleep(3)
                started = time.monotonic()
                if action is not None:
                    action()
                took = time.monotonic() - started
                print(f"{name}: done in {took:.1f} s", flush=True)
                if took + 3 > args.seconds:
                    print(f"  {name} outlasted the load: raise --seconds", flush=True)
                load.join()
                if args.fresh_qps:
                    fresh_load.join()
                outcomes, regressions = prober.reset()
                rows.append((name, result[0], fresh[0] if fresh else None, outcomes, regressions))
            prober.stop.set()
        finally:
            operator.__exit__(None, None, None)
            primary.stop()
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        print(
            f"\nto the Service for {args.seconds} s per step: dnsperf {args.qps} qps from "
            f"{args.clients} source port(s) (fixed for the run), and {args.fresh_qps} qps from "
            f"a new source port per query; {args.replicas} replicas (bind9)"
        )
        print(
            f"{'step':<14}{'dnsperf sent':>13}{'failed':>8}  {'failures':<16}"
            f"{'fresh sent':>11}{'failed':>8}  {'failures':<16}replica probes (by pod address)"
        )
        for name, perf, fresh_perf, outcomes, regressions in rows:
            probes = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
            fresh_text = (
                f"{fresh_perf.sent:>11}{fresh_perf.failed:>8}  {_failures(fresh_perf):<16}"
                if fresh_perf
                else f"{'-':>11}{'-':>8}  {'':<16}"
            )
            print(
                f"{name:<14}{perf.sent:>13}{perf.failed:>8}  {_failures(perf):<16}"
                f"{fresh_text}{probes}"
            )
            for regression in regressions:
                print(f"  REGRESSION: {regression}")
        regressed = sum(len(row[-1]) for row in rows)
        print(f"replicas that answered an error for a zone they served before: {regressed}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not was_running and not args.keep:
            cluster.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
