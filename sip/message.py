"""Parse one SIP request: start line, headers and body (RFC 3261 §7, §25).

Pure and fast: str methods, no regular expressions, no I/O. The gateway calls
:func:`parse_request` with pjsua2's ``rdata.wholeMsg``.

Tolerant where real peers are sloppy and the RFC allows it:
- bare LF line ends as well as CRLF; CRLFs before the start line are skipped;
- any case in header names, compact forms (``i``, ``f``, ``t``, ``v``, ``m``,
  ``l``, ``c``, …), LWS before the colon, folded (continuation) lines;
- a missing blank line after the headers when there is no body;
- a body longer than Content-Length is cut to Content-Length (RFC 3261
  §18.3, the rest of a datagram is discarded); with no Content-Length the
  body runs to the end of the message.

Strict where RFC 4475 asks a parser to refuse (``SipParseError``):
- a start line that is not exactly ``METHOD SP Request-URI SP SIP/2.0``
  (responses, extra or trailing whitespace, ``<uri>``, other versions → 505);
- a Request-URI with illegal characters, malformed escapes, or (for SIP
  URIs) escaped headers;
- a header line without a colon or with a name that is not a token; a bare
  CR (not part of CRLF) anywhere in the header section, which pjsip would
  take for a line end;
- missing Call-ID, CSeq, From, To or Via; more than one Call-ID, CSeq,
  From, To, Max-Forwards, Content-Length or Content-Type;
- a CSeq whose number is out of range or whose method differs from the
  request's; a Max-Forwards outside 0–255; a Content-Length that is not a
  non-negative integer or exceeds the body;
- malformed From/To/Contact/Route/Record-Route (unbalanced quotes, an
  unquoted display name with separators, whitespace inside ``<>``, a URI
  holding ``?`` or ``,`` outside ``<>``, empty parameters) or Via.

The input ``str`` should be the message decoded as UTF-8 (with
``surrogateescape`` for invalid bytes), as pjsua2's SWIG layer does;
Content-Length is counted in octets of that encoding. ``bytes`` are accepted
and decoded that way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SipParseError
from .uri import SipUri, _parse_host_port, _split_scheme, check_uri_chars, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "Address",
    "SipRequest",
    "canonical_header_name",
    "header_key",
    "parse_address",
    "parse_header_params",
    "parse_request",
    "split_header_list",
]

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")

#: RFC 3261 §7.3.3 and the IANA SIP header registry.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "History-Info",
        "Identity",
        "Identity-Info",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Min-SE",
        "Organization",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Priority",
        "Privacy",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reject-Contact",
        "Reply-To",
        "Request-Disposition",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Service-Route",
        "Session-Expires",
        "Subject",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1 allows
# combining them on one line); only these are split. Authorization-style
# headers, Date, From/To, Call-ID, Subject, User-Agent etc. are never split.
_LIST_HEADERS = frozenset(
    (
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "request-disposition",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    )
)
# List headers in which an empty element is malformed (RFC 4475 §3.1.2.1).
_NO_EMPTY_ELEMENTS = frozenset(("via", "contact", "route", "record-route"))
_SINGLE = ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")
_REQUIRED = ("call-id", "cseq", "from", "to", "via")
_ADDRESS_HEADERS = frozenset(("from", "to", "contact", "route", "record-route"))
_MAX_CSEQ = 2**31 - 1


def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact form expanded."""
    key = name.strip().lower()
    return COMPACT_FORMS.get(key, key)


def canonical_header_name(name: str) -> str:
    """``v`` → ``Via``, ``call-id`` → ``Call-ID``; unknown names unchanged."""
    key = header_key(name)
    return _CANONICAL.get(key, name.strip())


def _is_token(text: str) -> bool:
    return bool(text) and _TOKEN_CHARS.issuperset(text)


def _quoted_end(text: str, start: int) -> int:
    """``text[start] == '"'``; index just past the closing quote."""
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        else:
            i += 1
    raise SipParseError("unterminated quoted string")


def _unquote_qs(inner: str) -> str:
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    n = len(inner)
    while i < n:
        c = inner[i]
        if c == "\\" and i + 1 < n:
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _split_outside(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quoted strings and ``<…>``."""
    if '"' not in text and "<" not in text:
        return text.split(sep)
    parts: list[str] = []
    start = 0
    i = 0
    n = len(text)
    angle = False
    while i < n:
        c = text[i]
        if c == '"' and not angle:
            i = _quoted_end(text, i)
            continue
        if c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == sep and not angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def split_header_list(value: str) -> list[str]:
    """Split a list-valued header at top-level commas (never inside quotes or
    ``<>``); elements are stripped, empty ones dropped."""
    return [p for p in (s.strip(" \t") for s in _split_outside(value, ",")) if p]


def parse_header_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """``tag=1 ; q = 0.5;lr`` → (("tag","1"), ("q","0.5"), ("lr",None)).

    Names are lower-cased tokens; a quoted value is unquoted. An empty
    parameter, a non-token name, or a value with inner whitespace is
    malformed."""
    out: list[tuple[str, str | None]] = []
    for part in _split_outside(text, ";"):
        name, eq, value = part.partition("=")
        name = name.strip(" \t")
        if not _is_token(name):
            raise SipParseError("malformed header parameter")
        if not eq:
            out.append((name.lower(), None))
            continue
        value = value.strip(" \t")
        if value.startswith('"'):
            if _quoted_end(value, 0) != len(value):
                raise SipParseError("malformed quoted parameter value")
            value = _unquote_qs(value[1:-1])
        elif not value or " " in value or "\t" in value or '"' in value:
            raise SipParseError("malformed header parameter value")
        out.append((name.lower(), value))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Address:
    """A From/To/Contact/Route value: optional display name, the URI (as
    written, not unescaped) and the header parameters (``tag``, ``q``…)."""

    display_name: str | None
    uri: str
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None

    @property
    def tag(self) -> str | None:
        return self.param("tag")


def _check_address_uri(uri: str) -> None:
    check_uri_chars(uri, "address URI")
    _split_scheme(uri)


def parse_address(value: str, *, allow_star: bool = False) -> Address:
    """Parse ``name-addr`` / ``addr-spec`` with header params (RFC 3261 §20.10,
    §25.1). Raises SipParseError when malformed."""
    v = value.strip(" \t")
    if not v:
        raise SipParseError("empty address")
    if allow_star and v == "*":
        return Address(None, "*", ())
    display: str | None = None
    if v[0] == '"':
        end = _quoted_end(v, 0)
        display = _unquote_qs(v[1 : end - 1])
        rest = v[end:].lstrip(" \t")
        if not rest.startswith("<"):
            raise SipParseError("quoted display name is not followed by <URI>")
    else:
        lt = v.find("<")
        if lt < 0:
            # addr-spec: the URI ends at the first ';', and must not hold
            # ',' or '?' (those force angle brackets, RFC 3261 §20).
            uri, semi, params_text = v.partition(";")
            uri = uri.rstrip(" \t")
            if " " in uri or "\t" in uri:
                raise SipParseError("address has whitespace in its URI")
            if "?" in uri or "," in uri or ">" in uri:
                raise SipParseError("address URI with '?' or ',' needs <>")
            _check_address_uri(uri)
            return Address(None, uri, parse_header_params(params_text) if semi else ())
        words = v[:lt].split()
        for word in words:
            # Lenient: UTF-8 letters are accepted in an unquoted display name
            # (RFC 3261 wants them quoted; real UAs do not always bother).
            if not _TOKEN_CHARS.issuperset(word) and not all(c in _TOKEN_CHARS or c > "\x7f" for c in word):
                raise SipParseError("unquoted display name holds separators")
        display = " ".join(words) if words else None
        rest = v[lt:]
    gt = rest.find(">")
    if gt < 0:
        raise SipParseError("address has '<' without '>'")
    uri = rest[1:gt]
    if not uri or uri[0] in " \t" or uri[-1] in " \t":
        raise SipParseError("address has whitespace inside <>")
    _check_address_uri(uri)
    tail = rest[gt + 1 :].strip(" \t")
    params: tuple[tuple[str, str | None], ...] = ()
    if tail:
        if tail[0] != ";":
            raise SipParseError("junk after address")
        params = parse_header_params(tail[1:])
    return Address(display, uri, params)


def _check_via(element: str) -> None:
    head, semi, params_text = element.partition(";")
    pieces = head.split("/", 2)
    if len(pieces) != 3:
        raise SipParseError("malformed Via")
    proto, version, rest = pieces[0].strip(" \t"), pieces[1].strip(" \t"), pieces[2]
    words = rest.split(None, 1)
    if len(words) != 2 or not _is_token(proto) or not _is_token(version):
        raise SipParseError("malformed Via")
    if not _is_token(words[0]):
        raise SipParseError("malformed Via transport")
    sent_by = "".join(words[1].split())
    try:
        _parse_host_port(sent_by)
    except SipParseError:
        raise SipParseError("malformed Via sent-by") from None
    if semi:
        parse_header_params(params_text)


def _digits(text: str, what: str, max_len: int = 10) -> int:
    if not text or not text.isdigit() or not text.isascii() or len(text) > max_len:
        raise SipParseError(f"malformed {what}")
    return int(text)


@dataclass(frozen=True, slots=True, eq=False)
class SipRequest:
    """One parsed SIP request.

    ``headers`` keeps every header in message order as ``(name, value)``:
    known names in canonical spelling (``v``/``VIA`` → ``Via``), others as
    received; folded lines are joined with one space; list-valued headers
    (Via, Contact, Route, Supported, …) give one entry per element.
    Look-ups (:meth:`header`, :meth:`headers_all`) ignore case and accept
    compact forms.
    """

    method: str
    uri: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: str
    _index: dict[str, list[str]] = field(repr=False)

    def header(self, name: str) -> str | None:
        """First value of the header, or None if absent."""
        values = self._index.get(header_key(name))
        return values[0] if values else None

    def headers_all(self, name: str) -> list[str]:
        """Every value of the header in order (list headers split)."""
        return list(self._index.get(header_key(name), ()))

    def has_header(self, name: str) -> bool:
        return header_key(name) in self._index

    @property
    def call_id(self) -> str:
        return self._index["call-id"][0]

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = self._index["cseq"][0].split()
        return int(number), method

    @property
    def content_type(self) -> str | None:
        """Media type of the body, lower-cased, without parameters."""
        value = self.header("content-type")
        if value is None:
            return None
        return value.partition(";")[0].strip(" \t").lower() or None


def _split_head(raw: str) -> tuple[str, str]:
    """(header section without the blank line, body)."""
    crlf = raw.find("\r\n\r\n")
    lf = raw.find("\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return raw[:crlf], raw[crlf + 4 :]
    if lf >= 0:
        # also covers "\r\n\n" (mixed line ends)
        return raw[:lf], raw[lf + 2 :]
    return raw.rstrip("\r\n"), ""


def _parse_start_line(line: str) -> tuple[str, str, str]:
    if line[:4].upper() == "SIP/":
        raise SipParseError("message is a response, not a request")
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("malformed request line")
    method, uri, version = parts
    if not _is_token(method):
        raise SipParseError("malformed method")
    vu = version.upper()
    if vu != "SIP/2.0":
        if vu.startswith("SIP/"):
            raise SipParseError("unsupported SIP version", status=505)
        raise SipParseError("malformed request line")
    check_uri_chars(uri, "Request-URI")
    scheme, _ = _split_scheme(uri)
    if scheme in ("sip", "sips", "tel"):
        parsed = parse_uri(uri)
        if isinstance(parsed, SipUri) and parsed.headers:
            raise SipParseError("Request-URI carries headers")
    return method, uri, "SIP/2.0"


def parse_request(raw: str | bytes) -> SipRequest:
    """Parse one SIP request. Raises :class:`SipParseError` (never anything
    else) for input that is not an acceptable request; see the module
    docstring for what is tolerated and what is refused."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw).decode("utf-8", "surrogateescape")
    elif not isinstance(raw, str):
        raise SipParseError("message is not text")
    raw = raw.lstrip("\r\n")
    if not raw:
        raise SipParseError("empty message")
    head, body = _split_head(raw)
    text = head.replace("\r\n", "\n")
    if text.endswith("\r"):
        text = text[:-1]  # the CR of "\r\n\n" between the headers and the body
    if "\r" in text:
        # pjsip ends a line at a bare CR, so it would read another header where
        # this parser reads one value (the gateway would act on what pjsip
        # did not see): refused, as RFC 3261 lines end with CRLF.
        raise SipParseError("bare CR in the header section")
    lines = text.split("\n")
    method, uri, version = _parse_start_line(lines[0].rstrip("\r"))

    # Unfold, then split each header line at its colon.
    entries: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line or line == "\r":
            raise SipParseError("blank line inside the header section")
        c0 = line[0]
        if c0 == " " or c0 == "\t":
            if not entries:
                raise SipParseError("continuation line before any header")
            name, value = entries[-1]
            more = line.strip(" \t\r")
            if more:
                entries[-1] = (name, f"{value} {more}" if value else more)
            continue
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError("header line without a name and colon")
        name = line[:colon]
        if name[-1] in " \t":
            name = name.rstrip(" \t")
        if not _TOKEN_CHARS.issuperset(name):
            raise SipParseError("malformed header name")
        entries.append((name, line[colon + 1 :].strip(" \t\r")))

    index: dict[str, list[str]] = {}
    headers: list[tuple[str, str]] = []
    for name, value in entries:
        lname = name.lower()
        key = COMPACT_FORMS.get(lname, lname)
        canon = _CANONICAL.get(key, name)
        if key in _LIST_HEADERS and "," in value:
            values = [p.strip(" \t") for p in _split_outside(value, ",")]
            if "" in values:
                if key in _NO_EMPTY_ELEMENTS:
                    raise SipParseError(f"empty element in {canon}")
                values = [v for v in values if v]
            bucket = index.setdefault(key, [])
            for v in values:
                bucket.append(v)
                headers.append((canon, v))
        else:
            found = index.get(key)
            if found is None:
                index[key] = [value]
            else:
                found.append(value)
            headers.append((canon, value))

    for key in _REQUIRED:
        if key not in index:
            raise SipParseError(f"missing {_CANONICAL[key]} header")
    for key in _SINGLE:
        single = index.get(key)
        if single is not None and len(single) > 1:
            raise SipParseError(f"more than one {_CANONICAL[key]} header")

    call_id = index["call-id"][0]
    if not call_id or " " in call_id or "\t" in call_id:
        raise SipParseError("malformed Call-ID")

    cseq = index["cseq"][0].split()
    if len(cseq) != 2:
        raise SipParseError("malformed CSeq")
    if _digits(cseq[0], "CSeq number") > _MAX_CSEQ:
        raise SipParseError("CSeq number out of range")
    if cseq[1] != method:
        raise SipParseError("CSeq method does not match the request method")

    mf = index.get("max-forwards")
    if mf is not None and _digits(mf[0], "Max-Forwards") > 255:
        raise SipParseError("Max-Forwards out of range")

    for key in _ADDRESS_HEADERS:
        addresses = index.get(key)
        if addresses:
            star = key == "contact"
            for v in addresses:
                parse_address(v, allow_star=star)
    for v in index["via"]:
        _check_via(v)

    cl = index.get("content-length")
    if cl is not None:
        length = _digits(cl[0], "Content-Length")
        if body.isascii():
            if length > len(body):
                raise SipParseError("Content-Length exceeds the body")
            body = body[:length]
        else:
            octets = body.encode("utf-8", "surrogateescape")
            if length > len(octets):
                raise SipParseError("Content-Length exceeds the body")
            if length < len(octets):
                body = octets[:length].decode("utf-8", "surrogateescape")

    return SipRequest(
        method=method,
        uri=uri,
        version=version,
        headers=tuple(headers),
        body=body,
        _index=index,
    )
