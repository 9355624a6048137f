"""SDP helpers: connection address, media ports, hold detection."""

from __future__ import annotations

import pytest

from sip import connection_address, extract_sdp, is_hold, media_ports


def sdp(*lines: str, eol: str = "\r\n") -> str:
    return eol.join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", *lines]) + eol


OFFER = sdp("c=IN IP4 198.51.100.7", "t=0 0", "m=audio 40000 RTP/AVP 0 8 101", "a=sendrecv")


@pytest.mark.parametrize(
    "text, address",
    [
        (OFFER, "198.51.100.7"),
        (sdp("c=IN IP6 2001:db8::7", "t=0 0", "m=audio 4000 RTP/AVP 0"), "2001:db8::7"),
        (
            sdp(
                "t=0 0",
                "m=audio 4000 RTP/AVP 0",
                "c=IN IP4 203.0.113.9",
                "m=video 0 RTP/AVP 31",
                "c=IN IP4 203.0.113.10",
            ),
            "203.0.113.9",
        ),
        (sdp("c=IN IP4 233.252.0.1/127/2", "m=audio 4000 RTP/AVP 0"), "233.252.0.1"),
        (sdp("c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0"), "0.0.0.0"),
        (sdp("t=0 0", "m=audio 4000 RTP/AVP 0"), None),
        (sdp("c=garbage", "m=audio 4000 RTP/AVP 0"), None),
        (sdp("c=IN IP4 192.0.2.4", "m=audio 4000 RTP/AVP 0", eol="\n"), "192.0.2.4"),
        ("", None),
    ],
)
def test_connection_address(text, address):
    assert connection_address(text) == address


@pytest.mark.parametrize(
    "text, ports",
    [
        (OFFER, [40000]),
        (sdp("m=audio 49217 RTP/AVP 0 12", "m=video 3227 RTP/AVP 31"), [49217, 3227]),
        (sdp("m=audio 49170/2 RTP/AVP 0"), [49170]),
        (sdp("m=audio 0 RTP/AVP 0"), [0]),
        (sdp("m=audio x RTP/AVP 0", "m=broken"), []),
        ("", []),
    ],
)
def test_media_ports(text, ports):
    assert media_ports(text) == ports


@pytest.mark.parametrize(
    "text, held",
    [
        (OFFER, False),
        (sdp("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0"), False),
        (sdp("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=sendonly"), True),
        (sdp("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=inactive"), True),
        (sdp("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=recvonly"), False),
        (sdp("c=IN IP4 192.0.2.1", "a=sendonly", "m=audio 4000 RTP/AVP 0"), True),
        (sdp("c=IN IP4 192.0.2.1", "a=sendonly", "m=audio 4000 RTP/AVP 0", "a=sendrecv"), False),
        (sdp("c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0"), True),
        (sdp("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "c=IN IP4 0.0.0.0"), True),
        (sdp("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=sendonly", "m=video 5000 RTP/AVP 31"), False),
        (sdp("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=sendonly", "m=video 0 RTP/AVP 31"), True),
        (sdp("c=IN IP4 192.0.2.1", "a=inactive"), True),
        (sdp("c=IN IP4 192.0.2.1"), False),
        (sdp("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=sendonly", eol="\n"), True),
    ],
)
def test_is_hold(text, held):
    assert is_hold(text) is held


@pytest.mark.parametrize(
    "content_type, body, expected",
    [
        ("application/sdp", OFFER, OFFER),
        (" Application/SDP ;x=1", OFFER, OFFER),
        (None, OFFER, None),
        ("text/plain", OFFER, None),
        ("multipart/mixed;boundary=", "--\r\n", None),
        ("multipart/mixed;boundary=b;;", "--b\r\n", None),
        ("multipart/mixed;boundary=b", f"--b\nContent-Type: application/sdp\n\n{OFFER}\n--b--\n", OFFER),
        ("multipart/mixed;boundary=b", "--b\r\n\r\nno headers: text/plain\r\n--b--\r\n", None),
    ],
)
def test_extract_sdp(content_type, body, expected):
    assert extract_sdp(content_type, body) == expected
