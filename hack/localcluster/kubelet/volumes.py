"""A pod's volumes, as kubelet's volume manager sets them up.

- emptyDir: a directory of the pod (0777), or a tmpfs for `medium: Memory`
  whose size is `sizeLimit` (so the limit is the filesystem's); a disk
  emptyDir's `sizeLimit` is checked as kubelet's eviction manager does
  (`over_size_limit`), and the pod is evicted when usage exceeds it.
- configMap, secret, downwardAPI and projected (serviceAccountToken,
  configMap, secret, downwardAPI sources): files written with kubelet's atomic
  writer (a timestamped directory behind a `..data` symlink, so a reader never
  sees half an update), refreshed at every resync (`refresh`), read-only in
  the containers. A serviceAccountToken is a TokenRequest bound to the pod,
  with the source's expirationSeconds and audience, renewed when kubelet's
  token manager would (`requires_refresh`: past 80% of its lifetime or 24 h).
- fsGroup: kubelet's SetVolumeOwnership on each of them: group fsGroup,
  group read (and write for emptyDir), setgid directories; the token file is
  0600 for the pod's runAsUser (then 0640 with fsGroup), as kubelet writes it.
- persistentVolumeClaim: a directory of the pod (no provisioner here); it does
  not outlive the pod. Any other volume type is refused with a clear message.
"""

from __future__ import annotations

import base64
import datetime
import os
import random
import shutil
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from localcluster.kubelet import envvars, quantity

VOLUMES_DIR = "volumes"
DATA_LINK = "..data"
DEFAULT_MODE = 0o644
TOKEN_DEFAULT_SECONDS = 3600
# kubelet's token manager: renew past 80% of the lifetime, or after 24 h, with
# up to 10 s of jitter.
TOKEN_MAX_TTL_SECONDS = 24 * 3600
TOKEN_MAX_JITTER_SECONDS = 10.0
_RW_MASK, _RO_MASK, _EXEC_MASK = 0o660, 0o440, 0o110


class VolumeError(Exception):
    """kubelet's FailedMount: the message names the volume and the cause."""


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int
    fs_user: int | None = None


# ---- payloads (pure) ----------------------------------------------------------------


def _mode(item: Mapping[str, Any], default: int) -> int:
    mode = item.get("mode")
    return int(mode) if mode is not None else default


def key_payload(
    kind: str,
    name: str,
    data: Mapping[str, bytes] | None,
    items: Sequence[Mapping[str, Any]],
    default_mode: int,
    optional: bool,
) -> dict[str, FileProjection]:
    """configmap.MakePayload / secret.MakePayload."""
    if data is None:
        if optional:
            return {}
        raise VolumeError(f'{kind.lower()} "{name}" not found')
    if not items:
        return {key: FileProjection(value, default_mode) for key, value in data.items()}
    payload = {}
    for item in items:
        key = str(item["key"])
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"configmap references non-existent config key: {key}")
        payload[str(item["path"])] = FileProjection(data[key], _mode(item, default_mode))
    return payload


def downward_payload(
    items: Sequence[Mapping[str, Any]],
    pod: Mapping[str, Any],
    default_mode: int,
    node_allocatable: Mapping[str, str],
) -> dict[str, FileProjection]:
    payload = {}
    for item in items:
        if "fieldRef" in item:
            text = envvars.field_value(pod, str(item["fieldRef"]["fieldPath"]))
        else:
            ref = item["resourceFieldRef"]
            containers = (pod.get("spec") or {}).get("containers") or []
            container: Mapping[str, Any] = next(
                (c for c in containers if c["name"] == ref.get("containerName")), {}
            )
            text = envvars.resource_value(
                container, str(ref["resource"]), ref.get("divisor"), node_allocatable
            )
        payload[str(item["path"])] = FileProjection(text.encode(), _mode(item, default_mode))
    return payload


def fs_user(pod: Mapping[str, Any]) -> int | None:
    """The one runAsUser of every container, when there is one (kubelet's FsUserFrom)."""
    spec = pod.get("spec") or {}
    pod_user = (spec.get("securityContext") or {}).get("runAsUser")
    users = set()
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        user = (container.get("securityContext") or {}).get("runAsUser", pod_user)
        users.add(user)
    if len(users) != 1:
        return None
    (only,) = users
    return int(only) if only is not None else None


def requires_refresh(now: float, expiration: float, expiration_seconds: int, jitter: float) -> bool:
    """kubelet's token manager: renew within the last 20% of the lifetime or after 24 h."""
    issued = expiration - expiration_seconds
    if now > issued + TOKEN_MAX_TTL_SECONDS - jitter:
        return True
    return now > expiration - expiration_seconds * 20 // 100 - jitter


# ---- writing (kubelet's atomic writer and SetVolumeOwnership) ------------------------------


def _validate(path: str) -> None:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts or parts[0].startswith(".."):
        raise VolumeError(f"invalid path {path!r} in volume payload")


def _current(target: Path) -> dict[str, bytes]:
    data = target / DATA_LINK
    if not data.is_symlink():
        return {}
    files: dict[str, bytes] = {}
    root = data.resolve()
    for path in root.rglob("*"):
        if path.is_file():
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def write_atomically(target: Path, payload: Mapping[str, FileProjection]) -> bool:
    """Replace the volume's files in one rename; False when they were already these."""
    for path in payload:
        _validate(path)
    unchanged = {k: v.data for k, v in payload.items()} == _current(target)
    if unchanged and (target / DATA_LINK).exists():
        return False
    target.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
    new_dir = target / f"{stamp}{random.randrange(10**9):09d}"
    new_dir.mkdir(mode=0o755)
    for name, projection in payload.items():
        file = new_dir / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(projection.data)
        file.chmod(projection.mode)
        if projection.fs_user is not None:
            os.lchown(file, projection.fs_user, -1)
    old = (target / DATA_LINK).resolve() if (target / DATA_LINK).is_symlink() else None
    tmp_link = target / "..data_tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(new_dir.name)
    tmp_link.replace(target / DATA_LINK)
    visible = {PurePosixPath(name).parts[0] for name in payload}
    for name in visible:
        link = target / name
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{name}")
    for entry in target.iterdir():
        if not entry.name.startswith("..") and entry.name not in visible and entry.is_symlink():
            entry.unlink()
    if old is not None and old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return True


def set_ownership(directory: Path, fs_group: int | None, read_only: bool) -> None:
    """kubelet's SetVolumeOwnership (fsGroupChangePolicy Always)."""
    if fs_group is None:
        return
    mask = _RO_MASK if read_only else _RW_MASK
    for root, dirs, files in os.walk(directory):
        for name in [root, *(os.path.join(root, n) for n in [*dirs, *files])]:
            info = os.lstat(name)
            os.lchown(name, -1, fs_group)
            if stat.S_ISLNK(info.st_mode):
                continue
            mode = stat.S_IMODE(info.st_mode) | mask
            if stat.S_ISDIR(info.st_mode):
                mode |= _EXEC_MASK | stat.S_ISGID
            os.chmod(name, mode)


def directory_usage(directory: Path) -> int:
    """Bytes allocated under `directory` (what du counts)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def _mount_tmpfs(path: Path, size: int | None) -> None:
    options = "mode=0777" + (f",size={size}" if size else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


def mounts_under(directory: Path) -> list[Path]:
    """Mount points below `directory`, deepest first (for unmounting)."""
    prefix = str(directory).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = [Path(line.split()[4]) for line in lines if line.split()[4].startswith(prefix)]
    return sorted(set(points), key=lambda p: len(p.parts), reverse=True)


def unmount_all(directory: Path) -> None:
    for point in mounts_under(directory):
        result = subprocess.run(["umount", str(point)], capture_output=True)
        if result.returncode != 0:
            subprocess.run(["umount", "--lazy", str(point)], capture_output=True)


# ---- one pod's volumes --------------------------------------------------------------------

ObjectBytes = Callable[[str, str], Mapping[str, bytes] | None]  # (kind, name) -> data
TokenSource = Callable[[str, list[str], int], tuple[str, float]]  # -> (token, expiration)


@dataclass
class Token:
    value: str
    expiration: float
    expiration_seconds: int


class PodVolumes:
    """Sets up, refreshes and checks the volumes of one pod."""

    def __init__(
        self,
        pod_dir: Path,
        object_bytes: ObjectBytes,
        token_source: TokenSource,
        node_allocatable: Mapping[str, str],
        now: Callable[[], float],
    ) -> None:
        self.base = pod_dir / VOLUMES_DIR
        self.object_bytes = object_bytes
        self.token_source = token_source
        self.node_allocatable = node_allocatable
        self.now = now
        self.tokens: dict[tuple[str, tuple[str, ...], int], Token] = {}
        self.jitter = random.uniform(0, TOKEN_MAX_JITTER_SECONDS)
        self.ready: set[str] = set()

    def path(self, name: str) -> Path:
        return self.base / name

    def setup(self, pod: Mapping[str, Any]) -> dict[str, Path]:
        """Every volume of the pod, made or refreshed; their host paths by name."""
        spec = pod.get("spec") or {}
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        paths = {}
        for volume in spec.get("volumes") or []:
            name = str(volume["name"])
            try:
                self._setup_one(pod, volume, fs_group)
            except VolumeError as error:
                message = f'MountVolume.SetUp failed for volume "{name}" : {error}'
                raise VolumeError(message) from None
            paths[name] = self.path(name)
        return paths

    def _setup_one(
        self, pod: Mapping[str, Any], volume: Mapping[str, Any], fs_group: int | None
    ) -> None:
        name = str(volume["name"])
        target = self.path(name)
        if "emptyDir" in volume:
            if name in self.ready:
                return
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)
            source = volume["emptyDir"] or {}
            if source.get("medium") == "Memory":
                limit = source.get("sizeLimit")
                _mount_tmpfs(target, quantity.to_bytes(limit) if limit else None)
            elif source.get("medium"):
                raise VolumeError(f"emptyDir medium {source['medium']!r} is not supported here")
            set_ownership(target, fs_group, read_only=False)
            self.ready.add(name)
        elif "persistentVolumeClaim" in volume:
            if name not in self.ready:
                target.mkdir(parents=True, exist_ok=True)
                set_ownership(target, fs_group, read_only=False)
                self.ready.add(name)
        elif any(kind in volume for kind in ("configMap", "secret", "downwardAPI", "projected")):
            if write_atomically(target, self._payload(pod, volume)) or name not in self.ready:
                set_ownership(target, fs_group, read_only=True)
            self.ready.add(name)
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeError(
                f"volume type {', '.join(kinds)} is not supported by the local cluster's pod "
                "runner (emptyDir, configMap, secret, downwardAPI, projected and "
                "persistentVolumeClaim are)"
            )

    def _payload(
        self, pod: Mapping[str, Any], volume: Mapping[str, Any]
    ) -> dict[str, FileProjection]:
        if "configMap" in volume:
            source = volume["configMap"]
            return self._objects("ConfigMap", source, source.get("defaultMode", DEFAULT_MODE))
        if "secret" in volume:
            source = dict(volume["secret"])
            source["name"] = source.get("secretName")
            return self._objects("Secret", source, source.get("defaultMode", DEFAULT_MODE))
        if "downwardAPI" in volume:
            source = volume["downwardAPI"]
            return downward_payload(
                source.get("items") or [],
                pod,
                int(source.get("defaultMode", DEFAULT_MODE)),
                self.node_allocatable,
            )
        source = volume["projected"]
        default_mode = int(source.get("defaultMode", DEFAULT_MODE))
        payload: dict[str, FileProjection] = {}
        for part in source.get("sources") or []:
            if "serviceAccountToken" in part:
                payload.update(self._token(pod, part["serviceAccountToken"], default_mode))
            elif "configMap" in part:
                payload.update(self._objects("ConfigMap", part["configMap"], default_mode))
            elif "secret" in part:
                payload.update(self._objects("Secret", part["secret"], default_mode))
            elif "downwardAPI" in part:
                payload.update(
                    downward_payload(
                        part["downwardAPI"].get("items") or [],
                        pod,
                        default_mode,
                        self.node_allocatable,
                    )
                )
            else:
                raise VolumeError(f"projected source {sorted(part)} is not supported here")
        return payload

    def _objects(
        self, kind: str, source: Mapping[str, Any], default_mode: int
    ) -> dict[str, FileProjection]:
        name = str(source.get("name") or "")
        return key_payload(
            kind,
            name,
            self.object_bytes(kind, name),
            source.get("items") or [],
            int(default_mode),
            bool(source.get("optional")),
        )

    def _token(
        self, pod: Mapping[str, Any], source: Mapping[str, Any], default_mode: int
    ) -> dict[str, FileProjection]:
        seconds = int(source.get("expirationSeconds") or TOKEN_DEFAULT_SECONDS)
        audiences = tuple([str(source["audience"])] if source.get("audience") else [])
        account = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
        key = (account, audiences, seconds)
        token = self.tokens.get(key)
        if token is None or requires_refresh(self.now(), token.expiration, seconds, self.jitter):
            value, expiration = self.token_source(account, list(audiences), seconds)
            token = self.tokens[key] = Token(value, expiration, seconds)
        spec = pod.get("spec") or {}
        user = fs_user(pod)
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        # kubelet: 0600 for the pod's user when it has one (or fsGroup, which
        # SetVolumeOwnership then opens to 0640 for the group).
        mode = 0o600 if (user is not None or fs_group is not None) else default_mode
        return {str(source["path"]): FileProjection(token.value.encode(), mode, user)}

    def over_size_limit(self, pod: Mapping[str, Any]) -> tuple[str, str] | None:
        """(volume, limit) of a disk emptyDir using more than its sizeLimit (kubelet evicts)."""
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            source = volume.get("emptyDir")
            if source is None or source.get("medium") or not source.get("sizeLimit"):
                continue
            limit = str(source["sizeLimit"])
            if directory_usage(self.path(str(volume["name"]))) > quantity.to_bytes(limit):
                return str(volume["name"]), limit
        return None

    def teardown(self) -> None:
        unmount_all(self.base)


def decode_object(kind: str, document: Mapping[str, Any]) -> dict[str, bytes]:
    """A ConfigMap's or Secret's data as bytes, as the volume plugins see it."""
    data: dict[str, bytes] = {}
    if kind == "Secret":
        for key, value in (document.get("data") or {}).items():
            data[key] = base64.b64decode(value)
        for key, value in (document.get("stringData") or {}).items():
            data[key] = str(value).encode()
        return data
    for key, value in (document.get("data") or {}).items():
        data[key] = str(value).encode()
    for key, value in (document.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value)
    return data


def token_expiration(response: Mapping[str, Any]) -> float:
    stamp = str(response["status"]["expirationTimestamp"])
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return parsed.timestamp()
