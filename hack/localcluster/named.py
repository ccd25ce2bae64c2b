"""Real `named` processes for the data-plane tier.

Every process runs in the foreground (`named -g`, all logging to its log file) in
a process group of its own, inside the session's private network namespace, on
an address of its own from 198.18.0.0/15 (private to the test run there). A
`NamedFleet` owns the processes of one test and stops all of them when the test
ends, also when it fails.

The primary is a plain BIND primary whose zones the test edits through
dnspython's zone model (`dns.zone`); `ixfr-from-differences` makes it compute
the difference on every reload, so secondaries can ask for IXFR (RFC 1995).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import itertools
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.serial
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.xfr
import dns.zone

from localcluster import netns
from localcluster.processes import stop_process_group
from localcluster.waiting import wait_for

# named processes get 198.18.0.x, 198.18.1.x, ... on the namespace's loopback
# interface: RFC 2544's range for test networks, which nothing routes. Not
# 127.0.0.0/8: the API refuses a primary there (from a replica it is the replica
# itself), and the tests render primaries through the API's rules. 127.0.0.1
# stays for the control and statistics channels rendered configs put there.
_ADDRESSES = itertools.count(1)

START_TIMEOUT = 20.0
DEFAULT_DEADLINE = 30.0
# named answers within milliseconds; poll it faster than the API server.
POLL_SECONDS = 0.2


def next_test_address() -> str:
    """A fresh 198.18.x.y; use `NamedFleet.address()` for one that named can listen on."""
    n = next(_ADDRESSES)
    return f"198.18.{n // 250}.{1 + n % 250}"


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port the kernel says is free on `address` (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class TsigCredentials:
    """A TSIG key as tsig-keygen prints it (RFC 8945)."""

    name: dns.name.Name
    algorithm: dns.name.Name
    secret: bytes

    @classmethod
    def generate(cls, name: str, algorithm: str = "hmac-sha256") -> TsigCredentials:
        return cls(dns.name.from_text(name), dns.name.from_text(algorithm), secrets.token_bytes(32))

    @property
    def secret_base64(self) -> str:
        return base64.b64encode(self.secret).decode("ascii")

    @property
    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        return {self.name: dns.tsig.Key(self.name, self.secret, self.algorithm)}

    def named_conf(self) -> str:
        return (
            f'key "{self.name.to_text(omit_final_dot=True)}" {{\n'
            f"\talgorithm {self.algorithm.to_text(omit_final_dot=True)};\n"
            f'\tsecret "{self.secret_base64}";\n'
            "};\n"
        )

    def secret_manifest(self, secret_name: str, namespace: str) -> dict[str, object]:
        """The Kubernetes Secret a user would create for this key."""
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret_name, "namespace": namespace},
            "stringData": {
                "secret": self.secret_base64,
                "algorithm": self.algorithm.to_text(omit_final_dot=True),
                "name": self.name.to_text(omit_final_dot=True),
            },
        }


def _origin(zone: dns.zone.Zone) -> dns.name.Name:
    if zone.origin is None:
        raise ValueError("a zone without an origin cannot be served")
    return zone.origin


def soa_serial(
    zone: str | dns.name.Name,
    address: str,
    port: int = 53,
    *,
    timeout: float = 2.0,
    tcp: bool = False,
) -> int | None:
    """The SOA serial `address` answers authoritatively for `zone`, or None (no answer too)."""
    request = dns.message.make_query(zone, dns.rdatatype.SOA)
    request.flags &= ~dns.flags.RD
    send = dns.query.tcp if tcp else dns.query.udp
    try:
        response = send(request, address, port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError):
        return None
    if response.rcode() != dns.rcode.NOERROR or not response.flags & dns.flags.AA:
        return None
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def make_zone(
    origin: str | dns.name.Name,
    serial: int = 1,
    *,
    hosts: int = 2,
    refresh: int = 3600,
    retry: int = 600,
    expire: int = 86400,
    minimum: int = 60,
) -> dns.zone.Zone:
    """A small zone: SOA, NS, the name server's A and `hosts` A records."""
    origin_name = dns.name.from_text(origin) if isinstance(origin, str) else origin
    text = [
        f"@ 300 IN SOA ns1 hostmaster {serial} {refresh} {retry} {expire} {minimum}",
        "@ 300 IN NS ns1",
        "ns1 300 IN A 192.0.2.53",
    ]
    # Data only, never contacted: 198.18.0.0/15 (RFC 2544 benchmarking) holds 131072.
    first = int(ipaddress.IPv4Address("198.18.0.1"))
    text += [f"host{i} 300 IN A {ipaddress.IPv4Address(first + i)}" for i in range(hosts)]
    return dns.zone.from_text("\n".join(text) + "\n", origin=origin_name, relativize=True)


def zone_serial(zone: dns.zone.Zone) -> int:
    soa = zone.get_soa()
    return int(soa.serial)


def bump_serial(zone: dns.zone.Zone) -> int:
    """Increment the SOA serial with RFC 1982 arithmetic (wraps past 2**32 - 1)."""
    new_serial = (dns.serial.Serial(zone_serial(zone)) + 1).value
    with zone.writer() as txn:
        soa = txn.get(dns.name.empty, dns.rdatatype.SOA)
        (rdata,) = list(soa)
        assert isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
        txn.replace(dns.name.empty, soa.ttl, rdata.replace(serial=new_serial))
    return int(new_serial)


class NamedProcess:
    """One named in the foreground; `stop()` kills its whole process group."""

    def __init__(
        self,
        label: str,
        conf: Path,
        workdir: Path,
        address: str,
        port: int = 53,
        rndc_conf: Path | None = None,
    ) -> None:
        self.label = label
        self.conf = conf
        self.workdir = workdir
        self.address = address
        self.port = port
        self.rndc_conf = rndc_conf
        self.log_path = workdir / f"{label}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<named {self.label} {self.address}#{self.port}>"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def argv(self) -> list[str]:
        """The engine in the foreground on `conf` (KnotProcess runs knotd instead)."""
        return ["named", "-g", "-c", str(self.conf)]

    def start(self, wait: bool = True) -> None:
        if self.running:
            raise RuntimeError(f"{self} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"---- start {time.strftime('%H:%M:%S')} ----\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.argv(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_until_answering()

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        # named exits cleanly on SIGTERM (and flushes zone files it must dump).
        stop_process_group(process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, deadline: float = DEFAULT_DEADLINE) -> re.Match[str]:
        regex = re.compile(pattern)
        return wait_for(
            f"{self} to log {pattern!r}", lambda: regex.search(self.log()), deadline, POLL_SECONDS
        )

    def _assert_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(
                f"{self} exited with {self._process.returncode}; log:\n{self.log()[-4000:]}"
            )

    def query(
        self,
        qname: str | dns.name.Name,
        rdtype: str | dns.rdatatype.RdataType = "SOA",
        timeout: float = 2.0,
    ) -> dns.message.Message:
        request = dns.message.make_query(qname, rdtype)
        request.flags &= ~dns.flags.RD
        return dns.query.udp(request, self.address, port=self.port, timeout=timeout)

    def wait_until_answering(self, deadline: float = START_TIMEOUT) -> None:
        def answers() -> bool:
            self._assert_alive()
            try:
                self.query(".", "SOA", timeout=0.5)
            except (dns.exception.Timeout, OSError):
                return False
            return True

        wait_for(f"{self} to answer queries", answers, deadline, POLL_SECONDS)

    def serial(self, zone: str | dns.name.Name) -> int | None:
        """The SOA serial this server answers authoritatively, or None."""
        return soa_serial(zone, self.address, self.port)

    def wait_for_serial(
        self, zone: str | dns.name.Name, serial: int, deadline: float = DEFAULT_DEADLINE
    ) -> int:
        def serves() -> bool:
            self._assert_alive()
            return self.serial(zone) == serial

        wait_for(f"{self} to serve {zone} serial {serial}", serves, deadline, POLL_SECONDS)
        return serial

    def rndc(self, *args: str) -> str:
        if self.rndc_conf is None:
            raise RuntimeError(f"{self} has no rndc configuration")
        result = subprocess.run(
            ["rndc", "-c", str(self.rndc_conf), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"rndc {' '.join(args)} on {self}: {result.stderr.strip()}")
        return result.stdout


def write_rndc_conf(path: Path, key: TsigCredentials, port: int) -> None:
    """rndc's own config pointing at a control channel on 127.0.0.1:`port`."""
    path.write_text(
        key.named_conf()
        + "options {\n"
        + f'\tdefault-key "{key.name.to_text(omit_final_dot=True)}";\n'
        + "\tdefault-server 127.0.0.1;\n"
        + f"\tdefault-port {port};\n"
        + "};\n"
    )


def axfr(
    address: str,
    zone: str | dns.name.Name,
    port: int = 53,
    key: TsigCredentials | None = None,
    rdtype: str = "AXFR",
    serial: int = 0,
    source: str | None = None,
) -> dns.zone.Zone:
    """Transfer `zone` from a server; raises dns.xfr.TransferError when refused."""
    zone_name = dns.name.from_text(zone) if isinstance(zone, str) else zone
    txn_manager = dns.zone.Zone(zone_name)
    query, _ = dns.xfr.make_query(
        txn_manager,
        serial=serial if rdtype == "IXFR" else None,
        keyring=key.keyring if key else None,
        keyname=key.name if key else None,
        keyalgorithm=key.algorithm if key else dns.tsig.default_algorithm,
    )
    if rdtype == "IXFR" and serial == 0:
        raise ValueError("an IXFR needs the client's current serial")
    dns.query.inbound_xfr(address, txn_manager, query, port=port, timeout=10, source=source)
    return txn_manager


def send_notify(
    target: NamedProcess,
    zone: str | dns.name.Name,
    source: str,
    key: TsigCredentials | None = None,
    timeout: float = 2.0,
) -> dns.message.Message | None:
    """Send a NOTIFY (RFC 1996) for `zone` from `source`; None when no answer came back.

    named answers a NOTIFY it refuses with REFUSED, and some builds drop it; the
    caller checks the effect (a transfer or none), not only the reply.
    """
    request = dns.message.make_query(zone, "SOA")
    # The opcode lives in the flags word: clear RD, set AA, then the opcode.
    request.flags = dns.flags.AA
    request.set_opcode(dns.opcode.NOTIFY)
    if key is not None:
        request.use_tsig(key.keyring, keyname=key.name, algorithm=key.algorithm)
    try:
        return dns.query.udp(
            request, target.address, port=target.port, timeout=timeout, source=source
        )
    except dns.exception.Timeout:
        return None


class PrimaryServer(NamedProcess):
    """A BIND primary for test zones; transfers need its TSIG key unless open."""

    def __init__(
        self,
        workdir: Path,
        zones: Iterable[dns.zone.Zone],
        key: TsigCredentials,
        address: str,
        require_tsig: bool = True,
        also_notify: Iterable[tuple[str, int]] = (),
        allow_update: bool = False,
        startup_notify_rate: int | None = None,
    ) -> None:
        self.key = key
        # NOTIFYs a second for every zone at start (named's default 20: 10,000 zones
        # keep notifying for over 8 minutes after the start).
        self.startup_notify_rate = startup_notify_rate
        # Dynamic updates (RFC 2136) signed with `key` change the zones (`update_record`).
        self.allow_update = allow_update
        self.rndc_key = TsigCredentials.generate("rndc-primary")
        self.control_port = 0
        self.require_tsig = require_tsig
        self.also_notify = tuple(also_notify)
        # Addresses this primary refuses queries and transfers from (a secondary
        # cut off from it, while others still reach it). Applied by `refuse()`.
        self.refused: tuple[str, ...] = ()
        self.zones: dict[dns.name.Name, dns.zone.Zone] = {_origin(z): z for z in zones}
        super().__init__(
            "primary-" + address,
            workdir / "named.conf",
            workdir,
            address,
            rndc_conf=workdir / "rndc.conf",
        )

    def _notify_options(self) -> str:
        if not self.also_notify:
            # Tests send every NOTIFY themselves, from the address they choose.
            return "\tnotify no;\n"
        targets = " ".join(f"{address} port {port};" for address, port in self.also_notify)
        # explicit: only the listed targets (not the NS records' addresses), and
        # from the primary's own address, which is what a NOTIFY ACL names.
        return (
            # BIND waits up to notify-delay (5 s by default) to batch NOTIFYs;
            # measurements here are of the secondaries' side, so send at once.
            "\tnotify-delay 0;\n"
            + (
                f"\tstartup-notify-rate {self.startup_notify_rate};\n"
                if self.startup_notify_rate
                else ""
            )
            + "\tnotify explicit;\n"
            f"\talso-notify {{ {targets} }};\n"
            f"\tnotify-source {self.address};\n"
        )

    def _query_acl(self) -> str:
        if not self.refused:
            return ""
        negated = " ".join(f"!{address};" for address in self.refused)
        return f"\tallow-query {{ {negated} any; }};\n"

    def refuse(self, *addresses: str) -> None:
        """From now on refuse queries and transfers from `addresses` (none: nobody)."""
        self.refused = tuple(addresses)
        self.write_config()
        self.rndc("reconfig")

    def zone_path(self, origin: dns.name.Name) -> Path:
        return self.workdir / f"{origin.to_text(omit_final_dot=True)}.db"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.control_port:
            self.control_port = free_port()
        key_name = self.key.name.to_text(omit_final_dot=True)
        transfer_acl = f'key "{key_name}";' if self.require_tsig else "any;"
        # A refused address may neither query nor transfer: BIND falls back to an
        # IXFR when its SOA query is refused, so both doors must be shut.
        transfer_acl = "".join(f"!{address}; " for address in self.refused) + transfer_acl
        zones = ""
        for origin, zone in sorted(self.zones.items()):
            # named owns the file of a zone it updates (with its journal): written once.
            if not (self.allow_update and self.zone_path(origin).exists()):
                zone.to_file(str(self.zone_path(origin)), relativize=False)
            zones += (
                f'zone "{origin.to_text(omit_final_dot=True)}" {{\n'
                "\ttype primary;\n"
                f'\tfile "{self.zone_path(origin)}";\n'
                # A reload of an edited file yields a journal entry, so IXFR works.
                "\tixfr-from-differences yes;\n"
                + (f'\tallow-update {{ key "{key_name}"; }};\n' if self.allow_update else "")
                + "};\n"
            )
        rndc_name = self.rndc_key.name.to_text(omit_final_dot=True)
        self.conf.write_text(
            self.key.named_conf()
            + self.rndc_key.named_conf()
            + "options {\n"
            + f'\tdirectory "{self.workdir}";\n'
            + f'\tpid-file "{self.workdir}/named.pid";\n'
            + f'\tsession-keyfile "{self.workdir}/session.key";\n'
            + f"\tlisten-on port {self.port} {{ {self.address}; }};\n"
            + "\tlisten-on-v6 { none; };\n"
            + "\trecursion no;\n"
            + "\tdnssec-validation no;\n"
            + self._notify_options()
            + self._query_acl()
            + f"\tallow-transfer {{ {transfer_acl} }};\n"
            # Test zones are tiny: a one-record delta is bigger than BIND's default
            # max-ixfr-ratio (100%) allows, which would turn every IXFR into AXFR.
            + "\tmax-ixfr-ratio unlimited;\n"
            + "};\n"
            + f"controls {{ inet 127.0.0.1 port {self.control_port} allow {{ 127.0.0.1; }} "
            + f'keys {{ "{rndc_name}"; }}; }};\n'
            + zones
        )
        assert self.rndc_conf is not None
        write_rndc_conf(self.rndc_conf, self.rndc_key, self.control_port)

    def start(self, wait: bool = True) -> None:
        self.write_config()
        super().start(wait)
        if wait:
            for origin, zone in self.zones.items():
                self.wait_for_serial(origin, zone_serial(zone))

    def zone(self, origin: str | dns.name.Name) -> dns.zone.Zone:
        return self.zones[dns.name.from_text(origin) if isinstance(origin, str) else origin]

    def _publish(self, origin: dns.name.Name) -> int:
        zone = self.zones[origin]
        zone.to_file(str(self.zone_path(origin)), relativize=False)
        serial = zone_serial(zone)
        if self.running:
            self.rndc("reload", origin.to_text(omit_final_dot=True))
            self.wait_for_serial(origin, serial)
        return serial

    def set_record(
        self, origin: str | dns.name.Name, name: str, rdtype: str, *rdatas: str, ttl: int = 300
    ) -> int:
        """Replace one RRset, bump the serial, reload; returns the new serial."""
        zone = self.zone(origin)
        with zone.writer() as txn:
            rdataset = dns.rdataset.from_text_list(
                dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), ttl, list(rdatas)
            )
            txn.replace(dns.name.from_text(name, None), rdataset)
        bump_serial(zone)
        return self._publish(_origin(zone))

    def update_record(
        self, origin: str | dns.name.Name, name: str, rdtype: str, *rdatas: str, ttl: int = 300
    ) -> int:
        """Replace one RRset by a TSIG-signed dynamic update (RFC 2136); the new serial.

        named increments the serial itself, as a primary managed by updates does.
        """
        zone_name = dns.name.from_text(origin) if isinstance(origin, str) else origin
        update = dns.update.UpdateMessage(
            zone_name,
            keyring=self.key.keyring,
            keyname=self.key.name,
            keyalgorithm=self.key.algorithm,
        )
        update.replace(name, ttl, rdtype, *rdatas)
        response = dns.query.tcp(update, self.address, port=self.port, timeout=5)
        if response.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(
                f"update of {zone_name} refused: {dns.rcode.to_text(response.rcode())}"
            )
        serial = self.serial(zone_name)
        assert serial is not None
        return serial

    def serve_zone(self, zone: dns.zone.Zone) -> int:
        """Replace a zone wholesale (e.g. by a bigger one); its serial must be newer."""
        assert zone.origin is not None
        self.zones[zone.origin] = zone
        return self._publish(zone.origin)

    def outgoing_transfers(self, origin: str | dns.name.Name) -> list[tuple[str, int]]:
        """The transfers this primary served for `origin`, in order: (kind, serial).

        kind is "AXFR", "IXFR" (an incremental answer, RFC 1995) or "AXFR-style IXFR"
        (an IXFR request answered with the whole zone).
        """
        zone_text = (dns.name.from_text(origin) if isinstance(origin, str) else origin).to_text(
            omit_final_dot=True
        )
        pattern = re.compile(
            rf"transfer of '{re.escape(zone_text)}/IN': "
            r"(AXFR|IXFR|AXFR-style IXFR) started.*\(serial (?:\d+ -> )?(\d+)\)"
        )
        return [(m.group(1), int(m.group(2))) for m in pattern.finditer(self.log())]

    def notify(self, target: NamedProcess, origin: str | dns.name.Name) -> dns.message.Message:
        """NOTIFY `target` from this primary's address, as the primary itself would."""
        response = send_notify(target, origin, source=self.address)
        if response is None:
            raise TimeoutError(f"{target} did not answer the NOTIFY for {origin}")
        return response


class NamedFleet:
    """The named processes of one test; every one is stopped on exit, also on failure."""

    def __init__(self, workdir: Path, netns_name: str) -> None:
        self.workdir = workdir
        self.netns_name = netns_name
        self.processes: list[NamedProcess] = []

    def address(self) -> str:
        """A fresh test address (198.18.0.0/15), configured on the namespace's `lo`.

        named listens only on addresses it finds on an interface (it scans them),
        not on a route, so each one is added explicitly.
        """
        netns.require_inside(self.netns_name)
        address = next_test_address()
        netns.add_address(self.netns_name, address)
        return address

    def __enter__(self) -> NamedFleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except BaseException as error:  # keep stopping the others
                errors.append(error)
        if errors:
            raise errors[0]

    def start_primary(
        self,
        zones: Iterable[dns.zone.Zone],
        key: TsigCredentials | None = None,
        *,
        require_tsig: bool = True,
        address: str | None = None,
        allow_update: bool = False,
    ) -> PrimaryServer:
        address = address or self.address()
        primary = PrimaryServer(
            self.workdir / f"primary-{address}",
            zones,
            key or TsigCredentials.generate("transfer-key"),
            address=address,
            require_tsig=require_tsig,
            allow_update=allow_update,
        )
        self.processes.append(primary)
        primary.start()
        return primary

    def start_secondary(
        self,
        conf: Path,
        address: str,
        port: int = 53,
        rndc_conf: Path | None = None,
        label: str | None = None,
        process_class: type[NamedProcess] | None = None,
    ) -> NamedProcess:
        """Start named (or `process_class`'s engine) from an existing config at `conf`."""
        secondary = (process_class or NamedProcess)(
            label or f"secondary-{address}",
            conf,
            conf.parent,
            address,
            port,
            rndc_conf=rndc_conf,
        )
        self.processes.append(secondary)
        secondary.start()
        return secondary

    @contextlib.contextmanager
    def stopped(self, process: NamedProcess) -> Iterator[None]:
        """Stop `process` for the body of a with-block, then start it again."""
        process.stop()
        try:
            yield
        finally:
            process.start()
