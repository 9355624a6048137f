"""Fuzz inputs for the gateway: valid INVITE seeds and deterministic mutators.

Every mutated input is a pure function of ``(case number, seed)``: the seed
INVITE is filled in (unique Call-ID, branch, tag and dialled number per case)
and then mutated with a ``random.Random`` seeded from the case, so a run can
be replayed exactly and a crasher reproduced from its number alone.

Two kinds of mutation, mixed:

* byte-level: radamsa (PyPI ``pyradamsa``) on the whole message or on one
  field, when it is installed; a small built-in byte mutator otherwise (bit
  flips, inserted, repeated, deleted and swapped runs, interesting numbers);
* structure-aware: one part of the INVITE changed on purpose: a header value,
  the Request-URI, an SDP line, Content-Length, CSeq, the encoding (non-UTF-8
  bytes, UTF-16, odd charsets, Content-Encoding), the sizes (giant values,
  hundreds of headers or m= lines), line ends and folding, duplicated,
  dropped and compact headers, multipart bodies.

Nothing here talks to a network: see tests/integration/fuzz_harness.py.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

try:  # radamsa, if the test extras are installed
    import pyradamsa

    _RADAMSA = pyradamsa.Radamsa()
except Exception:  # pragma: no cover - the built-in mutator takes over
    _RADAMSA = None

__all__ = [
    "DIALOG_SEEDS",
    "SDP",
    "SEEDS",
    "TRUNK_SEEDS",
    "FuzzCase",
    "fill_seed",
    "fill_template",
    "make_case",
    "make_dialog_case",
    "make_trunk_case",
    "mutate_bytes",
    "number_for",
    "radamsa_available",
]

CRLF = "\r\n"

SDP = (
    CRLF.join(
        [
            "v=0",
            "o=bridge {sess} 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 7000 RTP/AVP 0 8 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=sendrecv",
        ]
    )
    + CRLF
)

_COMMON = [
    "Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch};rport",
    "Max-Forwards: 70",
    'From: "Weekly sync" <sip:bridge@127.0.0.1:5999>;tag={tag}',
    "To: <sip:{number}@127.0.0.1;user=phone>",
    "Call-ID: {call_id}",
    "CSeq: 1 INVITE",
    "Contact: <sip:bridge@127.0.0.1:5999>",
    "X-Dialout-Organizer: alice@contoso.com",
    "X-Dialout-Meeting: meeting-{case}",
    "X-Dialout-Initiator: initiator-{case}@example.com",
    "X-Dialout-Location: FR",
]


def _invite(
    request_uri: str, headers: list[str], body: str = "", ctype: str | None = "application/sdp", eol: str = CRLF
) -> str:
    lines = [f"INVITE {request_uri} SIP/2.0", *headers]
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    lines.append("Content-Length: {length}")
    return eol.join(lines) + eol + eol + body


_MULTIPART = (
    "--b0undary"
    + CRLF
    + "Content-Type: application/sdp"
    + CRLF
    + CRLF
    + SDP
    + "--b0undary"
    + CRLF
    + "Content-Type: application/x-meeting-info"
    + CRLF
    + CRLF
    + "meeting={case}"
    + CRLF
    + "--b0undary--"
    + CRLF
)

# Valid INVITEs the gateway relays (or, for `denied`, refuses by policy).
SEEDS: dict[str, str] = {
    "offer": _invite("sip:{number}@127.0.0.1;user=phone", _COMMON, SDP),
    "late_offer": _invite("sip:{number}@127.0.0.1;user=phone", _COMMON, "", ctype=None),
    "multipart": _invite(
        "sip:{number}@127.0.0.1;user=phone", _COMMON, _MULTIPART, ctype="multipart/mixed;boundary=b0undary"
    ),
    "tel_uri": _invite("tel:{local};phone-context=+33", _COMMON, SDP),
    "compact": _invite(
        "sip:{number}@127.0.0.1",
        [
            "v: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch};rport",
            "f: <sip:bridge@127.0.0.1:5999>;tag={tag}",
            "t: <sip:{number}@127.0.0.1>",
            "i: {call_id}",
            "CSeq: 1 INVITE",
            "m: <sip:bridge@127.0.0.1:5999>",
            "x-dialout-organizer: alice@contoso.com",
            "k: timer",
        ],
        SDP,
        ctype=None,
    ).replace("Content-Length: {length}", "c: application/sdp" + CRLF + "l: {length}"),
    "timers": _invite(
        "sip:{number}@127.0.0.1:5060;user=phone",
        _COMMON
        + [
            "Supported: timer, 100rel",
            "Session-Expires: 1800;refresher=uac",
            "Min-SE: 90",
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE",
            "Accept: application/sdp",
        ],
        SDP,
    ),
    "folded_lf": _invite(
        "sip:{number}@127.0.0.1;user=phone",
        [
            "Via: SIP/2.0/{transport} 127.0.0.1:5999",
            " ;branch={branch}",
            "Max-Forwards: 70",
            "From: <sip:bridge@127.0.0.1:5999>;tag={tag}",
            "To: <sip:{number}@127.0.0.1>",
            "Call-ID: {call_id}",
            "CSeq: 1 INVITE",
            "Contact: <sip:bridge@127.0.0.1:5999>",
            "X-Dialout-Organizer:",
            "  alice@contoso.com",
        ],
        SDP.replace(CRLF, "\n"),
        eol="\n",
    ),
    "denied": _invite("sip:+4930123456@127.0.0.1;user=phone", [h.replace("alice@", "bob@") for h in _COMMON], SDP),
}


def number_for(case: int) -> str:
    """A valid French fixed-line number, unique per case modulo 10,000: the
    trunk's Request-URI and the call line's `destination` carry it, which is
    how a trunk leg is matched to its call."""
    return f"+3314268{case % 10000:04d}"


def fill_seed(name: str, case: int, *, transport: str = "UDP", salt: str = "fz") -> bytes:
    number = number_for(case)
    text = SEEDS[name].format(
        number=number,
        local="0" + number[3:],
        case=case,
        call_id=f"{salt}-{case}@127.0.0.1",
        branch=f"z9hG4bK-{salt}-{case}",
        tag=f"{salt}t{case}",
        transport=transport,
        sess=case + 1,
        length="{length}",
    )
    head, sep, body = text.partition("\r\n\r\n") if "\r\n\r\n" in text else text.partition("\n\n")
    return (head.replace("{length}", str(len(body.encode()))) + sep + body).encode()


# --- the byte-level mutators ------------------------------------------------------------------

INTERESTING_NUMBERS = [
    "0",
    "-1",
    "1",
    "127",
    "128",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551616",
    "99999999999999999999999999",
    "1e9",
    "0x10",
    "007",
    " 12",
    "١٢٣",
]


def _builtin_mutate(data: bytes, rng: random.Random) -> bytes:
    """A small radamsa stand-in: a few random byte-level edits."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if not b:
            b += b"\x00"
        op = rng.randrange(8)
        i = rng.randrange(len(b))
        j = min(len(b), i + rng.randint(1, 32))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del b[i:j]
        elif op == 3:
            b[i:i] = b[i:j] * rng.randint(2, 64)
        elif op == 4:
            k = rng.randrange(len(b))
            b[i:j], b[k:k] = b"", b[i:j]
        elif op == 5:
            b[i:j] = rng.choice(INTERESTING_NUMBERS).encode()
        elif op == 6:
            b[i:i] = rng.choice(
                [
                    b"\r",
                    b"\n",
                    b"\r\n",
                    b"\x00",
                    b"\xff",
                    b"\xc0\xaf",
                    b"%",
                    b"%00",
                    b'"',
                    b"<",
                    b">",
                    b";",
                    b",",
                    b":",
                    b"\t",
                    b" \r\n ",
                ]
            )
        else:
            b[i] = rng.choice(b"0123456789;,:<>@\"'\\% \t")
    return bytes(b)


def mutate_bytes(data: bytes, rng: random.Random, *, use_radamsa: bool = True) -> bytes:
    """Byte-level mutation: radamsa when available, the built-in mutator otherwise."""
    if use_radamsa and _RADAMSA is not None:
        return _RADAMSA.fuzz(data, seed=rng.randrange(2**31), max_mut=max(64, len(data) * 2))
    return _builtin_mutate(data, rng)


def radamsa_available() -> bool:
    return _RADAMSA is not None


# --- structure-aware mutators ------------------------------------------------------------------

NASTY_VALUES: list[bytes] = [
    b"",
    b" ",
    b"\t",
    b"0",
    b"-1",
    b"4294967296",
    b"99999999999999999999999999999999",
    b"%00",
    b"%",
    b"%zz",
    b"\x00",
    b"a\x00b",
    b"\xff\xfe",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"caf\xe9",
    "ünïcödé ☎".encode(),
    b"\xef\xbb\xbfbom",
    b'"',
    b'"unterminated',
    b"<",
    b">",
    b"<>",
    b"<<sip:a@b>>",
    b";",
    b";;;",
    b";=",
    b",",
    b",,,",
    b"a,b,c",
    b":",
    b"::",
    b"\\",
    b'\\"',
    b"%s%s%s%n%n",
    b"${jndi:ldap://x}",
    b"' OR 1=1 --",
    b"A" * 300,
    b"A" * 5000,
    b"sip:" + b"A" * 2000 + b"@127.0.0.1",
    b"<sip:x@127.0.0.1>;tag=",
    b"<sip:x@127.0.0.1>;tag=a;tag=b",
    b"*",
    b"sip:",
    b"tel:",
    b"sips:a@127.0.0.1",
    b"z9hG4bK",
    b"SIP/2.0/UDP",
    b"SIP/2.0/UDP 127.0.0.1:5999;branch=",
    b"SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKx",
    b"1 BYE",
    b"1 INVITE INVITE",
    b"1",
    b"INVITE",
    b"application/sdp;charset=utf-16",
    b"multipart/mixed",
    b"multipart/mixed;boundary=",
    b"text/plain",
    b"application/sdp;" + b"p=1;" * 200,
    b"\r\n",
    b"\r\n\r\n",
    b"a\r\n b",
    b"a\r\n\tb",
    b"x\rY: z",
    b"x\nY: z",
]

REQUEST_URIS: list[str] = [
    "sip:{number}@127.0.0.1",
    "sip:{number}@127.0.0.1;user=phone;user=phone",
    "sips:{number}@127.0.0.1",
    "tel:{number}",
    "tel:{local};phone-context=+33",
    "tel:{local};phone-context=example.com",
    "tel:+33-1-42-68-53-00",
    "sip:{local};phone-context=+33@127.0.0.1;user=phone",
    "sip:127.0.0.1",
    "sip:@127.0.0.1",
    "sip:{number}@",
    "sip:{number}@[::1]:5060",
    "sip:{number}@[::1",
    "sip:{number}@127.0.0.1:99999",
    "sip:{number}@127.0.0.1:-1",
    "sip:%2B33142685300@127.0.0.1",
    "sip:%00@127.0.0.1",
    "sip:%@127.0.0.1",
    "sip:112@127.0.0.1",
    "sip:911@127.0.0.1",
    "sip:12ab@127.0.0.1",
    "sip:*21#@127.0.0.1",
    "sip:+1900555000@127.0.0.1",
    "sip:{number}@127.0.0.1?Subject=x&Call-ID=y",
    "sip:{number}@127.0.0.1;maddr=127.0.0.1",
    "sip:{number}@127.0.0.1;;",
    "sip:{number}@127.0.0.1;=x",
    "<sip:{number}@127.0.0.1>",
    "nobody:opaque",
    "soap.beep://127.0.0.1:3002",
    "http://127.0.0.1/",
    "sip:" + "9" * 300 + "@127.0.0.1",
    "sip:+" + "1" * 40 + "@127.0.0.1",
    "sip:{number};" + "x=1;" * 100 + "@127.0.0.1",
    "SIP:{number}@127.0.0.1",
    "sip:ü@127.0.0.1",
    "sip:{number}@ü.example",
    "sip:{number}@127.0.0.1;transport=tls",
]

SDP_LINES: list[str] = [
    "v=1",
    "v=",
    "o=- 1 1 IN IP4",
    "o=- x y IN IP4 127.0.0.1",
    "o=- 99999999999999999999999 1 IN IP4 127.0.0.1",
    "s=",
    "c=IN IP4 999.0.0.1",
    "c=IN IP6 ::1",
    "c=IN IP6 127.0.0.1",
    "c=IN IP7 127.0.0.1",
    "c=IN IP4 224.2.1.1/127/3",
    "c=IN IP4 224.2.1.1/999",
    "c=IN IP4 localhost",
    "c=",
    "t=0",
    "t=a b",
    "m=audio 70000 RTP/AVP 0",
    "m=audio -1 RTP/AVP 0",
    "m=audio 7000/0 RTP/AVP 0",
    "m=audio 7000/65 RTP/AVP 0",
    "m=audio 7000 RTP/AVP 128",
    "m=audio 7000 RTP/AVP 96",
    "m=audio 7000 RTP/AVP",
    "m=audio 7000 RTP/AVP x",
    "m=video 0 RTP/AVP 31",
    "m=image 7002 udptl t38",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "m=audio 7000 RTP/SAVP 0",
    "a=rtpmap:0 PCMU/4294967296",
    "a=rtpmap:0 PCMU/0",
    "a=rtpmap:0 PCMU/8000/0",
    "a=rtpmap:0 PCMU/8000/999",
    "a=rtpmap:200 PCMU/8000",
    "a=rtpmap:0",
    "a=rtpmap:0 /8000",
    "a=rtpmap:96 opus/48000/2",
    "a=rtpmap:0 PC\x00MU/8000",
    "a=fmtp:101 " + "0-15," * 300,
    "a=sendonly",
    "a=inactive",
    "a=recvonly",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40,
    "a=" + "x" * 2000,
    "x",
    "=",
    "b=AS:99999999999999999999",
    "k=clear:secret",
    "z=0 0",
    "a=candidate:1 1 UDP 1 127.0.0.1 7000 typ host",
    "a=ssrc:4294967296 cname:x",
    "a=ptime:0",
    "a=maxptime:-1",
    "a=rtcp:70000",
    "a=group:BUNDLE 0 1",
    "\x00",
    "é=1",
    "A=1",
]


def _split(data: bytes) -> tuple[list[bytes], bytes, bytes]:
    """(head lines, separator, body) of a message; lines keep no line end."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            eol = sep[: len(sep) // 2]
            return data[:i].split(eol), sep, data[i + len(sep) :]
    return data.split(b"\r\n"), b"", b""


def _line(rng: random.Random, lines: list[bytes]) -> int:
    """A header line's index (the start line's, 0, when there is no header)."""
    return rng.randrange(1, len(lines)) if len(lines) > 1 else 0


def _join(lines: list[bytes], sep: bytes, body: bytes) -> bytes:
    eol = sep[: len(sep) // 2] or b"\r\n"
    return eol.join(lines) + (sep or eol * 2) + body


def _header_index(lines: list[bytes], names: tuple[bytes, ...]) -> list[int]:
    out = []
    for i, line in enumerate(lines[1:], 1):
        name = line.split(b":", 1)[0].strip().lower()
        if name in names:
            out.append(i)
    return out


def _set_content_length(data: bytes, value: bytes | None = None) -> bytes:
    lines, sep, body = _split(data)
    idx = _header_index(lines, (b"content-length", b"l"))
    text = value if value is not None else str(len(body)).encode()
    for i in idx:
        name = lines[i].split(b":", 1)[0]
        lines[i] = name + b": " + text
    return _join(lines, sep, body)


def _m_header_value(data, rng):
    lines, sep, body = _split(data)
    i = _line(rng, lines)
    name, colon, value = lines[i].partition(b":")
    if rng.random() < 0.5:
        value = b" " + rng.choice(NASTY_VALUES)
    else:
        value = mutate_bytes(value, rng)
    lines[i] = name + (colon or b":") + value
    return _join(lines, sep, body)


def _m_header_name(data, rng):
    lines, sep, body = _split(data)
    i = _line(rng, lines)
    name, colon, value = lines[i].partition(b":")
    choice = rng.randrange(5)
    if choice == 0:
        name = name.upper()
    elif choice == 1:
        name = name + b" \t "
    elif choice == 2:
        name = mutate_bytes(name, rng)
    elif choice == 3:
        name = b""
    else:
        name = name + bytes([rng.choice(b' ()<>@,;\\"/[]?={}\x00\x7f\xff')])
    lines[i] = name + colon + value
    return _join(lines, sep, body)


def _m_request_uri(data, rng, case):
    lines, sep, body = _split(data)
    parts = lines[0].split(b" ")
    number = number_for(case)
    uri = rng.choice(REQUEST_URIS).format(number=number, local="0" + number[3:]).encode()
    if rng.random() < 0.3:
        uri = mutate_bytes(uri, rng)
    if len(parts) >= 3:
        lines[0] = b" ".join([parts[0], uri, *parts[2:]])
    else:
        lines[0] = b"INVITE " + uri + b" SIP/2.0"
    if rng.random() < 0.2:
        lines[0] = rng.choice(
            [
                lines[0] + b" ",
                b"INVITE  " + uri + b" SIP/2.0",
                b"INVITE " + uri + b" SIP/2.1",
                b"INVITE " + uri + b" SIP/7.0",
                b"invite " + uri + b" SIP/2.0",
                b"INVITE " + uri,
                b"INVITE\t" + uri + b"\tSIP/2.0",
            ]
        )
    return _join(lines, sep, body)


def _sdp_body(body: bytes) -> tuple[bytes, bytes, bytes]:
    """(before, sdp, after) when the body holds an SDP (plain or a multipart part)."""
    start = body.find(b"v=0")
    if start < 0:
        return body, b"", b""
    end = body.find(b"--", start)
    if end < 0:
        end = len(body)
    return body[:start], body[start:end], body[end:]


def _m_sdp_line(data, rng):
    lines, sep, body = _split(data)
    before, sdp, after = _sdp_body(body)
    if not sdp:
        sdp = (SDP.format(sess=1)).encode()
        before, after = b"", b""
        ct = _header_index(lines, (b"content-type", b"c"))
        if not ct:
            lines.insert(len(lines), b"Content-Type: application/sdp")
    eol = b"\r\n" if b"\r\n" in sdp else b"\n"
    sl = sdp.split(eol)
    choice = rng.randrange(6)
    i = rng.randrange(len(sl))
    if choice == 0:
        sl[i] = rng.choice(SDP_LINES).encode("utf-8", "surrogateescape")
    elif choice == 1:
        sl.insert(i, rng.choice(SDP_LINES).encode("utf-8", "surrogateescape"))
    elif choice == 2:
        sl[i] = mutate_bytes(sl[i], rng)
    elif choice == 3:
        del sl[i]
    elif choice == 4:  # many media sections
        sl[-1:-1] = [b"m=audio %d RTP/AVP 0" % (7002 + 2 * k) for k in range(rng.choice([15, 16, 17, 100, 400]))]
    else:
        sl = [s.replace(b"\r", b"") for s in sl] if rng.random() < 0.5 else sl[::-1]
    body = before + eol.join(sl) + after
    data = _join(lines, sep, body)
    return _set_content_length(data) if rng.random() < 0.8 else data


def _m_content_length(data, rng):
    lines, sep, body = _split(data)
    n = len(body)
    value = rng.choice(
        [
            b"0",
            b"-1",
            b"-999",
            str(n + 1).encode(),
            str(n - 1).encode(),
            str(n * 2).encode(),
            b"9999",
            b"4294967296",
            b"99999999999999999999",
            b"",
            b"abc",
            b"1 2",
            b" %d " % n,
            b"0x10",
            b"+5",
            str(n).encode() + b";x",
        ]
    )
    data = _set_content_length(data, value)
    if rng.random() < 0.3:  # a second, conflicting one
        lines, sep, body = _split(data)
        lines.insert(rng.randrange(1, len(lines) + 1), b"Content-Length: " + str(n).encode())
        data = _join(lines, sep, body)
    if rng.random() < 0.2:  # or none
        lines, sep, body = _split(data)
        lines = [line for i, line in enumerate(lines) if i not in _header_index(lines, (b"content-length", b"l"))]
        data = _join(lines, sep, body)
    return data


def _m_cseq(data, rng):
    lines, sep, body = _split(data)
    value = rng.choice(
        [
            b"0 INVITE",
            b"4294967295 INVITE",
            b"4294967296 INVITE",
            b"2147483648 INVITE",
            b"-1 INVITE",
            b"1 invite",
            b"1 BYE",
            b"1 ACK",
            b"1 CANCEL",
            b"1",
            b"INVITE",
            b"",
            b"1  INVITE",
            b"1\tINVITE",
            b"01 INVITE",
            b"1 INVITE INVITE",
            b"99999999999999999999 INVITE",
            b"\xff INVITE",
            b"1 IN\x00VITE",
        ]
    )
    idx = _header_index(lines, (b"cseq",))
    if idx:
        lines[idx[0]] = b"CSeq: " + value
    if rng.random() < 0.2:
        lines.insert(rng.randrange(1, len(lines) + 1), b"CSeq: 2 INVITE")
    return _join(lines, sep, body)


def _m_encoding(data, rng):
    lines, sep, body = _split(data)
    choice = rng.randrange(8)
    if choice == 0:  # latin-1 / invalid UTF-8 in a header
        i = _line(rng, lines)
        lines[i] += rng.choice([b"\xe9", b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
    elif choice == 1:  # UTF-16 body
        body = body.decode("utf-8", "replace").encode("utf-16")
        data = _join(lines, sep, body)
        return _set_content_length(data)
    elif choice == 2:
        lines.insert(
            len(lines),
            b"Content-Encoding: " + rng.choice([b"gzip", b"deflate", b"identity", b"x-\xff", b"identity, gzip"]),
        )
    elif choice == 3:
        idx = _header_index(lines, (b"content-type", b"c"))
        value = rng.choice(
            [
                b"application/sdp;charset=utf-16",
                b"application/SDP",
                b"APPLICATION/sdp ; x=y",
                b"application/sdp;charset=\xff",
                b"application",
                b"/",
                b"text/html",
                b"*/*",
                b'multipart/mixed;boundary="a b"',
                b"multipart/alternative;boundary=zz",
            ]
        )
        if idx:
            lines[idx[0]] = b"Content-Type: " + value
        else:
            lines.append(b"Content-Type: " + value)
    elif choice == 4:  # non-UTF-8 SDP
        body = body.replace(b"s=-", b"s=\xe9t\xe9\xff")
        return _set_content_length(_join(lines, sep, body))
    elif choice == 5:  # NUL in the body
        body = body[: len(body) // 2] + b"\x00" + body[len(body) // 2 :]
        return _set_content_length(_join(lines, sep, body))
    elif choice == 6:  # percent-escapes everywhere in the URI
        lines[0] = re.sub(rb"\+33", b"%2B%33%33", lines[0])
    else:
        lines.insert(
            len(lines),
            b"Accept: " + rng.choice([b"text/plain", b"application/sdp", b"*/*", b"", b"application/sdp;q=0"]),
        )
    return _join(lines, sep, body)


def _m_sizes(data, rng):
    lines, sep, body = _split(data)
    choice = rng.randrange(6)
    if choice == 0:  # the same header many times
        i = _line(rng, lines)
        lines[i:i] = [lines[i]] * rng.choice([2, 10, 100, 300])
    elif choice == 1:  # one giant header value
        lines.insert(rng.randrange(1, len(lines) + 1), b"X-Big: " + b"x" * rng.choice([1000, 3900, 8000, 20000, 70000]))
    elif choice == 2:  # many different headers
        lines[1:1] = [b"X-H%d: %d" % (k, k) for k in range(rng.choice([50, 200, 1000]))]
    elif choice == 3:  # many Vias
        via = next((line for line in lines if line.lower().startswith((b"via", b"v:"))), b"Via: SIP/2.0/UDP 127.0.0.1")
        lines[1:1] = [via.replace(b"branch=", b"branch=x%d" % k) for k in range(rng.choice([10, 70, 200]))]
    elif choice == 4:  # a giant body
        body = body + b"a=x-pad:" + b"p" * rng.choice([2000, 3900, 16 * 1024, 40000]) + b"\r\n"
        return _set_content_length(_join(lines, sep, body))
    else:  # a giant X-Dialout header
        lines.append(b"X-Dialout-Meeting: " + b"m" * rng.choice([200, 5000]))
    return _join(lines, sep, body)


def _m_structure(data, rng):
    lines, sep, body = _split(data)
    choice = rng.randrange(10)
    if choice == 0 and len(lines) > 2:  # drop a header
        del lines[_line(rng, lines)]
    elif choice == 1 and len(lines) > 2:  # duplicate one elsewhere
        lines.insert(rng.randrange(1, len(lines) + 1), lines[_line(rng, lines)])
    elif choice == 2 and len(lines) > 3:  # swap two
        i, j = _line(rng, lines), _line(rng, lines)
        lines[i], lines[j] = lines[j], lines[i]
    elif choice == 3:  # fold a header
        i = _line(rng, lines)
        name, colon, value = lines[i].partition(b":")
        lines[i] = name + colon + b"\r\n " + value.strip() if colon else lines[i]
    elif choice == 4:  # bare LF / bare CR line ends
        return data.replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]))
    elif choice == 5:  # no blank line before the body
        return b"\r\n".join(lines) + b"\r\n" + body
    elif choice == 6:  # leading CRLFs, trailing garbage
        return b"\r\n" * rng.randint(1, 4) + data + rng.choice([b"", b"\r\n", b"INVITE sip:x SIP/2.0\r\n\r\n"])
    elif choice == 7:  # a second X-Dialout-Organizer
        lines.insert(
            len(lines),
            rng.choice(
                [
                    b"X-Dialout-Organizer: bob@contoso.com",
                    b"X-Dialout-Organizer: alice@contoso.com",
                    b"X-Dialout-Organizer: ",
                    b"X-Dialout-Tenant: fabrikam",
                ]
            ),
        )
    elif choice == 8:  # extension headers the gateway must judge
        lines.insert(
            len(lines),
            rng.choice(
                [
                    b"Require: 100rel",
                    b"Require: foo, timer",
                    b"Proxy-Require: x",
                    b"Replaces: a@b;to-tag=1;from-tag=2",
                    b"Session-Expires: 30",
                    b"Session-Expires: 99999999999",
                    b"Session-Expires: 90;refresher=",
                    b"Min-SE: -1",
                    b"Max-Forwards: 0",
                    b"Max-Forwards: 256",
                    b"Record-Route: <sip:127.0.0.1:5999;lr>",
                    b"Route: <sip:127.0.0.1;lr>",
                    b"Supported: timer",
                    b"Expires: 0",
                    b"Referred-By: <sip:x@127.0.0.1>",
                    b"P-Asserted-Identity: <sip:+33142685300@127.0.0.1>",
                    b"Privacy: id",
                    b"Reason: SIP;cause=200",
                ]
            ),
        )
    else:  # the request is another method
        parts = lines[0].split(b" ", 1)
        lines[0] = (
            rng.choice(
                [
                    b"OPTIONS",
                    b"BYE",
                    b"CANCEL",
                    b"ACK",
                    b"UPDATE",
                    b"PRACK",
                    b"REGISTER",
                    b"REFER",
                    b"FOO",
                    b"INVITE\x00",
                ]
            )
            + b" "
            + (parts[1] if len(parts) > 1 else b"")
        )
    return _join(lines, sep, body)


def _m_radamsa_whole(data, rng):
    return mutate_bytes(data, rng)


def _m_radamsa_sdp(data, rng):
    lines, sep, body = _split(data)
    before, sdp, after = _sdp_body(body)
    if not sdp:
        return mutate_bytes(data, rng)
    body = before + mutate_bytes(sdp, rng) + after
    data = _join(lines, sep, body)
    return _set_content_length(data) if rng.random() < 0.85 else data


MUTATORS = {
    "radamsa_whole": _m_radamsa_whole,
    "radamsa_sdp": _m_radamsa_sdp,
    "header_value": _m_header_value,
    "header_name": _m_header_name,
    "request_uri": _m_request_uri,
    "sdp_line": _m_sdp_line,
    "content_length": _m_content_length,
    "cseq": _m_cseq,
    "encoding": _m_encoding,
    "sizes": _m_sizes,
    "structure": _m_structure,
}
# How often each is picked (the byte-level ones find the unexpected; the rest aim).
_WEIGHTS = {
    "radamsa_whole": 4,
    "radamsa_sdp": 3,
    "header_value": 3,
    "header_name": 1,
    "request_uri": 2,
    "sdp_line": 3,
    "content_length": 2,
    "cseq": 1,
    "encoding": 2,
    "sizes": 1,
    "structure": 2,
}


@dataclass(frozen=True)
class FuzzCase:
    case: int
    seed_name: str
    mutators: tuple[str, ...]
    transport: str  # "udp" or "tcp"
    data: bytes
    # What `data` is: "invite" (the bridge's INVITE), "trunk" (a response the
    # trunk sends to a clean INVITE) or "dialog" (a request the bridge sends in
    # an established call); the last two are templates (see `fill_template`).
    role: str = "invite"


def make_case(
    case: int, run_seed: int = 4475, *, salt: str = "fz", tcp_share: float = 0.15, clean_share: float = 0.08
) -> FuzzCase:
    """The fuzz input number `case` of the run `run_seed`."""
    rng = random.Random(run_seed * 1_000_003 + case)
    seed_name = rng.choice(sorted(SEEDS))
    transport = "tcp" if rng.random() < tcp_share else "udp"
    data = fill_seed(seed_name, case, transport=transport.upper(), salt=salt)
    if rng.random() < clean_share:
        return FuzzCase(case, seed_name, (), transport, data)
    names = sorted(MUTATORS)
    weights = [_WEIGHTS[n] for n in names]
    chosen = tuple(rng.choices(names, weights, k=rng.choice([1, 1, 1, 2, 2, 3])))
    for name in chosen:
        fn = MUTATORS[name]
        data = fn(data, rng, case) if name == "request_uri" else fn(data, rng)
    return FuzzCase(case, seed_name, chosen, transport, data)


# --- the other side of a call: the trunk's answers, and requests inside the dialog --------------
#
# Both are templates: the values only known once the call runs (the dialog's
# tags, Call-ID, CSeq, the gateway's Contact) are `${name}` placeholders that
# `fill_template` replaces when the message is sent. The mutators work on the
# template, so a case is still a pure function of its number and seed, and a
# kept input replays in any later call.

TRUNK_SDP = SDP.replace("bridge {sess}", "trunk 1").replace("7000", "9000").replace("{sess}", "1")


def _response(status: str, extra: list[str], body: str = "", ctype: str | None = "application/sdp") -> str:
    lines = [
        f"SIP/2.0 {status}",
        "Via: ${via}",
        "From: ${from}",
        "To: ${to};tag=${to-tag}",
        "Call-ID: ${call-id}",
        "CSeq: ${cseq}",
        *extra,
    ]
    if body and ctype:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return CRLF.join(lines) + CRLF + CRLF + body


_TRUNK_CONTACT = "Contact: <sip:trunk@127.0.0.1:${port}>"

# What a carrier answers to the gateway's INVITE (an offer): provisionals
# (then a clean 200 follows), answers and failures.
TRUNK_SEEDS: dict[str, str] = {
    "ringing": _response("180 Ringing", [_TRUNK_CONTACT]),
    "early_media": _response("183 Session Progress", [_TRUNK_CONTACT], TRUNK_SDP),
    "reliable": _response("183 Session Progress", [_TRUNK_CONTACT, "Require: 100rel", "RSeq: 1"], TRUNK_SDP),
    "answer": _response(
        "200 OK",
        [_TRUNK_CONTACT, "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO", "Supported: timer"],
        TRUNK_SDP,
    ),
    "answer_timers": _response(
        "200 OK", [_TRUNK_CONTACT, "Session-Expires: 1800;refresher=uac", "Require: timer"], TRUNK_SDP
    ),
    "answer_multipart": _response(
        "200 OK",
        [_TRUNK_CONTACT],
        _MULTIPART.replace("{case}", "1").replace("bridge {sess}", "trunk 1").replace("{sess}", "1"),
        ctype="multipart/mixed;boundary=b0undary",
    ),
    "busy": _response("486 Busy Here", ['Reason: Q.850;cause=17;text="User busy"']),
    "redirect": _response("302 Moved Temporarily", ["Contact: <sip:+33142685301@127.0.0.1;user=phone>"]),
    "unavailable": _response("503 Service Unavailable", ["Retry-After: 5"]),
}

# Reason phrases and status lines a carrier may really send (Latin-1 from old
# equipment, UTF-8, empty), and broken ones.
STATUS_REASONS: list[bytes] = [
    b"",
    b" ",
    b"Occup\xe9",
    b"Sonnerie en cours \xe0 distance",
    "Numéro inconnu ☎".encode(),
    b"\xff\xfe",
    b"\xed\xa0\x80",
    b"a\x00b",
    b"a\tb",
    b"a\x7fb",
    b"A" * 300,
    b"A" * 5000,
    b"%s%n",
]
STATUS_CODES: list[bytes] = [
    b"100",
    b"101",
    b"180",
    b"181",
    b"182",
    b"183",
    b"199",
    b"200",
    b"202",
    b"299",
    b"300",
    b"302",
    b"380",
    b"401",
    b"407",
    b"408",
    b"422",
    b"481",
    b"486",
    b"487",
    b"488",
    b"491",
    b"500",
    b"503",
    b"599",
    b"600",
    b"603",
    b"699",
    b"700",
    b"000",
    b"99",
    b"2000",
    b"-200",
    b"2OO",
]
RESPONSE_HEADERS: list[bytes] = [
    b"Require: 100rel",
    b"Require: 100rel\r\nRSeq: 0",
    b"Require: 100rel\r\nRSeq: 4294967295",
    b"Require: 100rel\r\nRSeq: 4294967296",
    b"Require: 100rel\r\nRSeq: x",
    b"Require: timer, foo",
    b'Require: "timer',
    b'Supported: timer, "x',
    b'Allow: INVITE, "BYE',
    b"Session-Expires: 0",
    b"Session-Expires: 1;refresher=uas",
    b"Session-Expires: 99999999999999",
    b"Session-Expires: 90;refresher=",
    b"Min-SE: -1",
    b"Record-Route: <sip:127.0.0.1:5999;lr>",
    b"Record-Route: <sip:127.0.0.2;lr>, <sip:127.0.0.3;lr>",
    b"Record-Route: <sip:\xff;lr>",
    b"Record-Route: " + b"<sip:127.0.0.1;lr>," * 100 + b"<sip:127.0.0.1;lr>",
    b"Contact: *",
    b"Contact: <tel:+33142685300>",
    b"Contact: " + b"<sip:+33142685301@127.0.0.1>," * 200 + b"<sip:1@127.0.0.1>",
    b"Contact: <sip:+33\xe9@127.0.0.1>",
    b"Allow: \xff, , ,",
    b"Allow: " + b"X," * 500 + b"INVITE",
    b"Retry-After: -1",
    b"Retry-After: 99999999999999999999 (x)",
    b"Reason: Q.850;cause=999999999999",
    b'Reason: SIP;text="\xe9"',
    b"P-Early-Media: sendrecv",
    b"Content-Disposition: session;handling=required",
    b"To: <sip:x@127.0.0.1>;tag=other",
    b"Via: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKextra",
    b"CSeq: 1 INVITE",
    b"Call-ID: other@127.0.0.1",
    b"Content-Type: application/sdp",
    b"Content-Encoding: gzip",
]


def _m_status_line(data, rng):
    lines, sep, body = _split(data)
    parts = lines[0].split(b" ", 2)
    code = parts[1] if len(parts) > 1 else b"200"
    reason = parts[2] if len(parts) > 2 else b"OK"
    choice = rng.randrange(3)
    if choice == 0:
        reason = rng.choice(STATUS_REASONS)
    elif choice == 1:
        code = rng.choice(STATUS_CODES)
    else:
        code, reason = rng.choice(STATUS_CODES), rng.choice(STATUS_REASONS)
    lines[0] = b"SIP/2.0 " + code + b" " + reason
    return _join(lines, sep, body)


def _m_response_header(data, rng):
    lines, sep, body = _split(data)
    for _ in range(rng.choice([1, 1, 2, 3])):
        lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(RESPONSE_HEADERS))
    return _join(lines, sep, body)


RESPONSE_MUTATORS = {
    "radamsa_whole": _m_radamsa_whole,
    "radamsa_sdp": _m_radamsa_sdp,
    "header_value": _m_header_value,
    "header_name": _m_header_name,
    "sdp_line": _m_sdp_line,
    "content_length": _m_content_length,
    "cseq": _m_cseq,
    "encoding": _m_encoding,
    "sizes": _m_sizes,
    "structure": _m_structure,
    "status_line": _m_status_line,
    "response_header": _m_response_header,
}
_RESPONSE_WEIGHTS = {
    "radamsa_whole": 3,
    "radamsa_sdp": 2,
    "header_value": 2,
    "header_name": 1,
    "sdp_line": 3,
    "content_length": 2,
    "cseq": 1,
    "encoding": 2,
    "sizes": 1,
    "structure": 1,
    "status_line": 3,
    "response_header": 3,
}


def _in_dialog(method: str, extra: list[str], body: str = "", ctype: str | None = "application/sdp") -> str:
    lines = [
        f"{method} ${{uri}} SIP/2.0",
        "Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch};rport",
        "Max-Forwards: 70",
        "From: ${from}",
        "To: ${to}",
        "Call-ID: ${call-id}",
        f"CSeq: ${{cseq}} {method}",
        "Contact: <sip:bridge@127.0.0.1:5999>",
        *extra,
    ]
    if body and ctype:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return CRLF.join(lines) + CRLF + CRLF + body


# Filled in here, before `_in_dialog` counts the Content-Length.
_HOLD_SDP = SDP.replace("a=sendrecv", "a=sendonly").replace("bridge {sess} 1", "bridge 1 2")

# What a bridge sends inside an established call.
DIALOG_SEEDS: dict[str, str] = {
    "reinvite_hold": _in_dialog("INVITE", [], _HOLD_SDP),
    "reinvite_offerless": _in_dialog("INVITE", []),
    "reinvite_timers": _in_dialog(
        "INVITE", ["Supported: timer", "Session-Expires: 1800;refresher=uac", "Min-SE: 90"], _HOLD_SDP
    ),
    "reinvite_multipart": _in_dialog(
        "INVITE",
        [],
        _MULTIPART.replace("{case}", "2").replace("bridge {sess} 1", "bridge 1 2"),
        ctype="multipart/mixed;boundary=b0undary",
    ),
    "update": _in_dialog("UPDATE", [], _HOLD_SDP),
    "update_refresh": _in_dialog("UPDATE", ["Supported: timer", "Session-Expires: 1800;refresher=uac"]),
    "info_dtmf": _in_dialog("INFO", [], "Signal=5\r\nDuration=160\r\n", ctype="application/dtmf-relay"),
    "message": _in_dialog("MESSAGE", [], "hello", ctype="text/plain;charset=utf-8"),
    "options": _in_dialog("OPTIONS", ["Accept: application/sdp"]),
    "notify": _in_dialog(
        "NOTIFY", ["Event: refer", "Subscription-State: terminated"], "SIP/2.0 200 OK", "message/sipfrag"
    ),
    "prack": _in_dialog("PRACK", ["RAck: 1 1 INVITE"]),
    "refer": _in_dialog("REFER", ["Refer-To: <sip:+33142685301@127.0.0.1>"]),
    "bye": _in_dialog("BYE", ['Reason: Q.850;cause=16;text="Normal call clearing"']),
}


def fill_template(template: bytes, values: dict[str, str]) -> bytes:
    """`${name}` placeholders replaced by `values` (those a mutation broke stay as they are)."""
    for name, value in values.items():
        template = template.replace(b"${" + name.encode() + b"}", value.encode("utf-8", "surrogateescape"))
    return template


def _mutated(data: bytes, rng: random.Random, mutators: dict, weights: dict, case: int) -> tuple[bytes, tuple]:
    names = sorted(mutators)
    chosen = tuple(rng.choices(names, [weights[n] for n in names], k=rng.choice([1, 1, 1, 2, 2, 3])))
    for name in chosen:
        fn = mutators[name]
        data = fn(data, rng, case) if name == "request_uri" else fn(data, rng)
    return data, chosen


def make_trunk_case(case: int, run_seed: int = 4475, *, clean_share: float = 0.05) -> FuzzCase:
    """The trunk's answer number `case` of the run `run_seed`: a mutated
    response template (role "trunk"), sent to a clean INVITE."""
    rng = random.Random(run_seed * 1_000_003 + case + 7_000_000)
    seed_name = rng.choice(sorted(TRUNK_SEEDS))
    data = TRUNK_SEEDS[seed_name].encode()
    if rng.random() < clean_share:
        return FuzzCase(case, seed_name, (), "udp", data, "trunk")
    data, chosen = _mutated(data, rng, RESPONSE_MUTATORS, _RESPONSE_WEIGHTS, case)
    return FuzzCase(case, seed_name, chosen, "udp", data, "trunk")


def make_dialog_case(
    case: int, run_seed: int = 4475, *, tcp_share: float = 0.15, clean_share: float = 0.05
) -> FuzzCase:
    """The in-dialog request number `case` of the run `run_seed`: a mutated
    request template (role "dialog"), sent once the bridge's call is up."""
    rng = random.Random(run_seed * 1_000_003 + case + 9_000_000)
    seed_name = rng.choice(sorted(DIALOG_SEEDS))
    transport = "tcp" if rng.random() < tcp_share else "udp"
    text = DIALOG_SEEDS[seed_name].replace("{transport}", transport.upper())
    data = text.replace("{branch}", f"z9hG4bK-dlg-{case}").encode()
    if rng.random() < clean_share:
        return FuzzCase(case, seed_name, (), transport, data, "dialog")
    data, chosen = _mutated(data, rng, MUTATORS, _WEIGHTS, case)
    return FuzzCase(case, seed_name, chosen, transport, data, "dialog")
