"""parse_request: start line, headers, folding, compact forms, body."""

from __future__ import annotations

import pytest

from sip import SipParseError, parse_address, parse_request, split_header_list
from sip.message import canonical_header_name, header_key

RURI = "sip:+33142345678@gw.example.com"
BASE = [
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    'From: "Bridge" <sip:bridge@bridge.example.com>;tag=1928301774',
    f"To: <{RURI}>",
    "Call-ID: a84b4c76e66710@bridge.example.com",
    "CSeq: 314159 INVITE",
]


def build(
    *extra: str,
    start: str = f"INVITE {RURI} SIP/2.0",
    base=BASE,
    body: str = "",
    content_length: bool = True,
    eol: str = "\r\n",
) -> str:
    lines = [start, *base, *extra]
    if content_length:
        lines.append(f"Content-Length: {len(body.encode())}")
    return eol.join(lines) + eol + eol + body


def test_minimal_invite():
    req = parse_request(build())
    assert req.method == "INVITE"
    assert req.uri == RURI
    assert req.version == "SIP/2.0"
    assert req.call_id == "a84b4c76e66710@bridge.example.com"
    assert req.cseq == (314159, "INVITE")
    assert req.header("max-forwards") == "70"
    assert req.body == ""
    assert req.headers[0] == ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds")


def test_bytes_input_is_accepted():
    req = parse_request(build().encode())
    assert req.call_id == "a84b4c76e66710@bridge.example.com"


@pytest.mark.parametrize(
    "line, lookup, expected",
    [
        ("X-Custom:   spaced value   ", "x-custom", "spaced value"),
        ("x-CUSTOM: odd casing", "X-Custom", "odd casing"),
        ("X-Custom : space before colon", "X-CUSTOM", "space before colon"),
        ("X-Custom:\tTab\t", "x-custom", "Tab"),
        ("X-Custom:", "x-custom", ""),
        ("Subject: a, b, c", "subject", "a, b, c"),  # not a list header
        ("s: compact subject", "Subject", "compact subject"),
        ("k: timer, 100rel", "supported", "timer"),
        ("x: 1800;refresher=uac", "Session-Expires", "1800;refresher=uac"),
        ("c: application/sdp", "Content-Type", "application/sdp"),
    ],
)
def test_header_lookup(line, lookup, expected):
    req = parse_request(build(line))
    assert req.header(lookup) == expected


def test_compact_forms_throughout():
    raw = "\r\n".join(
        [
            f"INVITE {RURI} SIP/2.0",
            "v: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bKa",
            "f: <sip:bridge@bridge.example.com>;tag=1",
            "t: <sip:x@gw.example.com>",
            "i: compact-id@host",
            "CSeq: 1 INVITE",
            "m: <sip:bridge@192.0.2.10>",
            "c: application/sdp",
            "l: 3",
            "",
            "v=0",
        ]
    )
    req = parse_request(raw)
    assert req.call_id == "compact-id@host"
    assert req.header("Call-ID") == req.header("i") == req.header("CALL-ID")
    assert req.header("from") == "<sip:bridge@bridge.example.com>;tag=1"
    assert req.header("Contact") == "<sip:bridge@192.0.2.10>"
    assert req.content_type == "application/sdp"
    assert req.body == "v=0"
    names = [name for name, _ in req.headers]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Type", "Content-Length"]


def test_folding_joins_continuation_lines_with_one_space():
    raw = build(
        "X-Folded: first",
        "   second",
        "\tthird",
        "Subject:",
        " only on the next line",
    )
    req = parse_request(raw)
    assert req.header("x-folded") == "first second third"
    assert req.header("subject") == "only on the next line"


def test_folded_required_headers():
    raw = "\r\n".join(
        [
            f"INVITE {RURI} SIP/2.0",
            "Via  : SIP  /   2.0",
            " /UDP",
            "    192.0.2.2;branch=390skdjuw",
            "From: <sip:a@example.com>",
            "  ;",
            "  tag = 98asjd8",
            "To : <sip:b@example.com>",
            "Call-ID: folded@host",
            "cseq: 0009",
            "  INVITE",
            "",
            "",
        ]
    )
    req = parse_request(raw)
    assert req.cseq == (9, "INVITE")
    assert req.header("from") == "<sip:a@example.com> ; tag = 98asjd8"
    assert parse_address(req.header("from")).tag == "98asjd8"


def test_continuation_folds_into_previous_header():
    req = parse_request(build(base=[BASE[0], "  ;received=192.0.2.99", *BASE[1:]]))
    assert req.header("via").endswith(";branch=z9hG4bK776asdhds ;received=192.0.2.99")


def test_bare_lf_line_ends():
    req = parse_request(build("X-A: 1", eol="\n", body="v=0\n"))
    assert req.header("x-a") == "1"
    assert req.body == "v=0\n"


def test_leading_crlf_before_start_line_is_ignored():
    assert parse_request("\r\n\r\n" + build()).method == "INVITE"


def test_missing_final_blank_line_tolerated_without_body():
    raw = build().rstrip("\r\n") + "\r\n"
    assert parse_request(raw).body == ""


@pytest.mark.parametrize(
    "value, expected",
    [
        ("SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b;branch=2", ["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b;branch=2"]),
        ("SIP/2.0/UDP a;branch=1 ,SIP/2.0/TCP b", ["SIP/2.0/UDP a;branch=1", "SIP/2.0/TCP b"]),
    ],
)
def test_via_list_is_split(value, expected):
    req = parse_request(build(base=[f"Via: {value}", *BASE[1:]]))
    assert req.headers_all("via") == expected
    assert req.header("v") == expected[0]


def test_multiple_lines_and_lists_keep_order():
    req = parse_request(
        build(
            'Contact: "Doe, John" <sip:john@a.example.com>;q=0.5, <sip:x@b.example.com;a=1,2>',
            "Contact: sip:c@c.example.com",
            "Supported: timer, 100rel",
            "supported: replaces",
        )
    )
    assert req.headers_all("m") == [
        '"Doe, John" <sip:john@a.example.com>;q=0.5',
        "<sip:x@b.example.com;a=1,2>",
        "sip:c@c.example.com",
    ]
    assert req.headers_all("Supported") == ["timer", "100rel", "replaces"]
    assert req.headers_all("absent") == []
    assert req.header("absent") is None
    assert req.has_header("k") and not req.has_header("require")


@pytest.mark.parametrize(
    "line, name",
    [
        ('Authorization: Digest username="a, b", realm="r", nonce="n"', "authorization"),
        ("Date: Sat, 13 Nov 2010 23:29:00 GMT", "date"),
        ("User-Agent: Bridge/1.0 (x, y)", "user-agent"),
        ("X-Dialout-Organizer: Doe, Jane", "x-dialout-organizer"),
    ],
)
def test_non_list_headers_are_never_split(line, name):
    req = parse_request(build(line))
    assert req.headers_all(name) == [line.split(":", 1)[1].strip()]


def test_split_header_list_respects_quotes_and_angles():
    assert split_header_list('a, "b, c" <sip:x;y=1,2>, ,d') == ["a", '"b, c" <sip:x;y=1,2>', "d"]
    assert split_header_list('"esc \\" , still quoted", e') == ['"esc \\" , still quoted"', "e"]


def test_body_cut_to_content_length():
    raw = build(body="v=0\r\n", content_length=False).replace("\r\n\r\n", "\r\nContent-Length: 3\r\n\r\n", 1)
    assert parse_request(raw).body == "v=0"


def test_body_without_content_length_runs_to_end():
    raw = build(body="v=0\r\nxyz", content_length=False)
    assert parse_request(raw).body == "v=0\r\nxyz"


def test_content_length_counts_utf8_octets():
    body = "s=Caf\u00e9\r\n"
    req = parse_request(build("Content-Type: text/plain", body=body))
    assert req.body == body
    short = build("Content-Type: text/plain", body=body, content_length=False).replace(
        "\r\n\r\n", f"\r\nContent-Length: {len(body)}\r\n\r\n", 1
    )  # characters < octets: the last octet (the final LF) is cut
    assert parse_request(short).body == body[:-1]


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("", "empty message"),
        ("\r\n\r\n", "empty message"),
        ("garbage", "malformed request line"),
        ("SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n", "message is a response, not a request"),
        (build(start=f"INVITE  {RURI} SIP/2.0"), "malformed request line"),
        (build(start=f"INVITE {RURI} SIP/2.0 "), "malformed request line"),
        (build(start=f"INVITE {RURI}"), "malformed request line"),
        (build(start=f"INV(ITE {RURI} SIP/2.0"), "malformed method"),
        (build(start=f"INVITE <{RURI}> SIP/2.0"), "Request-URI contains an unescaped illegal character"),
        (build(start="INVITE sip:+33 1 42@gw SIP/2.0"), "malformed request line"),
        (build(start="INVITE sip:a%2@gw SIP/2.0"), "Request-URI has a malformed %-escape"),
        (build(start="INVITE sip:a@gw? SIP/2.0"), "URI has a malformed header"),
        (build(start="INVITE sip:a@gw?Route=%3Csip:x%3E SIP/2.0"), "Request-URI carries headers"),
        (build(start="INVITE sip:a@ SIP/2.0"), "URI has no host"),
        (build(start="INVITE 12345 SIP/2.0"), "URI has no scheme"),
        (build(start=f"INVITE {RURI} HTTP/1.1"), "malformed request line"),
        (build("no colon here"), "header line without a name and colon"),
        (build("Bad Name: x"), "malformed header name"),
        (build(": x"), "header line without a name and colon"),
        (build(base=BASE[1:]), "missing Via header"),
        (build(base=[b for b in BASE if not b.startswith("Call-ID")]), "missing Call-ID header"),
        (build(base=[b for b in BASE if not b.startswith("CSeq")]), "missing CSeq header"),
        (build(base=[b for b in BASE if not b.startswith("From")]), "missing From header"),
        (build(base=[b for b in BASE if not b.startswith("To")]), "missing To header"),
        (build("i: second-call-id"), "more than one Call-ID header"),
        (build("CSeq: 2 INVITE"), "more than one CSeq header"),
        (build("t: <sip:other@x.example.com>"), "more than one To header"),
        (build(base=[*BASE[:5], "CSeq: 1 BYE"]), "CSeq method does not match the request method"),
        (build(base=[*BASE[:5], "CSeq: 1"]), "malformed CSeq"),
        (build(base=[*BASE[:5], "CSeq: -1 INVITE"]), "malformed CSeq number"),
        (build(base=[*BASE[:5], "CSeq: 2147483648 INVITE"]), "CSeq number out of range"),
        (build(base=[BASE[0], "Max-Forwards: 256", *BASE[2:]]), "Max-Forwards out of range"),
        (build(base=[BASE[0], "Max-Forwards: many", *BASE[2:]]), "malformed Max-Forwards"),
        (build(base=[*BASE[:4], "Call-ID: two words", BASE[5]]), "malformed Call-ID"),
        (build(base=[*BASE[:4], "Call-ID:", BASE[5]]), "malformed Call-ID"),
        (
            build(body="v=0", content_length=False).replace("\r\n\r\n", "\r\nl: 9999\r\n\r\n", 1),
            "Content-Length exceeds the body",
        ),
        (
            build(body="v=0", content_length=False).replace("\r\n\r\n", "\r\nl: -1\r\n\r\n", 1),
            "malformed Content-Length",
        ),
        (build("Content-Length: 0"), "more than one Content-Length header"),
        (build(start=f"INVITE {RURI} SIP/2.0", base=["  starts folded", *BASE]), "continuation line before any header"),
        (build(base=[*BASE[:2], 'From: "unterminated <sip:a@b.example.com>', *BASE[3:]]), "unterminated quoted string"),
        (
            build(base=[*BASE[:2], "From: Doe, John <sip:a@b.example.com>", *BASE[3:]]),
            "unquoted display name holds separators",
        ),
        (
            build(base=[*BASE[:2], "From: Doe; John <sip:a@b.example.com>", *BASE[3:]]),
            "unquoted display name holds separators",
        ),
        (build(base=[*BASE[:2], "From: < sip:a@b.example.com >", *BASE[3:]]), "address has whitespace inside <>"),
        (build(base=[*BASE[:2], "From: <sip:a@b.example.com", *BASE[3:]]), "address has '<' without '>'"),
        (build(base=[*BASE[:2], "From: <sip:a@b.example.com>x", *BASE[3:]]), "junk after address"),
        (build(base=[*BASE[:2], "From: <sip:a@b.example.com>;;tag=1", *BASE[3:]]), "malformed header parameter"),
        (build(base=[*BASE[:2], "From: sip:a@b.example.com?x=y", *BASE[3:]]), "address URI with '?' or ',' needs <>"),
        (build(base=[*BASE[:2], "From:", *BASE[3:]]), "empty address"),
        (build("Contact: <sip:a@b.example.com>;;;"), "malformed header parameter"),
        (build("Contact: <sip:a@b.example.com>,,<sip:c@d.example.com>"), "empty element in Contact"),
        (build(base=["Via: SIP/2.0/UDP 192.0.2.15;;,;,,", *BASE[1:]]), "empty element in Via"),
        (build(base=["Via: SIP/2.0 192.0.2.15", *BASE[1:]]), "malformed Via"),
        (build(base=["Via: SIP/2.0/UDP", *BASE[1:]]), "malformed Via"),
        (build(base=["Via: SIP/2.0/UDP bad host!", *BASE[1:]]), "malformed Via sent-by"),
        (build(base=["Via: SIP/2.0/UDP host:99999", *BASE[1:]]), "malformed Via sent-by"),
    ],
)
def test_garbage_is_refused(raw, reason):
    with pytest.raises(SipParseError) as exc:
        parse_request(raw)
    assert exc.value.reason == reason
    assert exc.value.status == 400


@pytest.mark.parametrize("version", ["SIP/7.0", "SIP/2.1", "sip/3.0"])
def test_foreign_version_gets_505(version):
    with pytest.raises(SipParseError) as exc:
        parse_request(build(start=f"INVITE {RURI} {version}"))
    assert exc.value.status == 505


def test_lower_case_version_accepted_and_normalised():
    assert parse_request(build(start=f"INVITE {RURI} sip/2.0")).version == "SIP/2.0"


@pytest.mark.parametrize("bad", [None, 12, 3.5, ["INVITE"]])
def test_non_text_input_raises_sip_parse_error(bad):
    with pytest.raises(SipParseError):
        parse_request(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "uri",
    [
        "tel:+1-212-555-0100",
        "tel:0142;phone-context=+33",
        "sips:+33142345678@gw.example.com;user=phone",
        "sip:[2001:db8::1]:5061;transport=tls",
        "sip:*21%23@gw.example.com",
        "urn:service:sos",  # unknown scheme: not this layer's call
    ],
)
def test_request_uri_forms_accepted(uri):
    assert parse_request(build(start=f"INVITE {uri} SIP/2.0")).uri == uri


@pytest.mark.parametrize(
    "value, display, uri, params",
    [
        ("<sip:a@b.example.com>", None, "sip:a@b.example.com", ()),
        ("sip:a@b.example.com;tag=x", None, "sip:a@b.example.com", (("tag", "x"),)),
        ("sip:a@b.example.com ;  tag  = x", None, "sip:a@b.example.com", (("tag", "x"),)),
        (
            '"A \\"B\\" C" <sip:a@b.example.com;user=phone>;tag=1',
            'A "B" C',
            "sip:a@b.example.com;user=phone",
            (("tag", "1"),),
        ),
        ("caller<sip:caller@example.com>;tag=323", "caller", "sip:caller@example.com", (("tag", "323"),)),
        ("Alice  Smith <tel:+1-212-555-0100>", "Alice Smith", "tel:+1-212-555-0100", ()),
        (
            '<sip:a@b.example.com>;x="quoted; value";lr',
            None,
            "sip:a@b.example.com",
            (("x", "quoted; value"), ("lr", None)),
        ),
        ("*", None, "*", ()),
    ],
)
def test_parse_address(value, display, uri, params):
    addr = parse_address(value, allow_star=True)
    assert (addr.display_name, addr.uri, addr.params) == (display, uri, params)


def test_star_is_only_for_contact():
    with pytest.raises(SipParseError):
        parse_address("*")


def test_header_key_and_canonical_names():
    assert header_key(" I ") == "call-id"
    assert header_key("Call-Id") == "call-id"
    assert canonical_header_name("v") == "Via"
    assert canonical_header_name("cseq") == "CSeq"
    assert canonical_header_name("call-id") == "Call-ID"
    assert canonical_header_name("X-Odd-Name") == "X-Odd-Name"


def test_sip_parse_error_is_a_value_error_with_status():
    err = SipParseError("nope")
    assert isinstance(err, ValueError)
    assert (err.reason, err.status) == ("nope", 400)
    assert "nope" in repr(err)
