"""The chart's alerts and dashboard: real PromQL, only metrics the code exports.

`promtool` (built from the Prometheus module, hack/localcluster/build.py) checks
the rules as the chart renders them and runs the unit tests in
tests/unit/promtool/alerts_test.yaml; every metric name in an alert or a
dashboard query must be one that metrics.py or agent/metrics.py exports.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

import secondary_dns.metrics  # noqa: F401 (registers the operator's and relay's metrics)
from chart import ALL_TOGGLES, CHART, find, template, tool
from secondary_dns.agent.metrics import AgentMetrics

ALERTS = CHART / "files" / "prometheus" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboards" / "secondary-dns.json"
PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"
METRIC = re.compile(r"\bsecondarydns_[a-z0-9_]+\b")


def _sample_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created"),
        }.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def exported() -> set[str]:
    return {
        name
        for name in _sample_names(REGISTRY) | _sample_names(AgentMetrics().registry)
        if name.startswith("secondarydns_")
    }


def _alert_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def _dashboard_expressions() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            yield variable["name"], query["query"]


def test_the_exported_names_are_known() -> None:
    names = exported()
    # A few that must be there, so an empty set cannot pass the tests below.
    assert {
        "secondarydns_leader",
        "secondarydns_replica_seconds_behind",
        "secondarydns_notify_rejected_total",
        "secondarydns_reconcile_duration_seconds_bucket",
        "secondarydns_agent_zone_expires_timestamp_seconds",
    } <= names


@pytest.mark.parametrize(
    ("where", "expression"),
    [*_alert_expressions(), *_dashboard_expressions()],
    ids=lambda value: str(value)[:40],
)
def test_every_query_names_only_exported_metrics(where: str, expression: str) -> None:
    used = set(METRIC.findall(expression))
    assert used, f"{where}: no secondarydns_ metric in {expression!r}"
    assert used <= exported(), f"{where}: not exported: {sorted(used - exported())}"


def test_the_dashboard_covers_what_operators_watch() -> None:
    titles = " ".join(title for title, _ in _dashboard_expressions()).lower()
    for topic in ("serial lag", "in sync", "relay", "reconcile rate"):
        assert topic in titles


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("promtool")), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_promtool_accepts_the_rules_as_the_chart_renders_them(tmp_path: Path) -> None:
    (rule,) = find(template(tmp_path, ALL_TOGGLES), "PrometheusRule")
    rendered = tmp_path / "rules.yaml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    result = _promtool("check", "rules", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(1 for _ in _alert_expressions())} rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule with bad PromQL is refused."""
    broken: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    broken["groups"][0]["rules"][0]["expr"] = "max by (zone (secondarydns_leader"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = _promtool("check", "rules", str(path))
    assert result.returncode != 0 and "parse error" in (result.stdout + result.stderr)


def test_the_alerts_fire_when_they_should_and_only_then() -> None:
    result = _promtool("test", "rules", PROMTOOL_TESTS.name, cwd=PROMTOOL_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
