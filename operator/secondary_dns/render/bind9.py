"""BIND 9 configuration for a secondary server (named.conf and the zones include).

Rendered for what both 9.18 (Debian bookworm) and 9.20 (the production image)
accept: `primaries` (not `masters`), `type secondary`, no options that 9.20
removed. Every value goes through `render.tokens`; the text is assembled from
those tokens and fixed keywords only.

Choices worth knowing:
- `masterfile-format text`: BIND writes secondary zones as `raw` by default.
  Raw loads faster, but text can be read, diffed and checked with
  named-checkzone by a person debugging a pod, and secondary zones small
  enough to be managed one Kubernetes object each load quickly either way.
- Zone files live directly in the data directory, named after the zone
  (`example.com.db`); names are restricted to letters, digits, `-` and `_` by
  `tokens.config_name`, so the name is already a safe, unique file name.
- Transfer timeouts: BIND counts max-transfer-time-in/idle-in in minutes, so
  the server's transferTimeoutSeconds is rounded up to whole minutes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath

import dns.name

from secondary_dns.api import TsigKey, agent_contract, limits
from secondary_dns.render import tokens
from secondary_dns.render.engine import (
    ZONES_INCLUDE,
    EnginePaths,
    PlannedAclEntry,
    PlannedZone,
    RenderedConfig,
    RenderedZone,
    RenderError,
    RenderRequest,
    RenderSettings,
    section_text,
    unique_keys,
    zone_comment,
)
from secondary_dns.render.shards import render_at_once
from secondary_dns.render.tokens import UnsafeValueError

ENGINE = agent_contract.ENGINE_BIND9
NAMED_CONF = agent_contract.ENGINE_CONFIG_FILES[ENGINE]
ZONES_CONF = ZONES_INCLUDE

# BIND's defaults (ARM): a ceiling below the default floor would be raised back
# to the floor, so the floor follows the ceiling down when only it is set.
BIND_DEFAULT_MIN_REFRESH = 300
BIND_DEFAULT_MIN_RETRY = 500

INDENT = "\t"
# Concurrent transfers a replica runs from one primary (transfers-per-ns; see
# the options below).
TRANSFERS_PER_PRIMARY = 3
# BIND's part of a zone is one statement: one section.
_SECTION = ""


def _statement(*words: str) -> str:
    return " ".join(words) + ";"


def _block(head: str, body: Iterable[str], depth: int = 0) -> list[str]:
    """`head { ...; };` with each body line indented one level deeper."""
    pad = INDENT * depth
    return [f"{pad}{head} {{", *(f"{pad}{INDENT}{line}" for line in body), f"{pad}}};"]


def _inline_list(elements: Iterable[str]) -> str:
    """`{ a; b; }` on one line, as BIND prints address match lists."""
    items = list(elements)
    return "{ " + " ".join(f"{item};" for item in items) + " }" if items else "{ }"


def _key_element(name: dns.name.Name) -> str:
    return f"key {tokens.quoted_name(name, 'TSIG key name')}"


def zone_file_path(paths: EnginePaths, zone: dns.name.Name) -> PurePosixPath:
    return paths.data_dir / f"{tokens.config_name(zone, 'zone')}.db"


def _transfer_acl(entries: tuple[PlannedAclEntry, ...]) -> str:
    if not entries:
        return _inline_list(["none"])
    elements: list[str] = []
    for entry in entries:
        if entry.cidr is not None and entry.key_name is not None:
            # Address AND key (ARM, "Address Match Lists"): the inner list is a
            # negative match for clients outside the network, and BIND treats a
            # negative match of a nested list as "no match", so the next entry
            # is still tried for them.
            outside = _inline_list(["!" + tokens.network(entry.cidr), "any"])
            elements.append(_inline_list(["!" + outside, _key_element(entry.key_name)]))
        elif entry.cidr is not None:
            elements.append(tokens.network(entry.cidr))
        elif entry.key_name is not None:
            elements.append(_key_element(entry.key_name))
    return _inline_list(elements)


def _zone_statement(zone: PlannedZone, settings: RenderSettings) -> list[str]:
    paths = settings.paths
    server_limits = settings.server.limits
    primaries: list[str] = []
    for primary in zone.primaries:
        words = [tokens.unicast_address(primary.address), "port", tokens.port(primary.port)]
        if primary.key_name is not None:
            words.append(_key_element(primary.key_name))
        primaries.append(" ".join(words))
    # RFC 1996 §3.10: NOTIFY is accepted from the primaries; BIND accepts them
    # anyway, listing them keeps the ACL readable. The relay key lets the
    # operator's NOTIFY relay reach every replica.
    notify_sources = [tokens.address(primary.address) for primary in zone.primaries]
    notify_sources += [tokens.network(network) for network in zone.notify_allow_from]
    notify_sources = sorted(set(notify_sources), key=notify_sources.index)
    notify_sources.append(_key_element(settings.relay_key_name))

    body = [
        _statement("type", "secondary"),
        _statement("file", tokens.quoted_path(zone_file_path(paths, zone.zone), "zone file")),
        "primaries " + _inline_list(primaries) + ";",
        "allow-notify " + _inline_list(notify_sources) + ";",
        "allow-transfer " + _transfer_acl(zone.allow_transfer) + ";",
        # RFC 1995: ask for increments; primaries without a journal answer with
        # the whole zone, which BIND accepts.
        _statement("request-ixfr", "yes"),
    ]
    min_refresh, max_refresh = zone.min_refresh_seconds, zone.max_refresh_seconds
    if min_refresh is None and max_refresh is not None and max_refresh < BIND_DEFAULT_MIN_REFRESH:
        min_refresh = max_refresh
    min_retry, max_retry = zone.min_retry_seconds, zone.max_retry_seconds
    if min_retry is None and max_retry is not None and max_retry < BIND_DEFAULT_MIN_RETRY:
        min_retry = max_retry
    for option, value in (
        ("min-refresh-time", min_refresh),
        ("max-refresh-time", max_refresh),
        ("min-retry-time", min_retry),
        ("max-retry-time", max_retry),
    ):
        if value is not None:
            body.append(
                _statement(
                    option,
                    tokens.integer(value, limits.MIN_TIMER_SECONDS, limits.MAX_TIMER_SECONDS),
                )
            )
    # A transfer with more records than this fails and the zone keeps its
    # previous copy: protection from a primary that grows without bound.
    records = tokens.integer(
        limits.DEFAULT_RECORDS if server_limits.max_records is None else server_limits.max_records,
        limits.MIN_RECORDS,
        limits.MAX_RECORDS,
    )
    body.append(_statement("max-records", records))
    if server_limits.transfer_timeout_seconds is not None:
        minutes = tokens.integer(
            -(-server_limits.transfer_timeout_seconds // 60), 1, limits.MAX_TRANSFER_MINUTES
        )
        body.append(_statement("max-transfer-time-in", minutes))
        body.append(_statement("max-transfer-idle-in", minutes))

    return [zone_comment(zone.ref), *_block(f"zone {tokens.quoted_name(zone.zone, 'zone')}", body)]


def _listen(paths: EnginePaths) -> list[str]:
    port = tokens.port(paths.port, "listen port")
    if not paths.listen_addresses:
        return [f"listen-on port {port} {{ any; }};", f"listen-on-v6 port {port} {{ any; }};"]
    v4 = [tokens.address(a) for a in paths.listen_addresses if a.version == 4]
    v6 = [tokens.address(a) for a in paths.listen_addresses if a.version == 6]
    return [
        f"listen-on port {port} " + _inline_list(v4 or ["none"]) + ";",
        f"listen-on-v6 port {port} " + _inline_list(v6 or ["none"]) + ";",
    ]


def _rate_limit(responses_per_second: int) -> list[str]:
    """Response rate limiting (ARM "Response Rate Limiting"), or nothing for 0.

    A public authoritative server is otherwise a reflector: spoofed queries make
    it send larger answers to a victim. Past the rate, every second answer is
    slipped (sent truncated, so a real client retries over TCP) and the others
    dropped; the window of 5 s (BIND's default 15) lets a client that was
    limited recover quickly.
    """
    if responses_per_second == 0:
        return []
    rate = tokens.integer(
        responses_per_second,
        limits.MIN_RESPONSES_PER_SECOND,
        limits.MAX_RESPONSES_PER_SECOND,
        "spec.limits.responsesPerSecond",
    )
    return _block(
        "rate-limit",
        [
            _statement("responses-per-second", rate),
            _statement("window", "5"),
            _statement("slip", "2"),
            # The pod's agent probes the engine on loopback for readiness.
            "exempt-clients " + _inline_list(["127.0.0.0/8", "::1"]) + ";",
        ],
    )


def render_named_conf(paths: EnginePaths, responses_per_second: int) -> str:
    """The server-wide part; zones come from the zones include."""
    options = [
        _statement("directory", tokens.quoted_path(paths.data_dir, "data directory")),
        _statement(
            "pid-file",
            tokens.quoted_path(
                paths.run_dir / agent_contract.ENGINE_PID_FILES[agent_contract.ENGINE_BIND9],
                "pid file",
            ),
        ),
        _statement(
            "session-keyfile", tokens.quoted_path(paths.run_dir / "session.key", "session key")
        ),
        _statement(
            "managed-keys-directory", tokens.quoted_path(paths.data_dir, "managed keys directory")
        ),
        *_listen(paths),
        # Authoritative only: no recursion, no cache, no validation to do.
        _statement("recursion", "no"),
        _statement("dnssec-validation", "no"),
        _statement("allow-query", _inline_list(["any"])),
        # Nobody transfers a zone unless that zone's own ACL says so.
        _statement("allow-transfer", _inline_list(["none"])),
        # A secondary does not announce changes; the primary does (RFC 1996).
        _statement("notify", "no"),
        # Do not tell the world which software and host this is.
        _statement("version", "none"),
        _statement("hostname", "none"),
        _statement("server-id", "none"),
        _statement("minimal-responses", "yes"),
        # RFC 8482: one RRset for ANY, not the whole node (amplification).
        _statement("minimal-any", "yes"),
        *_rate_limit(responses_per_second),
        _statement("masterfile-format", "text"),
        # Per-zone counters (transfers, NOTIFY) on the statistics channel for the agent.
        _statement("zone-statistics", "yes"),
        # BIND sends at most serial-query-rate refresh queries a second (default
        # 20) and runs 2 transfers per primary: a replica starting with 2,000
        # zones took 102 s to serve them all, 10,000 would take over 8 minutes
        # (Knot, without such limits: 3.5 s; bench/many_zones.py). 500 SOA
        # queries a second is little for a primary.
        _statement("serial-query-rate", "500"),
        # A primary caps its outgoing transfers (BIND's transfers-out, 10 by
        # default) and answers one over its cap with SERVFAIL, which a replica
        # retries only a minute later: at 10 per replica, 3 replicas loading
        # 1,000 new zones together got 800 SERVFAILs and 2 % of the zones came a
        # minute late (bench/scale.py). 3 replicas x 3 stay within 10; each
        # transfer of a small zone takes milliseconds, so 3 at a time still
        # loads hundreds of zones a second.
        _statement("transfers-per-ns", str(TRANSFERS_PER_PRIMARY)),
        # The agent adds, changes and removes single zones with `rndc addzone`,
        # `modzone` and `delzone` instead of a reconfigure, which at 10,000 zones
        # stops named answering for 0.3-1.1 s (bench/catalog_zones.py). named
        # keeps those zones in a database in the run directory, which the agent
        # empties before every reconfigure and the engine container before named
        # starts: the configuration files, which hold every zone, stay the truth.
        _statement("allow-new-zones", "yes"),
        _statement(
            "new-zones-directory",
            tokens.quoted_path(paths.run_dir / agent_contract.NEW_ZONES_DIR, "new zones directory"),
        ),
    ]
    rndc_key = tokens.quoted_name(paths.rndc_key_name, "rndc key name")
    control_port = tokens.port(paths.control_port, "control port")
    statistics_port = tokens.port(paths.statistics_port, "statistics port")
    lines = [
        "# Rendered by secondary-dns; do not edit: the operator rewrites it.",
        *_block("options", options),
        "",
        # The container's stderr is its log; -g ignores this block, -f uses it.
        *_block(
            "logging",
            [
                *_block(
                    "channel stderr_log",
                    [
                        "stderr;",
                        "severity info;",
                        "print-time yes;",
                        "print-category yes;",
                        "print-severity yes;",
                    ],
                ),
                "category default { stderr_log; };",
                "category lame-servers { null; };",
            ],
        ),
        "",
        # The pod agent's channels: localhost only, never on the pod address.
        "statistics-channels {",
        f"{INDENT}inet 127.0.0.1 port {statistics_port} allow {{ 127.0.0.1; }};",
        "};",
        _statement("include", tokens.quoted_path(paths.rndc_key_file, "rndc key file")),
        "controls {",
        f"{INDENT}inet 127.0.0.1 port {control_port} allow {{ 127.0.0.1; }} "
        f"keys {{ {rndc_key}; }};",
        "};",
        "",
        # TSIG secrets live in a file the agent writes from Secrets, never here.
        _statement("include", tokens.quoted_path(paths.tsig_key_file, "TSIG key file")),
        _statement("include", tokens.quoted_path(paths.config_dir / ZONES_CONF, "zones file")),
    ]
    return "\n".join(lines) + "\n"


def render_key_file(keys: Iterable[TsigKey]) -> str:
    """`key` statements for TSIG keys (RFC 8945): one per name, sorted."""
    lines: list[str] = []
    for key in unique_keys(keys):
        secret = base64.b64encode(key.secret).decode("ascii")
        lines += _block(
            f"key {tokens.quoted_name(key.name, 'TSIG key name')}",
            [
                _statement("algorithm", tokens.config_name(key.algorithm, "TSIG algorithm")),
                _statement("secret", f'"{secret}"'),
            ],
        )
    return "\n".join(lines) + "\n" if lines else ""


class Bind9Renderer:
    engine = ENGINE

    def main_files(self, settings: RenderSettings) -> tuple[dict[str, str], tuple[str, ...]]:
        try:
            tokens.config_name(settings.relay_key_name, "relay key name")
            named_conf = render_named_conf(
                settings.paths, settings.server.limits.responses_per_second
            )
            return {NAMED_CONF: named_conf}, ()
        except UnsafeValueError as error:
            raise RenderError(str(error)) from None

    def zone_part(self, zone: PlannedZone, settings: RenderSettings) -> RenderedZone:
        return RenderedZone(((_SECTION, section_text(_zone_statement(zone, settings))),))

    def shard_text(self, parts: Sequence[RenderedZone]) -> str:
        lines = ["# Rendered by secondary-dns; one statement per Zone object."]
        for part in parts:
            for _, statement in part.sections:
                lines += ["", statement]
        return "\n".join(lines) + "\n"

    def zones_include(self, shard_files: Sequence[str], settings: RenderSettings) -> str:
        lines = ["# Rendered by secondary-dns; the zones, in one file per shard."]
        config_dir = settings.paths.config_dir
        lines += [
            _statement("include", tokens.quoted_path(config_dir / name, "zones file"))
            for name in shard_files
        ]
        return "\n".join(lines) + "\n"

    def render(self, request: RenderRequest) -> RenderedConfig:
        return render_at_once(self, request)

    def render_key_file(self, keys: Iterable[TsigKey]) -> str:
        return render_key_file(keys)


def render_bind9(request: RenderRequest) -> RenderedConfig:
    return Bind9Renderer().render(request)
