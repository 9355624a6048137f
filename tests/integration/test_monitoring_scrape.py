"""Every metric the alert rules and the Grafana dashboard query is in a real
scrape of a running gateway.

A labelled metric shows in /metrics only once it has a sample, so the test
first drives what makes each one appear: two US trunks (the first answers
503, the second 200: trunk attempts, answers, failures, up), one call that
fails over and is answered (setup time, billed units), one rejected call
(organizer_unknown), one INVITE from an untrusted address (admission
refusal), and waits for the ledger probe that sets the pool gauges. Then it
scrapes once and looks every queried name up in what came back.
(tests/monitoring/ checks the labels and values against the declarations.)
"""

from __future__ import annotations

import time

import pytest

from tests.integration.sipp_runner import free_port
from tests.integration.test_gateway_calls import expect_status
from tests.integration.test_metrics import get
from tests.integration.test_routing import carrier, fail_scenario, trunk_table, trunks, us_call
from tests.monitoring import promql

pytestmark = pytest.mark.integration


def scraped_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def test_every_metric_the_alerts_and_the_dashboard_query_is_in_a_real_scrape(make_gateway, tmp_path):
    a, b = free_port(), free_port()
    gw = make_gateway(
        extra_gateway='untrusted = "reject"',
        trunks=trunks(trunk_table("us-503", a, ["US"], 1), trunk_table("us-ok", b, ["US"], 2)),
    )
    busy = carrier(tmp_path, "a", a, fail_scenario(tmp_path, 503, "Service Unavailable"))
    good = carrier(tmp_path, "b", b, "trunk_answer.xml")
    assert us_call(gw, tmp_path).returncode == 0
    busy.communicate(timeout=30)
    good.communicate(timeout=30)
    assert expect_status(gw, tmp_path, 403, organizer="nobody@contoso.com")[0].returncode == 0
    assert expect_status(gw, tmp_path, 403, local_ip="127.0.0.2", name="untrusted")[0].returncode == 0
    lines = gw.wait_calls(2)
    assert [a["trunk"] for a in lines[0]["trunk_attempts"]] == ["us-503", "us-ok"]

    deadline = time.monotonic() + 12  # the pool gauges come with the ledger probe (every 5 s)
    while True:
        status, text = get(gw.metrics_port, "/metrics")
        assert status == 200
        if "dialout_pool_used_minutes{" in text or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    scraped = scraped_names(text)

    queried = {}
    for where, exprs in (("alert", promql.alert_exprs()), ("panel", promql.dashboard_exprs())):
        for name, expr in exprs.items():
            for metric in promql.metric_names(expr) - promql.PROMETHEUS_OWN:
                queried.setdefault(metric, []).append(f"{where} {name}")
    assert len(queried) >= 15
    missing = {metric: users for metric, users in queried.items() if metric not in scraped}
    assert not missing, f"queried but not in the scrape: {missing}\nscraped: {sorted(scraped)}"
