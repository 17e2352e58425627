"""deploy/observability: the rules pass `promtool check rules` and their unit tests
(`promtool test rules`), every alert is tested firing, the dashboard's queries parse,
and the Prometheus Operator files agree with the plain ones.

promtool is built from the Prometheus Go module by `make promtool` (into .cache/promtool-<version>);
`make test` and `make unit` build it first. Which metric names exist is checked against
a live service in tests/integration/test_observability_metrics.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability.queries import (
    OBSERVABILITY,
    PROMETHEUS_RULE,
    ROOT,
    RULE_TESTS,
    RULES,
    alert_names,
    all_queries,
    dashboard,
    metric_names,
    rule_groups,
)
from tests.unit.test_deploy import one


def promtool_path() -> Path:
    """Where `make promtool` puts the version the Makefile names."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    version = re.search(r"^PROMTOOL_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert version, "no PROMTOOL_VERSION in the Makefile"
    return ROOT / ".cache" / f"promtool-{version.group(1)}" / "promtool"



def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = promtool_path()
    if not tool.exists():
        pytest.fail(f"no {tool}: run `make promtool` (builds it with Go)", pytrace=False)
    result = subprocess.run([str(tool), *args], capture_output=True, text=True,
                            timeout=300, check=False, cwd=ROOT)
    assert result.returncode == 0, f"promtool {args[0]} {args[1]}:\n{result.stdout}{result.stderr}"
    return result


def test_rules_pass_promtool_check_with_lint():
    promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))


def test_alerts_pass_their_promtool_unit_tests():
    promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_has_a_test_where_it_fires_and_one_where_it_does_not():
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert alert_names() - firing == set(), "alerts never seen firing in a test"
    assert alert_names() - quiet == set(), "alerts never seen staying quiet in a test"


@pytest.mark.parametrize(("where", "expr"), list(all_queries()),
                         ids=[where for where, _ in all_queries()])
def test_every_query_parses_as_promql(where, expr):
    assert metric_names(expr), f"{where}: selects no metric"


def test_dashboard_panels_use_the_datasource_variable_and_unique_ids():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']}: no query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_prometheus_rule_has_the_same_groups_as_the_rule_file():
    (doc,) = yaml.safe_load_all(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    assert doc["kind"] == "PrometheusRule"
    assert doc["spec"]["groups"] == rule_groups()


def test_service_monitor_scrapes_the_service_http_port():
    (monitor,) = yaml.safe_load_all(
        (OBSERVABILITY / "kube-prometheus" / "servicemonitor.yaml").read_text(encoding="utf-8"))
    service = one("Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"
    # The rules select up{job="txingest"}: a ServiceMonitor's job is the Service's name.
    assert service["metadata"]["name"] == "txingest" and "jobLabel" not in monitor["spec"]


def test_kustomization_packs_the_dashboard_and_the_operator_files():
    kustomization = yaml.safe_load((OBSERVABILITY / "kustomization.yaml").read_text())
    resources = {Path(r).name for r in kustomization["resources"]}
    assert resources == {p.name for p in (OBSERVABILITY / "kube-prometheus").glob("*.yaml")}
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["txingest-dashboard.json"]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
