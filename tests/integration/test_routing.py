"""The carrier side through the real gateway: several trunks, routing by
destination, failover, digest authentication, caller ID, trunk health.

Each trunk is a SIPp UAS on its own port; the bridge is a SIPp UAC. The
fixtures check afterwards that no call was left live and stdout was JSON.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.gateway_proc import example_policy_text
from tests.integration.sipp_runner import free_port, run_sipp, scenario_from_template
from tests.integration.test_relay import bridge, received_messages

pytestmark = pytest.mark.integration

US = "+12125550100"
FR = "+33142685300"


def trunks(*tables: str) -> str:
    return "\n".join(tables)


def trunk_table(name: str, port: int, destinations, priority: int = 1, extra: str = "") -> str:
    dests = ", ".join(f'"{d}"' for d in destinations)
    return (
        f'[[trunks]]\nname = "{name}"\nuri = "sip:127.0.0.1:{port}"\ndestinations = [{dests}]\n'
        f"priority = {priority}\nanswer_timeout_s = 6\n{extra}\n"
    )


def carrier(tmp_path, name: str, port: int, scenario: str, *, calls: int = 1, extra=None, timeout_s: float = 30):
    return run_sipp(
        scenario,
        "",
        tmp_path / name,
        calls=calls,
        local_port=port,
        extra=["-mp", str(free_port()), "-trace_msg", *(extra or [])],
        background=True,
        timeout_s=timeout_s,
    )


def fail_scenario(tmp_path, status: int, phrase: str) -> str:
    return scenario_from_template("trunk_fail.xml.tmpl", tmp_path / "scenarios", status=status, phrase=phrase)


def us_call(gw, tmp_path, **kw):
    return bridge(gw, tmp_path, organizer="erin@fabrikam.com", number=US, location="US", **kw)


def header(message: str, name: str) -> str:
    for line in message.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def test_fr_route_authenticates_with_digest_and_presents_the_tenant_caller_id(make_gateway, tmp_path, monkeypatch):
    monkeypatch.setenv("FR_TRUNK_PASSWORD", "s3cret")
    fr_port, us_port = free_port(), free_port()
    policy = example_policy_text().replace('id = "contoso"\n', 'id = "contoso"\ncaller_id = "+33142685399"\n', 1)
    gw = make_gateway(
        policy_text=policy,
        trunks=trunks(
            trunk_table(
                "europe",
                fr_port,
                ["FR"],
                extra='username = "gw"\npassword_env = "FR_TRUNK_PASSWORD"\n'
                'caller_id = "sip:+33100000000@carrier-eu.example"\np_asserted_identity = true',
            ),
            trunk_table("north-america", us_port, ["US", "CA"]),
        ),
    )
    trunk = carrier(
        tmp_path,
        "fr",
        fr_port,
        "trunk_auth.xml",
    )
    result = bridge(gw, tmp_path)
    _, err = trunk.communicate(timeout=30)
    assert result.returncode == 0, result.stderr[-1500:]
    assert trunk.returncode == 0, err[-1500:]
    invites = [m for m in received_messages(tmp_path / "fr") if m.startswith("INVITE ")]
    assert len(invites) == 2 and "Authorization: Digest" in invites[1]
    assert "+33142685399@carrier-eu.example" in header(invites[1], "From")  # the tenant's number
    assert "+33142685399" in header(invites[1], "P-Asserted-Identity")
    line = gw.wait_calls(1)[0]
    assert line["trunk"] == "europe" and line["trunk_attempts"] == [{"trunk": "europe", "status": 200}]
    assert "s3cret" not in gw.log_path.read_text()


def test_us_route_fails_over_from_a_503_trunk_to_the_next(make_gateway, tmp_path):
    a, b = free_port(), free_port()
    gw = make_gateway(trunks=trunks(trunk_table("us-a", a, ["US"], 1), trunk_table("us-b", b, ["US"], 2)))
    busy = carrier(tmp_path, "a", a, fail_scenario(tmp_path, 503, "Service Unavailable"))
    good = carrier(tmp_path, "b", b, "trunk_answer.xml")
    result = us_call(gw, tmp_path)
    busy.communicate(timeout=30)
    good.communicate(timeout=30)
    assert result.returncode == 0, result.stderr[-1500:]
    assert busy.returncode == 0 and good.returncode == 0
    line = gw.wait_calls(1)[0]
    assert line["trunk"] == "us-b" and line["bridge_status"] == 200
    assert line["trunk_attempts"] == [{"trunk": "us-a", "status": 503}, {"trunk": "us-b", "status": 200}]
    assert line["billed_units"] == 1
    assert gw.metric('dialout_trunk_failures_total{class="5xx",trunk="us-a"}') == 1
    from ops.logs import summarize_path  # `dialout-gw logs … summary` reads the real line the same way

    summary = summarize_path(str(gw.log_path)).to_dict()["trunks"]
    assert summary["failovers"] == [{"from": "us-a", "to": "us-b", "calls": 1}]
    assert [(t["trunk"], t["attempts"], t["answers"]) for t in summary["trunks"]] == [("us-a", 1, 0), ("us-b", 1, 1)]


def test_a_486_is_not_failed_over(make_gateway, tmp_path):
    a, b = free_port(), free_port()
    gw = make_gateway(trunks=trunks(trunk_table("us-a", a, ["US"], 1), trunk_table("us-b", b, ["US"], 2)))
    busy = carrier(tmp_path, "a", a, fail_scenario(tmp_path, 486, "Busy Here"))
    from tests.integration.test_gateway_calls import expect_status

    result, _ = expect_status(gw, tmp_path, 486, organizer="erin@fabrikam.com", number=US, location="US")
    busy.communicate(timeout=30)
    assert result.returncode == 0 and busy.returncode == 0
    line = gw.wait_calls(1)[0]
    assert line["trunk_attempts"] == [{"trunk": "us-a", "status": 486}] and line["bridge_status"] == 486


def test_a_trunk_that_never_answers_is_given_up_after_its_setup_timeout(make_gateway, tmp_path):
    a, b = free_port(), free_port()
    gw = make_gateway(
        trunks=trunks(trunk_table("us-a", a, ["US"], 1, "setup_timeout_s = 1"), trunk_table("us-b", b, ["US"], 2))
    )
    silent = carrier(tmp_path, "a", a, "trunk_silent.xml")
    good = carrier(tmp_path, "b", b, "trunk_answer.xml")
    started = time.monotonic()
    result = us_call(gw, tmp_path)
    good.communicate(timeout=30)
    silent.kill()
    assert result.returncode == 0, result.stderr[-1500:]
    line = gw.wait_calls(1)[0]
    assert line["trunk"] == "us-b" and [a["trunk"] for a in line["trunk_attempts"]] == ["us-a", "us-b"]
    assert line["setup_ms"] < 4000 and time.monotonic() - started < 15


def test_an_unrouted_destination_gets_404_no_route_and_reserves_nothing(make_gateway, tmp_path):
    gw = make_gateway(trunks=trunks(trunk_table("us-a", free_port(), ["US", "CA"])))
    from tests.integration.test_gateway_calls import expect_status, final_response

    result, trace = expect_status(gw, tmp_path, 404)  # alice -> +33142685300 (FR)
    assert result.returncode == 0
    assert header(final_response(trace, 404), "Reason") == 'SIP;cause=404;text="no_route"'
    line = gw.wait_calls(1)[0]
    assert line["reason"] == "no_route" and line["decision"] == "deny" and line["bridge_status"] == 404
    import sqlite3

    with sqlite3.connect(gw.store_url[len("sqlite:///") :]) as conn:
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 0


def test_a_trunk_marked_down_is_skipped(make_gateway, tmp_path):
    a, b = free_port(), free_port()
    gw = make_gateway(
        trunks=trunks(trunk_table("us-a", a, ["US"], 1, "down_after = 2"), trunk_table("us-b", b, ["US"], 2))
    )
    busy = carrier(tmp_path, "a", a, fail_scenario(tmp_path, 503, "Service Unavailable"), calls=2)
    good = carrier(tmp_path, "b", b, "trunk_answer.xml", calls=3)
    for i in range(3):
        result = us_call(gw, tmp_path / f"call{i}")
        assert result.returncode == 0, result.stderr[-1500:]
        gw.wait_calls(i + 1)
    good.communicate(timeout=30)
    busy.communicate(timeout=30)
    lines = gw.call_lines()
    assert [a["trunk"] for a in lines[2]["trunk_attempts"]] == ["us-b"]  # us-a is down: tried last, not needed
    down = gw.wait_for(lambda e: e.get("event") == "trunk_down")
    assert down["trunk"] == "us-a" and "503" in down["reason"]
    assert gw.metric('dialout_trunk_up{trunk="us-a"}') == 0


def test_options_pings_mark_a_dead_trunk_down(make_gateway, tmp_path):
    dead = free_port()  # nothing listens there
    gw = make_gateway(
        t1_ms=100,
        trunks=trunks(
            trunk_table("us-a", dead, ["US"], 1, "options_ping_s = 1\ndown_after = 2"),
            trunk_table("us-b", free_port(), ["US"], 2),
        ),
    )
    down = gw.wait_for(lambda e: e.get("event") == "trunk_down", timeout_s=20)
    assert down["trunk"] == "us-a" and "ping" in down["reason"]
