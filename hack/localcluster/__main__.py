"""`hack/local-cluster up | down | status | exec -- CMD...`"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from localcluster import build
from localcluster.cluster import LocalCluster


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/local-cluster",
        description="A real local Kubernetes control plane (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler, kwok) in a private network namespace.",
    )
    parser.add_argument(
        "--name",
        default=os.environ.get("SDNS_CLUSTER", "sdns"),
        help="cluster name; also its network namespace (default: %(default)s, env SDNS_CLUSTER)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "build", help="build or reuse the cached binaries (control plane, kube-proxy, helm, ...)"
    )
    sub.add_parser("up", help="start the cluster (harmless when it is running)")
    sub.add_parser("down", help="stop every process and delete the namespace (harmless twice)")
    sub.add_parser("status", help="say what is running")
    sub.add_parser("kubeconfig", help="print the kubeconfig path")
    run = sub.add_parser("exec", help="run a command inside the namespace with KUBECONFIG set")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    args = parser.parse_args(argv)

    cluster = LocalCluster(args.name)
    if args.command == "build":
        for path in build.ensure_binaries().all():
            print(path)
    elif args.command == "up":
        cluster.up()
        print(cluster.kubeconfig)
    elif args.command == "down":
        cluster.down()
    elif args.command == "status":
        print(cluster.status())
        return 0 if cluster.healthy() else 1
    elif args.command == "kubeconfig":
        print(cluster.kubeconfig)
    elif args.command == "exec":
        command = [a for a in args.argv]
        if command and command[0] == "--":
            command = command[1:]
        if not command:
            parser.error("exec needs a command: hack/local-cluster exec -- kubectl get nodes")
        if not cluster.api_ready():
            print(
                f"cluster {cluster.name!r} is not running: run `hack/local-cluster up`",
                file=sys.stderr,
            )
            return 1
        os.execvpe("ip", ["ip", "netns", "exec", cluster.netns, *command], cluster.environment())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
