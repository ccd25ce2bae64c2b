"""The configuration on disk: staged, checked with the engine's checker, swapped, reloaded.

Layout under the run directory (an emptyDir both containers share):

    config -> config.d/<config hash>   symbolic link; the engine reads config/named.conf
                                       (BIND 9) or config/knot.conf (Knot DNS)
    config.d/<config hash>/            one directory per applied configuration
    keys/tsig-keys.conf, keys/rndc.key the key files (0600; rndc.key for named only)
    applied.json                       the marker: what is on disk; the engine waits for it

The engine's main file names its includes by absolute path under `config/` and
the key file under `keys/`. To check the new text before anything changes, the
agent writes it to a staging directory (the exact bytes that will be served) and
a second, throw-away copy for the checker (named-checkconf, knotc conf-check) in
which only those include paths point into the check directory. Only when the
check passes does the staging directory become `config.d/<hash>` and the link
move, with one rename(2), so the engine never sees half of an old and half of a
new configuration. Which engine it is, is the `EngineControl`'s business
(control.py); nothing here depends on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from secondary_dns.agent.assemble import DesiredConfig
from secondary_dns.agent.control import EngineControl, ZoneChanges
from secondary_dns.agent.decide import AppliedConfig
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout

log = logging.getLogger(__name__)

# The applied directory and the one before it stay; older ones are removed.
KEEP_VERSIONS = 2


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write beside the target and rename: a reader sees the old or the new file, never half."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def checkable_copy(text: str, replacements: Mapping[str, str]) -> str:
    """`text` with each quoted path prefix `"old` replaced by `"new` (longest first).

    Only strings that start with one of the given absolute paths change, so
    what the checker reads differs from what the engine will read only in where
    its includes are found.
    """
    for old in sorted(replacements, key=len, reverse=True):
        text = text.replace(f'"{old}', f'"{replacements[old]}')
    return text


@dataclass(frozen=True)
class ApplyOutcome:
    applied: bool
    # Set when applied but the engine was not reachable: the reload must be retried.
    reload_pending: bool
    message: str
    # Seconds spent per step ("check", "write", "reload"), for the log and metrics.
    seconds: Mapping[str, float] = field(default_factory=dict)
    # Shards the checker read (changed ones) of the configuration's shards.
    shards_checked: int = 0
    shards: int = 0


class ConfigDirectory:
    """The agent's side of the run directory."""

    def __init__(self, layout: PodLayout) -> None:
        self.layout = layout
        self.run_dir = Path(layout.run_dir)
        self.config_link = Path(layout.config_dir)
        self.versions = Path(layout.versions_dir)
        self.key_file = Path(layout.tsig_key_file)
        self.marker = Path(layout.marker)

    def prepare(self) -> None:
        for directory in (self.run_dir, self.versions, Path(self.layout.keys_dir)):
            directory.mkdir(parents=True, exist_ok=True)
        Path(self.layout.data_dir).mkdir(parents=True, exist_ok=True)
        for leftover in self.versions.glob(".*"):
            # Staging and check directories of an agent that died mid-apply.
            shutil.rmtree(leftover, ignore_errors=True)

    def applied_hash(self) -> str | None:
        """The config hash the marker names (without reading its zones)."""
        try:
            state = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return None
        value = state.get("configHash") if isinstance(state, dict) else None
        return value if isinstance(value, str) else None

    def applied(self) -> AppliedConfig | None:
        """What the marker says is on disk (survives an agent restart, not a pod restart)."""
        try:
            state = json.loads(self.marker.read_text())
            zones_text = (
                self.versions / state["configHash"] / agent_contract.ZONES_FILE
            ).read_text()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        zones = agent_contract.parse_zones_file(zones_text)
        try:
            retransfer_text: str | None = (
                self.versions / state["configHash"] / agent_contract.RETRANSFER_FILE
            ).read_text()
        except OSError:
            retransfer_text = None
        retransfer = agent_contract.parse_retransfer_file(retransfer_text)
        try:
            shards = agent_contract.parse_shards_file(
                (self.versions / state["configHash"] / agent_contract.SHARDS_FILE).read_text()
            )
        except OSError:
            shards = {}
        return AppliedConfig(
            config_hash=str(state["configHash"]),
            keys_hash=str(state.get("keysHash", "")),
            zones=zones if isinstance(zones, tuple) else (),
            retransfer=retransfer if isinstance(retransfer, dict) else {},
            shards=shards if isinstance(shards, dict) else {},
        )

    def _write_marker(self, applied: AppliedConfig) -> None:
        state = {"configHash": applied.config_hash, "keysHash": applied.keys_hash}
        write_atomically(self.marker, json.dumps(state, sort_keys=True) + "\n")

    def _stage(self, desired: DesiredConfig) -> Path:
        stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=self.versions))
        for name, text in desired.files.items():
            (stage / name).write_text(text)
        zones_file = agent_contract.encode_zones_file(desired.zones)
        (stage / agent_contract.ZONES_FILE).write_text(zones_file)
        # Which shard had which hash: what the next configuration's check may skip.
        shards_file = agent_contract.encode_shards_file(desired.shards)
        (stage / agent_contract.SHARDS_FILE).write_text(shards_file)
        return stage

    def checked_before(self, desired: DesiredConfig) -> set[str]:
        """Shards of `desired` the checker already accepted in the same surroundings.

        Those are the applied configuration's shards at the same hash, when the
        root files (the engine's main file, the zones include) and the key file
        are byte for byte the ones they were checked with. A shard holds only
        zone statements (and, for Knot, their remotes and ACLs, named after
        the zone), and no zone is in two shards (assemble.py refuses that), so
        a shard that was valid there is valid again. Anything else (a first
        configuration, new keys, a new main file or shard list, a version
        directory written before the manifest was kept) checks everything.
        """
        applied = self.applied_hash()
        if applied is None:
            return set()
        version = self.versions / applied
        try:
            if self.key_file.read_text() != desired.key_file:
                return set()
            for name, text in desired.root_files.items():
                if (version / name).read_text() != text:
                    return set()
            manifest = agent_contract.parse_shards_file(
                (version / agent_contract.SHARDS_FILE).read_text()
            )
        except OSError:
            return set()
        if isinstance(manifest, str):
            return set()
        return {shard for shard, wanted in desired.shards.items() if manifest.get(shard) == wanted}

    def check(
        self, desired: DesiredConfig, control: EngineControl, skip: set[str] | None = None
    ) -> str | None:
        """The engine's checker on the new files and key file, before anything live changes.

        The files of the shards in `skip` (see `checked_before`) are given to
        the checker empty: it reads the main file, the zones include and the
        changed shards only, so a one-zone change among 10,000 checks one shard.
        """
        check_dir = Path(tempfile.mkdtemp(prefix=".check-", dir=self.versions))
        skipped = {name for shard in skip or () for name in desired.shard_files.get(shard, ())}
        try:
            replacements = {
                str(self.layout.tsig_key_file): str(check_dir / ".tsig-keys.conf"),
                str(self.layout.config_dir) + "/": str(check_dir) + "/",
            }
            (check_dir / ".tsig-keys.conf").write_text(desired.key_file)
            os.chmod(check_dir / ".tsig-keys.conf", 0o600)
            for name, text in desired.files.items():
                checked = "" if name in skipped else checkable_copy(text, replacements)
                (check_dir / name).write_text(checked)
            message = control.check(check_dir / agent_contract.ENGINE_CONFIG_FILES[control.engine])
        finally:
            shutil.rmtree(check_dir, ignore_errors=True)
        if message is None:
            return None
        # Paths in the message would name the throw-away directory; show the real ones.
        return message.replace(str(check_dir) + "/", str(self.layout.config_dir) + "/")

    def _point_link(self, target: str) -> None:
        temporary = self.run_dir / ".config.link"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(target)
        if self.config_link.is_dir() and not self.config_link.is_symlink():
            # A directory from an older layout: move it aside, rename(2) cannot replace it.
            self.config_link.rename(self.versions / ".old-config-dir")
        os.replace(temporary, self.config_link)

    def _prune(self, keep: set[str]) -> None:
        for version in self.versions.iterdir():
            if version.name.startswith(".") or version.name in keep:
                continue
            shutil.rmtree(version, ignore_errors=True)

    def apply(
        self,
        desired: DesiredConfig,
        control: EngineControl,
        changes: ZoneChanges | None = None,
    ) -> ApplyOutcome:
        """Check `desired`, write it, and have the running engine load it: by `changes`
        zone by zone when given (the engine keeps answering; the files are written
        whole all the same), else, or when the engine refuses them, by a reload."""
        self.prepare()
        started = time.monotonic()
        skip = self.checked_before(desired)
        skipped = {name for shard in skip for name in desired.shard_files.get(shard, ())}
        checked = {name: text for name, text in desired.files.items() if name not in skipped}
        undefined = control.undefined_keys(checked, desired.key_file)
        if undefined:
            return ApplyOutcome(
                False,
                False,
                f"the key Secret does not define TSIG keys the configuration uses: "
                f"{', '.join(undefined)}",
            )
        error = self.check(desired, control, skip)
        if error is not None:
            return ApplyOutcome(False, False, f"{control.checker}: {error}")
        seconds = {"check": time.monotonic() - started}
        scope = {"shards_checked": len(desired.shards) - len(skip), "shards": len(desired.shards)}
        started = time.monotonic()

        engine_started = self.marker.exists()
        version = self.versions / desired.config_hash
        if not version.exists():
            stage = self._stage(desired)
            os.rename(stage, version)
        # Otherwise the same hash was applied before (only the keys change, or
        # a rollback to it): content-addressed, so the directory is already right.
        previous_link = os.readlink(self.config_link) if self.config_link.is_symlink() else None
        previous_keys = self.key_file.read_text() if self.key_file.exists() else None
        # The marker as it was (rewritten as is on a rollback; parsing its 10,000
        # zones here would cost more than the check of a one-zone change).
        previous_marker = self.marker.read_text() if self.marker.exists() else None

        # Keys first: the old config only references keys the operator still
        # ships in a Secret that matches the new config, and the engine reads both
        # only when told to (or when it restarts).
        write_atomically(self.key_file, desired.key_file, 0o600)
        self._point_link(os.path.relpath(version, self.run_dir))
        applied = AppliedConfig(
            desired.config_hash,
            desired.keys_hash,
            desired.zones,
            desired.retransfer,
            desired.shards,
        )

        if not engine_started:
            self._write_marker(applied)
            self._prune({version.name})
            seconds["write"] = time.monotonic() - started
            return ApplyOutcome(
                True,
                False,
                f"first configuration written; {control.engine} starts on it",
                seconds,
                **scope,
            )

        seconds["write"] = time.monotonic() - started
        keep = {version.name}
        if previous_link is not None:
            keep.add(Path(previous_link).name)
        if changes is not None:
            started = time.monotonic()
            result = control.change_zones(changes)
            seconds["zones"] = time.monotonic() - started
            if result.ok:
                self._write_marker(applied)
                self._prune(keep)
                return ApplyOutcome(
                    True, False, f"without a reload: {result.message}", seconds, **scope
                )
            # Some calls may have taken: the reload below starts from the files,
            # which hold the whole configuration, so it completes the change.
            log.warning(
                "%s: zone by zone failed (%s); reloading instead", control.engine, result.message
            )
        started = time.monotonic()
        result = control.reload()
        seconds["reload"] = time.monotonic() - started
        if result.ok or result.unreachable:
            self._write_marker(applied)
            self._prune(keep)
            if result.ok:
                return ApplyOutcome(True, False, "reloaded", seconds, **scope)
            log.warning(
                "%s not reachable for %s (%s); will retry",
                control.engine,
                control.reload_command,
                result.message,
            )
            return ApplyOutcome(True, True, result.message, seconds, **scope)

        # The engine refused what its checker accepted (named: a zone file it
        # cannot open, say): it keeps serving the old configuration, and so does the disk.
        if previous_keys is not None:
            write_atomically(self.key_file, previous_keys, 0o600)
        if previous_link is not None:
            self._point_link(previous_link)
        if previous_marker is not None:
            write_atomically(self.marker, previous_marker)
        return ApplyOutcome(
            False, False, f"{control.reload_command}: {result.message}", seconds, **scope
        )
