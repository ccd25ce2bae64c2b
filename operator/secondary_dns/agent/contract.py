"""What the operator and the agent agree on: labels, annotations, data keys, pod paths.

The operator (render/kubernetes.py) writes ConfigMaps and a Secret with these
names; the agent reads them and reports on its own Pod with the annotations
below. Both sides must change together; docs/agent.md is the prose version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from secondary_dns.render import EnginePaths
from secondary_dns.render import kubernetes as objects

# The names are defined once, where the operator builds the objects; the agent
# reads them from there so the two sides cannot drift apart.
PREFIX = "secondarydns.io/"

# ConfigMaps holding one server's engine configuration:
#   labels secondarydns.io/server=<SecondaryServer name>, secondarydns.io/role=config
LABEL_SERVER = objects.LABEL_SERVER
LABEL_ROLE = objects.LABEL_ROLE
ROLE_CONFIG = objects.ROLE_CONFIG

# On every config ConfigMap: RenderedConfig.config_hash, how many ConfigMaps make
# up that config, and the keys hash of the Secret the config needs.
ANNOTATION_CONFIG_HASH = objects.ANNOTATION_CONFIG_HASH
ANNOTATION_CONFIG_SHARDS = objects.ANNOTATION_CONFIG_SHARDS
# On the config ConfigMaps and on the key Secret.
ANNOTATION_KEYS_HASH = objects.ANNOTATION_KEYS_HASH

# The key Secret is `<server>-keys`; its data key holds the TSIG key file.
KEYS_SECRET_SUFFIX = "-keys"
KEYS_DATA_KEY = objects.KEY_FILE

# A file too big for one ConfigMap is stored as `<file>.part-0000`, `.part-0001`, ...
PART_SEPARATOR = objects.PART_SUFFIX
PART_DIGITS = 4

# JSON list of the absolute zone names the config serves; not a named file.
ZONES_FILE = objects.ZONES_JSON

# Reported by the agent on its own Pod (merge patch, only when a value changed).
ANNOTATION_APPLIED_CONFIG_HASH = objects.ANNOTATION_APPLIED_HASH
ANNOTATION_CONFIG_ERROR = objects.ANNOTATION_CONFIG_ERROR
ANNOTATION_ZONES_LOADED = objects.ANNOTATION_ZONES_LOADED
REPORTED_ANNOTATIONS = (
    ANNOTATION_APPLIED_CONFIG_HASH,
    ANNOTATION_CONFIG_ERROR,
    ANNOTATION_ZONES_LOADED,
)
# A config error message is one line, at most this many bytes of UTF-8.
CONFIG_ERROR_MAX_BYTES = 1024

DEFAULT_RUN_DIR = PurePosixPath("/run/secondary-dns")
DEFAULT_DATA_DIR = PurePosixPath("/var/lib/secondary-dns")
DEFAULT_LISTEN = "0.0.0.0:8081"


def keys_secret_name(server: str) -> str:
    return server + KEYS_SECRET_SUFFIX


def config_selector(server: str) -> str:
    """The label selector of the config ConfigMaps of one SecondaryServer."""
    return f"{LABEL_SERVER}={server},{LABEL_ROLE}={ROLE_CONFIG}"


@dataclass(frozen=True)
class PodLayout:
    """Where the agent writes inside the shared run directory (an emptyDir).

    config_dir is a symbolic link to one directory under versions_dir, so the
    whole configuration changes with one rename (see docs/agent.md). The marker
    is written after the first configuration passed named-checkconf; the engine
    container starts named only once it exists.
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
        return self.keys_dir / "tsig-keys.conf"

    @property
    def rndc_key_file(self) -> PurePosixPath:
        return self.keys_dir / "rndc.key"

    @property
    def marker(self) -> PurePosixPath:
        """JSON {configHash, keysHash} of the configuration on disk; absent before the first."""
        return self.run_dir / "applied.json"

    @property
    def named_conf(self) -> PurePosixPath:
        return self.config_dir / "named.conf"

    def engine_paths(self) -> EnginePaths:
        """The EnginePaths the operator must render with for this layout."""
        return EnginePaths(
            config_dir=self.config_dir,
            data_dir=self.data_dir,
            run_dir=self.run_dir,
            tsig_key_file=self.tsig_key_file,
            rndc_key_file=self.rndc_key_file,
        )
