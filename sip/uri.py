"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), and the dialled number.

Pure string handling, no I/O. The parsers check syntax (character set, escapes,
host and port, parameter shape); they do not judge whether a user part is a
valid *telephone number*. ``sip:12ab@host`` is a fine URI carrying an invalid
number, and the policy engine answers that with ``484 number_invalid``.

Leniency, on purpose: ``#`` is accepted unescaped in user parts (many bridges
send ``*21#``), ``_`` is accepted in host names, and host names are compared
lower-cased.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from .errors import SipParseError

__all__ = [
    "DialledNumber",
    "SipUri",
    "TelUri",
    "check_uri_chars",
    "dialled_from_request_uri",
    "parse_uri",
]

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 3986/3261 unreserved + reserved + "%" + "[]" (IPv6, hnv-unreserved),
# plus "#" as a documented leniency. Everything else (SP, <, >, ", {, }, |,
# \, ^, `, controls, non-ASCII) must be %-escaped inside a URI.
_URI_CHARS = frozenset(_ALNUM + "-_.!~*'()" + ";/?:@&=+$," + "%[]" + "#")
_SCHEME_CHARS = frozenset(_ALNUM + "+-.")
_HOST_CHARS = frozenset(_ALNUM + "-._")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_VISUAL_SEPARATORS = str.maketrans("", "", "-.() \t")


def check_uri_chars(text: str, what: str = "URI") -> None:
    """Raise SipParseError if ``text`` holds a character that must be escaped
    in a URI, or a malformed ``%`` escape."""
    if not text:
        raise SipParseError(f"empty {what}")
    if not _URI_CHARS.issuperset(text):
        raise SipParseError(f"{what} contains an unescaped illegal character")
    if "%" in text:
        i = text.find("%")
        n = len(text)
        while i >= 0:
            if i + 2 >= n:
                raise SipParseError(f"{what} has a truncated %-escape")
            if text[i + 1] not in _HEX or text[i + 2] not in _HEX:
                raise SipParseError(f"{what} has a malformed %-escape")
            i = text.find("%", i + 3)


def _unescape(text: str) -> str:
    return unquote(text) if "%" in text else text


def _split_scheme(uri: str) -> tuple[str, str]:
    colon = uri.find(":")
    if colon <= 0:
        raise SipParseError("URI has no scheme")
    scheme = uri[:colon]
    if not scheme[0].isascii() or not scheme[0].isalpha() or not _SCHEME_CHARS.issuperset(scheme):
        raise SipParseError("URI scheme is malformed")
    return scheme.lower(), uri[colon + 1 :]


def _parse_params(text: str, what: str) -> tuple[tuple[str, str | None], ...]:
    """``a=1;b;c=x`` → ((a, 1), (b, None), (c, x)); names lower-cased,
    values unescaped. Empty parameters (``;;``) are malformed."""
    out: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        if not part:
            raise SipParseError(f"{what} has an empty parameter")
        eq = part.find("=")
        if eq < 0:
            out.append((_unescape(part).lower(), None))
        else:
            name = part[:eq]
            if not name:
                raise SipParseError(f"{what} has a parameter without a name")
            out.append((_unescape(name).lower(), _unescape(part[eq + 1 :])))
    return tuple(out)


def _param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    name = name.lower()
    for key, value in params:
        if key == name:
            return value
    return None


def _has_param(params: tuple[tuple[str, str | None], ...], name: str) -> bool:
    name = name.lower()
    return any(key == name for key, _ in params)


@dataclass(frozen=True, slots=True)
class SipUri:
    """A parsed ``sip:`` or ``sips:`` URI. ``user``/``password``/parameter
    values/header values are %-unescaped; parameter names are lower-cased;
    ``host`` is lower-cased (IPv6 keeps its brackets)."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]
    headers: tuple[tuple[str, str], ...]
    raw: str

    def param(self, name: str) -> str | None:
        """Value of a URI parameter (None if absent or valueless)."""
        return _param(self.params, name)

    def has_param(self, name: str) -> bool:
        return _has_param(self.params, name)

    @property
    def user_phone(self) -> bool:
        """True when ``;user=phone`` marks the user part as a telephone number."""
        value = self.param("user")
        return value is not None and value.lower() == "phone"

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None


@dataclass(frozen=True, slots=True)
class TelUri:
    """A parsed ``tel:`` URI (RFC 3966). ``number`` is unescaped and keeps its
    visual separators (``+1-212-555-0100``)."""

    number: str
    params: tuple[tuple[str, str | None], ...]
    raw: str

    def param(self, name: str) -> str | None:
        return _param(self.params, name)

    @property
    def phone_context(self) -> str | None:
        return self.param("phone-context")

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")


def _parse_host_port(hostport: str) -> tuple[str, int | None]:
    if not hostport:
        raise SipParseError("URI has no host")
    port_text: str | None = None
    if hostport[0] == "[":
        end = hostport.find("]")
        if end < 0:
            raise SipParseError("URI has an unterminated IPv6 reference")
        host = hostport[: end + 1]
        if not _IPV6_CHARS.issuperset(host[1:-1]) or ":" not in host:
            raise SipParseError("URI has a malformed IPv6 reference")
        rest = hostport[end + 1 :]
        if rest:
            if rest[0] != ":":
                raise SipParseError("URI has junk after the IPv6 reference")
            port_text = rest[1:]
    else:
        colon = hostport.find(":")
        if colon >= 0:
            host, port_text = hostport[:colon], hostport[colon + 1 :]
        else:
            host = hostport
        if not host or not _HOST_CHARS.issuperset(host) or host[0] in "-." or ".." in host:
            raise SipParseError("URI has a malformed host")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
            raise SipParseError("URI has a malformed port")
        port = int(port_text)
        if port > 65535:
            raise SipParseError("URI port is out of range")
    return host.lower(), port


def _split_sip(rest: str) -> tuple[str | None, str | None, str, str | None, str | None]:
    """Split the part after ``sip:`` into escaped (user, password, hostport,
    params, headers). ``@`` cannot appear unescaped anywhere but as the
    userinfo terminator, which lets odd user parts hold ``;``, ``?`` and ``/``."""
    at = rest.find("@")
    user = password = None
    if at >= 0:
        if rest.find("@", at + 1) >= 0:
            raise SipParseError("URI has more than one '@'")
        userinfo, rest = rest[:at], rest[at + 1 :]
        colon = userinfo.find(":")
        if colon >= 0:
            user, password = userinfo[:colon], userinfo[colon + 1 :]
        else:
            user = userinfo
        if not user:
            raise SipParseError("URI has an empty user part")
    headers = params = None
    q = rest.find("?")
    if q >= 0:
        rest, headers = rest[:q], rest[q + 1 :]
    semi = rest.find(";")
    if semi >= 0:
        rest, params = rest[:semi], rest[semi + 1 :]
    return user, password, rest, params, headers


def _parse_sip(scheme: str, rest: str, raw: str) -> SipUri:
    user, password, hostport, params_text, headers_text = _split_sip(rest)
    host, port = _parse_host_port(hostport)
    params = _parse_params(params_text, "URI") if params_text is not None else ()
    headers: list[tuple[str, str]] = []
    if headers_text is not None:
        for part in headers_text.split("&"):
            eq = part.find("=")
            if eq <= 0:
                raise SipParseError("URI has a malformed header")
            headers.append((_unescape(part[:eq]), _unescape(part[eq + 1 :])))
    return SipUri(
        scheme=scheme,
        user=_unescape(user) if user is not None else None,
        password=_unescape(password) if password is not None else None,
        host=host,
        port=port,
        params=params,
        headers=tuple(headers),
        raw=raw,
    )


def _parse_tel(rest: str, raw: str) -> TelUri:
    semi = rest.find(";")
    number, params_text = (rest, None) if semi < 0 else (rest[:semi], rest[semi + 1 :])
    if not number:
        raise SipParseError("tel URI has no number")
    if "@" in rest or "?" in rest or "/" in number or ":" in number:
        raise SipParseError("tel URI is malformed")
    params = _parse_params(params_text, "tel URI") if params_text is not None else ()
    return TelUri(number=_unescape(number), params=params, raw=raw)


def parse_uri(uri: str) -> SipUri | TelUri:
    """Parse a ``sip:``, ``sips:`` or ``tel:`` URI.

    Raises SipParseError (status 400) for a malformed URI, and (status 416)
    for any other scheme.
    """
    check_uri_chars(uri)
    scheme, rest = _split_scheme(uri)
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest, uri)
    if scheme == "tel":
        return _parse_tel(rest, uri)
    raise SipParseError("unsupported URI scheme", status=416)


@dataclass(frozen=True, slots=True)
class DialledNumber:
    """What the Request-URI says was dialled.

    ``digits`` is the unescaped user part (SIP) or number (tel), without any
    ``;param`` that a telephone-subscriber user part carries, visual
    separators kept: ``+33 1 42…``, ``0033…`` and ``12ab`` all pass through
    unchanged, for the policy engine (phonenumbers) to judge.
    ``phone_context`` is the raw ``;phone-context=`` value, if any.
    """

    digits: str
    phone_context: str | None
    is_tel: bool
    user_phone: bool

    @property
    def context_prefix(self) -> str | None:
        """``+<digits>`` if phone-context is a global number prefix (``+33``,
        ``+1-212``), else None (absent, or a domain name such as
        ``example.com``, which tells a parser nothing)."""
        ctx = self.phone_context
        if not ctx or ctx[0] != "+":
            return None
        body = ctx[1:].translate(_VISUAL_SEPARATORS)
        if not body or not body.isdigit() or not body.isascii():
            return None
        return "+" + body

    @property
    def policy_input(self) -> str:
        """The string the policy engine should parse.

        A local number with a global phone-context becomes that prefix plus
        the local number with its visual separators removed
        (``01 42;phone-context=+33`` → ``+330142``; phonenumbers strips the
        national trunk prefix after a country code). Otherwise ``digits``.
        """
        digits = self.digits
        prefix = self.context_prefix
        if prefix is None or not digits or digits.startswith("+"):
            return digits
        return prefix + digits.translate(_VISUAL_SEPARATORS)


def dialled_from_request_uri(uri: str) -> DialledNumber:
    """The dialled number of a Request-URI (``sip:``/``sips:`` user part, or a
    ``tel:`` URI). Raises SipParseError for a malformed URI or another scheme.
    A SIP URI without a user part gives ``digits == ""`` (an invalid number,
    not an invalid URI)."""
    parsed = parse_uri(uri)
    if isinstance(parsed, TelUri):
        return DialledNumber(
            digits=parsed.number,
            phone_context=parsed.phone_context,
            is_tel=True,
            user_phone=False,
        )
    user_raw, _, _, _, _ = _split_sip(uri[len(parsed.scheme) + 1 :])
    phone_context: str | None = None
    digits = ""
    if user_raw is not None:
        semi = user_raw.find(";")
        if semi >= 0:
            digits = _unescape(user_raw[:semi])
            # telephone-subscriber parameters inside the user part (RFC 3261
            # §19.1.1 with user=phone): tolerate odd ones, only read phone-context.
            for part in user_raw[semi + 1 :].split(";"):
                name, eq, value = part.partition("=")
                if eq and _unescape(name).lower() == "phone-context":
                    phone_context = _unescape(value)
                    break
        else:
            digits = _unescape(user_raw)
    return DialledNumber(
        digits=digits,
        phone_context=phone_context,
        is_tel=False,
        user_phone=parsed.user_phone,
    )
