"""Carrier call flows through the real gateway: SIPp bridge -> gateway -> SIPp trunk.

Each trunk scenario (tests/integration/sipp/trunk_*.xml) behaves like a real
carrier or SBC. Every test checks that the bridge's 200 carries the trunk's
*final* media address, that the call is billed, and (through the fixtures)
that no call is left live in the metrics or the ledger afterwards.
"""

from __future__ import annotations

import time

import pytest

from sip import media_ports
from tests.integration.sipp_runner import free_port, run_sipp
from tests.integration.test_relay import received_messages as message_list
from tests.integration.test_relay import start_trunk

pytestmark = pytest.mark.integration

FR = "+33142685300"


def call(gw, tmp_path, scenario="bridge_carrier.xml", *, talk_ms=300, media_port=None, extra=None, timeout_s=30):
    return run_sipp(
        scenario,
        gw.target,
        tmp_path / "bridge",
        service=FR,
        local_port=free_port(),
        extra=[
            "-key",
            "organizer",
            "alice@contoso.com",
            "-key",
            "location",
            "FR",
            "-mp",
            str(media_port or free_port()),
            "-d",
            str(talk_ms),
            "-trace_msg",
            *(extra or []),
        ],
        timeout_s=timeout_s,
    )


def received(workdir, start: str) -> list[str]:
    return [m for m in message_list(workdir) if m.startswith(start)]


def body(message: str) -> str:
    return message.split("\n\n", 1)[1] if "\n\n" in message else ""


def invite_responses(workdir, code: int) -> list[str]:
    return [m for m in received(workdir, f"SIP/2.0 {code} ") if "INVITE" in _header(m, "CSeq")]


def _header(message: str, name: str) -> str:
    for line in message.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def relay(gw, tmp_path, trunk_scenario, *, bridge_scenario="bridge_carrier.xml", talk_ms=300):
    trunk_media = free_port()
    trunk = start_trunk(gw, tmp_path, trunk_scenario, media_port=trunk_media)
    result = call(gw, tmp_path, bridge_scenario, talk_ms=talk_ms)
    _out, trunk_err = trunk.communicate(timeout=30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert trunk.returncode == 0, trunk_err[-2000:]
    return trunk_media


def assert_billed(gw) -> dict:
    line = gw.wait_calls(1)[0]
    assert line["reason"] == "allowed" and line["bridge_status"] == 200 and line["trunk_status"] == 200
    assert line["billed_units"] == 1 and line["talk_s"] > 0
    return line


def test_183_without_sdp_reaches_the_bridge_without_the_gateway_s_own_sdp(gateway, tmp_path):
    trunk_media = relay(gateway, tmp_path, "trunk_183_nosdp.xml")
    early = invite_responses(tmp_path / "bridge", 183)
    assert early and not body(early[0]).strip()  # no SDP, certainly not pjmedia's
    ok = invite_responses(tmp_path / "bridge", 200)[0]
    assert media_ports(body(ok)) == [trunk_media]
    assert_billed(gateway)


def test_announcement_sdp_in_183_then_the_media_gateway_s_sdp_in_200(gateway, tmp_path):
    trunk_media = relay(gateway, tmp_path, "trunk_announcement.xml")
    assert media_ports(body(invite_responses(tmp_path / "bridge", 183)[0])) == [trunk_media + 2]
    assert media_ports(body(invite_responses(tmp_path / "bridge", 200)[0])) == [trunk_media]
    assert_billed(gateway)


def test_same_media_with_a_bumped_origin_version(gateway, tmp_path):
    trunk_media = relay(gateway, tmp_path, "trunk_version_bump.xml")
    ok = body(invite_responses(tmp_path / "bridge", 200)[0])
    assert media_ports(ok) == [trunk_media] and "o=trunk 1 2 " in ok
    assert_billed(gateway)


def test_181_and_182_before_180(gateway, tmp_path):
    relay(gateway, tmp_path, "trunk_181_182.xml")
    codes = [
        int(m.split(" ", 2)[1]) for m in received(tmp_path / "bridge", "SIP/2.0 ") if "INVITE" in _header(m, "CSeq")
    ]
    assert [c for c in codes if c > 100][:4] == [181, 182, 180, 200]
    assert_billed(gateway)


def test_forked_early_dialogs_the_answering_fork_s_media_wins(gateway, tmp_path):
    trunk_media = relay(gateway, tmp_path, "trunk_forking.xml")
    early = [media_ports(body(m)) for m in invite_responses(tmp_path / "bridge", 183)]
    assert early == [[trunk_media + 2], [trunk_media + 4]]
    assert media_ports(body(invite_responses(tmp_path / "bridge", 200)[0])) == [trunk_media + 4]
    # The ACK and the BYE went to fork B, the one that answered.
    at_trunk = message_list(tmp_path / "trunk")
    ack = [m for m in at_trunk if m.startswith("ACK ")][0]
    bye = [m for m in at_trunk if m.startswith("BYE ")][0]
    assert "forkB" in _header(ack, "To") and "forkB" in _header(bye, "To")
    assert_billed(gateway)


def test_reliable_183_is_pracked_and_its_answer_reaches_the_bridge_in_the_200(gateway, tmp_path):
    trunk_media = relay(gateway, tmp_path, "trunk_100rel.xml")
    at_trunk = message_list(tmp_path / "trunk")
    invite = [m for m in at_trunk if m.startswith("INVITE ")][0]
    assert "100rel" in _header(invite, "Supported")
    prack = [m for m in at_trunk if m.startswith("PRACK ")]
    assert len(prack) == 1 and _header(prack[0], "RAck") == f"1 {_header(invite, 'CSeq').split()[0]} INVITE"
    ok = invite_responses(tmp_path / "bridge", 200)[0]
    assert media_ports(body(ok)) == [trunk_media]  # the 2xx had none: the reliable 183's answer
    assert_billed(gateway)


def test_late_offer_end_to_end(gateway, tmp_path):
    bridge_media, trunk_media = free_port(), free_port()
    trunk = start_trunk(gateway, tmp_path, "trunk_late_offer.xml", media_port=trunk_media)
    result = call(gateway, tmp_path, "bridge_late_offer.xml", media_port=bridge_media)
    _out, trunk_err = trunk.communicate(timeout=30)
    assert result.returncode == 0 and trunk.returncode == 0, (result.stderr[-1500:], trunk_err[-1500:])
    at_trunk = message_list(tmp_path / "trunk")
    invite = [m for m in at_trunk if m.startswith("INVITE ")][0]
    assert not body(invite).strip()  # the trunk got an offerless INVITE
    assert media_ports(body(invite_responses(tmp_path / "bridge", 200)[0])) == [trunk_media]  # its offer
    ack = [m for m in at_trunk if m.startswith("ACK ")][0]
    assert media_ports(body(ack)) == [bridge_media]  # and the bridge's answer in the ACK
    assert_billed(gateway)


def test_trunk_reinvite_without_sdp_the_trunk_s_new_media_reaches_the_bridge(gateway, tmp_path):
    bridge_media, trunk_media = free_port(), free_port()
    trunk = start_trunk(
        gateway, tmp_path, "trunk_reinvite_nosdp.xml", media_port=trunk_media, extra=["-rsa", gateway.target]
    )
    result = call(gateway, tmp_path, "bridge_accepts_reinvite.xml", media_port=bridge_media, talk_ms=500)
    _out, trunk_err = trunk.communicate(timeout=30)
    assert result.returncode == 0 and trunk.returncode == 0, (result.stderr[-1500:], trunk_err[-1500:])
    at_bridge = message_list(tmp_path / "bridge")
    reinvite = [m for m in at_bridge if m.startswith("INVITE ")][0]
    assert not body(reinvite).strip()  # relayed without SDP
    acks = [
        m for m in message_list(tmp_path / "trunk") if m.startswith("SIP/2.0 200") and "INVITE" in _header(m, "CSeq")
    ]
    assert media_ports(body(acks[-1])) == [bridge_media]  # the bridge's offer reached the trunk
    ack_at_bridge = [m for m in at_bridge if m.startswith("ACK ")][-1]
    assert media_ports(body(ack_at_bridge)) == [trunk_media + 2]  # the trunk's new address reached the bridge
    assert gateway.wait_calls(1)[0]["reason"] == "allowed"


def test_dtmf_info_reaches_the_trunk(gateway, tmp_path):
    relay(gateway, tmp_path, "trunk_info.xml", bridge_scenario="bridge_info.xml")
    info = [m for m in message_list(tmp_path / "trunk") if m.startswith("INFO ")]
    assert len(info) == 1 and "Signal=5" in body(info[0])
    assert _header(info[0], "Content-Type") == "application/dtmf-relay"
    assert [e for e in gateway.events() if e.get("event") == "request_relayed"][0]["method"] == "INFO"


def test_a_302_reaches_the_bridge_as_302_never_487(gateway, tmp_path):
    trunk = start_trunk(gateway, tmp_path, "trunk_302.xml")
    from tests.integration.test_gateway_calls import expect_status

    result, trace = expect_status(gateway, tmp_path, 302)
    trunk.communicate(timeout=20)
    assert result.returncode == 0 and trunk.returncode == 0, result.stderr[-1500:]
    response = trace[trace.index("SIP/2.0 302") :]
    contact = _header(response, "Contact")
    assert "+4930123456@127.0.0.1" in contact and "carrier.example" not in contact  # back through the gateway
    line = gateway.wait_calls(1)[0]
    assert line["trunk_status"] == 302 and line["bridge_status"] == 302 and line["reason"] == "trunk_failure"
    assert line["billed_units"] == 0


def test_trunk_bye_q850_cause_reaches_the_bridge(gateway, tmp_path):
    trunk = start_trunk(gateway, tmp_path, "trunk_bye_q850.xml", extra=["-d", "300", "-rsa", gateway.target])
    result = run_sipp(
        "bridge_wait_bye.xml",
        gateway.target,
        tmp_path / "bridge",
        service=FR,
        local_port=free_port(),
        extra=["-key", "organizer", "alice@contoso.com", "-key", "location", "FR", "-trace_msg"],
        timeout_s=20,
    )
    trunk.communicate(timeout=20)
    assert result.returncode == 0 and trunk.returncode == 0
    bye = received(tmp_path / "bridge", "BYE ")[0]
    assert _header(bye, "Reason") == 'Q.850;cause=16;text="Normal call clearing"'
    assert gateway.wait_calls(1)[0]["ended_by"] == "trunk"


def test_a_bridge_that_never_acks_is_released_on_both_legs(make_gateway, tmp_path):
    gw = make_gateway(t1_ms=100)  # Timer H = 64*T1 = 6.4 s
    trunk = start_trunk(gw, tmp_path, "trunk_answer.xml")  # waits for a BYE
    started = time.monotonic()
    result = call(gw, tmp_path, "bridge_no_ack.xml", timeout_s=40)
    trunk.communicate(timeout=30)
    assert result.returncode == 0 and trunk.returncode == 0, result.stderr[-1500:]
    assert time.monotonic() - started < 20
    line = gw.wait_calls(1)[0]
    assert line["ended_by"] == "ack_timeout" and 5 <= line["talk_s"] <= 12 and line["billed_units"] == 1


def test_a_trunk_answer_that_cannot_be_relayed_ends_both_legs(gateway, tmp_path):
    trunk = start_trunk(gateway, tmp_path, "trunk_bad_answer.xml")
    from tests.integration.test_gateway_calls import expect_status

    result, trace = expect_status(gateway, tmp_path, 488)
    trunk.communicate(timeout=20)
    assert result.returncode == 0 and trunk.returncode == 0  # the trunk got its ACK and BYE
    assert 'text="sdp_invalid"' in _header(trace[trace.index("SIP/2.0 488") :], "Reason")
    line = gateway.wait_calls(1)[0]
    assert line["reason"] == "sdp_invalid" and line["billed_units"] == 0
