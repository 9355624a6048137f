"""The gateway end to end with real SIPp: rejections, trunk outcomes, CANCEL,
hold, the duration cut-off, admission and shutdown.

Each test checks SIPp's own verdict (its exit code and counts), the SIP
messages SIPp traced, and the gateway's canonical JSON log line.
"""

import signal
import time

import pytest

from sip import connection_address, is_hold, media_ports
from tests.integration.gateway_proc import GatewayProcess, example_policy_text
from tests.integration.sipp_runner import free_port, run_sipp, scenario_from_template
from tests.integration.test_relay import bridge, message_list, messages, start_trunk

pytestmark = pytest.mark.integration


def expect_status(
    gw,
    tmp_path,
    status,
    *,
    organizer="alice@contoso.com",
    number="+33142685300",
    location="FR",
    calls=1,
    rate=10,
    local_ip="127.0.0.1",
    name=None,
):
    workdir = tmp_path / (name or f"bridge-{status}-{organizer.split('@')[0] or 'none'}")
    scenario = scenario_from_template("bridge_expect_status.xml.tmpl", tmp_path / "scenarios", status=status)
    extra = ["-key", "organizer", organizer, "-key", "location", location, "-trace_msg"]
    if local_ip != "127.0.0.1":
        extra = [*extra, "-i", local_ip]
    result = run_sipp(
        scenario,
        gw.target,
        workdir,
        calls=calls,
        rate=rate,
        service=number,
        local_port=free_port(),
        extra=extra,
        timeout_s=20,
    )
    return result, messages(workdir)


def final_response(trace: str, status: int) -> str:
    """The text of the first traced response with this status."""
    start = trace.index(f"SIP/2.0 {status} ")
    end = trace.find("\n\n", start)
    return trace[start : end if end > 0 else None]


def header(message: str, name: str) -> str | None:
    for line in message.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


# --- every policy rejection, with its headers and log line ----------------------------

REJECTIONS = [
    # organizer, number, status, reason
    ("", "+33142685300", 403, "organizer_missing"),
    ("nobody@contoso.com", "+33142685300", 403, "organizer_unknown"),
    ("alice@contoso.com", "12ab", 484, "number_invalid"),
    ("alice@contoso.com", "112", 403, "destination_blocked"),
    ("erin@fabrikam.com", "911", 403, "destination_blocked"),
    ("alice@contoso.com", "+19005550100", 403, "destination_blocked"),
    ("dmitri@contoso.com", "+33142685300", 403, "no_audio_conferencing"),
    ("grace@fabrikam.com", "+14165550100", 403, "dialout_disabled"),
    ("bob@contoso.com", "+4930123456", 403, "not_domestic"),
    ("chloe@contoso.com", "+18765550100", 403, "outside_zone_a"),
    ("alice@contoso.com", "+5372345678", 403, "fraud_suspected"),
    ("frank@fabrikam.com", "+442071234567", 403, "no_entitlement"),
]


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory):
    gw = GatewayProcess.create(tmp_path_factory.mktemp("shared") / "gw").start()
    yield gw
    gw.stop()


@pytest.mark.parametrize("organizer,number,status,reason", REJECTIONS, ids=[f"{r[3]}-{r[1]}" for r in REJECTIONS])
def test_rejection_carries_status_reason_warning_and_decision_headers(
    shared_gateway, tmp_path, organizer, number, status, reason
):
    result, trace = expect_status(shared_gateway, tmp_path, status, organizer=organizer, number=number)
    assert result.returncode == 0 and result.successful == 1, (result.stderr[-1500:], trace[-1500:])
    response = final_response(trace, status)
    assert header(response, "Reason") == f'SIP;cause={status};text="{reason}"'
    assert header(response, "X-Dialout-Decision") == f"deny;reason={reason}"
    warning = header(response, "Warning")
    assert warning.startswith('399 gw-under-test "') and len(warning) > 25

    line = shared_gateway.wait_for(
        lambda e: (
            e.get("event") == "call"
            and e.get("reason") == reason
            and e.get("dialled") == number
            and (e.get("organizer") or "") == organizer
        )
    )
    assert line["decision"] == "deny" and line["bridge_status"] == status
    assert line["explanation"] and line["trace"], "a rejection must be explainable from its log line"
    assert line["trunk_status"] is None and line["billed_units"] == 0


def test_limits_answer_480_with_retry_after(make_gateway, tmp_path):
    policy = example_policy_text().replace(
        "max_calls_per_minute_per_organizer = 20", "max_calls_per_minute_per_organizer = 1"
    )
    gw = make_gateway(policy_text=policy)
    trunk = start_trunk(gw, tmp_path)
    assert bridge(gw, tmp_path).returncode == 0
    trunk.communicate(timeout=20)
    result, trace = expect_status(gw, tmp_path, 480)
    assert result.returncode == 0
    response = final_response(trace, 480)
    assert header(response, "Reason") == 'SIP;cause=480;text="limit_rate"'
    assert int(header(response, "Retry-After")) > 0


def test_concurrency_limit_per_organizer(make_gateway, tmp_path):
    policy = example_policy_text().replace("max_concurrent_per_organizer = 10", "max_concurrent_per_organizer = 1")
    gw = make_gateway(policy_text=policy)
    trunk = start_trunk(gw, tmp_path, "trunk_ring_forever.xml")
    ringing = run_sipp(
        "bridge_cancel.xml",
        gw.target,
        tmp_path / "ringing",
        service="+33142685300",
        local_port=free_port(),
        extra=["-key", "organizer", "alice@contoso.com", "-key", "location", "FR", "-d", "2500"],
        background=True,
        timeout_s=20,
    )
    gw.wait_until(lambda: gw.live_ledger_calls() == 1, what="the first call's reservation")  # ringing now
    result, trace = expect_status(gw, tmp_path, 480)
    assert result.returncode == 0
    assert header(final_response(trace, 480), "Reason") == 'SIP;cause=480;text="limit_concurrency"'
    ringing.communicate(timeout=30)
    trunk.communicate(timeout=30)
    assert ringing.returncode == 0


# --- trunk outcomes -------------------------------------------------------------------------


@pytest.mark.parametrize("status,phrase", [(486, "Busy Here"), (404, "Not Found"), (503, "Service Unavailable")])
def test_trunk_failure_status_is_passed_through_unchanged(gateway, tmp_path, status, phrase):
    scenario = scenario_from_template("trunk_fail.xml.tmpl", tmp_path / "scenarios", status=status, phrase=phrase)
    trunk = run_sipp(scenario, "", tmp_path / "trunk", local_port=gateway.trunk_port, background=True, timeout_s=20)
    result, _ = expect_status(gateway, tmp_path, status)
    trunk.communicate(timeout=20)
    assert result.returncode == 0 and trunk.returncode == 0
    line = gateway.wait_calls(1)[0]
    assert line["reason"] == "trunk_failure" and line["trunk_status"] == status and line["bridge_status"] == status
    assert line["decision"] == "allow" and line["billed_units"] == 0


def test_trunk_that_never_answers_becomes_408_trunk_timeout(gateway, tmp_path):
    trunk = start_trunk(gateway, tmp_path, "trunk_ring_forever.xml")
    started = time.monotonic()
    result, trace = expect_status(gateway, tmp_path, 408)
    elapsed = time.monotonic() - started
    trunk.communicate(timeout=20)
    assert result.returncode == 0 and trunk.returncode == 0  # the trunk saw a CANCEL
    assert header(final_response(trace, 408), "Reason") == 'SIP;cause=408;text="trunk_timeout"'
    assert 3.5 <= elapsed < 10  # trunk.answer_timeout_s = 4 in the test config
    line = gateway.wait_calls(1)[0]
    assert line["reason"] == "trunk_timeout" and line["bridge_status"] == 408 and line["billed_units"] == 0


def test_trunk_hangs_up_and_bridge_gets_the_bye(gateway, tmp_path):
    trunk = start_trunk(gateway, tmp_path, "trunk_hangs_up.xml", extra=["-d", "500", "-rsa", gateway.target])
    result = run_sipp(
        "bridge_wait_bye.xml",
        gateway.target,
        tmp_path / "bridge",
        service="+33142685300",
        local_port=free_port(),
        extra=["-key", "organizer", "alice@contoso.com", "-key", "location", "FR"],
        timeout_s=20,
    )
    trunk.communicate(timeout=20)
    assert result.returncode == 0 and trunk.returncode == 0
    line = gateway.wait_calls(1)[0]
    assert line["ended_by"] == "trunk" and line["reason"] == "allowed" and line["billed_units"] == 1
    assert 0.4 <= line["talk_s"] < 3


def test_cancel_while_ringing_reaches_the_trunk_and_bills_nothing(gateway, tmp_path):
    trunk = start_trunk(gateway, tmp_path, "trunk_ring_forever.xml")
    result = run_sipp(
        "bridge_cancel.xml",
        gateway.target,
        tmp_path / "bridge",
        service="+33142685300",
        local_port=free_port(),
        extra=["-key", "organizer", "alice@contoso.com", "-key", "location", "FR", "-d", "500"],
        timeout_s=20,
    )
    trunk.communicate(timeout=20)
    assert result.returncode == 0, result.stderr[-1500:]
    assert trunk.returncode == 0  # it received the CANCEL and ACK of its 487
    line = gateway.wait_calls(1)[0]
    assert line["bridge_status"] == 487 and line["ended_by"] == "bridge"
    assert line["talk_s"] == 0 and line["billed_units"] == 0 and line["charges"] == {}


def test_hold_reinvite_is_relayed_end_to_end(gateway, tmp_path):
    trunk = start_trunk(gateway, tmp_path, "trunk_hold.xml")
    result = run_sipp(
        "bridge_hold.xml",
        gateway.target,
        tmp_path / "bridge",
        service="+33142685300",
        local_port=free_port(),
        extra=["-key", "organizer", "alice@contoso.com", "-key", "location", "FR", "-d", "200", "-trace_msg"],
        timeout_s=20,
    )
    trunk.communicate(timeout=20)
    assert result.returncode == 0, result.stderr[-1500:]
    assert trunk.returncode == 0
    invites_at_trunk = [m for m in message_list(tmp_path / "trunk") if m.startswith("INVITE ")]
    assert len(invites_at_trunk) == 2
    assert not is_hold(invites_at_trunk[0].split("\n\n", 1)[1])
    assert is_hold(invites_at_trunk[1].split("\n\n", 1)[1])  # the bridge's sendonly offer
    oks_at_bridge = [
        m for m in message_list(tmp_path / "bridge") if m.startswith("SIP/2.0 200") and "INVITE" in header(m, "CSeq")
    ]
    assert len(oks_at_bridge) == 2
    assert "a=recvonly" in oks_at_bridge[1]  # the trunk's answer came back
    assert gateway.wait_calls(1)[0]["reason"] == "allowed"


def test_hold_update_is_answered_at_once_and_relayed(gateway, tmp_path):
    trunk = start_trunk(gateway, tmp_path, "trunk_update_hold.xml")
    result = run_sipp(
        "bridge_update_hold.xml",
        gateway.target,
        tmp_path / "bridge",
        service="+33142685300",
        local_port=free_port(),
        extra=["-key", "organizer", "alice@contoso.com", "-key", "location", "FR", "-d", "300", "-trace_msg"],
        timeout_s=20,
    )
    trunk.communicate(timeout=20)
    assert result.returncode == 0, result.stderr[-1500:]
    assert trunk.returncode == 0  # it received the UPDATE, then the BYE
    updates_at_trunk = [m for m in message_list(tmp_path / "trunk") if m.startswith("UPDATE ")]
    assert len(updates_at_trunk) == 1
    assert is_hold(updates_at_trunk[0].split("\n\n", 1)[1])  # the bridge's sendonly offer
    update_oks = [
        m for m in message_list(tmp_path / "bridge") if m.startswith("SIP/2.0 200") and "UPDATE" in header(m, "CSeq")
    ]
    assert len(update_oks) == 1
    answer = update_oks[0].split("\n\n", 1)[1]
    # The trunk's media, with a direction that answers a hold (not sendrecv).
    assert "a=recvonly" in answer and "a=sendrecv" not in answer
    invite_ok = [
        m for m in message_list(tmp_path / "bridge") if m.startswith("SIP/2.0 200") and "INVITE" in header(m, "CSeq")
    ][0]
    trunk_sdp = invite_ok.split("\n\n", 1)[1]
    assert media_ports(answer) == media_ports(trunk_sdp) and connection_address(answer) == connection_address(trunk_sdp)
    assert [e for e in gateway.events() if e.get("event") == "update_relayed"][0]["hold"] is True
    assert gateway.wait_calls(1)[0]["reason"] == "allowed"


def test_a_transfer_request_is_refused_and_places_no_call(gateway, tmp_path):
    """pjsua's default would accept the REFER and dial its Refer-To target itself,
    outside admission, policy and the ledger (here a satellite premium number)."""
    trunk = start_trunk(gateway, tmp_path, "trunk_answer.xml", calls=2)
    targets = tmp_path / "refer_to.csv"
    targets.write_text(f"SEQUENTIAL\nsip:+882161234567@127.0.0.1:{gateway.trunk_port};user=phone\n")
    result = run_sipp(
        "bridge_refer.xml",
        gateway.target,
        tmp_path / "bridge",
        service="+33142685300",
        local_port=free_port(),
        extra=[
            "-key",
            "organizer",
            "alice@contoso.com",
            "-key",
            "location",
            "FR",
            "-d",
            "1000",
            "-inf",
            str(targets),
            "-trace_msg",
        ],
        timeout_s=20,
    )
    assert result.returncode == 0, result.stderr[-1500:]  # the REFER got its 403
    gateway.wait_calls(1)
    time.sleep(0.5)  # an absence to observe: a transfer would be a second INVITE by now
    trunk.terminate()  # it would wait for a second call; a transfer would have been that call
    trunk.communicate(timeout=10)
    invites_at_trunk = [m for m in message_list(tmp_path / "trunk") if m.startswith("INVITE ")]
    assert len(invites_at_trunk) == 1 and "+33142685300" in invites_at_trunk[0].split("\n", 1)[0]
    refused = [e for e in gateway.events() if e.get("event") == "transfer_refused"]
    assert len(refused) == 1 and refused[0]["leg"] == "bridge" and "+882161234567" in refused[0]["target"]
    assert gateway.wait_calls(1)[0]["reason"] == "allowed"


def test_authorised_duration_is_enforced_with_bye_on_both_legs(make_gateway, tmp_path):
    policy = example_policy_text().replace("max_call_length_s = 14400", "max_call_length_s = 5")
    gw = make_gateway(policy_text=policy)
    trunk = start_trunk(gw, tmp_path)  # waits for a BYE
    started = time.monotonic()
    result = run_sipp(
        "bridge_wait_bye.xml",
        gw.target,
        tmp_path / "bridge",
        service="+33142685300",
        local_port=free_port(),
        extra=["-key", "organizer", "alice@contoso.com", "-key", "location", "FR", "-trace_msg"],
        timeout_s=20,
    )
    elapsed = time.monotonic() - started
    trunk.communicate(timeout=20)
    assert result.returncode == 0 and trunk.returncode == 0  # both legs got a BYE
    assert 4.8 <= elapsed < 8
    bye = messages(tmp_path / "bridge")
    bye = bye[bye.index("BYE sip:") :]
    assert 'text="duration_exhausted"' in header(bye, "Reason")
    line = gw.wait_calls(1)[0]
    assert line["reason"] == "duration_exhausted" and line["ended_by"] == "gateway"
    assert 4.8 <= line["talk_s"] <= 5.5 and line["max_duration_s"] == 5


# --- admission and lifecycle ------------------------------------------------------------------


def test_untrusted_source_gets_403_that_says_nothing_about_the_call(make_gateway, tmp_path):
    gw = make_gateway(extra_gateway='untrusted = "reject"')  # the default is to drop: see test_edge.py
    result, trace = expect_status(gw, tmp_path, 403, local_ip="127.0.0.2")
    assert result.returncode == 0
    response = final_response(trace, 403)
    assert header(response, "Reason") == 'SIP;cause=403;text="untrusted_source"'
    # Nothing but the reason: no Warning sentence, no decision header, nothing about the organiser.
    assert "alice" not in response and header(response, "Warning") is None
    assert header(response, "X-Dialout-Decision") is None
    refused = gw.wait_for(lambda e: e.get("event") == "admission_refused")
    assert refused["reason"] == "untrusted_source" and refused["source"] == "127.0.0.2"
    assert "organizer" not in refused
    assert gw.call_lines() == []  # no directory lookup, no call line


def test_overload_is_answered_503_with_retry_after_not_a_timeout(make_gateway, tmp_path):
    gw = make_gateway(extra_gateway="max_calls_per_second = 0.01")
    # The one token of the bucket goes to the first call (rejected by policy).
    first, _ = expect_status(gw, tmp_path, 403, organizer="nobody@contoso.com")
    assert first.returncode == 0
    result, trace = expect_status(gw, tmp_path, 503, calls=5, rate=50)
    assert result.returncode == 0 and result.successful == 5
    response = final_response(trace, 503)
    assert header(response, "Reason") == 'SIP;cause=503;text="overloaded"'
    assert int(header(response, "Retry-After")) >= 1
    # Refusals are logged rate-limited: one line for the burst, not five.
    refused = [e for e in gw.events() if e.get("event") == "admission_refused"]
    assert len(refused) == 1


def sigterm_during_a_call(gw, tmp_path):
    """Start a 2-second call, SIGTERM the gateway while it talks; returns (bridge, trunk) SIPp processes."""
    trunk = start_trunk(gw, tmp_path)
    talking = run_sipp(
        "bridge_call.xml",
        gw.target,
        tmp_path / "talking",
        service="+33142685300",
        local_port=free_port(),
        extra=["-key", "organizer", "alice@contoso.com", "-key", "location", "FR", "-d", "2000"],
        background=True,
        timeout_s=20,
    )
    gw.wait_until(lambda: gw.live_ledger_calls(("answered",)) == 1, what="the call to be answered")
    gw.signal(signal.SIGTERM)
    gw.wait_for(lambda e: e.get("event") == "draining")
    return talking, trunk


def test_sigterm_drains_active_calls_refuses_new_ones_and_exits_zero(make_gateway, tmp_path):
    gw = make_gateway()
    talking, trunk = sigterm_during_a_call(gw, tmp_path)
    refused, trace = expect_status(gw, tmp_path, 503)
    assert refused.returncode == 0
    talking.communicate(timeout=20)
    trunk.communicate(timeout=20)
    assert talking.returncode == 0  # the call in progress finished normally
    assert gw.proc.wait(15) == 0
    line = [e for e in gw.call_lines() if e.get("reason") == "allowed"][0]
    assert line["ended_by"] == "bridge" and line["billed_units"] == 1


def test_sighup_reloads_the_directory_without_dropping_calls(make_gateway, tmp_path):
    gw = make_gateway()
    first, _ = expect_status(gw, tmp_path, 403, organizer="zoe@contoso.com", name="before")
    assert first.returncode == 0
    text = (
        gw.config_path.read_text()
        + """
[[organizers]]
id = "zoe@contoso.com"
tenant = "contoso"
usage_location = "FR"
audio_conferencing = "none"
dialout_policy = "any"
"""
    )
    gw.config_path.write_text(text)
    gw.signal(signal.SIGHUP)
    gw.wait_for(lambda e: e.get("event") == "config_reloaded")
    second, trace = expect_status(gw, tmp_path, 403, organizer="zoe@contoso.com", name="after")
    assert second.returncode == 0
    assert header(final_response(trace, 403), "Reason") == 'SIP;cause=403;text="no_audio_conferencing"'
    # A broken edit is refused and the gateway keeps the old config.
    gw.config_path.write_text(text + "\n[[organizers]\n")
    gw.signal(signal.SIGHUP)
    failed = gw.wait_for(lambda e: e.get("event") == "config_reload_failed")
    assert "gateway.toml" in failed["error"]
    assert gw.proc.poll() is None


def test_session_timer_clears_a_dead_bridge_leg_and_the_trunk_leg(gateway, tmp_path):
    """RFC 4028: the bridge asked to refresh every 90 s and never does. The
    gateway ends the call on both legs instead of billing a dead call forever."""
    trunk = start_trunk(gateway, tmp_path, timeout_s=150)  # waits for a BYE
    result = run_sipp(
        "bridge_silent_session.xml",
        gateway.target,
        tmp_path / "bridge",
        service="+33142685300",
        local_port=free_port(),
        extra=["-key", "organizer", "alice@contoso.com", "-key", "location", "FR", "-trace_msg"],
        timeout_s=150,
    )
    trunk.communicate(timeout=30)
    assert result.returncode == 0, result.stderr[-1500:]
    assert trunk.returncode == 0  # the trunk leg got its BYE too
    ok = [m for m in message_list(tmp_path / "bridge") if m.startswith("SIP/2.0 200")][0]
    assert header(ok, "Session-Expires").startswith("90")
    line = gateway.wait_calls(1, timeout_s=20)[0]
    assert 60 <= line["talk_s"] <= 95  # cleared within the session interval
    # The timer fires at about 60 s, on the boundary of the second billed minute.
    assert line["billed_units"] in (1, 2) and line["ended_by"] == "session_timer"
