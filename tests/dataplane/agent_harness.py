"""One DNS pod on loopback: `secondary-dns engine` (which becomes named or knotd) and the agent.

The agent runs in the test process (a thread) with a configuration source the
test sets directly; the engine runs as the real command, so the engine's PID the
test sees is the one the container would have. Everything stops on exit, also
when the test fails.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from types import TracebackType

import dns.name

from localcluster.named import NamedProcess, TsigCredentials, free_port
from localcluster.waiting import wait_for
from secondary_dns.agent.control import EngineControl
from secondary_dns.agent.endpoints import AgentHTTPServer
from secondary_dns.agent.knot import KnotControl, KnotProbe
from secondary_dns.agent.named import NamedControl, NamedProbe
from secondary_dns.agent.probe import EngineProbe
from secondary_dns.agent.runner import Agent, MemoryPodReporter
from secondary_dns.agent.source import StaticConfigSource
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout
from tests.agent_configs import (
    Bundle,
    PrimaryZone,
    key_secret_of,
    render_bundle,
    shards_of,
)
from tests.cli_processes import EngineProcess


class AgentPod:
    """Engine + agent sharing a run directory, serving on `address`."""

    def __init__(
        self,
        workdir: Path,
        address: str,
        key: TsigCredentials,
        engine: str = agent_contract.ENGINE_BIND9,
        http_listen: str = "127.0.0.1:0",
    ) -> None:
        """`http_listen`: where the agent's HTTP server listens (the pod address and the
        agent port for an operator to read, as in a pod)."""
        self.workdir = workdir
        self.address = address
        self.key = key
        self.engine_type = engine
        self.layout = PodLayout(PurePosixPath(workdir / "run"), PurePosixPath(workdir / "data"))
        self.control_port = free_port()
        self.statistics_port = free_port()
        self.source = StaticConfigSource()
        self.reporter = MemoryPodReporter()
        control: EngineControl
        probe: EngineProbe
        if engine == agent_contract.ENGINE_KNOT:
            control, probe = KnotControl(self.layout), KnotProbe(self.layout, dns_address=address)
        else:
            control = NamedControl(self.layout, control_port=self.control_port)
            probe = NamedProbe(dns_address=address, statistics_port=self.statistics_port)
        self.agent = Agent(
            self.layout, self.source, self.reporter, control, probe, poll_interval=0.2
        )
        self.http_address = http_listen.rpartition(":")[0]
        self.http = AgentHTTPServer(
            http_listen,
            self.agent.healthz,
            self.agent.readyz,
            self.agent.metrics.registry,
            self.agent.zones_document,
        )
        self.engine = EngineProcess(self.layout, workdir / "engine.log", engine)
        # For queries only: the process is the engine's, not this object's.
        self.dns = NamedProcess(
            "agent-pod", Path(self.layout.engine_conf(engine)), workdir, address
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.agent.run, args=(self._stop,), daemon=True)

    def bundle(self, zones: list[PrimaryZone]) -> Bundle:
        return render_bundle(
            self.layout,
            zones,
            self.key.name,
            self.key.secret,
            listen=ipaddress.ip_address(self.address),
            control_port=self.control_port,
            statistics_port=self.statistics_port,
            engine=self.engine_type,
        )

    def publish(self, bundle: Bundle, part_bytes: int | None = None) -> None:
        """What the operator does: new ConfigMaps and key Secret."""
        self.source.set(shards_of(bundle, part_bytes), key_secret_of(bundle))

    def __enter__(self) -> AgentPod:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http.start()
        self._thread.start()
        self.engine.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self.agent.changed.set()
        self._thread.join(timeout=30)
        self.http.stop()
        self.engine.stop()
        if exc is not None:
            print(f"---- engine log ----\n{self.engine.log()[-6000:]}")

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://{self.http_address}:{self.http.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def annotation(self, key: str) -> str | None:
        return self.reporter.annotations.get(key)

    def wait_for_annotation(self, key: str, value: str, deadline: float = 30.0) -> None:
        wait_for(
            f"annotation {key}={value}",
            lambda: self.annotation(key) == value,
            deadline,
            every=0.2,
        )

    def wait_until_serving(self, zone: str, serial: int, deadline: float = 30.0) -> float:
        """Seconds until the engine serves `zone` authoritatively at `serial` (to 0.1 s)."""
        start = time.monotonic()
        name = dns.name.from_text(zone)
        wait_for(
            f"{zone} serial {serial} served",
            lambda: self.dns.serial(name) == serial,
            deadline,
            # 10 queries a second: half the engine's default response rate limit
            # (spec.limits.responsesPerSecond 20 per client /24 and answer). A
            # poll above it is never answered again while it keeps polling, and
            # the serial monitor's probes from the same /24 share the budget.
            0.1,
        )
        return time.monotonic() - start
