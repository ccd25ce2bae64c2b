"""What the operator and the agent in each DNS pod agree on: names, paths and documents.

The operator writes ConfigMaps and a Secret with these labels, annotations and
data keys (render/children.py) and reads what each agent reports on its Pod and
on `GET /zones`; the agent (agent/) reads and writes the same. Both import this
module, which sits below both (api is the bottom layer), so the two sides
cannot drift apart; every document has one encoder and one parser here.
docs/agent.md is the prose version.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import dns.exception
import dns.name

# ---- labels ---------------------------------------------------------------------

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# On every object of the project, whatever made it (the operator's children,
# the Helm chart's objects): `app.kubernetes.io/part-of: secondary-dns`. The
# local cluster's pod runner runs exactly the pods that carry it.
LABEL_PART_OF = "app.kubernetes.io/part-of"
PART_OF = "secondary-dns"
# The SecondaryServer a child belongs to, and what a ConfigMap or Secret holds.
LABEL_SERVER = "secondarydns.io/server"
LABEL_ROLE = "secondarydns.io/role"
ROLE_CONFIG = "config"
ROLE_KEYS = "keys"

# ---- annotations -----------------------------------------------------------------

# The configuration is a root ConfigMap (`<server>-config`) and shard ConfigMaps
# (`<server>-zones-<shard>`): the zones by a stable hash of their names, so a
# one-zone change rewrites one shard and the root (docs/agent.md, "ConfigMaps").
# On the root: the configuration's hash (RenderedConfig.config_hash: the hash of
# the root's files, whose manifest SHARDS_FILE names every shard's hash) and the
# keys hash of the Secret it needs.
ANNOTATION_CONFIG_HASH = "secondarydns.io/config-hash"
# On the root and on the key Secret.
ANNOTATION_KEYS_HASH = "secondarydns.io/keys-hash"
# On a shard ConfigMap: its shard, the shard's hash (config_hash of its files),
# and how many ConfigMaps carry that shard (more than one only for a shard above
# a ConfigMap's size limit, its files then cut in parts).
ANNOTATION_SHARD = "secondarydns.io/shard"
ANNOTATION_SHARD_HASH = "secondarydns.io/shard-hash"
ANNOTATION_SHARD_CONFIGMAPS = "secondarydns.io/shard-configmaps"
# On the pod template: a change rolls the pods (the engine's global configuration).
ANNOTATION_ENGINE_HASH = "secondarydns.io/engine-config-hash"
# Reported by the agent on its own Pod (merge patch, only when a value changed).
ANNOTATION_APPLIED_CONFIG_HASH = "secondarydns.io/applied-config-hash"
ANNOTATION_CONFIG_ERROR = "secondarydns.io/config-error"
ANNOTATION_ZONES_LOADED = "secondarydns.io/zones-loaded"
REPORTED_ANNOTATIONS = (
    ANNOTATION_APPLIED_CONFIG_HASH,
    ANNOTATION_CONFIG_ERROR,
    ANNOTATION_ZONES_LOADED,
)
# A config error message is one line, at most this many bytes of UTF-8.
CONFIG_ERROR_MAX_BYTES = 1024

# ---- objects and data keys --------------------------------------------------------

# The key Secret is `<server>-keys`; its data key holds the TSIG key file.
KEYS_SECRET_SUFFIX = "-keys"
KEYS_DATA_KEY = "tsig-keys.conf"
# A file too big for one ConfigMap is stored as `<file>.part-0000`, `.part-0001`, ...
PART_SEPARATOR = ".part-"
PART_DIGITS = 4
# In the root: JSON {shard: hash} of every shard of the configuration.
SHARDS_FILE = "shards.json"
# In each shard: JSON list of the absolute zone names the shard serves (the
# agent's readiness); not an engine file.
ZONES_FILE = "zones.json"
# In a shard (so part of the configuration's hash): {zone: spec.retransferRequest}
# of its zones that have one. The agent asks for a full transfer when a replica
# applies a configuration with a new request.
RETRANSFER_FILE = "retransfer.json"
# A shard's files that are the agent's, not the engine's.
SHARD_METADATA_FILES = frozenset({ZONES_FILE, RETRANSFER_FILE})

# ---- engines ----------------------------------------------------------------------

# spec.engine.type values, and the file of the configuration each engine is
# started with (the renderer writes it, the agent checks it, `engine` runs it).
ENGINE_BIND9 = "bind9"
ENGINE_KNOT = "knot"
ENGINE_CONFIG_FILES = {ENGINE_BIND9: "named.conf", ENGINE_KNOT: "knot.conf"}
# In the run directory; the renderers name them in the engine's configuration.
ENGINE_PID_FILES = {ENGINE_BIND9: "named.pid", ENGINE_KNOT: "knot.pid"}
# knotd's control socket, in the run directory both containers share (knotc talks
# to it; a UNIX socket needs no key, and nothing outside the pod can reach it).
KNOT_CONTROL_SOCKET = "knot.sock"
# named's zone database of `rndc addzone`/`modzone` (new-zones-directory), in the
# run directory. The configuration files hold every zone too; this database only
# bridges the time until the next `rndc reconfig` or restart, before which it is
# emptied (docs/agent.md, "One zone without a reload").
NEW_ZONES_DIR = "new-zones"


def keys_secret_name(server: str) -> str:
    return server + KEYS_SECRET_SUFFIX


def config_selector(server: str) -> str:
    """The label selector of the config ConfigMaps of one SecondaryServer."""
    return f"{LABEL_SERVER}={server},{LABEL_ROLE}={ROLE_CONFIG}"


def root_config_map_name(server: str) -> str:
    return f"{server}-config"


def shard_config_map_name(server: str, shard: str, part: int = 0) -> str:
    """`<server>-zones-<shard>`, and `-<part>` for the further ConfigMaps of a big shard."""
    name = f"{server}-zones-{shard}"
    return f"{name}-{part}" if part else name


def shard_file_name(shard: str) -> str:
    """The engine's include file of a shard (in the configuration directory)."""
    return f"zones-{shard}.conf"


# ---- shards.json --------------------------------------------------------------------


def encode_shards_file(shards: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(shards.items())), indent=0) + "\n"


_SHARD = re.compile(r"^[0-9a-f]{1,8}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


def _json_object(text: str, file: str, what: str) -> dict[Any, Any] | str:
    """A JSON object read from one of the contract's files; an error text naming the file."""
    try:
        value = json.loads(text)
    except ValueError as error:
        return f"{file} is not JSON: {error}"
    if not isinstance(value, dict):
        return f"{file} must be a JSON object of {what}"
    return value


def parse_shards_file(text: str) -> dict[str, str] | str:
    """{shard: hash} of a root configuration; an error text when it is malformed."""
    value = _json_object(text, SHARDS_FILE, "shard: hash")
    if isinstance(value, str):
        return value
    for shard, hash_ in value.items():
        if not isinstance(shard, str) or not _SHARD.match(shard):
            return f"{SHARDS_FILE}: {shard!r} is not a shard name (lowercase hex)"
        if not isinstance(hash_, str) or not _HASH.match(hash_):
            return f"{SHARDS_FILE}: the hash of shard {shard} is not a SHA-256 in hex"
    return dict(value)


# ---- the pod ---------------------------------------------------------------------

AGENT_PORT = 8081
DEFAULT_LISTEN = f"0.0.0.0:{AGENT_PORT}"
DEFAULT_RUN_DIR = PurePosixPath("/run/secondary-dns")
DEFAULT_DATA_DIR = PurePosixPath("/var/lib/secondary-dns")
# The agent's HTTP paths: the kubelet's probes, and what the operator reads.
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
ZONES_PATH = "/zones"
# GET /zones?maxAge=SECONDS: the engine's state read at most SECONDS ago (the agent
# asks the engine again if its last look is older). Without it: the agent loop's
# last look, up to a poll interval old. The serial monitor reads every zone's
# serial of a replica in this one call instead of one SOA query per zone.
ZONES_MAX_AGE_PARAMETER = "maxAge"


@dataclass(frozen=True)
class PodLayout:
    """Where the agent writes inside the shared run directory (an emptyDir).

    config_dir is a symbolic link to one directory under versions_dir, so the
    whole configuration changes with one rename (see docs/agent.md). The marker
    is written after the first configuration passed named-checkconf; the engine
    container starts named only once it exists. The operator renders the
    engine's configuration for these paths (render/children.py `engine_paths`).
    """

    run_dir: PurePosixPath = DEFAULT_RUN_DIR
    data_dir: PurePosixPath = DEFAULT_DATA_DIR

    @property
    def config_dir(self) -> PurePosixPath:
        return self.run_dir / "config"

    @property
    def versions_dir(self) -> PurePosixPath:
        return self.run_dir / "config.d"

    @property
    def keys_dir(self) -> PurePosixPath:
        return self.run_dir / "keys"

    @property
    def tsig_key_file(self) -> PurePosixPath:
        return self.keys_dir / KEYS_DATA_KEY

    @property
    def rndc_key_file(self) -> PurePosixPath:
        return self.keys_dir / "rndc.key"

    @property
    def marker(self) -> PurePosixPath:
        """JSON {configHash, keysHash} of the configuration on disk; absent before the first."""
        return self.run_dir / "applied.json"

    @property
    def named_conf(self) -> PurePosixPath:
        return self.engine_conf(ENGINE_BIND9)

    def engine_conf(self, engine: str) -> PurePosixPath:
        """The file `engine` is started with (named.conf, knot.conf)."""
        return self.config_dir / ENGINE_CONFIG_FILES[engine]

    def engine_pid_file(self, engine: str) -> PurePosixPath:
        return self.run_dir / ENGINE_PID_FILES[engine]

    @property
    def knot_socket(self) -> PurePosixPath:
        return self.run_dir / KNOT_CONTROL_SOCKET

    @property
    def new_zones_dir(self) -> PurePosixPath:
        return self.run_dir / NEW_ZONES_DIR


# ---- zones.json -------------------------------------------------------------------


def encode_zones_file(zones: Iterable[dns.name.Name]) -> str:
    return json.dumps(sorted(zone.to_text() for zone in zones)) + "\n"


def canonical_order(name: dns.name.Name) -> tuple[bytes, ...]:
    """A sort key giving dns.name's own order (RFC 4034 6.1: labels from the root,
    case-insensitive): sorting 10,000 names by it takes milliseconds, by
    `Name.__lt__` (fullcompare per comparison) a good part of a second."""
    return tuple(label.lower() for label in reversed(name.labels))


def parse_zones_file(text: str) -> tuple[dns.name.Name, ...] | str:
    """zones.json: a JSON list of absolute zone names; an error text otherwise."""
    try:
        value = json.loads(text)
    except ValueError as error:
        return f"{ZONES_FILE} is not JSON: {error}"
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return f"{ZONES_FILE} must be a JSON list of zone names"
    zones: list[dns.name.Name] = []
    for item in value:
        if not item.endswith("."):
            return f"{ZONES_FILE}: zone {item!r} is not absolute (needs a final dot)"
        try:
            zones.append(dns.name.from_text(item))
        except dns.exception.DNSException as error:
            return f"{ZONES_FILE}: zone {item!r}: {error}"
    return tuple(sorted(set(zones), key=canonical_order))


# ---- retransfer.json --------------------------------------------------------------


def encode_retransfer_file(requests: Mapping[dns.name.Name, str]) -> str | None:
    """JSON {zone: request}; None when no zone has a request (no file at all)."""
    if not requests:
        return None
    document = {zone.to_text(): request for zone, request in requests.items()}
    return json.dumps(document, sort_keys=True, indent=0) + "\n"


def parse_retransfer_file(text: str | None) -> dict[dns.name.Name, str] | str:
    """The requests of a retransfer file (no file: none); an error text when it is malformed."""
    if text is None:
        return {}
    value = _json_object(text, RETRANSFER_FILE, "zone: request")
    if isinstance(value, str):
        return value
    requests: dict[dns.name.Name, str] = {}
    for zone, request in value.items():
        if not isinstance(request, str) or not request:
            return f"{RETRANSFER_FILE}: the request of {zone!r} must be a non-empty string"
        try:
            name = dns.name.from_text(zone)
        except dns.exception.DNSException as error:
            return f"{RETRANSFER_FILE}: zone {zone!r}: {error}"
        requests[name] = request
    return requests


# ---- GET /zones --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ZoneState:
    """One zone as the engine reports it (times as Unix seconds).

    `expires` is when the engine stops answering for the zone unless a refresh
    from a primary succeeds first: BIND moves it to "now + SOA expire" at every
    successful refresh (a transfer, or an SOA check that found the serial
    current). It is the engine's own record of its last successful refresh,
    which SOA probes from outside cannot see.
    """

    serial: int | None
    expires: float | None = None
    refresh: float | None = None

    @classmethod
    def read(cls, entry: Mapping[str, Any], time: Callable[[object], float | None]) -> ZoneState:
        """One zone's entry of a JSON document (ours, or BIND's statistics), times read by `time`.

        A value of the wrong type is unknown (None), never an error: the document
        comes from another process, maybe of another version.
        """
        serial = entry.get("serial")
        return cls(
            serial=serial if isinstance(serial, int) and not isinstance(serial, bool) else None,
            expires=time(entry.get("expires")),
            refresh=time(entry.get("refresh")),
        )


@dataclass(frozen=True)
class ZonesDocument:
    """The agent's answer to GET /zones: the applied configuration and each zone's state."""

    config_hash: str | None
    zones: Mapping[dns.name.Name, ZoneState] = field(default_factory=dict)

    def encode(self) -> bytes:
        zones = {
            zone.to_text(): {"serial": st.serial, "expires": st.expires, "refresh": st.refresh}
            for zone, st in sorted(self.zones.items())
        }
        return (json.dumps({"configHash": self.config_hash, "zones": zones}) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> ZonesDocument | None:
        """The document, None when `data` is not one; a malformed entry or value is left out.

        Lenient on purpose: the operator reads agents of other versions during an
        upgrade, and one odd zone must not hide the others' timers.
        """
        read = read_document(data)
        if read is None:
            return None
        document, zones = read
        config_hash = document.get("configHash")
        states: dict[dns.name.Name, ZoneState] = {}
        for zone, state in zones.items():
            if not isinstance(zone, str) or not isinstance(state, Mapping):
                continue
            try:
                name = dns.name.from_text(zone)
            except dns.exception.DNSException:
                continue
            states[name] = ZoneState.read(state, unix_time)
        return cls(config_hash if isinstance(config_hash, str) else None, states)


def read_document(data: bytes) -> tuple[Mapping[str, Any], Mapping[Any, Any]] | None:
    """A /zones body's JSON object and its "zones" mapping; None when it is not one."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    zones = document.get("zones") if isinstance(document, Mapping) else None
    if not isinstance(zones, Mapping):
        return None
    return document, zones


def unix_time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None
