"""read_invite: the bridge's INVITE as an InboundInvite."""

from __future__ import annotations

import dataclasses

import pytest

from sip import HeaderNames, InboundInvite, SipParseError, parse_request, read_invite
from sip.inbound import invite_from_request

SDP = (
    "v=0\r\n"
    "o=bridge 2890844526 2890844526 IN IP4 198.51.100.7\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.7\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
)


def invite(
    *extra: str,
    ruri: str = "sip:+33142345678@gw.example.com;user=phone",
    body: str = SDP,
    content_type: str | None = "application/sdp",
    method: str = "INVITE",
) -> str:
    lines = [
        f"{method} {ruri} SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport",
        "Max-Forwards: 70",
        '"Weekly sync" <sip:meeting-42@bridge.example.com>;tag=abc',
        "To: <sip:+33142345678@gw.example.com;user=phone>",
        "Call-ID: 8f3c@bridge.example.com",
        f"CSeq: 1 {method}",
        "Contact: <sip:bridge@198.51.100.7:5060>",
        *extra,
    ]
    lines[3] = "From: " + lines[3]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


FULL = (
    "X-Dialout-Organizer: alice@contoso.example",
    "X-Dialout-Tenant: contoso",
    "X-Dialout-Meeting: m-123",
    "X-Dialout-Initiator: bob@contoso.example",
    "X-Dialout-Location: ZW",
)


def test_full_invite():
    inv = read_invite(invite(*FULL))
    assert inv.call_id == "8f3c@bridge.example.com"
    assert inv.request_uri == "sip:+33142345678@gw.example.com;user=phone"
    assert inv.from_uri == "sip:meeting-42@bridge.example.com"
    assert inv.to_uri == "sip:+33142345678@gw.example.com;user=phone"
    assert inv.dialled == "+33142345678"
    assert inv.dialled_number.user_phone and not inv.dialled_number.is_tel
    assert (inv.organizer, inv.tenant, inv.meeting, inv.initiator, inv.location) == (
        "alice@contoso.example",
        "contoso",
        "m-123",
        "bob@contoso.example",
        "ZW",
    )
    assert inv.has_sdp and inv.sdp == SDP
    assert (inv.session_expires, inv.session_refresher, inv.min_se) == (None, None, None)


def test_invite_is_a_frozen_slotted_dataclass():
    inv = read_invite(invite(*FULL))
    assert dataclasses.is_dataclass(inv) and not hasattr(inv, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        inv.organizer = "mallory"  # type: ignore[misc]


@pytest.mark.parametrize(
    "extra, field, expected",
    [
        ((), "organizer", None),
        (("X-Dialout-Organizer:",), "organizer", None),
        (("X-Dialout-Organizer:    ",), "organizer", None),
        (("X-Dialout-Organizer: \t ",), "organizer", None),
        (("x-dialout-organizer:   alice@x.example   ",), "organizer", "alice@x.example"),
        (("X-DIALOUT-ORGANIZER: alice",), "organizer", "alice"),
        (("X-Dialout-Organizer:", " alice-on-next-line"), "organizer", "alice-on-next-line"),
        (("X-Dialout-Organizer: Doe, Jane",), "organizer", "Doe, Jane"),
        (("X-Dialout-Organizer:", "X-Dialout-Organizer: second"), "organizer", "second"),
        (("X-Dialout-Organizer: same", "X-Dialout-Organizer: same"), "organizer", "same"),
        (("X-Dialout-Tenant:  ",), "tenant", None),
        (("X-Dialout-Meeting: a", "X-Dialout-Meeting: b"), "meeting", "a"),
        (("X-Dialout-Location: fr ",), "location", "fr"),
        (("X-Dialout-Initiator: ",), "initiator", None),
    ],
)
def test_dialout_headers(extra, field, expected):
    assert getattr(read_invite(invite(*extra)), field) == expected


@pytest.mark.parametrize("name", ["X-Dialout-Organizer", "X-Dialout-Tenant"])
def test_conflicting_payer_headers_are_refused(name):
    with pytest.raises(SipParseError, match=f"conflicting {name}"):
        read_invite(invite(f"{name}: alice", f"{name}: mallory"))


def test_configurable_header_names():
    names = HeaderNames(
        organizer="P-Organizer", tenant="P-Tenant", meeting="P-Conf", initiator="P-Who", location="P-Where"
    )
    inv = read_invite(
        invite(
            "p-organizer: carol",
            "P-Tenant: t1",
            "P-Conf: c1",
            "P-Who: w",
            "P-Where: US",
            "X-Dialout-Organizer: ignored",
        ),
        names,
    )
    assert (inv.organizer, inv.tenant, inv.meeting, inv.initiator, inv.location) == ("carol", "t1", "c1", "w", "US")
    assert read_invite(invite("X-Dialout-Organizer: x"), names).organizer is None


def test_header_names_defaults_and_frozen():
    names = HeaderNames()
    assert dataclasses.astuple(names) == (
        "X-Dialout-Organizer",
        "X-Dialout-Tenant",
        "X-Dialout-Meeting",
        "X-Dialout-Initiator",
        "X-Dialout-Location",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        names.organizer = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "ruri, dialled, is_tel, context",
    [
        ("sip:+33142345678@gw.example.com;user=phone", "+33142345678", False, None),
        ("sip:+33%201%2042%2034%2056%2078@gw.example.com", "+33 1 42 34 56 78", False, None),
        ("sip:0033142345678@gw.example.com", "0033142345678", False, None),
        ("sip:12ab@gw.example.com", "12ab", False, None),
        ("sip:112@gw.example.com", "112", False, None),
        ("tel:+1-212-555-0100", "+1-212-555-0100", True, None),
        ("tel:01-42-34-56-78;phone-context=+33", "+330142345678", True, "+33"),
        ("tel:2125550100;phone-context=dialout.example.com", "2125550100", True, "dialout.example.com"),
        ("sip:0142345678;phone-context=+33@gw.example.com;user=phone", "+330142345678", False, "+33"),
        ("sip:gw.example.com", "", False, None),
    ],
)
def test_dialled(ruri, dialled, is_tel, context):
    inv = read_invite(invite(ruri=ruri))
    assert inv.dialled == dialled
    assert inv.dialled_number.is_tel is is_tel
    assert inv.dialled_number.phone_context == context


@pytest.mark.parametrize(
    "ruri, status",
    [
        ("sip:+33%2@gw.example.com", 400),
        ("sip:a@b@gw.example.com", 400),
        ("sip:1@gw.example.com:99999", 400),
        ("http://gw.example.com/dial", 416),
        ("urn:service:sos", 416),
    ],
)
def test_bad_request_uri(ruri, status):
    with pytest.raises(SipParseError) as exc:
        read_invite(invite(ruri=ruri))
    assert exc.value.status == status


def test_non_invite_is_refused():
    with pytest.raises(SipParseError, match="not an INVITE"):
        read_invite(invite(method="OPTIONS"))


@pytest.mark.parametrize(
    "drop, reason",
    [("Call-ID:", "missing Call-ID header"), ("CSeq:", "missing CSeq header")],
)
def test_malformed_invite(drop, reason):
    raw = "\r\n".join(line for line in invite().split("\r\n") if not line.startswith(drop))
    with pytest.raises(SipParseError) as exc:
        read_invite(raw)
    assert exc.value.reason == reason


def test_wrong_content_length_is_refused():
    raw = invite().replace(f"Content-Length: {len(SDP)}", f"Content-Length: {len(SDP) + 50}")
    with pytest.raises(SipParseError, match="Content-Length"):
        read_invite(raw)


def test_compact_ugly_invite():
    raw = "\r\n".join(
        [
            "INVITE tel:+49-30-1234567 SIP/2.0",
            "v: SIP/2.0/TCP [2001:db8::7]:5060;branch=z9hG4bK-x",
            "f: Jérôme <sip:bridge@bridge.example.com>;tag=9",
            "t: tel:+49-30-1234567",
            "i: ugly-1",
            "cseq: 7 INVITE",
            "X-DIALOUT-organizer:",
            "    dave@contoso.example",
            "x-dialout-TENANT: contoso  ",
            "x: 1800 ; refresher = UAC",
            "Min-SE: 90",
            "c: Application/SDP",
            "l: " + str(len(SDP)),
            "",
            SDP,
        ]
    )
    inv = read_invite(raw)
    assert inv.call_id == "ugly-1"
    assert inv.from_uri == "sip:bridge@bridge.example.com"
    assert inv.to_uri == "tel:+49-30-1234567"
    assert inv.dialled == "+49-30-1234567"
    assert inv.organizer == "dave@contoso.example"
    assert inv.tenant == "contoso"
    assert (inv.session_expires, inv.session_refresher, inv.min_se) == (1800, "uac", 90)
    assert inv.sdp == SDP


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("Session-Expires: 90",), (90, None, None)),
        (("Session-Expires: soon;refresher=uas",), (None, "uas", None)),
        (("Session-Expires: 1800;refresher",), (1800, None, None)),
        (("Min-SE: 120;x=y",), (None, None, 120)),
        (("Min-SE: -1",), (None, None, None)),
    ],
)
def test_session_timers(extra, expected):
    inv = read_invite(invite(*extra))
    assert (inv.session_expires, inv.session_refresher, inv.min_se) == expected


@pytest.mark.parametrize(
    "content_type, body, sdp",
    [
        ("application/sdp", SDP, SDP),
        ("application/SDP; charset=utf-8", SDP, SDP),
        (None, "", None),
        ("application/sdp", "", None),
        ("application/sdp", "\r\n  \r\n", None),
        ("text/plain", "v=0\r\n", None),
        ("application/unknownformat", "<audio/>", None),
    ],
)
def test_sdp_body(content_type, body, sdp):
    inv = read_invite(invite(content_type=content_type, body=body))
    assert inv.sdp == sdp
    assert inv.has_sdp is (sdp is not None)


def multipart(boundary: str, *parts: tuple[str, str], preamble: str = "") -> str:
    out = preamble
    for ctype, content in parts:
        out += f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n{content}\r\n"
    return out + f"--{boundary}--\r\n"


@pytest.mark.parametrize(
    "content_type, body",
    [
        (
            "multipart/mixed;boundary=unique-boundary-1",
            multipart("unique-boundary-1", ("application/sdp", SDP), ("application/isup;version=itu-t92+", "\x01\x02")),
        ),
        (
            'multipart/mixed; boundary="quoted boundary"',
            multipart("quoted boundary", ("application/isup", "xx"), ("application/sdp", SDP), preamble="preamble\r\n"),
        ),
        (
            "multipart/alternative;boundary=outer",
            multipart(
                "outer",
                ("text/plain", "hi"),
                ("multipart/mixed;boundary=inner", multipart("inner", ("application/sdp", SDP))),
            ),
        ),
    ],
)
def test_sdp_from_multipart(content_type, body):
    inv = read_invite(invite(content_type=content_type, body=body))
    assert inv.has_sdp
    assert inv.sdp == SDP


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/mixed", multipart("b", ("application/sdp", SDP))),  # no boundary
        ("multipart/mixed;boundary=b", multipart("b", ("text/plain", "hello"))),
        ("multipart/mixed;boundary=other", multipart("b", ("application/sdp", SDP))),
        ("multipart/mixed;boundary=b", "--b\r\nContent-Type: application/sdp\r\n\r\nv=0"),  # never closed
    ],
)
def test_multipart_without_sdp(content_type, body):
    inv = read_invite(invite(content_type=content_type, body=body))
    assert not inv.has_sdp and inv.sdp is None


def test_invite_from_request_equals_read_invite():
    raw = invite(*FULL)
    assert invite_from_request(parse_request(raw)) == read_invite(raw)
    assert isinstance(read_invite(raw.encode()), InboundInvite)
