"""Headers as the SIP engine hands them over, and which of them cross the B2BUA.

The engine prints the headers of a message one per line (``Name: value``),
leaving out those pjsip owns (Via, From, To, Call-ID, CSeq, Route,
Record-Route, Max-Forwards, Content-Length, Content-Type). What goes on to
the other leg is decided here, in one place:

- toward a peer, an in-dialog request keeps its headers except those that
  describe this hop or this endpoint (Contact, Allow, Supported, credentials,
  identities, transfer, our X-Dialout-*), with ``Supported: timer`` kept
  when the original named it (RFC 4028 refreshes);
- a response crosses with the headers that explain it (Reason, Retry-After,
  Warning is ours to write, not the carrier's), the session-timer headers,
  and early-media and DTMF-related ones.
"""

from __future__ import annotations

import re

from .errors import SipParseError
from .message import header_key, parse_header_params, split_header_list

Headers = tuple[tuple[str, str], ...]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Never relayed in a request: about this hop, this endpoint, or dangerous.
_REQUEST_DENY = frozenset(
    {
        "contact",
        "allow",
        "allow-events",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "user-agent",
        "server",
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
        "authentication-info",
        "rseq",
        "rack",
        "accept",
        "accept-encoding",
        "accept-language",
        "max-breadth",
        "p-asserted-identity",
        "p-preferred-identity",
        "remote-party-id",
        "privacy",
        "refer-to",
        "referred-by",
        "replaces",
        "path",
        "service-route",
        "security-client",
        "security-server",
        "security-verify",
        "record-route",
        "route",
        "via",
    }
)

# Relayed with a response (to the bridge's INVITE or to a relayed request).
_RESPONSE_ALLOW = frozenset(
    {
        "reason",
        "retry-after",
        "session-expires",
        "min-se",
        "p-early-media",
        "recv-info",
        "content-disposition",
        "content-language",
        "content-encoding",
    }
)


def parse_block(block: str | None) -> list[tuple[str, str]]:
    """``"A: 1\\r\\nB: 2\\r\\n"`` -> ``[("A", "1"), ("B", "2")]``; lines without a colon are skipped.

    A bare CR or LF ends a line too, as in pjsip's parser: a value never holds
    a line break, so what is relayed can always be encoded (:func:`encode_block`
    refuses CR and LF in a value, and a call would fail on it)."""
    out: list[tuple[str, str]] = []
    if not block:
        return out
    for line in _LINE_BREAK.split(block):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out.append((name.strip(), value.strip()))
    return out


def _list(value: str) -> list[str]:
    """A list header's elements. The block was accepted by pjsip, whose
    Supported, Require and Allow are any run of characters between commas:
    an unbalanced quote (``Supported: "x``) is no reason to fail a call, so
    where `split_header_list` refuses the value it is split at every comma.
    Found by fuzzing: such a header in a bridge's in-dialog request, or in a
    trunk's 18x/200, raised SipParseError and the call was torn down."""
    try:
        return split_header_list(value)
    except SipParseError:
        return [p for p in (s.strip(" \t") for s in value.split(",")) if p]


def values(block: str | None, name: str) -> list[str]:
    """Every value of header `name` (case-insensitive, compact forms), list headers split."""
    key = header_key(name)
    out: list[str] = []
    for hname, value in parse_block(block):
        if header_key(hname) == key:
            out.extend(_list(value) if key in _LIST_HEADERS else [value])
    return out


_LIST_HEADERS = frozenset({"supported", "require", "allow", "unsupported", "proxy-require", "contact"})


def first(block: str | None, name: str) -> str | None:
    found = values(block, name)
    return found[0] if found else None


def has_option(block: str | None, header: str, tag: str) -> bool:
    """True if the comma list `header` (Supported, Require...) names `tag`."""
    tag = tag.lower()
    return any(v.strip().lower() == tag for v in values(block, header))


def relay_request_headers(block: str | None) -> Headers:
    """The headers of an in-dialog request that go on to the other leg."""
    out: list[tuple[str, str]] = []
    timer = False
    for name, value in parse_block(block):
        key = header_key(name)
        if key == "supported" and any(t.strip().lower() == "timer" for t in _list(value)):
            timer = True
        if key in _REQUEST_DENY or key.startswith("x-dialout-"):
            continue
        out.append((name, value))
    if timer:
        out.append(("Supported", "timer"))
    return tuple(out)


def relay_response_headers(block: str | None) -> Headers:
    """The headers of a response that go back with it to the other leg."""
    out: list[tuple[str, str]] = []
    for name, value in parse_block(block):
        key = header_key(name)
        if key in _RESPONSE_ALLOW:
            out.append((name, value))
        elif key == "require" and any(t.strip().lower() == "timer" for t in _list(value)):
            out.append(("Require", "timer"))
    return tuple(out)


def session_expires(value: str | None) -> tuple[int | None, str | None]:
    """``"90;refresher=uac"`` -> ``(90, "uac")``; ``(None, None)`` when absent or not a number."""
    if not value:
        return None, None
    number, semi, params = value.partition(";")
    number = number.strip(" \t")
    seconds = int(number) if number.isdigit() and number.isascii() and len(number) <= 9 else None
    refresher = None
    if semi:
        try:
            for key, val in parse_header_params(params):
                if key.lower() == "refresher" and val:
                    refresher = val.lower()
        except SipParseError:
            refresher = None
    return seconds, refresher


def encode_block(headers: Headers | list[tuple[str, str]]) -> bytes | None:
    """Headers for the engine: ``Name: value`` lines, UTF-8 (invalid bytes kept
    as they came, via surrogateescape). CR and LF inside a value are refused:
    a value must not smuggle in a header of its own."""
    if not headers:
        return None
    parts = []
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} has a line break or colon where it must not")
        parts.append(f"{name}: {value}\r\n")
    return "".join(parts).encode("utf-8", "surrogateescape")
