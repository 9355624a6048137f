"""Tiny SDP (RFC 8866) helpers: the gateway passes every SDP through
untouched, so these only read it: to spot hold, to find the SDP in a
multipart body, and (:func:`check_sdp`) to refuse one that cannot be relayed
safely.

Also :func:`extract_sdp`, which finds the SDP in a request body that is
either ``application/sdp`` or a ``multipart/*`` body (RFC 2046) holding an
``application/sdp`` part.
"""

from __future__ import annotations

import re as _re
from typing import Any

from .errors import SipParseError
from .message import parse_header_params

__all__ = ["check_sdp", "connection_address", "extract_sdp", "is_hold", "media_ports"]

_HOLD_DIRECTIONS = frozenset(("sendonly", "inactive"))
_DIRECTIONS = frozenset(("sendrecv", "sendonly", "recvonly", "inactive"))
_NULL_ADDRESSES = frozenset(("0.0.0.0", "::"))


def _lines(sdp: str) -> list[tuple[str, str]]:
    """``x=value`` lines as (type, value); anything else is skipped."""
    out = []
    for line in sdp.split("\n"):
        line = line.strip(" \t\r")
        if len(line) >= 2 and line[1] == "=":
            out.append((line[0], line[2:]))
    return out


def _c_address(value: str) -> str | None:
    parts = value.split()
    if len(parts) < 3:
        return None
    return parts[2].split("/", 1)[0]


def connection_address(sdp: str) -> str | None:
    """The session-level ``c=`` address, else the first media-level one
    (TTL/count suffixes dropped), or None."""
    first_media: str | None = None
    in_media = False
    for kind, value in _lines(sdp):
        if kind == "m":
            in_media = True
        elif kind == "c":
            addr = _c_address(value)
            if not in_media:
                if addr:
                    return addr
            elif first_media is None:
                first_media = addr
    return first_media


def media_ports(sdp: str) -> list[int]:
    """The port of each ``m=`` line, in order (``49170/2`` → 49170)."""
    ports = []
    for kind, value in _lines(sdp):
        if kind == "m":
            parts = value.split()
            if len(parts) >= 2:
                port = parts[1].split("/", 1)[0]
                if port.isdigit() and port.isascii():
                    ports.append(int(port))
    return ports


def is_hold(sdp: str) -> bool:
    """True when the offer puts the other side on hold: every active media
    stream (port ≠ 0) is ``a=sendonly``/``a=inactive`` (media level overrides
    session level) or has a null connection address (``c=IN IP4 0.0.0.0``,
    RFC 2543 style). With no active stream, the session-level attributes
    decide."""
    session_dir = "sendrecv"
    session_addr: str | None = None
    streams: list[list[Any]] = []  # [port, direction or None, address or None]
    for kind, value in _lines(sdp):
        if kind == "m":
            parts = value.split()
            port = parts[1].split("/", 1)[0] if len(parts) >= 2 else "0"
            streams.append([port, None, None])
        elif kind == "a" and value in _DIRECTIONS:
            if streams:
                streams[-1][1] = value
            else:
                session_dir = value
        elif kind == "c":
            addr = _c_address(value)
            if streams:
                streams[-1][2] = addr
            else:
                session_addr = addr
    active = [s for s in streams if s[0] != "0"]
    if not active:
        return session_dir in _HOLD_DIRECTIONS or session_addr in _NULL_ADDRESSES
    for _, direction, addr in active:
        direction = direction or session_dir
        addr = addr or session_addr
        if direction not in _HOLD_DIRECTIONS and addr not in _NULL_ADDRESSES:
            return False
    return True


# RFC 3264 §6.1: what an answer may say to each offered direction. A
# sendrecv offer (a resume) is answered sendrecv: the peer's last SDP may
# still carry the hold the offer ends, and the relay cannot ask the peer first.
_ALLOWED_ANSWERS = {
    "sendonly": ("recvonly", "inactive"),
    "recvonly": ("sendonly", "inactive"),
    "inactive": ("inactive",),
    "sendrecv": ("sendrecv",),
}


def _media_type(content_type: str | None) -> tuple[str, str]:
    """('multipart/mixed', 'boundary=…;…') from a Content-Type value."""
    if not content_type:
        return "text/plain", ""
    media, _, params = content_type.partition(";")
    return media.strip(" \t").lower(), params


def _boundary(params: str) -> str | None:
    if not params.strip():
        return None
    try:
        parsed = parse_header_params(params)
    except SipParseError:
        return None
    for name, value in parsed:
        if name == "boundary" and value:
            return value
    return None


def _multipart_parts(body: str, boundary: str) -> list[tuple[str | None, str]]:
    """(Content-Type, content) of each part."""
    delim = "--" + boundary
    close = delim + "--"
    parts: list[tuple[str | None, str]] = []
    current: list[str] | None = None
    for line in body.split("\n"):
        bare = line.rstrip("\r").rstrip(" \t")
        if bare in (delim, close):
            if current is not None:
                parts.append(_split_part("\n".join(current)))
            if bare == close:
                current = None
                break
            current = []
            continue
        if current is not None:
            current.append(line)
    # A part left open (no close delimiter) is ignored: truncated body.
    return parts


def _split_part(text: str) -> tuple[str | None, str]:
    # The line end before the next delimiter belongs to the delimiter.
    if text.endswith("\r"):
        text = text[:-1]
    crlf = text.find("\r\n\r\n")
    lf = text.find("\n\n")
    if text.startswith("\r\n"):
        head, content = "", text[2:]
    elif text.startswith("\n"):
        head, content = "", text[1:]
    elif crlf >= 0 and (lf < 0 or crlf < lf):
        head, content = text[:crlf], text[crlf + 4 :]
    elif lf >= 0:
        head, content = text[:lf], text[lf + 2 :]
    else:
        head, content = text, ""
    ctype: str | None = None
    for line in head.split("\n"):
        name, colon, value = line.partition(":")
        if colon and name.strip(" \t").lower() in ("content-type", "c"):
            ctype = value.strip(" \t\r")
    return ctype, content


def extract_sdp(content_type: str | None, body: str, _depth: int = 0) -> str | None:
    """The SDP in a body: the body itself for ``application/sdp``, the first
    ``application/sdp`` part of a ``multipart/*`` body (one level of nesting
    is followed), else None."""
    media, params = _media_type(content_type)
    if media == "application/sdp":
        return body
    if media.startswith("multipart/") and _depth < 2:
        boundary = _boundary(params)
        if boundary is None:
            return None
        for part_type, content in _multipart_parts(body, boundary):
            found = extract_sdp(part_type, content, _depth + 1) if part_type else None
            if found is not None:
                return found
    return None


# --- the safety check on every SDP the gateway relays ------------------------------------------


_CONTROL = _re.compile("[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed; CR/LF split lines already
MAX_SDP_BYTES = 16 * 1024
MAX_SDP_LINE = 1024
MAX_MEDIA = 16
_TEXT_LINES = frozenset("si")  # session name and information: text, "s= " is RFC 8866's own example
_NET_TYPES = {"IP4", "IP6"}
_RTP_PROFILES = ("RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")


def _ipv4_ok(addr: str) -> bool:
    parts = addr.split(".")
    return len(parts) == 4 and all(p.isdigit() and p.isascii() and len(p) <= 3 and int(p) <= 255 for p in parts)


def _ipv6_ok(addr: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return False
    return True


def _host_ok(addr: str) -> bool:
    return len(addr) <= 253 and all(c.isalnum() or c in "-." for c in addr) and bool(addr)


def check_sdp(body: Any) -> str | None:
    """Why an SDP cannot be relayed safely, or None when it can.

    `body` is a ``call.events.Body`` (content type and bytes) or raw bytes of
    ``application/sdp``. Checks what a peer's media stack would otherwise
    choke on: the version line, ``c=`` lines, ``m=`` ports and formats,
    ``a=rtpmap`` clock rates and channels, dynamic payload types without an
    ``rtpmap``, and line and body sizes. A body that is not SDP (and not a
    multipart holding SDP) is not this check's business: None.
    """
    ctype = getattr(body, "ctype", "application/sdp")
    data = getattr(body, "data", body)
    if len(data) > MAX_SDP_BYTES:
        return f"SDP larger than {MAX_SDP_BYTES} bytes"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "SDP is not valid UTF-8"
    sdp = extract_sdp(ctype, text)
    if sdp is None:
        return None
    lines = [line.rstrip("\r") for line in sdp.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or lines[0].strip() != "v=0":
        return "SDP must start with v=0"
    media: list[tuple[str, list[str], set[str], set[str]]] = []  # (kind, formats, rtpmapped, fmtp)
    session_c = False
    media_has_c: list[bool] = []
    origin = False
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_SDP_LINE:
            return f"SDP line {number} is longer than {MAX_SDP_LINE} characters"
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha() or not line[0].islower():
            return f"SDP line {number} is not type=value"
        if _CONTROL.search(line):
            return f"SDP line {number} holds a control character"
        kind, value = line[0], line[2:]
        if value[:1] in (" ", "\t") and kind not in _TEXT_LINES:
            # RFC 8866 5: no whitespace on either side of "=". Found by fuzzing:
            # "m=\taudio 7000 ..." passed (split() hid it) and was relayed.
            return f"SDP line {number} has whitespace after '='"
        if kind == "o":
            parts = value.split()
            if len(parts) != 6:
                return "o= needs 6 fields"
            if not (parts[1].isdigit() and parts[2].isdigit()) or len(parts[1]) > 20 or len(parts[2]) > 20:
                return "o= session id and version must be numbers"
            origin = True
        elif kind == "c":
            problem = _check_c(value)
            if problem:
                return problem
            if media:
                media_has_c[-1] = True
            else:
                session_c = True
        elif kind == "m":
            if len(media) >= MAX_MEDIA:
                return f"more than {MAX_MEDIA} m= lines"
            parts = value.split()
            if len(parts) < 4:
                return "m= needs media, port, protocol and formats"
            port, _, count = parts[0 + 1].partition("/")
            if not (port.isdigit() and port.isascii()) or int(port) > 65535:
                return f"m= port {parts[1]!r} is not 0-65535"
            if count and not (count.isdigit() and 1 <= int(count) <= 64):
                return f"m= port count {count!r} is out of range"
            formats = parts[3:]
            if parts[2] in _RTP_PROFILES:
                for fmt in formats:
                    if not (fmt.isdigit() and fmt.isascii()) or int(fmt) > 127:
                        return f"m= payload type {fmt!r} is not 0-127"
            media.append((parts[0], formats if parts[2] in _RTP_PROFILES else [], set(), set()))
            media_has_c.append(False)
        elif kind == "a":
            name, _, rest = value.partition(":")
            if name == "rtpmap":
                pt, _, encoding = rest.partition(" ")
                if not media:
                    return "a=rtpmap before any m= line"
                if not (pt.isdigit() and pt.isascii()) or int(pt) > 127:
                    return f"a=rtpmap payload type {pt!r} is not 0-127"
                problem = _check_rtpmap(encoding.strip(), int(pt))
                if problem:
                    return f"a=rtpmap:{pt} {problem}"
                media[-1][2].add(str(int(pt)))
    if not origin:
        return "SDP has no o= line"
    for index, (kind, formats, mapped, _) in enumerate(media):
        if not session_c and not media_has_c[index]:
            return f"m={kind} has no connection address (c=)"
        for fmt in formats:
            if int(fmt) >= 96 and str(int(fmt)) not in mapped:
                return f"dynamic payload type {fmt} of m={kind} has no a=rtpmap"
    return None


def _check_c(value: str) -> str | None:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in _NET_TYPES:
        return "c= must be 'IN IP4|IP6 address'"
    addr, _, suffix = parts[2].partition("/")
    if suffix and not all(p.isdigit() and p.isascii() and int(p) <= 255 for p in suffix.split("/")):
        return "c= TTL/count is not a number"
    if parts[1] == "IP4" and not (_ipv4_ok(addr) or (_host_ok(addr) and not addr.replace(".", "").isdigit())):
        return f"c= address {addr!r} is not IPv4"
    if parts[1] == "IP6" and not (_ipv6_ok(addr) or (_host_ok(addr) and ":" not in addr)):
        return f"c= address {addr!r} is not IPv6"
    return None


def _check_rtpmap(encoding: str, payload_type: int) -> str | None:
    """``PCMU/8000`` or ``opus/48000/2``: a name, a clock rate of 1 Hz - 192 kHz
    (90 kHz video included), at most 8 channels. A static payload type (below
    96) may carry a bare name (RFC 4475's ``a=rtpmap:31 LPC``): its clock rate
    is the one its number assigns; a dynamic one must give its rate."""
    parts = encoding.split("/")
    if len(parts) == 1 and payload_type < 96 and parts[0] and len(parts[0]) <= 32:
        return None if all(c.isalnum() or c in "-_." for c in parts[0]) else "has an encoding name with odd characters"
    if len(parts) < 2 or len(parts) > 3 or not parts[0] or len(parts[0]) > 32:
        return "is not name/clock-rate[/channels]"
    if not all(c.isalnum() or c in "-_." for c in parts[0]):
        return "has an encoding name with odd characters"
    rate = parts[1]
    if not (rate.isdigit() and rate.isascii()) or len(rate) > 6 or not 1 <= int(rate) <= 192000:
        return f"clock rate {rate!r} is not 1-192000"
    if len(parts) == 3:
        channels = parts[2]
        if not (channels.isdigit() and channels.isascii()) or not 1 <= int(channels) <= 8:
            return f"channel count {channels!r} is not 1-8"
    return None
