"""The edge of the gateway: one bad packet costs one clear answer, never the process.

Each test replays, over loopback, a packet that once crashed the gateway, was
misreported, or let a stranger use it as a reflector; the fixtures then check
that no call was left live and that every stdout line was JSON.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.integration.fuzz_harness import _ack_2xx
from tests.integration.gateway_proc import GatewayProcess
from tests.integration.raw_sip import SipSocket, ack_for, final_response, rewrite_top_via_sent_by
from tests.integration.test_relay import start_trunk

pytestmark = pytest.mark.integration

SDP = (
    "v=0\r\no=bridge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(
    gw,
    *,
    call_id="edge-1@127.0.0.1",
    number="+33142685300",
    sdp=SDP,
    via_transport="UDP",
    extra="",
    request_uri=None,
    from_tag="t1",
) -> bytes:
    body = sdp.encode() if isinstance(sdp, str) else sdp
    ruri = request_uri or f"sip:{number}@{gw.target};user=phone"
    head = (
        f"INVITE {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{via_transport} 127.0.0.1:5999;branch=z9hG4bK-{call_id.split('@')[0]}\r\n"
        f"From: <sip:bridge@127.0.0.1>;tag={from_tag}\r\n"
        f"To: <sip:{number}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:bridge@127.0.0.1:5999>\r\n"
        "Max-Forwards: 70\r\n"
        "X-Dialout-Organizer: alice@contoso.com\r\n"
        f"{extra}"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def exchange(gw, data: bytes, *, source_ip: str = "127.0.0.1", timeout_s: float = 2.0, settle_s: float = 0.5):
    sock = SipSocket("udp", gw.target)
    if source_ip != "127.0.0.1":
        sock.sock.close()
        sock.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sock.bind((source_ip, 0))
        sock.sock.setblocking(False)
    with sock:
        msg = rewrite_top_via_sent_by(data, source_ip, sock.local_port)
        got = sock.exchange(msg, timeout_s=timeout_s, settle_s=settle_s)
        final = final_response(got)
        if final is not None and final.status >= 300:
            sock.send(ack_for(msg, final))
        return got


def test_an_absurd_rtpmap_clock_rate_gets_488_and_the_gateway_lives(gateway):
    """One INVITE with a:rtpmap:0 PCMU/4294967296 once killed the process."""
    bad = SDP.replace("PCMU/8000", "PCMU/4294967296")
    final = final_response(exchange(gateway, invite(gateway, sdp=bad)))
    assert final.status == 488
    assert final.header("Reason") == 'SIP;cause=488;text="sdp_invalid"'
    assert "clock rate" in final.header("Warning")
    line = gateway.wait_calls(1)[0]
    assert line["reason"] == "sdp_invalid" and line["decision"] == "deny"
    # ... and the next call goes through.
    trunk = start_trunk(gateway, gateway.workdir.parent, "trunk_answer.xml")
    from tests.integration.test_relay import bridge

    result = bridge(gateway, gateway.workdir.parent)
    trunk.communicate(timeout=20)
    assert result.returncode == 0


def test_non_utf8_call_id_is_a_400_at_the_edge_not_an_outage(gateway):
    data = invite(gateway, call_id="badXX-1@127.0.0.1").replace(b"badXX", b"bad\xff")
    final = final_response(exchange(gateway, data))
    assert final.status == 400  # refused by pjsip's parser or by the gateway's UTF-8 check
    assert gateway.live_ledger_calls() == 0 and gateway.call_lines() == []
    assert not [e for e in gateway.events() if e.get("event") == "ledger_write_failed"]


def test_a_request_uri_pjsip_cannot_parse_gets_a_400(gateway):
    data = invite(gateway, request_uri="sip:+33142685300@127.0.0.1:5060;user=phone;=bad;;")
    data = data.replace(b"INVITE sip:+33142685300@127.0.0.1", b"INVITE sip:<>+33142685300@127.0.0.1")
    final = final_response(exchange(gateway, data))
    assert final is not None and final.status == 400


def test_an_untrusted_invite_gets_nothing_back_by_default(gateway):
    got = exchange(gateway, invite(gateway), source_ip="127.0.0.2", timeout_s=1.5, settle_s=0)
    assert got == []
    refused = gateway.wait_for(lambda e: e.get("event") == "admission_refused")
    assert refused["reason"] == "untrusted_source" and refused["source"] == "127.0.0.2"
    assert refused["answered"] is False and "organizer" not in refused
    assert gateway.call_lines() == []


@pytest.mark.parametrize("server_header", ["", "dialout-gw/1.0"])
def test_an_untrusted_invite_that_is_never_acked_gets_exactly_one_stateless_403(make_gateway, server_header):
    """Even with a Server header configured for the bridges, which the 403 to a
    stranger used to carry (svmap showed it as the device's user agent)."""
    gw = make_gateway(extra_gateway=f'untrusted = "reject"\nserver_header = "{server_header}"')
    with SipSocket("udp", gw.target) as sock:
        sock.sock.close()
        sock.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sock.bind(("127.0.0.2", 0))
        sock.sock.setblocking(False)
        sock.send(rewrite_top_via_sent_by(invite(gw), "127.0.0.2", sock.local_port))
        got = sock.receive(3.0)  # a stateful 403 would retransmit at 0.5, 1, 2 s
    assert [r.status for r in got] == [403]
    assert got[0].header("Server") is None and got[0].header("User-Agent") is None  # no product fingerprint
    assert "alice" not in got[0].raw.decode()


def test_refusals_are_rate_limited_in_the_log(gateway):
    for i in range(30):
        exchange(gateway, invite(gateway, call_id=f"flood-{i}@x"), source_ip="127.0.0.2", timeout_s=0.05, settle_s=0)
    gateway.wait_for(lambda e: e.get("event") == "admission_refused")
    time.sleep(0.5)  # an absence to observe: no more lines than the rate limit lets through
    refused = [e for e in gateway.events() if e.get("event") == "admission_refused"]
    assert 1 <= len(refused) <= 2


def test_require_tls_is_decided_from_the_real_transport_not_the_via(make_gateway):
    gw = make_gateway(extra_gateway="require_tls = true")
    got = exchange(gw, invite(gw, via_transport="TLS"), timeout_s=1.5, settle_s=0)
    assert got == []  # a UDP packet claiming TLS: dropped
    refused = gw.wait_for(lambda e: e.get("event") == "admission_refused")
    assert "TLS" in refused["explanation"]


def test_require_tls_under_reject_answers_a_udp_invite_claiming_tls_once_with_403(make_gateway):
    """A trusted source, but UDP whose Via claims TLS: one stateless 403 untrusted_source, never a call."""
    gw = make_gateway(extra_gateway='require_tls = true\nuntrusted = "reject"')
    with SipSocket("udp", gw.target) as sock:
        sock.send(rewrite_top_via_sent_by(invite(gw, via_transport="TLS"), "127.0.0.1", sock.local_port))
        got = sock.receive(3.0)  # a stateful 403 would retransmit at 0.5, 1, 2 s
    assert [r.status for r in got] == [403]
    assert got[0].header("Reason") == 'SIP;cause=403;text="untrusted_source"'
    assert "alice" not in got[0].raw.decode()
    refused = gw.wait_for(lambda e: e.get("event") == "admission_refused")
    assert "TLS" in refused["explanation"] and refused["answered"] is True
    assert gw.call_lines() == []


def _untrusted_request(gw, method: str, *, to_tag: str = "", call_id: str) -> bytes:
    return (
        f"{method} sip:+33142685300@{gw.target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5999;branch=z9hG4bK-{method}-{to_tag[5:]}\r\n"
        "From: <sip:scanner@127.0.0.2>;tag=s1\r\n"
        f"To: <sip:+33142685300@127.0.0.1>{to_tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:scanner@127.0.0.2:5999>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("untrusted", ["drop", "reject"])
def test_an_untrusted_request_outside_our_dialogs_gets_nothing_but_the_invites_403(make_gateway, untrusted):
    """A stranger's INVITE with a made-up To tag, its CANCEL or BYE, used to get
    pjsip's stateless 481 even with the default "drop"."""
    gw = make_gateway(extra_gateway=f'untrusted = "{untrusted}"')
    for method, to_tag in [
        ("INVITE", ";tag=made-up"),
        ("BYE", ";tag=made-up"),
        ("CANCEL", ""),
        ("OPTIONS", ""),
        ("NOTIFY", ";tag=x"),
        ("REGISTER", ""),
    ]:
        data = _untrusted_request(gw, method, to_tag=to_tag, call_id=f"stranger-{method}@127.0.0.2")
        got = exchange(gw, data, source_ip="127.0.0.2", timeout_s=1.0, settle_s=0)
        expected = [403] if untrusted == "reject" and method == "INVITE" else []
        assert [r.status for r in got] == expected, (method, got)
    assert gw.call_lines() == []


def test_an_untrusted_trunk_still_reaches_its_dialog(make_gateway, tmp_path):
    """The filter lets a request from outside the trusted sources through when it
    belongs to one of our dialogs: here the trunk (127.0.0.1, not trusted) hangs up."""
    gw = GatewayProcess.create(tmp_path / "gw-bridge-only")
    gw.config_path.write_text(
        gw.config_path.read_text().replace('trusted_sources = ["127.0.0.1/32"]', 'trusted_sources = ["127.0.0.2/32"]')
    )
    gw.start()
    try:
        trunk = start_trunk(gw, tmp_path, "trunk_hangs_up.xml", extra=["-d", "300", "-rsa", gw.target])
        sock = SipSocket("udp", gw.target)
        sock.sock.close()
        sock.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sock.bind(("127.0.0.2", 0))
        sock.sock.setblocking(False)
        with sock:
            data = rewrite_top_via_sent_by(invite(gw, call_id="bridge-only-1@127.0.0.2"), "127.0.0.2", sock.local_port)
            data = data.replace(
                b"Contact: <sip:bridge@127.0.0.1:5999>", f"Contact: <sip:bridge@127.0.0.2:{sock.local_port}>".encode()
            )
            final = final_response(sock.exchange(data, timeout_s=5.0, settle_s=0))
            assert final is not None and final.status == 200, final
            sock.send(_ack_2xx(data, final, sock.local_port, "UDP"))
            bye = None
            deadline = time.monotonic() + 5
            while bye is None and time.monotonic() < deadline:
                sock.receive(0.2)
                bye = next((g for g in sock.garbage if g.startswith(b"BYE ")), None)
            assert bye is not None, "the trunk's BYE did not reach the bridge through the gateway"
            sock.send(_ok_for(bye))
        trunk.communicate(timeout=20)
        assert trunk.returncode == 0
        line = gw.wait_calls(1)[0]
        assert line["ended_by"] == "trunk" and line["bridge_status"] == 200
        gw.assert_no_leaks()
    finally:
        gw.stop()
    gw.assert_stdout_is_json()


def _ok_for(request: bytes) -> bytes:
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [
        line
        for line in head[1:]
        if line.split(b":", 1)[0].strip().lower()
        in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")
    ]
    return b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0", b"", b""])


def test_no_server_or_user_agent_header_by_default(gateway):
    final = final_response(exchange(gateway, invite(gateway, number="112")))
    assert final.status == 403
    assert final.header("Server") is None and final.header("User-Agent") is None


def test_an_unsupported_extension_in_require_gets_420(gateway):
    final = final_response(exchange(gateway, invite(gateway, extra="Require: foo, timer\r\n")))
    assert final.status == 420 and final.header("Unsupported") == "foo"


def test_session_expires_below_the_minimum_gets_422_with_min_se_and_a_call_id(gateway):
    final = final_response(exchange(gateway, invite(gateway, extra="Supported: timer\r\nSession-Expires: 30\r\n")))
    assert final.status == 422 and final.header("Min-SE") == "90"
    event = gateway.wait_for(lambda e: e.get("event") == "invalid_request" and e.get("status") == 422)
    assert event["call_id"] == "edge-1@127.0.0.1"
    assert not [e for e in gateway.events() if e.get("reason") == "trunk_failure"]


def test_out_of_dialog_options_from_a_bridge_is_answered_200(gateway):
    options = (
        f"OPTIONS sip:{gateway.target} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-opt\r\n"
        "From: <sip:ping@127.0.0.1>;tag=p\r\nTo: <sip:gw@127.0.0.1>\r\n"
        "Call-ID: opt-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    final = final_response(exchange(gateway, options))
    assert final.status == 200 and "INVITE" in final.header("Allow") and "REFER" not in final.header("Allow")


@pytest.mark.parametrize("method,status", [("REGISTER", 405), ("SUBSCRIBE", 405), ("BYE", 481), ("FOO", 501)])
def test_out_of_dialog_requests_get_their_rfc_status(gateway, method, status):
    request = (
        f"{method} sip:{gateway.target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{method}\r\n"
        "From: <sip:ping@127.0.0.1>;tag=p\r\nTo: <sip:gw@127.0.0.1>\r\n"
        f"Call-ID: ood-{method}@127.0.0.1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    final = final_response(exchange(gateway, request))
    assert final.status == status
