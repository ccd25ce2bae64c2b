"""The `agent` and `engine` subcommands of `secondary-dns` (wired in cli.py)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import PurePosixPath
from types import FrameType
from typing import Any

from secondary_dns.agent.control import EngineControl
from secondary_dns.agent.endpoints import AgentHTTPServer, parse_listen
from secondary_dns.agent.engine import run_engine
from secondary_dns.agent.knot import KnotControl, KnotProbe
from secondary_dns.agent.metrics import AgentMetrics
from secondary_dns.agent.named import NamedControl, NamedProbe
from secondary_dns.agent.probe import EngineProbe
from secondary_dns.agent.runner import APPLY_JITTER_SECONDS, Agent
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout

log = logging.getLogger("secondary_dns.agent")

COMMANDS = ("agent", "engine")


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1..65535)")
    return port


def _engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=sorted(agent_contract.ENGINE_CONFIG_FILES),
        default=os.environ.get("SDNS_ENGINE", agent_contract.ENGINE_BIND9),
        help="the SecondaryServer's spec.engine.type (default: $SDNS_ENGINE, else bind9)",
    )


def add_commands(commands: Any) -> None:
    """Add `agent` and `engine` to the `secondary-dns` subparsers."""
    agent = commands.add_parser(
        "agent",
        help="run beside the engine in a DNS pod: apply configuration, report readiness",
        description=(
            "Watch this server's config ConfigMaps and key Secret, check every new "
            "configuration with the engine's own checker (named-checkconf, knotc "
            "conf-check), swap it in and reload the engine without a restart (rndc "
            "reconfig, knotc reload), keep the last good one when a new one fails, and "
            "report on the Pod's annotations. Serves /healthz, /readyz, /zones and /metrics."
        ),
    )
    _engine_argument(agent)
    agent.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE"))
    agent.add_argument("--server", default=os.environ.get("SDNS_SERVER"), metavar="NAME")
    agent.add_argument("--pod", default=os.environ.get("POD_NAME"), metavar="POD")
    agent.add_argument(
        "--run-dir", type=PurePosixPath, default=agent_contract.DEFAULT_RUN_DIR, metavar="DIR"
    )
    agent.add_argument(
        "--data-dir", type=PurePosixPath, default=agent_contract.DEFAULT_DATA_DIR, metavar="DIR"
    )
    agent.add_argument("--listen", default=agent_contract.DEFAULT_LISTEN, metavar="ADDRESS:PORT")
    agent.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG") or None,
        help="kubeconfig file; default: the pod's service account",
    )
    agent.add_argument(
        "--dns-address", default="127.0.0.1", help="where the engine answers the readiness query"
    )
    agent.add_argument("--dns-port", type=_port, default=53)
    agent.add_argument("--control-port", type=_port, default=953, help="named's rndc channel")
    agent.add_argument(
        "--statistics-port", type=_port, default=8053, help="named's statistics channel"
    )
    agent.add_argument("--named-checkconf", default="named-checkconf", metavar="PATH")
    agent.add_argument("--rndc", default="rndc", metavar="PATH")
    agent.add_argument("--knotc", default="knotc", metavar="PATH")
    agent.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=(
            "on SIGTERM, answer /readyz 503 (draining) for this long before stopping, so the "
            "pod leaves its Services while the engine still answers; default: stop at once"
        ),
    )

    engine = commands.add_parser(
        "engine",
        help="wait for the agent's first checked configuration, then exec the engine",
        description=(
            "Wait until the agent has written a configuration that the engine's checker "
            "accepted, then replace this process by the engine (named -g, knotd) in the "
            "foreground."
        ),
    )
    _engine_argument(engine)
    engine.add_argument(
        "--run-dir", type=PurePosixPath, default=agent_contract.DEFAULT_RUN_DIR, metavar="DIR"
    )
    engine.add_argument(
        "--named", default=None, metavar="PATH", help="named's executable (engine bind9)"
    )
    engine.add_argument(
        "--knotd", default=None, metavar="PATH", help="knotd's executable (engine knot)"
    )
    engine.add_argument(
        "--wait-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up (exit 1) when no configuration arrived in time; default: wait forever",
    )


def run_agent(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    missing = [
        flag
        for flag, value in (
            ("--namespace (or POD_NAMESPACE)", args.namespace),
            ("--server (or SDNS_SERVER)", args.server),
            ("--pod (or POD_NAME)", args.pod),
        )
        if not value
    ]
    if missing:
        print(f"secondary-dns agent: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        parse_listen(args.listen)
    except ValueError as error:
        print(f"secondary-dns agent: {error}", file=sys.stderr)
        return 2

    # Imported here: the kubernetes client is slow to import and only this command needs it.
    from secondary_dns.agent.kube import (
        KubernetesConfigSource,
        PodAnnotationReporter,
        api_client,
        load_client_configuration,
    )

    layout = PodLayout(run_dir=args.run_dir, data_dir=args.data_dir)
    configuration = load_client_configuration(args.kubeconfig)
    source = KubernetesConfigSource(api_client(configuration), args.namespace, args.server)
    reporter = PodAnnotationReporter(api_client(configuration), args.namespace, args.pod)
    control, probe = engine_tools(args, layout)
    agent = Agent(
        layout,
        source,
        reporter,
        control,
        probe,
        AgentMetrics(engine=args.engine),
        apply_jitter=APPLY_JITTER_SECONDS,
        pod=args.pod,
    )
    stop = threading.Event()
    draining = threading.Event()

    def readyz() -> tuple[bool, str]:
        # A terminating pod turns unready first: kube-proxy then moves the UDP
        # flows still pinned to it (conntrack) while its engine still answers;
        # the engine's preStop outlasts the readiness probe's failure threshold
        # (render/children.py PRE_STOP_SECONDS, docs/agent.md).
        if draining.is_set():
            return False, "draining: the pod is terminating"
        return agent.readyz()

    server = AgentHTTPServer(
        args.listen, agent.healthz, readyz, agent.metrics.registry, agent.zones_document
    )

    def finish() -> None:
        stop.set()
        agent.changed.set()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM and args.drain_seconds > 0 and not draining.is_set():
            log.info("signal %d: draining for %gs, then stopping", signum, args.drain_seconds)
            draining.set()
            timer = threading.Timer(args.drain_seconds, finish)
            timer.daemon = True
            timer.start()
            return
        log.info("signal %d: stopping", signum)
        finish()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    log.info(
        "agent for SecondaryServer %s/%s in Pod %s; listening on %s",
        args.namespace,
        args.server,
        args.pod,
        args.listen,
    )
    try:
        agent.run(stop)
    finally:
        server.stop()
    return 0


def engine_tools(args: argparse.Namespace, layout: PodLayout) -> tuple[EngineControl, EngineProbe]:
    """The control and probe of the engine the pod runs (`--engine`)."""
    if args.engine == agent_contract.ENGINE_KNOT:
        return (
            KnotControl(layout, knotc=args.knotc),
            KnotProbe(
                layout, dns_address=args.dns_address, dns_port=args.dns_port, knotc=args.knotc
            ),
        )
    return (
        NamedControl(
            layout,
            control_port=args.control_port,
            named_checkconf=args.named_checkconf,
            rndc=args.rndc,
        ),
        NamedProbe(
            dns_address=args.dns_address,
            dns_port=args.dns_port,
            statistics_port=args.statistics_port,
        ),
    )


def run(args: argparse.Namespace) -> int:
    """Run one of COMMANDS."""
    if args.command == "agent":
        return run_agent(args)
    executable = args.knotd if args.engine == agent_contract.ENGINE_KNOT else args.named
    return run_engine(PodLayout(run_dir=args.run_dir), args.engine, executable, args.wait_timeout)
