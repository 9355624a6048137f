"""docker/prometheus/alerts.yml and docker/grafana/dialout-gateway.json against
promtool and against what gateway/metrics.py declares.

promtool (Debian's `prometheus` package, installed by scripts/setup.sh --test)
is required: without it these tests fail, as the Kamailio tests do without
kamailio. tests/integration/test_monitoring_scrape.py checks the same names
against a real scrape of a running gateway.
"""

from __future__ import annotations

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
        pytest.fail("promtool not found: the Debian package `prometheus` is needed (scripts/setup.sh --test)",
                    pytrace=False)
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
    tested = {t["alertname"] for test in yaml.safe_load(promql.ALERT_TESTS.read_text())["tests"]
              for t in test.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert {"DialoutTrunkDown", "DialoutTenantPoolExhausted", "DialoutTenantPoolNearlyUsed"} <= tested
    assert tested <= set(promql.alert_exprs())


def test_prometheus_config_passes_promtool_check(promtool):
    result = run(promtool, "check", "config", str(promql.PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def _queries() -> dict[str, str]:
    return {f"alert {name}": expr for name, expr in promql.alert_exprs().items()}


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
