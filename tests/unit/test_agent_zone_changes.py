"""Zone-by-zone changes for named (rndc addzone/modzone/delzone): what the agent
reads from two configurations, and what it does with named's zone database."""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import pytest

from secondary_dns.agent import named
from secondary_dns.agent.control import ReloadResult, ZoneChanges
from secondary_dns.agent.engine import empty_new_zones
from secondary_dns.agent.named import (
    MAX_ZONE_COMMANDS,
    NamedControl,
    includes_only,
    named_zone_changes,
    zone_statements,
)
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout
from tests.unit.render_cases import golden_config

FULL = golden_config(agent_contract.ENGINE_BIND9, "full")


def statement(zone: str, primary: str = "192.0.2.1") -> str:
    return (
        f"# Zone dns/{zone}\n"
        f'zone "{zone}" {{\n'
        "\ttype secondary;\n"
        f'\tfile "/var/lib/secondary-dns/{zone}.db";\n'
        f"\tprimaries {{ {primary} port 53; }};\n"
        "};\n"
    )


def shard(*statements: str) -> str:
    return "# Rendered by secondary-dns; one statement per Zone object.\n\n" + "\n".join(statements)


def test_the_rendered_shards_read_as_one_statement_per_zone() -> None:
    shards = {name: text for name, text in FULL.items() if name.startswith("zones-")}
    read = {name: zone_statements(text) for name, text in shards.items()}
    assert all(statements for statements in read.values()), read
    body = read["zones-25.conf"]["2.0.192.in-addr.arpa"]  # type: ignore[index]
    assert body.startswith("{ type secondary; file ") and body.endswith(
        "max-transfer-idle-in 2; };"
    )
    assert "\n" not in body and "\t" not in body
    assert includes_only(FULL["zones.conf"]) and not includes_only(FULL["named.conf"])


def test_anything_but_zone_statements_does_not_read_as_zones() -> None:
    assert zone_statements(FULL["named.conf"]) is None
    assert zone_statements(shard(statement("a.test")).replace("};\n", "")) is None  # unclosed
    assert zone_statements(shard(statement("a.test"), statement("a.test"))) is None  # twice
    # A name rndc would not take as one word.
    assert zone_statements('zone "a b.test" {\n\ttype secondary;\n};\n') is None
    # Comments inside a statement are dropped (the body becomes one line).
    commented = 'zone "a.test" {\n\t# why\n\ttype secondary;\n};\n'
    assert zone_statements(commented) == {"a.test": "{ type secondary; };"}


def test_changed_shards_give_the_zones_added_changed_and_removed() -> None:
    running = {
        "named.conf": FULL["named.conf"],
        "zones.conf": 'include "/etc/secondary-dns/zones-01.conf";\n',
        "zones-01.conf": shard(statement("a.test"), statement("b.test")),
    }
    files = {
        "named.conf": FULL["named.conf"],
        # A new shard file: the include list changes, which needs no reload.
        "zones.conf": 'include "/etc/secondary-dns/zones-01.conf";\n'
        'include "/etc/secondary-dns/zones-02.conf";\n',
        "zones-01.conf": shard(statement("b.test", "192.0.2.9")),
        "zones-02.conf": shard(statement("c.test")),
    }
    changes = named_zone_changes(running, files)
    assert changes is not None
    assert changes.removed == ("a.test",)
    assert list(changes.modified) == ["b.test"] and "192.0.2.9" in changes.modified["b.test"]
    assert list(changes.added) == ["c.test"]
    assert changes.summary() == "1 added, 1 changed, 1 removed"
    # The same files (say, only a retransfer request changed): nothing to tell named.
    same = named_zone_changes(running, dict(running))
    assert same is not None and len(same) == 0


def test_a_changed_main_file_or_a_large_change_is_a_reload() -> None:
    running = {"named.conf": FULL["named.conf"], "zones-01.conf": shard(statement("a.test"))}
    main_changed = {**running, "named.conf": FULL["named.conf"].replace("20;", "30;")}
    assert main_changed["named.conf"] != running["named.conf"]
    assert named_zone_changes(running, main_changed) is None
    many = shard(*(statement(f"z{index}.test") for index in range(MAX_ZONE_COMMANDS + 1)))
    assert named_zone_changes(running, {**running, "zones-01.conf": many}) is None
    fits = shard(*(statement(f"z{index}.test") for index in range(MAX_ZONE_COMMANDS - 1)))
    assert named_zone_changes(running, {**running, "zones-01.conf": fits}) is not None


class Rndc(NamedControl):
    def __init__(self, layout: PodLayout, refuse: str = "") -> None:
        super().__init__(layout)
        self.calls: list[tuple[str, ...]] = []
        self.refuse = refuse

    def _rndc(self, command: str, *arguments: str) -> ReloadResult:
        self.calls.append((command, *arguments))
        if command == self.refuse:
            return ReloadResult(False, False, f"rndc: '{command}' failed: already exists")
        return ReloadResult(True, False, "")


def test_zone_changes_are_rndc_calls_removals_first(tmp_path: Path) -> None:
    control = Rndc(PodLayout(PurePosixPath(tmp_path)))
    changes = ZoneChanges(
        removed=("a.test",), modified={"b.test": "{ b };"}, added={"c.test": "{ c };"}
    )
    assert control.change_zones(changes) == ReloadResult(True, False, changes.summary())
    assert control.calls == [
        ("delzone", "a.test"),
        ("modzone", "b.test", "{ b };"),
        ("addzone", "c.test", "{ c };"),
    ]
    refusing = Rndc(PodLayout(PurePosixPath(tmp_path)), refuse="modzone")
    result = refusing.change_zones(changes)
    assert not result.ok and not result.unreachable and result.message.startswith("modzone b.test")
    assert [call[0] for call in refusing.calls] == ["delzone", "modzone"]


def test_a_reload_and_an_engine_start_empty_named_s_zone_database(tmp_path: Path) -> None:
    """named refuses to start or reconfigure with a zone both in its files and in the
    database of `rndc addzone`; the files hold every zone, so the database goes."""
    layout = PodLayout(PurePosixPath(tmp_path))
    database = Path(layout.new_zones_dir)
    database.mkdir(parents=True)
    (database / "_default.nzd").write_text("zones")
    (database / "_default.nzd-lock").write_text("")
    control = Rndc(layout)
    assert control.reload().ok and control.calls == [("reconfig",)]
    assert list(database.iterdir()) == []

    (database / "_default.nzd").write_text("zones")
    err = io.StringIO()
    empty_new_zones(layout, agent_contract.ENGINE_BIND9, err)
    assert list(database.iterdir()) == [] and "emptied" in err.getvalue()
    database.rmdir()
    empty_new_zones(layout, agent_contract.ENGINE_BIND9, err)
    assert database.is_dir()  # named needs it to exist
    assert named.MAX_ZONE_COMMANDS == MAX_ZONE_COMMANDS


def test_a_database_that_cannot_be_emptied_does_not_stop_the_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """named then says what is wrong ("already exists"), and the agent reports it as
    a refused configuration; an exception here would fail every pass instead."""
    layout = PodLayout(PurePosixPath(tmp_path))
    database = Path(layout.new_zones_dir)
    database.mkdir(parents=True)
    (database / "_default.nzd").mkdir()  # a directory: unlink() raises IsADirectoryError
    control = Rndc(layout)
    assert control.reload().ok and control.calls == [("reconfig",)]
    assert "could not empty" in caplog.text
    err = io.StringIO()
    empty_new_zones(layout, agent_contract.ENGINE_BIND9, err)
    assert "could not empty" in err.getvalue()
