"""/metrics and /healthz against a running gateway."""

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.integration.gateway_proc import GatewayProcess
from tests.integration.sipp_runner import free_port
from tests.integration.test_gateway_calls import expect_status, final_response, header, sigterm_during_a_call
from tests.integration.test_relay import bridge, start_trunk

pytestmark = pytest.mark.integration


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def sample(text, name, **labels):
    """The value of one Prometheus sample (labels in any order), 0.0 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, label_text = metric.partition("{")
        found = dict(part.split("=", 1) for part in label_text.rstrip("}").split(",") if part)
        if base == name and {k: v.strip('"') for k, v in found.items()} == labels:
            return float(value)
    return 0.0


def test_metrics_count_decisions_setup_delay_and_refusals(make_gateway, tmp_path):
    port = free_port(kind=1)
    gw = make_gateway(metrics_port=port, extra_gateway='untrusted = "reject"')
    trunk = start_trunk(gw, tmp_path)
    assert bridge(gw, tmp_path).returncode == 0
    trunk.communicate(timeout=20)
    assert expect_status(gw, tmp_path, 403, organizer="nobody@contoso.com")[0].returncode == 0
    assert expect_status(gw, tmp_path, 403, local_ip="127.0.0.2", name="untrusted")[0].returncode == 0
    gw.wait_calls(2)

    status, text = get(port, "/metrics")
    assert status == 200
    assert sample(text, "dialout_calls_total", decision="allow", reason="allowed", bucket="tenant_pool") == 1
    assert sample(text, "dialout_calls_total", decision="deny", reason="organizer_unknown", bucket="none") == 1
    assert sample(text, "dialout_admission_refusals_total", reason="untrusted_source") == 1
    assert sample(text, "dialout_decision_seconds_count") == 2
    assert sample(text, "dialout_setup_seconds_count", outcome="answered") == 1
    assert sample(text, "dialout_setup_seconds_count", outcome="rejected") == 1
    assert sample(text, "dialout_active_calls") == 0
    assert sample(text, "dialout_ledger_write_errors_total") == 0
    assert sample(text, "dialout_billed_units_total", bucket="tenant_pool") == 1
    # The pool gauges are refreshed with the ledger probe (every few seconds).
    gw.wait_until(
        lambda: sample(get(port, "/metrics")[1], "dialout_pool_used_minutes", tenant="contoso") == 1,
        timeout_s=15,
        what="the pool gauges",
    )
    _, text = get(port, "/metrics")
    assert sample(text, "dialout_pool_used_minutes", tenant="contoso") == 1
    assert sample(text, "dialout_pool_size_minutes", tenant="contoso") == 1500
    assert "+33142685300" not in text  # no phone number in any label

    assert get(port, "/nope")[0] == 404


def test_healthz_turns_unready_while_draining(make_gateway, tmp_path):
    port = free_port(kind=1)
    gw = make_gateway(metrics_port=port)
    status, body = get(port, "/healthz")
    assert status == 200 and json.loads(body) == {
        "live": True,
        "ready": True,
        "draining": False,
        "store_ok": True,
        "active_calls": 0,
    }
    talking, trunk = sigterm_during_a_call(gw, tmp_path)
    status, body = get(port, "/healthz")
    assert status == 503 and json.loads(body)["draining"] is True and json.loads(body)["active_calls"] == 1
    talking.communicate(timeout=20)
    trunk.communicate(timeout=20)
    assert gw.proc.wait(15) == 0


@pytest.mark.postgres
def test_unreachable_ledger_makes_gateway_unready_and_calls_fail_closed(postgres_url, tmp_path):
    import psycopg

    db = f"hz_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    url = postgres_url.rsplit("/", 1)[0] + f"/{db}"
    port = free_port(kind=1)
    gw = GatewayProcess.create(tmp_path / "gw", store_url=url, metrics_port=port).start()
    try:
        assert get(port, "/healthz")[0] == 200
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and get(port, "/healthz")[0] == 200:
            time.sleep(0.5)
        status, body = get(port, "/healthz")
        assert status == 503 and json.loads(body)["store_ok"] is False

        # No call is placed that the ledger could not meter.
        result, trace = expect_status(gw, tmp_path, 503)
        assert result.returncode == 0
        response = final_response(trace, 503)
        assert header(response, "Reason") == 'SIP;cause=503;text="overloaded"'
        assert "ledger" in header(response, "Warning")
        assert gw.proc.poll() is None

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and get(port, "/healthz")[0] != 200:
            time.sleep(0.5)
        assert get(port, "/healthz")[0] == 200
    finally:
        gw.stop()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
