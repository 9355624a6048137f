"""Fuzzing the pure SIP layer: whatever comes in, the parsers answer with a
result or a :class:`SipParseError`, never another exception.

Hypothesis drives structured and unstructured inputs (derandomized, so CI
sees the same examples every run; ``FUZZ_EXAMPLES`` raises the count, as
``make fuzz`` does), and radamsa (PyPI ``pyradamsa``, or the built-in byte
mutator of tests/fuzzing.py without it) mutates the same valid INVITEs the
gateway-level fuzzer starts from.

The SDP check is the gate in front of an opaque relay (the gateway never
parses a body with pjsip or pjmedia; see csrc/sipcore.c, where bodies are
copied as bytes), so an SDP it accepts is also checked here for the
properties a peer's media stack relies on.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from call.events import Body
from sip import SipParseError, invite_from_request, parse_request
from sip import headers as H
from sip.message import parse_address, parse_header_params, split_header_list
from sip.sdp import MAX_MEDIA, check_sdp, connection_address, extract_sdp, is_hold, media_ports
from sip.uri import dialled_from_request_uri, parse_uri
from tests.fuzzing import NASTY_VALUES, REQUEST_URIS, SDP, SDP_LINES, SEEDS, fill_seed, make_case, mutate_bytes

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
MUTATIONS = int(os.environ.get("FUZZ_MUTATIONS", "100"))

# The same examples on every run of the suite; new ones each `make fuzz` (FUZZ_EXAMPLES set).
fuzz = settings(
    max_examples=EXAMPLES,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def parse_or_refuse(raw):
    """parse_request + invite_from_request: a result, or SipParseError."""
    try:
        request = parse_request(raw)
    except SipParseError as exc:
        assert exc.status in (400, 416, 505) and exc.reason
        return None
    try:
        invite_from_request(request)
    except SipParseError as exc:
        assert exc.status in (400, 416) and exc.reason
    # What the gateway reads of a parsed request must not raise either.
    assert request.call_id
    number, method = request.cseq
    assert method == request.method and 0 <= number < 2**31
    _ = request.content_type
    request.headers_all("via")
    return request


# --- strategies ---------------------------------------------------------------------------------

HEADER_NAMES = [
    "Via",
    "v",
    "VIA",
    "From",
    "f",
    "To",
    "t",
    "Call-ID",
    "i",
    "CSeq",
    "cseq",
    "Contact",
    "m",
    "Max-Forwards",
    "Content-Type",
    "c",
    "Content-Length",
    "l",
    "Supported",
    "k",
    "Require",
    "Session-Expires",
    "x",
    "Min-SE",
    "Accept",
    "Content-Encoding",
    "e",
    "Replaces",
    "X-Dialout-Organizer",
    "x-dialout-tenant",
    "X-Dialout-Location",
    "Record-Route",
    "Route",
    "Reason",
    "Allow",
    "User-Agent",
]
VALID = {
    "Via": "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1;rport",
    "From": "<sip:bridge@127.0.0.1>;tag=1",
    "To": "<sip:+33142685300@127.0.0.1>",
    "Call-ID": "c1@127.0.0.1",
    "CSeq": "1 INVITE",
    "Contact": "<sip:bridge@127.0.0.1:5999>",
    "X-Dialout-Organizer": "alice@contoso.com",
}

text_values = st.one_of(
    st.text(max_size=80),
    st.sampled_from([v.decode("utf-8", "surrogateescape") for v in NASTY_VALUES]),
    st.sampled_from(list(VALID.values())),
    st.from_regex(r"[0-9 ;=<>@:,\"a-z.+-]{0,40}", fullmatch=True),
)
uris = st.one_of(
    st.sampled_from([u.format(number="+33142685300", local="0142685300") for u in REQUEST_URIS]),
    st.text(max_size=60),
    st.from_regex(r"(sip|sips|tel|SIP|x):[^ \r\n]{0,40}", fullmatch=True),
)


@st.composite
def invites(draw):
    """An INVITE-shaped message: valid headers mixed with drawn ones, then a body."""
    method = draw(st.sampled_from(["INVITE", "INVITE", "OPTIONS", "invite", "INV ITE", ""]) | st.text(max_size=8))
    version = draw(st.sampled_from(["SIP/2.0", "SIP/2.0", "SIP/3.0", "sip/2.0", "SIP/2.0 ", "HTTP/1.1"]))
    headers = [(k, v) for k, v in VALID.items() if draw(st.booleans()) or draw(st.booleans())]
    for _ in range(draw(st.integers(0, 6))):
        headers.insert(
            draw(st.integers(0, len(headers))),
            (draw(st.sampled_from(HEADER_NAMES) | st.text(max_size=12)), draw(text_values)),
        )
    body = draw(st.sampled_from(["", SDP.format(sess=1), "v=0\r\n", "\x00\xff"]) | sdp_texts())
    eol = draw(st.sampled_from(["\r\n", "\n", "\r\n", "\r"]))
    length = draw(st.sampled_from([None, "auto", "0", "-1", "99999", "x"]))
    if length == "auto":
        headers.append(("Content-Length", str(len(body.encode("utf-8", "surrogatepass")))))
    elif length is not None:
        headers.append(("Content-Length", length))
    lines = [f"{method} {draw(uris)} {version}"] + [f"{k}: {v}" for k, v in headers]
    return eol.join(lines) + eol + eol + body


@st.composite
def sdp_texts(draw):
    kinds = "vosiuepcbtrzkamx=A "
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0", "m=audio 7000 RTP/AVP 0"]
    lines = [line for line in lines if draw(st.integers(0, 5))]
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            line = draw(st.sampled_from(SDP_LINES))
        else:
            line = draw(st.sampled_from(kinds)) + "=" + draw(text_values)
        lines.insert(draw(st.integers(0, len(lines))), line)
    return draw(st.sampled_from(["\r\n", "\n"])).join(lines) + "\r\n"


# --- the request parser --------------------------------------------------------------------------


@fuzz
@given(st.binary(max_size=3000))
def test_parse_request_on_any_bytes(raw):
    parse_or_refuse(raw)


@fuzz
@given(st.text(max_size=2000))
def test_parse_request_on_any_text(raw):
    parse_or_refuse(raw)


@fuzz
@given(invites())
def test_parse_request_on_invite_shaped_messages(raw):
    parse_or_refuse(raw)
    parse_or_refuse(raw.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_parse_request_on_radamsa_mutations_of_every_seed(seed):
    data = fill_seed(seed, 1)
    assert parse_or_refuse(data) is not None, "the seed itself must parse"
    rng = random.Random(seed)
    for _ in range(MUTATIONS):
        parse_or_refuse(mutate_bytes(data, rng))


def test_parse_request_on_the_gateway_fuzzers_inputs():
    """The first inputs of tests/integration/test_fuzz.py, parsed offline."""
    for case in range(MUTATIONS * 2):
        parse_or_refuse(make_case(case).data)


def test_a_bare_cr_inside_a_header_is_refused():
    """Found by fuzzing: pjsip ends a line at a bare CR and so reads a second
    header ("Y: z") where this parser read one organiser "x\\rY: z"."""
    raw = fill_seed("offer", 1).replace(b"alice@contoso.com", b"alice@contoso.com\rX-Dialout-Tenant: fabrikam")
    with pytest.raises(SipParseError, match="bare CR"):
        parse_request(raw)
    # CRLF, bare LF and the "\r\n\n" between headers and body stay fine.
    assert parse_request(fill_seed("folded_lf", 1)).header("x-dialout-organizer") == "alice@contoso.com"
    mixed = fill_seed("late_offer", 1).replace(b"\r\n\r\n", b"\r\n\n")
    assert parse_request(mixed).call_id == "fz-1@127.0.0.1"


# --- URIs, addresses, parameters ----------------------------------------------------------------


@fuzz
@given(uris)
def test_uri_parsers_on_anything(uri):
    for fn in (parse_uri, dialled_from_request_uri):
        try:
            fn(uri)
        except SipParseError as exc:
            assert exc.status in (400, 416)


@fuzz
@given(text_values)
def test_address_and_parameter_parsers_on_anything(value):
    for fn in (parse_address, parse_header_params, split_header_list):
        try:
            result = fn(value)
        except SipParseError:
            continue
        if fn is split_header_list:
            assert all(isinstance(p, str) and p for p in result)


# --- the headers the engine hands over (sip.headers) ----------------------------------------------


@st.composite
def header_blocks(draw):
    eol = st.sampled_from(["\r\n", "\r\n", "\n", "\r"])
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        parts.append(f"{draw(st.sampled_from(HEADER_NAMES) | st.text(max_size=10))}: {draw(text_values)}{draw(eol)}")
    return "".join(parts)


@fuzz
@given(st.one_of(header_blocks(), st.text(max_size=400)))
def test_header_helpers_never_raise_and_what_they_relay_can_be_encoded(block):
    for name, value in H.parse_block(block):
        assert "\r" not in value and "\n" not in value and "\r" not in name and "\n" not in name
    H.values(block, "supported")
    H.first(block, "session-expires")
    H.has_option(block, "require", "timer")
    seconds, refresher = H.session_expires(H.first(block, "session-expires"))
    assert seconds is None or 0 <= seconds < 10**9
    # Relayed headers go back to the engine through encode_block, which
    # refuses a line break in a value: it must never see one.
    H.encode_block(H.relay_request_headers(block))
    H.encode_block(H.relay_response_headers(block))


def test_a_bare_cr_in_a_header_block_ends_the_line():
    """Found by fuzzing: "Reason: x\\rY: z" was one value holding a CR, and
    encode_block raised ValueError when the call relayed it."""
    block = "Reason: SIP;cause=200\rX-Dialout-Organizer: a\nSession-Expires: 90\r\n"
    assert H.parse_block(block) == [
        ("Reason", "SIP;cause=200"),
        ("X-Dialout-Organizer", "a"),
        ("Session-Expires", "90"),
    ]
    assert H.encode_block(H.relay_response_headers(block)) == b"Reason: SIP;cause=200\r\nSession-Expires: 90\r\n"


def test_an_unbalanced_quote_in_a_list_header_does_not_raise():
    """Found by fuzzing (FUZZ_EXAMPLES=20000): pjsip accepts `Supported: "x`
    (any characters between commas), and relaying it raised SipParseError,
    which tore the call down."""
    block = 'Supported: timer, "x\r\nRequire: "timer\r\nAllow: INVITE, "BYE\r\n'
    assert H.has_option(block, "supported", "timer")
    assert H.values(block, "allow") == ["INVITE", '"BYE']
    assert H.relay_request_headers(block)[-1] == ("Supported", "timer")
    assert H.relay_response_headers(block) == ()


# --- the SDP path ----------------------------------------------------------------------------------


def _check_accepted_sdp(sdp_bytes: bytes) -> None:
    """What check_sdp promises about an SDP it lets through to the peer."""
    text = sdp_bytes.decode("utf-8")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    assert lines[0].strip() == "v=0"
    assert any(line.startswith("o=") for line in lines)
    media = [line for line in lines if line.startswith("m=")]
    assert len(media) <= MAX_MEDIA
    for line in lines:
        assert len(line) <= 1024 and not any(ord(c) < 0x20 and c != "\t" for c in line)
    for m in media:
        port = m.split()[1].split("/")[0]
        assert port.isdigit() and int(port) <= 65535


@pytest.mark.parametrize("old, new", [("m=audio", "m=\taudio"), ("m=audio", "m= audio"), ("c=IN", "c= IN")])
def test_check_sdp_refuses_whitespace_after_the_equals_sign(old, new):
    """Found by test_check_sdp_on_radamsa_mutations with FUZZ_MUTATIONS=10000:
    split() hid the tab of "m=\\taudio", and a peer's parser reads an empty
    media type. A blank session name ("s= ") is RFC 8866's own example."""
    sdp = SDP.format(sess=1)
    assert check_sdp(sdp.replace(old, new).encode()).endswith("has whitespace after '='")
    assert check_sdp(sdp.replace("s=-", "s= ").encode()) is None


@fuzz
@given(st.one_of(sdp_texts(), st.text(max_size=600)))
def test_check_sdp_answers_for_any_text(text):
    data = text.encode("utf-8", "surrogatepass")
    problem = check_sdp(data)
    assert problem is None or (isinstance(problem, str) and problem)
    if problem is None:
        _check_accepted_sdp(data)


@fuzz
@given(
    st.binary(max_size=2000),
    st.sampled_from(
        [
            "application/sdp",
            "multipart/mixed;boundary=b",
            "text/plain",
            "multipart/mixed",
            "multipart/mixed;boundary=",
            "",
            "APPLICATION/SDP",
        ]
    ),
)
def test_check_sdp_answers_for_any_bytes_and_content_type(data, ctype):
    problem = check_sdp(Body(ctype, data))
    assert problem is None or (isinstance(problem, str) and problem)


@fuzz
@given(sdp_texts(), st.sampled_from(["b", "b0undary", "x y", "--"]))
def test_check_sdp_finds_the_sdp_in_a_multipart_body(sdp, boundary):
    body = (f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{sdp}--{boundary}--\r\n").encode(
        "utf-8", "surrogatepass"
    )
    ctype = f'multipart/mixed;boundary="{boundary}"'
    multipart = check_sdp(Body(ctype, body))
    plain = check_sdp(sdp.encode("utf-8", "surrogatepass"))
    assert (multipart is None) == (plain is None) or extract_sdp(ctype, body.decode("utf-8", "replace")) != sdp


def test_check_sdp_on_radamsa_mutations():
    base = SDP.format(sess=1).encode()
    assert check_sdp(base) is None
    rng = random.Random(8866)
    for _ in range(MUTATIONS * 4):
        data = mutate_bytes(base, rng)
        problem = check_sdp(data)
        if problem is None:
            _check_accepted_sdp(data)


@fuzz
@given(st.one_of(sdp_texts(), st.text(max_size=400)))
def test_sdp_helpers_never_raise(offer):
    connection_address(offer)
    media_ports(offer)
    is_hold(offer)
    extract_sdp("multipart/mixed;boundary=b", offer)
