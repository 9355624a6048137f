"""docker/prometheus/alerts.yml and docker/grafana/dialout-gateway.json against
promtool and against what gateway/metrics.py declares.

promtool (Debian's `prometheus` package, installed by scripts/setup.sh --test)
is required: without it these tests fail, as the Kamailio tests do without
kamailio. tests/integration/test_monitoring_scrape.py checks the same names
against a real scrape of a running gateway.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from gateway.metrics import Metrics
from policy import Reason
from tests.monitoring import promql

# Label values the expressions may name, where the vocabulary is closed.
VOCABULARY = {
    "reason": {r.value for r in Reason},
    "decision": {"allow", "deny"},
    "outcome": {"answered", "rejected", "failed"},
    "class": {"timeout", "1xx", "3xx", "4xx", "5xx", "6xx"},  # Metrics.trunk_attempt
    "job": {"dialout-gateway"},  # docker/prometheus/prometheus.yml
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail(
            "promtool not found: the Debian package `prometheus` is needed (scripts/setup.sh --test)", pytrace=False
        )
    return path


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=promql.REPO, capture_output=True, text=True, timeout=60)


def test_alert_rules_pass_promtool_check(promtool):
    result = run(promtool, "check", "rules", str(promql.ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_synthetic_series(promtool):
    """tests/monitoring/alerts_test.yml: trunk down, pool at 80 % and 100 %, a reject
    burst, a fraud trip, ledger lag, an instance not ready or gone."""
    result = run(promtool, "test", "rules", str(promql.ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"]
        for test in yaml.safe_load(promql.ALERT_TESTS.read_text())["tests"]
        for t in test.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert {"DialoutTrunkDown", "DialoutTenantPoolExhausted", "DialoutTenantPoolNearlyUsed"} <= tested
    assert tested <= set(promql.alert_exprs())


def test_prometheus_config_passes_promtool_check(promtool):
    result = run(promtool, "check", "config", str(promql.PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_every_dashboard_query_is_valid_promql(promtool, tmp_path):
    """promtool has no "parse this expression" command: each query becomes a
    recording rule, and `promtool check rules` parses them."""
    exprs = promql.dashboard_exprs()
    assert len(exprs) >= 20
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs.values())],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", str(path))
    names = list(exprs)
    assert result.returncode == 0, (
        result.stdout + result.stderr + "\nqueries: " + "\n".join(f"query_{i}: {names[i]}" for i in range(len(names)))
    )


def _queries() -> dict[str, str]:
    out = {f"alert {name}": expr for name, expr in promql.alert_exprs().items()}
    out.update({f"panel {name}": expr for name, expr in promql.dashboard_exprs().items()})
    return out


def test_every_metric_label_and_value_named_is_one_the_gateway_exports():
    families = promql.exposed_families(Metrics())
    problems = []
    for where, expr in _queries().items():
        names = promql.metric_names(expr)
        if not names:
            problems.append(f"{where}: names no metric")
        labels_in_expr = set(promql.TARGET_LABELS)
        for name, matchers in promql.selectors(expr):
            if name in promql.PROMETHEUS_OWN:
                continue
            if name not in families:
                problems.append(f"{where}: {name} is not exported (exported: {sorted(families)})")
                continue
            labels_in_expr |= set(families[name])
            for label, op, value in matchers:
                if label not in families[name] and label not in promql.TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label!r}")
                elif label in VOCABULARY and op in ("=", "=~"):
                    unknown = set(value.split("|") if op == "=~" else [value]) - VOCABULARY[label]
                    if unknown:
                        problems.append(f"{where}: {label} {op} {value!r}: no such {label} {sorted(unknown)}")
        for label in promql.grouping_labels(expr) - labels_in_expr:
            problems.append(f"{where}: groups by {label!r}, which none of its metrics has")
    assert not problems, "\n".join(problems)


def test_every_legend_names_a_label_its_query_keeps():
    problems = []
    for title, target in promql.dashboard_targets():
        expr = promql.substitute(target["expr"])
        kept = promql.grouping_labels(expr) or promql.TARGET_LABELS
        for label in promql.legend_labels(target.get("legendFormat", "")) - kept:
            problems.append(f"{title} / {target['refId']}: legend {{{{{label}}}}} but the query keeps {sorted(kept)}")
    assert not problems, "\n".join(problems)


def test_dashboard_is_importable_grafana_json():
    dash = promql.dashboard()
    assert dash["uid"] == "dialout-gateway" and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert promql.metric_names(variables["instance"]["definition"]) <= set(promql.exposed_families(Metrics()))
    panels = promql.dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_dashboard_shows_every_family_the_gateway_exports():
    """A metric added to gateway/metrics.py without a panel shows up here."""

    def family(name: str) -> str:  # a histogram's _bucket, _sum and _count are one family
        return re.sub(r"_(bucket|sum|count)$", "", name)

    shown = {family(n) for e in promql.dashboard_exprs().values() for n in promql.metric_names(e)}
    missing = {family(n) for n in promql.exposed_families(Metrics())} - shown
    assert not missing, f"exported but on no panel: {sorted(missing)}"
