"""The PromQL of deploy/observability, read with a real PromQL parser (promql-parser),
and the metric names it uses. Shared by the unit and integration tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
RULES = OBSERVABILITY / "txingest-rules.yaml"
DASHBOARD = OBSERVABILITY / "txingest-dashboard.json"
PROMETHEUS_RULE = OBSERVABILITY / "kube-prometheus" / "prometheusrule.yaml"
RULE_TESTS = ROOT / "tests" / "observability" / "alerts.test.yaml"

# Grafana's variables stand for label values and ranges; PromQL needs real ones.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*", "$job": ".*"}
# Series that come from elsewhere, not from the service: Prometheus's own scrape
# health and kube-state-metrics (readiness and container restarts, which the service
# cannot report about itself).
EXTERNAL_METRICS = frozenset({"up", "kube_pod_status_ready",
                              "kube_pod_container_status_restarts_total"})


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]


def rules() -> Iterator[dict[str, Any]]:
    for group in rule_groups():
        yield from group["rules"]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules() if "alert" in rule}


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL with the Grafana variables replaced)."""
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            yield panel["title"], expr


def all_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every rule and every dashboard panel."""
    for rule in rules():
        yield rule.get("alert") or rule["record"], rule["expr"]
    yield from dashboard_queries()


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (raises ValueError if it does not parse)."""
    names: set[str] = set()
    pending = [promql_parser.parse(expr)]
    while pending:
        node = pending.pop()
        if type(node).__name__ == "VectorSelector":
            if not node.name:
                raise ValueError(f"a selector without a metric name in {expr!r}")
            names.add(node.name)
        for attribute in ("expr", "lhs", "rhs", "args", "param", "vector_selector", "vs"):
            child = getattr(node, attribute, None)
            if child is not None:
                pending.extend(child if isinstance(child, list | tuple) else [child])
    return names


def used_metric_names() -> dict[str, set[str]]:
    """Metric name -> where it is used, less the names the rules record themselves."""
    used: dict[str, set[str]] = {}
    for where, expr in all_queries():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    for name in recorded_names():
        used.pop(name, None)
    return used


def exported_names(exposition: str) -> set[str]:
    """The names of the series a /metrics text offers (its sample lines, as stored)."""
    return {re.split(r"[{ ]", line, maxsplit=1)[0]
            for line in exposition.splitlines() if line and not line.startswith("#")}
