"""deploy/: the alert rules pass their promtool unit tests, and the rules and the dashboard use only metrics the
service exports (a renamed metric must fail here, not silence an alert in production)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from booking_sessions.observe.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "booking-sessions.json"
# Series that Prometheus makes itself, not the service.
PROMETHEUS_OWN = {"up"}
# PromQL words that look like metric names to the pattern below.
_METRIC = re.compile(r"\b((?:booking_sessions|process|python)_[a-z_]+|up)\b(?!\s*\()")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


def exported_series() -> set[str]:
    """Every series name a fresh ``Metrics`` can expose, also those of label sets not yet observed."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def rule_expressions() -> dict[str, str]:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in loaded["groups"] for rule in group["rules"]}


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def dashboard_expressions() -> dict[str, str]:
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in dashboard()["panels"]
        for target in panel["targets"]
    }


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    tool = promtool()
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run([tool, *command], cwd=PROMETHEUS, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"promtool {' '.join(command)}:\n{result.stdout}\n{result.stderr}"
        assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts") != []}
    assert fired == set(rule_expressions())


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_rules_and_dashboard_use_only_exported_metrics(source: str) -> None:
    expressions = rule_expressions() if source == "alerts" else dashboard_expressions()
    known = exported_series() | PROMETHEUS_OWN
    used = {where: set(_METRIC.findall(expr)) for where, expr in expressions.items()}
    unknown = {where: sorted(names - known) for where, names in used.items() if names - known}
    assert unknown == {}
    assert all(used.values()), "an expression names no metric at all"


def test_every_alert_says_how_bad_and_where_to_look() -> None:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    for rule in (rule for group in loaded["groups"] for rule in group["rules"]):
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["runbook"].startswith("README.md#"), rule["alert"]


def test_runbook_anchors_exist_in_the_readme() -> None:
    headings = re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    wanted = {rule["annotations"]["runbook"].split("#", 1)[1] for g in loaded["groups"] for rule in g["rules"]}
    assert wanted - anchors == set()


def test_dashboard_panels_are_distinct_and_use_the_provisioned_data_source() -> None:
    board = dashboard()
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["datasource"]["uid"] == uid and panel["targets"] for panel in board["panels"])


def test_compose_loads_the_tested_files() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    prometheus_mounts = {m.split(":")[0] for m in services["prometheus"]["volumes"]}
    assert prometheus_mounts == {"./deploy/prometheus/prometheus.yml", "./deploy/prometheus/alerts.yml"}
    grafana_mounts = {m.split(":")[0] for m in services["grafana"]["volumes"]}
    assert grafana_mounts == {"./deploy/grafana/provisioning", "./deploy/grafana/dashboards"}
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "booking-sessions"  # the rules select job="booking-sessions"
    assert job["static_configs"][0]["targets"] == ["booking-sessions:9108"]
