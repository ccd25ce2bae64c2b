"""`secondary-dns` commands as real processes, as a container would run them.

Each runs from this checkout (`python -m secondary_dns.cli`) in a process group
of its own, logging to a file, and is stopped with its whole group. Shared by
the dataplane and cluster tiers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from localcluster.processes import stop_process_group
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout

REPO = Path(__file__).resolve().parents[1]


class SecondaryDnsProcess:
    """`secondary-dns <argv>`; `start()` runs it, `stop()` ends its process group."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "operator"), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "secondary_dns.cli", *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process_group(process, grace=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class EngineProcess(SecondaryDnsProcess):
    """`secondary-dns engine`: waits for the agent's first config, then becomes the engine."""

    def __init__(
        self, layout: PodLayout, log_path: Path, engine: str = agent_contract.ENGINE_BIND9
    ) -> None:
        super().__init__(["engine", "--engine", engine, "--run-dir", str(layout.run_dir)], log_path)
        self.layout = layout
        self.engine = engine

    def engine_pid(self) -> int | None:
        """The PID the engine wrote to its pid file (the rendered config puts it in run_dir)."""
        pid_file = "knot.pid" if self.engine == agent_contract.ENGINE_KNOT else "named.pid"
        try:
            return int((Path(self.layout.run_dir) / pid_file).read_text().strip())
        except (OSError, ValueError):
            return None
