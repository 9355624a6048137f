"""From a decision to SIP response headers (``dialout-rules.md``, "SIP
contract with the bridge").

A rejection carries, in this order::

    Reason: SIP;cause=<status>;text="<reason_code>"          (RFC 3326)
    Warning: 399 <gateway-host> "<human sentence>"          (RFC 3261 §20.43)
    X-Dialout-Decision: deny;reason=<reason_code>
    Retry-After: <seconds>                                   (only when given)

The reason code is the machine contract; the Warning sentence is for people
and is sanitised (one line, no control characters, ``"`` and ``\\`` escaped,
at most :data:`MAX_WARNING_TEXT` characters).

A BYE sent by the gateway (the authorised duration ran out) carries::

    Reason: Q.850;cause=16;text="duration_exhausted"

Why Q.850 and not ``SIP;cause=…``: a SIP cause is a *response* code, and no
response code means "your time is up" in a BYE (RFC 3326's own example of
``SIP;cause=200`` means "call completed elsewhere" on a CANCEL). The trunk
leg ends on the PSTN, where SBCs map a Q.850 cause onto the ISUP release
cause; 16 "normal call clearing" is the ordinary end-of-call cause, so
neither side treats the cut as a network failure, and ``text`` still carries
our reason code for the bridge's logs. Another cause can be passed
explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "DECISION_HEADER",
    "MAX_WARNING_TEXT",
    "Q850_NORMAL_CLEARING",
    "bye_reason_header",
    "reason_phrase",
    "reject_headers",
    "sanitize_text",
    "strip_headers",
]

MAX_WARNING_TEXT = 200
DECISION_HEADER = "X-Dialout-Decision"
Q850_NORMAL_CLEARING = 16

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_HOSTPORT_CHARS = _TOKEN_CHARS | frozenset("[]:")

_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
}
# RFC 3261 §21 class names, for codes without a registered phrase.
_CLASS_PHRASES = {
    1: "Provisional",
    2: "Successful",
    3: "Redirection",
    4: "Request Failure",
    5: "Server Failure",
    6: "Global Failure",
}


def _check_status(status: int, low: int = 100) -> None:
    if isinstance(status, bool) or not isinstance(status, int) or not low <= status <= 699:
        raise ValueError(f"SIP status must be an int in {low}..699, got {status!r}")


def reason_phrase(status: int) -> str:
    """The standard reason phrase (``486`` → ``Busy Here``); for an
    unregistered code, its class name (``499`` → ``Request Failure``)."""
    _check_status(status)
    return _PHRASES.get(status) or _CLASS_PHRASES[status // 100]


def _check_reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason or not _TOKEN_CHARS.issuperset(reason):
        raise ValueError(f"reason code must be a SIP token, got {reason!r}")
    return reason


def sanitize_text(text: str, limit: int = MAX_WARNING_TEXT) -> str:
    """One printable line of at most ``limit`` characters, ready to sit
    between double quotes: what is not printable (controls, lone surrogates,
    and format characters such as the bidirectional overrides, which would
    make an operator read the text in another order) becomes a space, runs of
    whitespace collapse, ``\\`` and ``"`` are escaped (the escapes do not
    count against ``limit``; a cut never splits one)."""
    chars = []
    for ch in str(text):
        chars.append(ch if ch.isprintable() else " ")
    line = " ".join("".join(chars).split())
    if len(line) > limit:
        line = line[: max(limit - 3, 0)].rstrip() + "..."
    return line.replace("\\", "\\\\").replace('"', '\\"')


def _warn_agent(host: str) -> str:
    host = (host or "").strip()
    if host and _HOSTPORT_CHARS.issuperset(host):
        return host
    return "-"  # RFC 3261 pseudonym: a token


def reject_headers(
    reason: str,
    status: int,
    sentence: str,
    gateway_host: str,
    retry_after_s: int | None = None,
    *,
    decision_header: str = DECISION_HEADER,
) -> list[tuple[str, str]]:
    """Headers for a rejection with ``status`` and reason code ``reason``.

    ``sentence`` goes into the Warning text (sanitised; the standard reason
    phrase if blank). ``gateway_host`` is the warn-agent (``-`` if it is not
    a valid host[:port]). ``Retry-After`` is added only when
    ``retry_after_s`` is not None. Raises ValueError for a reason that is not
    a token, a status outside 300–699 or a negative Retry-After.
    """
    _check_reason(reason)
    _check_status(status, low=300)
    text = sanitize_text(sentence) or reason_phrase(status)
    headers = [
        ("Reason", f'SIP;cause={status};text="{reason}"'),
        ("Warning", f'399 {_warn_agent(gateway_host)} "{text}"'),
        (decision_header, f"deny;reason={reason}"),
    ]
    if retry_after_s is not None:
        if isinstance(retry_after_s, bool) or not isinstance(retry_after_s, int) or retry_after_s < 0:
            raise ValueError(f"retry_after_s must be a non-negative int, got {retry_after_s!r}")
        headers.append(("Retry-After", str(retry_after_s)))
    return headers


def bye_reason_header(
    reason: str, text: str | None = None, *, q850_cause: int = Q850_NORMAL_CLEARING
) -> tuple[str, str]:
    """The Reason header for a BYE the gateway sends on both legs.

    ``bye_reason_header("duration_exhausted")`` →
    ``("Reason", 'Q.850;cause=16;text="duration_exhausted"')``.
    ``text`` defaults to the reason code, which is the contract; pass it only
    to override (it is sanitised). See the module docstring for why Q.850.
    """
    _check_reason(reason)
    if isinstance(q850_cause, bool) or not isinstance(q850_cause, int) or not 1 <= q850_cause <= 127:
        raise ValueError(f"Q.850 cause must be an int in 1..127, got {q850_cause!r}")
    shown = reason if text is None else (sanitize_text(text) or reason)
    return ("Reason", f'Q.850;cause={q850_cause};text="{shown}"')


def strip_headers(headers: Iterable[tuple[str, str]], prefix: str = "X-Dialout-") -> list[tuple[str, str]]:
    """Drop every header whose name starts with ``prefix`` (any case), e.g.
    before the B-leg INVITE goes to the trunk. Order is kept."""
    p = prefix.lower()
    return [(name, value) for name, value in headers if not name.strip().lower().startswith(p)]
