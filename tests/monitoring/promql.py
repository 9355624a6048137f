"""The PromQL of docker/prometheus/alerts.yml and docker/grafana/dialout-gateway.json,
and what it names: metric names, label matchers, grouping labels.

Not a PromQL parser: promtool parses (test_alerts_and_dashboard.py), and
these regular expressions only pick out names, which is all the checks need.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "docker" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "tests" / "monitoring" / "alerts_test.yml"
PROMETHEUS_CONFIG = REPO / "docker" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "docker" / "grafana" / "dialout-gateway.json"

# Series Prometheus makes itself, not the gateway.
PROMETHEUS_OWN = {"up"}
# Labels Prometheus adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = {"instance", "job"}

# Grafana's variables, and what stands in for them when the expression is checked.
_GRAFANA_VARIABLES = [
    (re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}"), "5m"),
    (re.compile(r"\$instance\b|\$\{instance(:[a-z]+)?\}"), ".*"),
]

_METRIC = re.compile(r"(?<![\w:])(dialout_[a-z0-9_]+|up)(?![\w(])\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_exprs() -> dict[str, str]:
    """alert name (or recorded name) -> expr."""
    return {rule.get("alert") or rule["record"]: rule["expr"] for rule in alert_rules()}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return out


def dashboard_targets() -> list[tuple[str, dict]]:
    """(panel title, target) for every query of the dashboard."""
    return [(p["title"], t) for p in dashboard_panels() for t in p.get("targets", [])]


def dashboard_exprs() -> dict[str, str]:
    """'panel title / refId' -> expr, with Grafana's variables replaced."""
    return {f"{title} / {t['refId']}": substitute(t["expr"]) for title, t in dashboard_targets()}


def substitute(expr: str) -> str:
    for pattern, value in _GRAFANA_VARIABLES:
        expr = pattern.sub(value, expr)
    return expr


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric name, [(label, op, value)]) for every series selector naming a metric."""
    out = []
    for match in _METRIC.finditer(expr):
        out.append((match.group(1), _MATCHER.findall(match.group(2) or "")))
    return out


def metric_names(expr: str) -> set[str]:
    return {name for name, _ in selectors(expr)}


def grouping_labels(expr: str) -> set[str]:
    """Labels of by (...), without (...), on (...), ignoring (...) clauses."""
    out = set()
    for clause in _GROUPING.findall(expr):
        out |= {label.strip() for label in clause.split(",") if label.strip()}
    return out


def legend_labels(legend: str) -> set[str]:
    return set(_LEGEND.findall(legend or ""))


def exposed_families(metrics) -> dict[str, tuple[str, ...]]:
    """Names as a scrape shows them -> label names, for the families `metrics` declares.

    prometheus_client appends `_total` to a counter's name, and a histogram is
    `_bucket` (with `le`), `_sum` and `_count`; created series are disabled.
    """
    out: dict[str, tuple[str, ...]] = {}
    for family in metrics.registry.collect():
        collector = metrics.registry._names_to_collectors[  # the declared label names
            family.name + ("_total" if family.type == "counter" else "")
        ]
        labels = tuple(collector._labelnames)
        if family.type == "counter":
            out[family.name + "_total"] = labels
        elif family.type == "histogram":
            out[family.name + "_bucket"] = labels + ("le",)
            out[family.name + "_sum"] = labels
            out[family.name + "_count"] = labels
        else:
            out[family.name] = labels
    return out
