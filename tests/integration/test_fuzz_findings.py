"""What fuzzing the gateway found, one regression test each (hand-written
inputs, so they run against the ordinary `gateway` fixture).

* an INVITE whose CSeq names another method got a 500 (pjsip's transaction
  layer refuses it; csrc/sipcore.c took that for its own failure);
* a request pjsip parsed but that lacks Call-ID/From/To, and a TCP request
  without a valid Content-Length, got no answer at all;
* the body relayed to the trunk (and checked by check_sdp) was the rest of
  the datagram, not what Content-Length delimits;
* a bare CR inside a header: pjsip reads two headers where sip/ read one.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.fuzzing import fill_seed
from tests.integration.fuzz_harness import PyTrunk, _ack_2xx, _bye_after_2xx
from tests.integration.netns import Here
from tests.integration.raw_sip import SipSocket, ack_for, final_response, rewrite_top_via_sent_by

pytestmark = pytest.mark.integration


def send(gw, data: bytes, transport: str = "udp", timeout_s: float = 2.0):
    with SipSocket(transport, gw.target) as sock:
        if transport == "udp":
            data = rewrite_top_via_sent_by(data, "127.0.0.1", sock.local_port)
        got = sock.exchange(data, timeout_s=timeout_s, settle_s=0.2)
        final = final_response(got)
        if final is not None and final.status >= 300 and (final.header("cseq") or "").endswith("INVITE"):
            sock.send(ack_for(data, final))
        return final


def test_an_invite_whose_cseq_names_another_method_gets_400_not_500(gateway):
    final = send(gateway, fill_seed("offer", 1).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"))
    assert final is not None and final.status == 400, final
    assert "CSeq method does not match" in final.header("warning")
    assert gateway.call_lines() == []


@pytest.mark.parametrize("header", ["Call-ID", "From", "To"])
def test_a_request_without_a_required_header_gets_400(gateway, header):
    data = re.sub(rb"(?m)^" + header.encode() + rb":[^\r\n]*\r\n", b"", fill_seed("offer", 2))
    final = send(gateway, data)
    assert final is not None and final.status == 400, final
    assert "required header" in final.header("warning")


@pytest.mark.parametrize("value", [None, b"99999999999", b"x"])
def test_a_tcp_request_without_a_valid_content_length_gets_400(gateway, value):
    data = fill_seed("offer", 3, transport="TCP")
    if value is None:
        data = re.sub(rb"Content-Length: \d+\r\n", b"", data)
    else:
        data = re.sub(rb"Content-Length: \d+", b"Content-Length: " + value, data)
    final = send(gateway, data, "tcp")
    assert final is not None and final.status == 400, final


def test_a_bare_cr_inside_a_header_gets_400(gateway):
    data = fill_seed("offer", 4).replace(b"alice@contoso.com", b"alice@contoso.com\rX-Dialout-Tenant: fabrikam")
    final = send(gateway, data)
    assert final is not None and final.status == 400 and "bare CR" in final.header("warning"), final
    assert gateway.call_lines() == []


def _padded_to(data: bytes, size: int) -> bytes:
    """`data` with an X-Pad header (just before Content-Type, so that a cut in it
    leaves a request pjsip parses whole) that makes it `size` bytes long."""
    head = b"X-Pad: "
    pad = size - len(data) - len(head) - 2
    return data.replace(b"Content-Type:", head + b"p" * pad + b"\r\nContent-Type:", 1)


def test_a_udp_invite_cut_by_pjsips_receive_buffer_gets_400_not_a_late_offer_call(gateway):
    """pjsip reads at most PJSIP_MAX_PKT_LEN - 1 bytes of a datagram (16383 with
    scripts/config_site.h; pjsip's own default of 4000 was the first finding);
    what it parsed of a longer INVITE had no SDP and was relayed as a late offer."""
    fits = _padded_to(fill_seed("denied", 6), 9000)
    final = send(gateway, fits)
    assert final is not None and final.status == 403, final  # read whole: the policy's answer
    cut = _padded_to(fill_seed("denied", 7), 20000)
    final = send(gateway, cut)
    assert final is not None and final.status == 400 and "16383 bytes" in final.header("warning"), final
    assert [e["call_id"] for e in gateway.call_lines()] == ["fz-6@127.0.0.1"]


def test_the_relayed_body_is_what_content_length_delimits(gateway):
    trunk = PyTrunk(Here(), gateway.trunk_port)
    try:
        data = fill_seed("offer", 5)
        head, _, body = data.partition(b"\r\n\r\n")
        cut = len(body) - len(b"a=sendrecv\r\n")
        data = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % cut, head) + b"\r\n\r\n" + body
        with SipSocket("udp", gateway.target) as sock:
            data = rewrite_top_via_sent_by(data, "127.0.0.1", sock.local_port)
            final = final_response(sock.exchange(data, timeout_s=3.0, settle_s=0))
            assert final is not None and final.status == 200, final
            sock.send(_ack_2xx(data, final, sock.local_port, "UDP"))
            time.sleep(0.1)
            assert (
                final_response(
                    sock.exchange(_bye_after_2xx(final, sock.local_port, "UDP"), timeout_s=3.0, settle_s=0)
                ).status
                == 200
            )
        legs = trunk.snapshot()
        assert len(legs) == 1
        assert legs[0].body == body[:cut] and legs[0].body.endswith(b"a=fmtp:101 0-15\r\n")
        gateway.wait_calls(1)
    finally:
        trunk.close()
