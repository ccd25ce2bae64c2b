"""Knot DNS configuration for a secondary server (knot.conf and the zones include).

Rendered for Knot DNS 3.2 (Debian bookworm's knotd 3.2.6, the image's), from the
same `ZonePlan` as BIND 9's configuration, with the same meaning for every field
of the API wherever Knot can express it. Where it cannot, the configuration
says what Knot does instead and `RenderedConfig.server_limitations` /
`zone_limitations` say it in words, which the Zone's ConfigValid condition
carries (nothing is dropped silently). Every value goes through `render.tokens`.

Knot's configuration is a simplified YAML: sections (`server`, `key`, `remote`,
`acl`, `zone`, ...) that may repeat across included files, and identifiers that
must be defined before they are referenced. So knot.conf includes the key file
(from a Secret, as for BIND) before the zones file that names the keys.

How the API maps (docs/render.md, "Knot DNS"):
- primaries: one `remote` each, with its TSIG key; `master` lists them in order;
  `block-notify-after-transfer` on each, or a NOTIFY can wait ~1 s (see `_remotes`).
- NOTIFY: `automatic-acl` stays off, so a NOTIFY is accepted only through an ACL
  rule: the zone's primaries and notify.allowFrom by address, unsigned or signed
  with a key of the zone's primaries; and the relay key from anywhere. Knot
  matches a signed message only against rules naming its key (unlike BIND, whose
  address entries accept any key it knows), hence the second rule.
- allowTransfer: one `acl` rule per entry with `address`, `key` or both (then
  both must match); no rule, no transfer (Knot's default is deny).
- timers: `refresh-min-interval` and friends (Knot's floor for a refresh is 2 s).
- limits: `zone-max-size` (bytes, see `MAX_RECORD_WIRE_BYTES`) and
  `tcp-remote-io-timeout` (per message, not per transfer).
- storage: zone files, the journal and the timer database (which holds each
  zone's expire time) on the data volume, so a restarted replica serves its last
  copy until it expires.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence

import dns.name

from secondary_dns.api import TsigKey, agent_contract, limits
from secondary_dns.render import tokens
from secondary_dns.render.engine import (
    ZONES_INCLUDE,
    EnginePaths,
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
from secondary_dns.render.tokens import IPAddress, IPNetwork, UnsafeValueError

ENGINE = agent_contract.ENGINE_KNOT
KNOT_CONF = agent_contract.ENGINE_CONFIG_FILES[ENGINE]
ZONES_CONF = ZONES_INCLUDE
# The sections of a zone's part, in the order every shard file has them.
SECTIONS = ("remote", "acl", "zone")
PID_FILE = agent_contract.ENGINE_PID_FILES[ENGINE]
# Zone files beside BIND's naming: `<zone>.db` in the data directory. `%s` is
# Knot's formatter for the zone name without the final dot; zone names are
# restricted to letters, digits, `-` and `_` (tokens.config_name), so it needs
# no escaping.
ZONE_FILE_PATTERN = "%s.db"

# Knot 3.2 refuses a refresh-min-interval below 2 s (knot.conf(5), "Minimum: 2").
KNOT_MIN_REFRESH_SECONDS = 2
# tcp-remote-io-timeout is a signed 32-bit count of milliseconds (knotc conf-check
# refuses 2^31 and above): 24 days, 20 hours and change.
KNOT_MAX_IO_TIMEOUT_MS = 2**31 - 1
# The most one resource record can take in wire format without compression, which
# is what Knot's zone-max-size counts (knot.conf(5)): an owner name of 255 octets,
# type, class, TTL and RDLENGTH (10 octets) and 65535 octets of RDATA (RFC 1035
# §3.2.1, §4.1.3).
MAX_RECORD_WIRE_BYTES = 255 + 10 + 65535

RELAY_NOTIFY_ACL = "relay-notify"
INDENT = "    "


def _item(key: str, value: str, depth: int = 1) -> str:
    """`key: value`, indented for a section (depth 1) or the top level (depth 0)."""
    return f"{INDENT * depth}{key}: {value}"


def _list(values: Iterable[str]) -> str:
    return "[ " + ", ".join(values) + " ]"


def _entry(first_key: str, first_value: str, items: Iterable[str]) -> list[str]:
    """One block of a sequence section: `  - id: x`, its items aligned below `id`."""
    return [f"  - {first_key}: {first_value}", *items]


def _name(name: dns.name.Name, what: str) -> str:
    return tokens.config_name(name, what)


def _remote_address(address: IPAddress, port: int) -> str:
    return f"{tokens.unicast_address(address)}@{tokens.port(port)}"


def _acl_networks(networks: Iterable[IPNetwork]) -> str:
    return _list(tokens.network(network) for network in networks)


def _zone_id(zone: PlannedZone) -> str:
    return _name(zone.zone, "zone")


def _primary_id(zone: PlannedZone, index: int) -> str:
    return f"primary-{index}-{_zone_id(zone)}"


def _remotes(zone: PlannedZone) -> list[str]:
    lines: list[str] = []
    for index, primary in enumerate(zone.primaries):
        items = [_item("address", _remote_address(primary.address, primary.port))]
        if primary.key_name is not None:
            items.append(_item("key", _name(primary.key_name, "TSIG key name")))
        # Replicas notify nobody (as BIND's `notify no`), yet after every transfer
        # knotd 3.2 plans a NOTIFY event 1 s ahead in whole seconds (refresh.c
        # event_refresh: zone_schedule_notify(zone, 1)). A primary's NOTIFY in the
        # next wall-clock second then plans the refresh at that same second, which
        # events.c takes for "next event unchanged" and does not reschedule: the
        # refresh waits for the empty NOTIFY event, ~1 s after the transfer
        # (docs/render.md, "Knot DNS"). This option stops that event being planned.
        items.append(_item("block-notify-after-transfer", "on"))
        lines += _entry("id", _primary_id(zone, index), items)
    return lines


def _notify_acls(zone: PlannedZone) -> tuple[list[str], list[str]]:
    """The zone's NOTIFY rules (RFC 1996 §3.10): its text and the rule ids."""
    sources = _acl_networks(zone.notify_sources)
    zone_id = _zone_id(zone)
    lines = _entry(
        "id", f"notify-{zone_id}", [_item("address", sources), _item("action", "notify")]
    )
    ids = [f"notify-{zone_id}"]
    keys = sorted({p.key_name for p in zone.primaries if p.key_name is not None})
    if keys:
        # A primary that signs its NOTIFY with its transfer key: Knot matches a
        # signed message only against a rule that names the key.
        lines += _entry(
            "id",
            f"notify-signed-{zone_id}",
            [
                _item("address", sources),
                _item("key", _list(_name(key, "TSIG key name") for key in keys)),
                _item("action", "notify"),
            ],
        )
        ids.append(f"notify-signed-{zone_id}")
    return lines, ids


def _transfer_acls(zone: PlannedZone) -> tuple[list[str], list[str]]:
    """One rule per spec.allowTransfer entry; address AND key where it names both."""
    lines: list[str] = []
    ids: list[str] = []
    for index, entry in enumerate(zone.allow_transfer):
        rule_id = f"transfer-{index}-{_zone_id(zone)}"
        items: list[str] = []
        if entry.cidr is not None:
            items.append(_item("address", tokens.network(entry.cidr)))
        if entry.key_name is not None:
            items.append(_item("key", _name(entry.key_name, "TSIG key name")))
        lines += _entry("id", rule_id, [*items, _item("action", "transfer")])
        ids.append(rule_id)
    return lines, ids


def _timers(zone: PlannedZone) -> tuple[list[str], list[str]]:
    """refresh/retry floors and ceilings, and what Knot cannot take as written."""
    items: list[str] = []
    notes: list[str] = []
    for option, field_name, value, floor in (
        (
            "refresh-min-interval",
            "minRefreshSeconds",
            zone.min_refresh_seconds,
            KNOT_MIN_REFRESH_SECONDS,
        ),
        (
            "refresh-max-interval",
            "maxRefreshSeconds",
            zone.max_refresh_seconds,
            KNOT_MIN_REFRESH_SECONDS,
        ),
        ("retry-min-interval", "minRetrySeconds", zone.min_retry_seconds, limits.MIN_TIMER_SECONDS),
        ("retry-max-interval", "maxRetrySeconds", zone.max_retry_seconds, limits.MIN_TIMER_SECONDS),
    ):
        if value is None:
            continue
        if value < floor:
            notes.append(
                f"spec.timers.{field_name} is {value} s, but Knot DNS refreshes a zone at "
                f"most every {floor} s ({option} {floor} is rendered)"
            )
            value = floor
        items.append(
            _item(option, tokens.integer(value, limits.MIN_TIMER_SECONDS, limits.MAX_TIMER_SECONDS))
        )
    return items, notes


def zone_max_size(max_records: int) -> int:
    """zone-max-size for spec.limits.maxRecords: the most that many records can take."""
    return max_records * MAX_RECORD_WIRE_BYTES


def _server_limits(settings: RenderSettings) -> tuple[list[str], list[str], list[str]]:
    """(server items, zone items, limitations) for spec.limits."""
    server_limits = settings.server.limits
    server_items: list[str] = []
    zone_items: list[str] = []
    notes: list[str] = []
    if server_limits.max_records is None:
        # The default exists to bound memory, not to count records: no note.
        zone_items.append(_item("zone-max-size", str(zone_max_size(limits.DEFAULT_RECORDS))))
    else:
        records = int(
            tokens.integer(server_limits.max_records, limits.MIN_RECORDS, limits.MAX_RECORDS)
        )
        size = zone_max_size(records)
        zone_items.append(_item("zone-max-size", str(size)))
        notes.append(
            f"spec.limits.maxRecords is {records}, but Knot DNS limits a zone by its size, "
            f"not its records: zone-max-size {size} bytes is rendered, the most {records} "
            "records can take, so no zone within the record limit is refused and a zone of "
            "more but smaller records is accepted up to that size"
        )
    if server_limits.transfer_timeout_seconds is not None:
        seconds = int(
            tokens.integer(
                server_limits.transfer_timeout_seconds,
                limits.MIN_TRANSFER_TIMEOUT,
                limits.MAX_TRANSFER_TIMEOUT,
            )
        )
        milliseconds = min(seconds * 1000, KNOT_MAX_IO_TIMEOUT_MS)
        server_items.append(_item("tcp-remote-io-timeout", str(milliseconds)))
        capped = (
            f", capped at Knot's maximum of {KNOT_MAX_IO_TIMEOUT_MS // 1000} s"
            if milliseconds < seconds * 1000
            else ""
        )
        notes.append(
            f"spec.limits.transferTimeoutSeconds is {seconds}, but Knot DNS cannot limit a "
            "transfer's total time: it is rendered as the longest wait for each message of "
            f"a transfer (tcp-remote-io-timeout {milliseconds} ms{capped})"
        )
    return server_items, zone_items, notes


def _listen(paths: EnginePaths) -> str:
    port = tokens.port(paths.port, "listen port")
    if not paths.listen_addresses:
        # Knot: 0.0.0.0 and :: mean every address of the pod.
        return _list([f"0.0.0.0@{port}", f"::@{port}"])
    return _list(f"{tokens.address(address)}@{port}" for address in paths.listen_addresses)


def _rate_limit(responses_per_second: int) -> tuple[list[str], list[str]]:
    """(mod-rrl section, default template items) for response rate limiting, or nothing for 0.

    As BIND's rate-limit (render.bind9): past the rate, every second answer is
    slipped (truncated, so a real client retries over TCP), the others dropped.
    """
    if responses_per_second == 0:
        return [], []
    rate = tokens.integer(
        responses_per_second,
        limits.MIN_RESPONSES_PER_SECOND,
        limits.MAX_RESPONSES_PER_SECOND,
        "spec.limits.responsesPerSecond",
    )
    items = [
        _item("rate-limit", rate),
        _item("slip", "2"),
        # The pod's agent probes the engine on loopback for readiness.
        _item("whitelist", _list(["127.0.0.0/8", "::1"])),
    ]
    section = ["mod-rrl:", *_entry("id", "default", items)]
    return [*section, ""], [_item("global-module", "mod-rrl/default")]


def render_knot_conf(
    paths: EnginePaths, server_items: Iterable[str], responses_per_second: int
) -> str:
    """The server-wide part; keys and zones come from the includes."""
    rrl_section, rrl_items = _rate_limit(responses_per_second)
    lines = [
        "# Rendered by secondary-dns; do not edit: the operator rewrites it.",
        "server:",
        _item("rundir", tokens.quoted_path(paths.run_dir, "run directory")),
        _item("pidfile", tokens.quoted_path(paths.run_dir / PID_FILE, "pid file")),
        _item("listen", _listen(paths)),
        # Do not tell the world which software and host this is (RFC 4892, RFC 5001).
        _item("identity", '""'),
        _item("version", '""'),
        _item("nsid", '""'),
        # NOTIFY is accepted through the zones' ACLs only, never implicitly from a
        # remote because it is a primary.
        _item("automatic-acl", "off"),
        *server_items,
        "",
        # The agent's channel: a UNIX socket in the run directory, not the network.
        "control:",
        _item(
            "listen",
            tokens.quoted_path(
                paths.run_dir / agent_contract.KNOT_CONTROL_SOCKET, "control socket"
            ),
        ),
        "",
        # The container's stderr is its log.
        "log:",
        *_entry("target", "stderr", [_item("any", "info")]),
        "",
        # Journal and timer database (each zone's refresh and expire times) on the
        # data volume, beside the zone files.
        "database:",
        _item("storage", tokens.quoted_path(paths.data_dir, "data directory")),
        "",
        *rrl_section,
        "template:",
        *_entry(
            "id",
            "default",
            [
                _item("storage", tokens.quoted_path(paths.data_dir, "data directory")),
                _item("file", f'"{ZONE_FILE_PATTERN}"'),
                # Write the zone file at once after every transfer: the copy a
                # restarted replica serves is the last one it had.
                _item("zonefile-sync", "0"),
                _item("journal-content", "changes"),
                *rrl_items,
            ],
        ),
        "",
        # TSIG secrets live in a file the agent writes from a Secret, never here;
        # included first because the zones name its keys.
        _item("include", tokens.quoted_path(paths.tsig_key_file, "TSIG key file"), 0),
        _item("include", tokens.quoted_path(paths.config_dir / ZONES_CONF, "zones file"), 0),
    ]
    return "\n".join(lines) + "\n"


def zone_part(zone: PlannedZone, zone_items: Sequence[str]) -> RenderedZone:
    """A zone's remotes, ACL rules and zone entry, and its timers' limitations."""
    comment = f"  {zone_comment(zone.ref)}"
    notify_lines, notify_ids = _notify_acls(zone)
    transfer_lines, transfer_ids = _transfer_acls(zone)
    timer_items, timer_notes = _timers(zone)
    primary_ids = [_primary_id(zone, index) for index in range(len(zone.primaries))]
    entry = _entry(
        "domain",
        _zone_id(zone),
        [
            _item("master", _list(primary_ids)),
            _item("acl", _list([RELAY_NOTIFY_ACL, *notify_ids, *transfer_ids])),
            *timer_items,
            *zone_items,
        ],
    )
    return RenderedZone(
        (
            ("remote", section_text((comment, *_remotes(zone)))),
            ("acl", section_text((comment, *notify_lines, *transfer_lines))),
            ("zone", section_text((comment, *entry))),
        ),
        tuple(timer_notes),
    )


def shard_text(parts: Sequence[RenderedZone]) -> str:
    """A shard's file: each section once, with every zone's lines of it in order."""
    sections: dict[str, list[str]] = {section: [] for section in SECTIONS}
    for part in parts:
        for section, lines in part.sections:
            sections[section].append(lines)
    text = ["# Rendered by secondary-dns; one entry per Zone object."]
    for section in SECTIONS:
        if sections[section]:
            text += ["", f"{section}:", *sections[section]]
    return "\n".join(text) + "\n"


def zones_include(shard_files: Sequence[str], settings: RenderSettings) -> str:
    """The relay's NOTIFY rule every zone names, then each shard's file."""
    lines = ["# Rendered by secondary-dns; the zones, in one file per shard."]
    if shard_files:
        relay_key = _name(settings.relay_key_name, "relay key name")
        lines += [
            "",
            "acl:",
            *_entry("id", RELAY_NOTIFY_ACL, [_item("key", relay_key), _item("action", "notify")]),
            "",
        ]
        lines += [
            _item("include", tokens.quoted_path(settings.paths.config_dir / name, "zones file"), 0)
            for name in shard_files
        ]
    return "\n".join(lines) + "\n"


def render_key_file(keys: Iterable[TsigKey]) -> str:
    """The `key` section for TSIG keys (RFC 8945): one per name, sorted."""
    lines: list[str] = []
    for key in unique_keys(keys):
        lines += _entry(
            "id",
            _name(key.name, "TSIG key name"),
            [
                _item("algorithm", _name(key.algorithm, "TSIG algorithm")),
                _item("secret", base64.b64encode(key.secret).decode("ascii")),
            ],
        )
    return "\n".join(["key:", *lines]) + "\n" if lines else ""


class KnotRenderer:
    engine = ENGINE

    def main_files(self, settings: RenderSettings) -> tuple[dict[str, str], tuple[str, ...]]:
        try:
            _name(settings.relay_key_name, "relay key name")
            server_items, _, server_notes = _server_limits(settings)
            knot_conf = render_knot_conf(
                settings.paths, server_items, settings.server.limits.responses_per_second
            )
            return {KNOT_CONF: knot_conf}, tuple(server_notes)
        except UnsafeValueError as error:
            raise RenderError(str(error)) from None

    def zone_part(self, zone: PlannedZone, settings: RenderSettings) -> RenderedZone:
        _, zone_items, _ = _server_limits(settings)
        return zone_part(zone, zone_items)

    def shard_text(self, parts: Sequence[RenderedZone]) -> str:
        return shard_text(parts)

    def zones_include(self, shard_files: Sequence[str], settings: RenderSettings) -> str:
        return zones_include(shard_files, settings)

    def render(self, request: RenderRequest) -> RenderedConfig:
        return render_at_once(self, request)

    def render_key_file(self, keys: Iterable[TsigKey]) -> str:
        return render_key_file(keys)


def render_knot(request: RenderRequest) -> RenderedConfig:
    return KnotRenderer().render(request)
