"""`make demo`: the operator at work on the local cluster, nothing faked.

Builds or reuses the local cluster (real control plane, kwok nodes in three
failure zones, the pod runner that runs each DNS pod's real named and agent),
installs the chart (`helm install`, as a user would: CRDs, RBAC, the operator
and the NOTIFY relay), starts a real BIND primary that NOTIFYs the relay's
Service, applies examples/ (the TSIG Secret, the SecondaryServer and the Zone,
with this primary's address and key), then bumps the zone's serial a few times
and shows how long each change took to reach every replica and the Zone's
status. With `--mixed` the Zone is also served by the Knot DNS fleet of
examples/secondaryserver-knot.yaml (three knotd pods beside the three named
pods; the Zone's EngineDiverse condition). The chart's operator (2 replicas,
one leading) and relay (2 replicas) run as a user gets them: pods of this
tree's image, run by the pod runner with runc (localcluster/release.py,
running_pods). Ctrl-C (or `make demo-down`) stops it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import dns.name
import yaml

from localcluster import netns, release
from localcluster.cluster import LocalCluster
from localcluster.constants import PRIMARY_ADDRESS
from localcluster.named import TsigCredentials
from localcluster.scenario import (
    REPO,
    Propagation,
    apply,
    build_pod_image,
    bump_and_measure,
    demo_zone,
    ensure_namespace,
    kubectl_json,
    replica_addresses,
    run_operator,
    start_primary,
    wait_synced,
)
from localcluster.waiting import wait_for

NAMESPACE = "dns"
ORIGIN = dns.name.from_text("example.com.")
SERVER = "secondary-dns"
KNOT_SERVER = "secondary-dns-knot"
ZONE_OBJECT = "example-com"
SECRET = "tsig-primary"


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def example_server(example: str = "secondaryserver.yaml") -> dict[str, Any]:
    """An example SecondaryServer as a user would apply it, minus what needs a cloud."""
    server: dict[str, Any] = yaml.safe_load((REPO / "examples" / example).read_text())
    # The local cluster has no volume provisioner and no load balancer: a claim
    # would stay Pending and the pods unscheduled.
    server["spec"].pop("storage", None)
    server["spec"]["service"] = {"type": "ClusterIP"}
    return server


def example_objects(
    primary_key: TsigCredentials, fleets: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """examples/ as a user applies them, with this cluster's primary and no cloud parts.

    The Secrets of examples/tsig-secret.yaml (the primary's with this primary's
    key), the SecondaryServers `fleets`, and examples/zone.yaml served by them.
    """
    secrets = list(yaml.safe_load_all((REPO / "examples" / "tsig-secret.yaml").read_text()))
    for secret in secrets:
        if secret["metadata"]["name"] == SECRET:
            secret["stringData"] = {
                "secret": primary_key.secret_base64,
                "algorithm": primary_key.algorithm.to_text(omit_final_dot=True),
                "name": primary_key.name.to_text(omit_final_dot=True),
            }
    zone: dict[str, Any] = yaml.safe_load((REPO / "examples" / "zone.yaml").read_text())
    zone["spec"]["primaries"] = [{"address": PRIMARY_ADDRESS, "tsigKeySecretRef": {"name": SECRET}}]
    zone["spec"]["servers"] = [fleet["metadata"]["name"] for fleet in fleets]
    return [*secrets, *fleets, zone]


def show(cluster: LocalCluster, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    result = cluster.kubectl(*args, check=False)
    print((result.stdout or result.stderr).rstrip(), flush=True)


def show_placement(cluster: LocalCluster, servers: Sequence[str]) -> None:
    nodes = kubectl_json(cluster, "get", "nodes")["items"]
    zone_of = {
        n["metadata"]["name"]: n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes
    }
    pods = kubectl_json(
        cluster,
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        f"secondarydns.io/server in ({','.join(servers)})",
    )
    print(f"{'POD':<22} {'IP':<15} {'NODE':<16} {'FAILURE ZONE':<13} READY", flush=True)
    for pod in sorted(pods["items"], key=lambda p: p["metadata"]["name"]):
        node = pod["spec"].get("nodeName", "")
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )
        print(
            f"{pod['metadata']['name']:<22} {pod['status'].get('podIP', ''):<15} {node:<16} "
            f"{zone_of.get(node, ''):<13} {ready}",
            flush=True,
        )


def run(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.cluster)
    say(f"starting the local cluster {cluster.name!r} (first run builds Kubernetes: ~15 min)")
    cluster.up()
    say("the pods' image: this tree's (built unless it is in local storage)")
    image = build_pod_image()
    netns.enter(cluster.netns)
    workdir = cluster.state_dir / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    say(
        f"helm install {release.RELEASE} charts/secondary-dns-operator -n {release.NAMESPACE} "
        f"--set image.tag={image.rpartition(':')[2]} (CRDs, RBAC, the agents' pod policy; "
        "the operator's 2 replicas, one leading, and the NOTIFY relay's 2: pods of the image)"
    )
    primary = None
    try:
        with run_operator(cluster, workdir / "operator.log", probe_seconds=5) as operator:
            assert isinstance(operator, release.PodInstallation)
            show(cluster, "get", "deploy,pods,svc,lease", "-n", release.NAMESPACE, "-o", "wide")
            say(
                "starting a real BIND primary for example.com on 10.250.0.10 "
                "(NOTIFY -> the relay Service)"
            )
            primary = start_primary(
                cluster, workdir / "primary", demo_zone(ORIGIN.to_text(), hosts=20)
            )
            ensure_namespace(cluster, NAMESPACE)
            servers = [SERVER, KNOT_SERVER] if args.mixed else [SERVER]
            fleets = [example_server()]
            if args.mixed:
                fleets.append(example_server("secondaryserver-knot.yaml"))
            say(
                "kubectl apply -f examples/tsig-secret.yaml -f examples/secondaryserver.yaml "
                + ("-f examples/secondaryserver-knot.yaml " if args.mixed else "")
                + "-f examples/zone.yaml (with this primary's address and key; no LoadBalancer)"
            )
            apply(cluster, NAMESPACE, *example_objects(primary.key, fleets))
            serial = primary.serial(ORIGIN)
            started = time.monotonic()
            wait_synced(cluster, NAMESPACE, ZONE_OBJECT, timeout=240)
            print(f"in sync at serial {serial} after {time.monotonic() - started:.1f}s", flush=True)
            for server in servers:

                def ready(server: str = server) -> bool:
                    found = kubectl_json(cluster, "get", "sdns", "-n", NAMESPACE, server)
                    return bool(found.get("status", {}).get("readyReplicas") == 3)

                wait_for(f"every replica of {server} to be Ready", ready, timeout=60)
            say("where the replicas run (the real scheduler spread them)")
            show_placement(cluster, servers)
            show(cluster, "get", "sdns,dz", "-n", NAMESPACE, "-o", "wide")

            addresses = {
                pod: address
                for server in servers
                for pod, address in replica_addresses(cluster, NAMESPACE, server).items()
            }
            say(f"bumping the serial {args.bumps} times at the primary")
            print(
                f"{'BUMP':<5} {'SERIAL':<12} {'ALL REPLICAS':>13} {'ZONE STATUS':>12}  PER REPLICA"
            )
            results: list[Propagation] = []
            for bump in range(1, args.bumps + 1):
                result = bump_and_measure(
                    cluster, primary, ORIGIN, addresses, NAMESPACE, ZONE_OBJECT, f"bump {bump}"
                )
                results.append(result)
                per = "  ".join(
                    f"{p}={s * 1000:.0f}ms" for p, s in sorted(result.per_replica.items())
                )
                print(
                    f"{bump:<5} {result.serial:<12} {result.replicas_seconds * 1000:>11.0f}ms "
                    f"{result.status_seconds * 1000:>10.0f}ms  {per}",
                    flush=True,
                )
                time.sleep(1)
            replicas = [r.replicas_seconds for r in results]
            status = [r.status_seconds for r in results]
            print(
                f"median: every replica {statistics.median(replicas) * 1000:.0f}ms, "
                f"status {statistics.median(status) * 1000:.0f}ms "
                f"(the clock starts before the primary reloads)",
                flush=True,
            )
            say("what a user looks at")
            show(cluster, "get", "sdns,dz", "-n", NAMESPACE, "-o", "wide")
            notify = kubectl_json(cluster, "get", "dz", "-n", NAMESPACE, ZONE_OBJECT)["status"]
            print(
                f"the primary's administrator sends NOTIFY to {notify.get('notifyAddress')} "
                "(the relay Service: status.notifyAddress, the NOTIFY column)",
                flush=True,
            )
            zone = kubectl_json(cluster, "get", "zone", "-n", NAMESPACE, ZONE_OBJECT)
            for cond in zone["status"]["conditions"]:
                print(f"  {cond['type']}={cond['status']} ({cond['reason']}): {cond['message']}")
            relayed = operator.metric("secondarydns_notify_relayed_total")
            print(f"NOTIFYs relayed to replicas so far: {relayed:.0f}", flush=True)
            say("look around (in another terminal):")
            print(
                f"  hack/local-cluster exec -- kubectl get sdns,dz,pods -n {NAMESPACE} -o wide\n"
                f"  hack/local-cluster exec -- kubectl describe zone {ZONE_OBJECT} -n {NAMESPACE}\n"
                f"  hack/local-cluster exec -- dig @{next(iter(addresses.values()))} "
                f"{ORIGIN.to_text()} SOA +norec\n"
                f"  hack/local-cluster exec -- curl -s {next(iter(addresses.values()))}:8081/zones"
                f"   # the engine's own expire timer per zone\n"
                f"  hack/local-cluster exec -- curl -s {operator.operator.ip}:8080/metrics "
                f"| grep ^secondarydns_   # the leading operator pod\n"
                f"  hack/local-cluster exec -- kubectl get pods -n {release.NAMESPACE} -o wide\n"
                f"  logs: {cluster.logs} (the pods': {cluster.logs / 'pods'}) and {workdir}",
                flush=True,
            )
            if args.exit:
                return 0
            say("running; Ctrl-C (or `make demo-down`) stops the demo and the cluster")
            while operator.alive():
                time.sleep(5)
            print(
                "an operator or relay pod stopped being Ready or restarted; see "
                f"{cluster.logs / 'pods'}",
                file=sys.stderr,
            )
            return 1
    finally:
        if primary is not None:
            primary.stop()
        if not args.keep_cluster:
            say("stopping the local cluster")
            cluster.down()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/demo", description=__doc__)
    parser.add_argument(
        "--cluster",
        default=os.environ.get("SDNS_CLUSTER", "sdns"),
        help="local cluster name (default: %(default)s, env SDNS_CLUSTER as for make demo-down)",
    )
    parser.add_argument("--bumps", type=int, default=5, help="serial bumps to time")
    parser.add_argument("--exit", action="store_true", help="stop after the bumps (no Ctrl-C)")
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="serve the zone from a BIND 9 and a Knot DNS fleet at once (engine diversity)",
    )
    parser.add_argument(
        "--keep-cluster", action="store_true", help="leave the cluster running at the end"
    )
    args = parser.parse_args(argv)
    # `make demo-down` or a terminal closing: stop as cleanly as after Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 0
    except TimeoutError as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
