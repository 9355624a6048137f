"""Interop: a real SIP user agent (Debian's baresip) as the trunk.

SIPp stays the bridge, since it must add the X-Dialout-* headers, which
baresip 1.0 cannot. baresip answers as the trunk with its own stack (libre)
and its own SDP, so these calls exercise what SIPp's scripts cannot: a real
offer/answer engine on the far side of hold and resume, a real BYE from it,
and its handling of the gateway's BYE. One baresip serves the whole module;
each test starts its own gateway pointed at it.
"""

import time

import pytest

from sip import connection_address, is_hold, media_ports
from tests.integration.baresip_ua import Baresip
from tests.integration.gateway_proc import example_policy_text
from tests.integration.sipp_runner import free_port, run_sipp
from tests.integration.test_relay import FR_NUMBER, bridge, message_list, messages

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared_baresip(tmp_path_factory):
    ua = Baresip(tmp_path_factory.mktemp("baresip"), user=FR_NUMBER).start()
    yield ua
    ua.stop()


@pytest.fixture
def baresip(shared_baresip):
    """The module's baresip; each test must leave no call up on it."""
    mark = shared_baresip.mark()
    yield shared_baresip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        up = {e["id"] for e in shared_baresip.events(mark, "CALL_ESTABLISHED")}
        up -= {e["id"] for e in shared_baresip.events(mark, "CALL_CLOSED")}
        if not up:
            return
        time.sleep(0.05)
    shared_baresip.command("hangup")  # leave the next test a clean trunk
    raise AssertionError(f"calls still up on baresip after the test: {sorted(up)}")


def _responses(msgs, status: int, method: str):
    return [
        m for m in msgs if m.startswith(f"SIP/2.0 {status} ") and method in m.split("CSeq:", 1)[1].split("\n", 1)[0]
    ]


def test_call_is_relayed_with_baresip_sdp_and_bridge_bye_reaches_it(make_gateway, baresip, tmp_path):
    gw = make_gateway(trunk_port=baresip.sip_port)
    mark = baresip.mark()
    bridge_media = free_port()
    result = bridge(gw, tmp_path, media_port=bridge_media, talk_ms=500)
    assert result.returncode == 0, result.stderr[-2000:]

    invite = baresip.received(mark, "INVITE")[0]
    assert invite.first_line.startswith(f"INVITE sip:{FR_NUMBER}@127.0.0.1") and "user=phone" in invite.first_line
    assert "x-dialout" not in invite.text.lower()
    assert media_ports(invite.body) == [bridge_media]
    answer = [m for m in baresip.sent(mark) if m.first_line.startswith("SIP/2.0 200") and "INVITE" in m.header("CSeq")][
        0
    ]
    # The bridge got baresip's own answer: its media address and port.
    ok = _responses(message_list(tmp_path / "bridge"), 200, "INVITE")[0].split("\n\n", 1)[1]
    assert media_ports(ok) == media_ports(answer.body) and connection_address(ok) == connection_address(answer.body)
    assert "a=tool:baresip" in ok
    # The bridge's BYE reached baresip, which closed the call as hung up by its peer.
    assert baresip.wait_event("CALL_CLOSED", mark)["param"] == "Connection reset by peer"
    assert len(baresip.received(mark, "BYE")) == 1

    line = gw.wait_calls(1)[0]
    assert line["decision"] == "allow" and line["reason"] == "allowed" and line["bucket"] == "tenant_pool"
    assert line["bridge_status"] == 200 and line["trunk_status"] == 200
    assert line["ended_by"] == "bridge" and line["billed_units"] == 1 and line["talk_s"] >= 0.4


def test_hold_and_resume_reach_baresip_and_its_answers_come_back(make_gateway, baresip, tmp_path):
    gw = make_gateway(trunk_port=baresip.sip_port)
    mark = baresip.mark()
    result = bridge(gw, tmp_path, "bridge_hold_resume.xml", talk_ms=200)
    assert result.returncode == 0, result.stderr[-2000:]

    invites = baresip.received(mark, "INVITE")
    assert len(invites) == 3  # the call, the hold and the resume
    assert not is_hold(invites[0].body) and is_hold(invites[1].body) and not is_hold(invites[2].body)
    assert "a=sendonly" in invites[1].body and "a=sendrecv" in invites[2].body
    answers = [
        m.body for m in baresip.sent(mark) if m.first_line.startswith("SIP/2.0 200") and "INVITE" in m.header("CSeq")
    ]
    assert len(answers) == 3
    assert "a=recvonly" in answers[1] and "a=sendrecv" in answers[2]  # baresip's own answers
    oks = [m.split("\n\n", 1)[1] for m in _responses(message_list(tmp_path / "bridge"), 200, "INVITE")]
    assert len(oks) == 3
    assert "a=recvonly" in oks[1] and "a=sendrecv" not in oks[1]
    assert "a=sendrecv" in oks[2]
    assert media_ports(oks[2]) == media_ports(answers[2])
    relayed = [e for e in gw.events() if e.get("event") == "reinvite_relayed"]
    assert len(relayed) == 2
    assert baresip.wait_event("CALL_CLOSED", mark)["param"] == "Connection reset by peer"
    line = gw.wait_calls(1)[0]
    assert line["reason"] == "allowed" and line["ended_by"] == "bridge" and line["billed_units"] == 1


def test_hold_by_update_reaches_baresip_as_a_reinvite(make_gateway, baresip, tmp_path):
    """baresip does not list UPDATE in its Allow: the bridge's UPDATE hold goes
    to it as a re-INVITE, and its answer comes back in the 200 to the UPDATE."""
    gw = make_gateway(trunk_port=baresip.sip_port)
    mark = baresip.mark()
    result = bridge(gw, tmp_path, "bridge_update_hold.xml", talk_ms=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not baresip.received(mark, "UPDATE")
    invites = baresip.received(mark, "INVITE")
    assert len(invites) == 2 and is_hold(invites[1].body)
    update_ok = [m.split("\n\n", 1)[1] for m in _responses(message_list(tmp_path / "bridge"), 200, "UPDATE")]
    assert len(update_ok) == 1 and "a=recvonly" in update_ok[0]
    relayed = [e for e in gw.events() if e.get("event") == "update_relayed"]
    assert relayed[0]["as"] == "INVITE" and relayed[0]["hold"] is True
    assert gw.wait_calls(1)[0]["reason"] == "allowed"


def test_baresip_hangs_up_and_the_bridge_gets_the_bye(make_gateway, baresip, tmp_path):
    gw = make_gateway(trunk_port=baresip.sip_port)
    mark = baresip.mark()
    waiting = run_sipp(
        "bridge_wait_bye.xml",
        gw.target,
        tmp_path / "bridge",
        service=FR_NUMBER,
        local_port=free_port(),
        background=True,
        timeout_s=20,
        extra=[
            "-key",
            "organizer",
            "alice@contoso.com",
            "-key",
            "location",
            "FR",
            "-mp",
            str(free_port()),
            "-trace_msg",
        ],
    )
    try:
        baresip.wait_event("CALL_ESTABLISHED", mark)
        time.sleep(0.5)
        baresip.command("hangup")
        _, err = waiting.communicate(timeout=20)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, err[-2000:]
    assert [m for m in baresip.sent(mark) if m.first_line.startswith("BYE ")]  # baresip's own BYE
    assert baresip.wait_event("CALL_CLOSED", mark)["param"] == "Connection reset by user"
    assert "BYE sip:" in messages(tmp_path / "bridge")
    line = gw.wait_calls(1)[0]
    assert line["reason"] == "allowed" and line["ended_by"] == "trunk" and line["billed_units"] == 1
    assert 0.4 <= line["talk_s"] < 3


def test_duration_cut_off_reaches_baresip_as_a_bye(make_gateway, baresip, tmp_path):
    policy = example_policy_text().replace("max_call_length_s = 14400", "max_call_length_s = 5")
    gw = make_gateway(trunk_port=baresip.sip_port, policy_text=policy)
    mark = baresip.mark()
    started = time.monotonic()
    result = run_sipp(
        "bridge_wait_bye.xml",
        gw.target,
        tmp_path / "bridge",
        service=FR_NUMBER,
        local_port=free_port(),
        timeout_s=20,
        extra=[
            "-key",
            "organizer",
            "alice@contoso.com",
            "-key",
            "location",
            "FR",
            "-mp",
            str(free_port()),
            "-trace_msg",
        ],
    )
    assert result.returncode == 0, result.stderr[-2000:]  # the bridge got its BYE
    assert 4.8 <= time.monotonic() - started < 8
    assert baresip.wait_event("CALL_CLOSED", mark)["param"] == "Connection reset by peer"
    (bye,) = baresip.received(mark, "BYE")
    assert 'text="duration_exhausted"' in bye.header("Reason")
    answered = [m for m in baresip.sent(mark) if m.first_line.startswith("SIP/2.0 200") and "BYE" in m.header("CSeq")]
    assert answered  # baresip accepted the gateway's BYE
    line = gw.wait_calls(1)[0]
    assert line["reason"] == "duration_exhausted" and line["ended_by"] == "gateway"
    assert 4.8 <= line["talk_s"] <= 5.5 and line["max_duration_s"] == 5
