"""Real `knotd` processes for the data-plane tier, beside named's (named.py).

A KnotProcess is a NamedProcess whose engine is knotd: the same lifecycle
(foreground, its own process group, stopped with the fleet), the same DNS
queries; `knotc` talks to it over the control socket its configuration names.
"""

from __future__ import annotations

import subprocess

from localcluster.named import NamedProcess


class KnotProcess(NamedProcess):
    """One knotd in the foreground (it logs to stderr as rendered)."""

    def __repr__(self) -> str:
        return f"<knotd {self.label} {self.address}#{self.port}>"

    def argv(self) -> list[str]:
        return ["knotd", "-c", str(self.conf)]

    def knotc(self, *args: str) -> str:
        """`knotc -c CONF ARGS`: knotc finds the control socket in the configuration."""
        result = subprocess.run(
            ["knotc", "-c", str(self.conf), *args], capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            raise RuntimeError(f"knotc {' '.join(args)} on {self}: {result.stderr.strip()}")
        return result.stdout
