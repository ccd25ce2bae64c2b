"""The `secondary-dns` command line."""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import socket
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

import dns.name
import dns.tsig
import yaml

from secondary_dns import __version__
from secondary_dns.agent import command as agent_command
from secondary_dns.api import (
    API_VERSION,
    SECONDARY_SERVER_KIND,
    ZONE_KIND,
    IPAddress,
    ObjectRef,
    SpecError,
    TsigKey,
    agent_contract,
    conditions,
    parse_secondary_server,
)
from secondary_dns.api.fields import REFUSED_PRIMARY_NETWORKS_ENV, parse_cidr_list
from secondary_dns.render import EnginePaths, RenderError, RenderRequest, renderer_for
from secondary_dns.render.children import DEFAULT_IMAGE
from secondary_dns.render.engine import DEFAULT_RELAY_KEY_NAME
from secondary_dns.render.inputs import select_zones, tsig_keys
from secondary_dns.render.relay import ANNOTATION_WAKEUP_ADDRESS

if TYPE_CHECKING:
    # The handlers import kopf; the other commands must not need it.
    from secondary_dns.handlers.operator import OperatorOptions

# Exit codes of `secondary-dns render` (docs/render.md).
EXIT_OK = 0
EXIT_NOTHING_RENDERED = 1
EXIT_BAD_INPUT = 2
EXIT_ZONES_REJECTED = 3  # only with --strict

DEFAULT_NAMESPACE = "default"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secondary-dns",
        description="Managed secondary authoritative DNS on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"secondary-dns {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    render = commands.add_parser(
        "render",
        help="write the engine configuration for a SecondaryServer from manifests",
        description=(
            "Read SecondaryServer, Zone and Secret manifests (multi-document YAML) and "
            "write the configuration the server's pods would run into DIR, with every "
            "path inside DIR, so that `named -g -c DIR/named.conf` (BIND 9) or `knotd -c "
            "DIR/knot.conf` (Knot DNS) serves it. Zones that "
            "cannot be served are listed on stderr with the reason."
        ),
    )
    render.add_argument("files", nargs="+", metavar="FILE", help="YAML manifests ('-': stdin)")
    render.add_argument("--output", "-o", required=True, metavar="DIR", type=Path)
    render.add_argument(
        "--server",
        metavar="[NAMESPACE/]NAME",
        help="the SecondaryServer to render when the input has several",
    )
    render.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="ADDRESS[:PORT]",
        help="address to listen on (repeatable; IPv6 as [ADDRESS]:PORT); default: all, port 53",
    )
    render.add_argument("--control-port", type=int, default=953, metavar="PORT")
    render.add_argument("--statistics-port", type=int, default=8053, metavar="PORT")
    render.add_argument(
        "--strict",
        action="store_true",
        help=f"exit with {EXIT_ZONES_REJECTED} when a selected zone is left out (for CI)",
    )

    operator = commands.add_parser(
        "operator",
        help="run the controller (kopf): SecondaryServers and Zones into DNS pods",
        description="Watch SecondaryServers, Zones and the Secrets they use, and keep the "
        "cluster equal to what they declare.",
    )
    operator.add_argument(
        "--namespace",
        "-n",
        action="append",
        metavar="NS",
        help="watch only this namespace (repeatable); default: $SDNS_WATCH_NAMESPACES "
        "(comma-separated), else all namespaces",
    )
    operator.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("SDNS_WORKERS", "4")),
        help="threads doing the queued work (env SDNS_WORKERS; default 4)",
    )
    operator.add_argument(
        "--metrics-port", type=int, default=8080, help="Prometheus /metrics (0: off)"
    )
    operator.add_argument(
        "--health-port", type=int, default=8081, help="/healthz for liveness and readiness (0: off)"
    )
    operator.add_argument(
        "--resync-seconds",
        type=float,
        default=float(os.environ.get("SDNS_RESYNC_SECONDS", "60")),
        help="level-triggered resync interval (every SecondaryServer reconciled)",
    )
    operator.add_argument(
        "--probe-seconds",
        type=float,
        default=float(os.environ.get("SDNS_PROBE_SECONDS", "10")),
        help="steady-state interval of the serial monitor's SOA probes",
    )
    operator.add_argument(
        "--operator-namespace",
        default=os.environ.get("SDNS_OPERATOR_NAMESPACE") or _pod_namespace(),
        metavar="NS",
        help="the operator's own namespace: its Lease, the relay's plans and Service "
        "(default: $SDNS_OPERATOR_NAMESPACE, else the pod's; none: no leader election, "
        "no relay plans)",
    )
    operator.add_argument(
        "--leader-election",
        choices=("on", "off"),
        default=os.environ.get("SDNS_LEADER_ELECTION", "on"),
        help="hold a Lease before reconciling (on, the default, when an operator "
        "namespace is known)",
    )
    operator.add_argument(
        "--lease-name", default=os.environ.get("SDNS_LEASE_NAME", "secondary-dns-operator")
    )
    operator.add_argument(
        "--lease-duration", type=float, default=float(os.environ.get("SDNS_LEASE_DURATION", "15"))
    )
    operator.add_argument(
        "--renew-deadline", type=float, default=float(os.environ.get("SDNS_RENEW_DEADLINE", "10"))
    )
    operator.add_argument(
        "--retry-period", type=float, default=float(os.environ.get("SDNS_RETRY_PERIOD", "2"))
    )
    operator.add_argument(
        "--identity",
        default=os.environ.get("POD_NAME") or socket.gethostname(),
        help="this replica's name in the Lease (default: $POD_NAME, else the host name; "
        "a random suffix is added)",
    )
    operator.add_argument(
        "--relay-service",
        default=os.environ.get("SDNS_RELAY_SERVICE") or None,
        metavar="NAME",
        help="the NOTIFY relay's Service in the operator namespace: its address is "
        "published as status.notifyAddress",
    )
    operator.add_argument(
        "--notify-address",
        default=os.environ.get("SDNS_NOTIFY_ADDRESS") or None,
        help="publish this NOTIFY address instead of the relay Service's (e.g. a DNS name "
        "in front of it)",
    )
    operator.add_argument(
        "--wakeup-listen",
        default=os.environ.get("SDNS_WAKEUP_LISTEN") or None,
        metavar="ADDRESS:PORT",
        help="listen (UDP) for the NOTIFYs the relay forwards, and probe fast after each "
        "(the chart: 0.0.0.0:5354); off when not given",
    )
    operator.add_argument(
        "--advertise-address",
        default=os.environ.get("POD_IP") or None,
        metavar="ADDRESS",
        help="where the relay reaches this replica's --wakeup-listen port; written on the "
        "Lease while it leads (default: $POD_IP)",
    )
    operator.add_argument(
        "--repair",
        choices=("on", "off"),
        default=os.environ.get("SDNS_REPAIR", "on"),
        help="NOTIFY a replica the monitor sees behind (off only to measure refresh timers)",
    )
    operator.add_argument(
        "--refused-primary-networks",
        type=_cidr_list,
        default=os.environ.get(REFUSED_PRIMARY_NETWORKS_ENV, ""),
        metavar="CIDR[,CIDR...]",
        help="networks no Zone's primary may be in, e.g. the cluster's Service range "
        "10.96.0.0/12 (such a Zone gets ConfigValid=False, PrimaryNotAllowed); default: none "
        f"(also ${REFUSED_PRIMARY_NETWORKS_ENV})",
    )
    operator.add_argument(
        "--image",
        default=os.environ.get("SDNS_IMAGE") or DEFAULT_IMAGE,
        metavar="IMAGE",
        help="the DNS pods' image when a SecondaryServer's spec.engine.image is empty "
        f"(env SDNS_IMAGE; default {DEFAULT_IMAGE})",
    )
    operator.add_argument("--verbose", "-v", action="store_true")

    relay = commands.add_parser(
        "relay",
        help="run the NOTIFY relay: accept NOTIFY from primaries, fan it out to every replica",
        description="Listen for NOTIFY (UDP and TCP), accept it from a zone's primaries only, "
        "and relay it, signed, to every replica. Routes come from the operator's relay plans "
        "(Secrets in NAMESPACE) and a watch of the replicas' Pods; docs/notify-relay.md.",
    )
    relay.add_argument(
        "--namespace",
        default=os.environ.get("SDNS_OPERATOR_NAMESPACE") or _pod_namespace(),
        metavar="NS",
        help="where the operator publishes the relay plans (default: the pod's namespace)",
    )
    relay.add_argument(
        "--lease-name",
        default=os.environ.get("SDNS_LEASE_NAME") or None,
        metavar="NAME",
        help="the operator's Lease: NOTIFYs accepted are forwarded to the leader it names "
        "(its serial monitor then probes fast); none: not forwarded",
    )
    relay.add_argument(
        "--listen",
        default=os.environ.get("SDNS_RELAY_LISTEN", "0.0.0.0:5353"),
        metavar="ADDRESS:PORT",
        help="where to listen for NOTIFY, UDP and TCP (default 0.0.0.0:5353)",
    )
    relay.add_argument(
        "--metrics-port", type=int, default=8080, help="Prometheus /metrics (0: off)"
    )
    relay.add_argument(
        "--health-port", type=int, default=8081, help="/healthz and /readyz (0: off)"
    )
    relay.add_argument("--verbose", "-v", action="store_true")
    agent_command.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "render":
        return run_render(args, sys.stdout, sys.stderr)
    if args.command in agent_command.COMMANDS:
        return agent_command.run(args)
    if args.command == "operator":
        return run_operator(args)
    if args.command == "relay":
        from secondary_dns.relay.run import run as run_relay

        return run_relay(
            namespace=args.namespace,
            listen=args.listen,
            lease_name=args.lease_name,
            metrics_port=args.metrics_port,
            health_port=args.health_port,
            verbose=args.verbose,
        )
    return 0


def _cidr_list(text: str) -> str:
    try:
        parse_cidr_list(text, "--refused-primary-networks")
    except SpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


# Where the kubelet mounts the pod's service account: its namespace is the pod's.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _pod_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def operator_options(args: argparse.Namespace) -> OperatorOptions:
    """What the operator runs with: the flags, each defaulting to its environment variable."""
    from secondary_dns.handlers.operator import OperatorOptions

    return OperatorOptions(
        namespaces=tuple(args.namespace or _env_list("SDNS_WATCH_NAMESPACES")),
        workers=args.workers,
        kubeconfig=os.environ.get("KUBECONFIG") or None,
        resync_seconds=args.resync_seconds,
        probe_seconds=args.probe_seconds,
        repair=args.repair == "on",
        operator_namespace=args.operator_namespace,
        relay_service=args.relay_service,
        notify_address=args.notify_address,
        refused_primary_networks=args.refused_primary_networks,
        image=args.image,
        wakeup_listen=args.wakeup_listen,
    )


def run_operator(args: argparse.Namespace) -> int:
    from secondary_dns.handlers.run import run
    from secondary_dns.k8s.lease import LeaseConfig

    options = operator_options(args)
    annotations: tuple[tuple[str, str], ...] = ()
    if args.wakeup_listen and args.advertise_address:
        port = args.wakeup_listen.rpartition(":")[2]
        host = args.advertise_address
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        annotations = ((ANNOTATION_WAKEUP_ADDRESS, target),)
    lease = None
    if args.leader_election == "on" and args.operator_namespace:
        lease = LeaseConfig(
            namespace=args.operator_namespace,
            name=args.lease_name,
            # Unique per process, as controller-runtime's hostname_uuid: a restarted
            # replica must not think it still holds its predecessor's Lease.
            identity=f"{args.identity}_{uuid.uuid4().hex[:8]}",
            lease_duration=args.lease_duration,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
            annotations=annotations,
        )
    return run(
        options,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        verbose=args.verbose,
        lease=lease,
    )


# ---- render -------------------------------------------------------------------------


class InputError(Exception):
    """A problem with the command's input; exits with EXIT_BAD_INPUT."""


@dataclass
class Manifests:
    servers: list[dict[str, Any]] = field(default_factory=list)
    zones: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def _documents(path: str) -> Iterator[Any]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            text = Path(path).read_text()
        yield from yaml.safe_load_all(text)
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML: {error}") from None


def _objects(document: Any, path: str) -> Iterator[dict[str, Any]]:
    if document is None:
        return
    if not isinstance(document, dict):
        raise InputError(f"{path}: a document is not a Kubernetes object (a mapping)")
    if document.get("kind") == "List" and isinstance(document.get("items"), list):
        for item in document["items"]:
            yield from _objects(item, path)
        return
    yield document


def _ref(obj: Mapping[str, Any]) -> ObjectRef:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        raise InputError(f"a {obj.get('kind', 'object')} without metadata.name")
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    if not isinstance(namespace, str):
        raise InputError(f"{obj.get('kind')} {metadata['name']}: metadata.namespace is no string")
    return ObjectRef(namespace, metadata["name"])


def read_manifests(paths: Sequence[str]) -> Manifests:
    manifests = Manifests()
    for path in paths:
        for document in _documents(path):
            for obj in _objects(document, path):
                kind, api_version = obj.get("kind"), obj.get("apiVersion")
                if api_version == API_VERSION and kind == SECONDARY_SERVER_KIND:
                    manifests.servers.append(obj)
                elif api_version == API_VERSION and kind == ZONE_KIND:
                    manifests.zones.append(obj)
                elif api_version == "v1" and kind == "Secret":
                    ref = _ref(obj)
                    manifests.secrets[(ref.namespace, ref.name)] = obj
                else:
                    manifests.ignored.append(f"{api_version}/{kind}")
    return manifests


def _pick_server(manifests: Manifests, wanted: str | None) -> dict[str, Any]:
    servers = manifests.servers
    if wanted is not None:
        namespace, _, name = wanted.rpartition("/")
        servers = [
            obj
            for obj in servers
            if _ref(obj).name == name and (not namespace or _ref(obj).namespace == namespace)
        ]
    if len(servers) == 1:
        return servers[0]
    found = ", ".join(sorted(str(_ref(obj)) for obj in manifests.servers)) or "none"
    if not servers:
        raise RenderError(f"no SecondaryServer {wanted or ''} in the input (found: {found})")
    raise RenderError(
        f"the input has several SecondaryServers ({found}); choose one with --server NAME"
    )


def _parse_listen(values: Sequence[str]) -> tuple[tuple[IPAddress, ...], int]:
    addresses: list[IPAddress] = []
    ports: set[int] = set()
    for value in values:
        host, port_text = value, ""
        if value.startswith("["):
            host, _, rest = value[1:].partition("]")
            port_text = rest.removeprefix(":")
        elif value.count(":") == 1:
            host, _, port_text = value.partition(":")
        try:
            addresses.append(ipaddress.ip_address(host))
            port = int(port_text) if port_text else 53
        except ValueError:
            raise InputError(
                f"--listen {value}: expected ADDRESS[:PORT], e.g. 127.0.0.53:5353 or [::1]:53"
            ) from None
        if not 1 <= port <= 65535:
            raise InputError(f"--listen {value}: port must be 1..65535")
        ports.add(port)
    if len(ports) > 1:
        raise InputError("--listen: all addresses must use the same port")
    return tuple(addresses), ports.pop() if ports else 53


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    # Written next to the target and renamed, so a running named that reloads
    # never reads half a file.
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def _generated_key(name: dns.name.Name) -> TsigKey:
    return TsigKey(name=name, algorithm=dns.tsig.HMAC_SHA256, secret=secrets.token_bytes(32))


def run_render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        manifests = read_manifests(args.files)
        listen_addresses, port = _parse_listen(args.listen)
        output = Path(args.output).absolute()
    except InputError as error:
        print(f"secondary-dns render: {error}", file=err)
        return EXIT_BAD_INPUT
    for kind in sorted(set(manifests.ignored)):
        print(f"secondary-dns render: ignoring {kind} objects", file=err)

    try:
        server_obj = _pick_server(manifests, args.server)
        server_ref = _ref(server_obj)
        server = parse_secondary_server(server_obj)
    except (RenderError, InputError) as error:
        print(f"secondary-dns render: {error}", file=err)
        return EXIT_NOTHING_RENDERED
    except SpecError as error:
        print(f"secondary-dns render: SecondaryServer {server_ref}: {error}", file=err)
        return EXIT_NOTHING_RENDERED
    labels = (server_obj.get("metadata") or {}).get("labels") or {}

    try:
        zone_objects = [(_ref(obj), obj) for obj in manifests.zones]
    except InputError as error:
        print(f"secondary-dns render: {error}", file=err)
        return EXIT_BAD_INPUT
    served = select_zones(zone_objects, server_ref, labels)
    secrets = {
        name: manifests.secrets.get((server_ref.namespace, name)) for name in served.secret_names
    }

    data_dir, run_dir = output / "data", output / "run"
    paths = EnginePaths(
        config_dir=PurePosixPath(output),
        data_dir=PurePosixPath(data_dir),
        run_dir=PurePosixPath(run_dir),
        tsig_key_file=PurePosixPath(output / "tsig-keys.conf"),
        rndc_key_file=PurePosixPath(output / "rndc.key"),
        listen_addresses=listen_addresses,
        port=port,
        control_port=args.control_port,
        statistics_port=args.statistics_port,
    )
    request = RenderRequest(
        server=server,
        zones=served.selected,
        tsig_keys=tsig_keys(served, server_ref.namespace, secrets),
        relay_key_name=DEFAULT_RELAY_KEY_NAME,
        paths=paths,
        created=served.created,
    )
    try:
        renderer = renderer_for(server.engine.type)
        rendered = renderer.render(request)
        relay_key = _generated_key(DEFAULT_RELAY_KEY_NAME)
        key_file = renderer.render_key_file([*rendered.tsig_keys, relay_key])
        rndc_key_file = renderer.render_key_file([_generated_key(paths.rndc_key_name)])
    except RenderError as error:
        print(f"secondary-dns render: SecondaryServer {server_ref}: {error}", file=err)
        return EXIT_NOTHING_RENDERED

    directories = [output, data_dir, run_dir]
    if rendered.engine == agent_contract.ENGINE_BIND9:
        # named's database of zones added by rndc addzone (render/bind9.py): named
        # refuses to start without the directory.
        directories.append(run_dir / agent_contract.NEW_ZONES_DIR)
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.engine_files().items():
        _write(output / name, text)
    # Secrets: readable by the owner only, as the agent writes them in the pod.
    _write(output / "tsig-keys.conf", key_file, 0o600)
    if rendered.engine == agent_contract.ENGINE_BIND9:
        # named's control channel needs a key; knotd's is a UNIX socket in run/.
        _write(output / "rndc.key", rndc_key_file, 0o600)
        _write(
            output / "rndc.conf",
            rndc_key_file
            + "options {\n"
            + f'\tdefault-key "{paths.rndc_key_name.to_text(omit_final_dot=True)}";\n'
            + "\tdefault-server 127.0.0.1;\n"
            + f"\tdefault-port {int(args.control_port)};\n"
            + "};\n",
            0o600,
        )

    print(
        f"SecondaryServer {server_ref} ({renderer.engine}): config {rendered.config_hash}", file=out
    )
    for zone in rendered.plan.zones:
        print(f"  serves {zone.zone.to_text(omit_final_dot=True)} (Zone {zone.ref})", file=out)
    rejected = {
        ref: f"{conditions.INVALID_SPEC}: {error} (not checked whether it selects this server)"
        for ref, error in served.invalid.items()
    }
    for ref, rejection in rendered.rejected.items():
        rejected[ref] = f"{rejection.reason}: {rejection.message}"
    for ref in sorted(rejected):
        print(f"secondary-dns render: left out Zone {ref}: {rejected[ref]}", file=err)
    for zone in rendered.plan.zones:
        for limitation in rendered.limitations(zone.ref):
            print(
                f"secondary-dns render: Zone {zone.ref} ({rendered.engine}): {limitation}", file=err
            )
    main_file = output / rendered.main_file
    if rendered.engine == agent_contract.ENGINE_KNOT:
        socket = run_dir / agent_contract.KNOT_CONTROL_SOCKET
        run = f"knotd -c {main_file} (control: knotc -s {socket} zone-status)"
    else:
        run = f"named -g -c {main_file} (control: rndc -c {output / 'rndc.conf'} status)"
    print(f"wrote {output}; run: {run}", file=out)
    if args.strict and rejected:
        return EXIT_ZONES_REJECTED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
