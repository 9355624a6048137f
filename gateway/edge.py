"""The edge: what the gateway reads from a bridge's INVITE before any decision.

Undecodable or malformed input is refused here with the 4xx/5xx that RFC 3261
names for it (`Malformed`), and never reaches the policy or the ledger. The
refusal logs are rate-limited per source, so that a flood cannot fill the disk.
"""

from __future__ import annotations

from typing import Any, Protocol

from sip import SipParseError, invite_from_request, parse_request
from sip.inbound import HeaderNames, InboundInvite
from sip.message import SipRequest


class Logger(Protocol):
    def warning(self, event: str, /, **kw: Any) -> object: ...


# Extensions the gateway honours in a bridge's Require (anything else: 420).
SUPPORTED_EXTENSIONS = frozenset({"timer"})
MAX_INVITE_BYTES = 16 * 1024


class RateLimitedLog:
    """Events logged at most once per interval per (source, kind), with a count
    of what was suppressed, so that a flood cannot fill the disk."""

    def __init__(self, log: Logger, interval_s: float):
        self.log = log
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def warning(self, event: str, source: str, kind: str, now: float, **fields: Any) -> None:
        key = (source, kind)
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval_s:
            self._last[key] = (last, suppressed + 1)
            return
        if len(self._last) > 50_000:
            self._last.clear()
        self._last[key] = (now, 0)
        self.log.warning(event, source=source, suppressed_since_last=suppressed, **fields)


def read_invite(raw: bytes, headers: HeaderNames, min_se_s: int, log: Logger) -> tuple[SipRequest, InboundInvite]:
    """Parse the INVITE at the edge: undecodable or malformed input is a 4xx here,
    and never reaches the policy or the ledger."""
    head, _, _ = raw.partition(b"\r\n\r\n")
    call_id = _call_id_of(head)
    if len(raw) > MAX_INVITE_BYTES:
        raise Malformed(400, f"the request is larger than {MAX_INVITE_BYTES} bytes", call_id)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(400, "the request's headers are not valid UTF-8", call_id) from None
    try:
        message = parse_request(raw)
        invite = invite_from_request(message, headers)
    except SipParseError as exc:
        raise Malformed(exc.status, f"malformed request: {exc.reason}", call_id) from None
    if not _accepts_sdp(message.headers_all("Accept")):
        raise Malformed(406, "the INVITE's Accept header excludes application/sdp", invite.call_id)
    if message.body.strip() and not invite.has_sdp:
        raise Malformed(
            415,
            f"the INVITE's body is {message.content_type or 'untyped'}, not SDP",
            invite.call_id,
            [("Accept", "application/sdp")],
        )
    encoding = (message.header("content-encoding") or "").strip().lower()
    if encoding and encoding != "identity":
        raise Malformed(
            415, f"the INVITE's body is {encoding}-encoded", invite.call_id, [("Accept-Encoding", "identity")]
        )
    required = {t.strip().lower() for v in message.headers_all("require") for t in v.split(",") if t.strip()}
    unsupported = sorted(required - SUPPORTED_EXTENSIONS)
    if unsupported:
        raise Malformed(
            420,
            f"Require names extensions the gateway does not support: {', '.join(unsupported)}",
            invite.call_id,
            [("Unsupported", ", ".join(unsupported))],
        )
    if message.has_header("replaces"):
        log.warning(
            "replace_refused",
            call_id=invite.call_id,
            status=403,
            explanation="an INVITE with Replaces is refused: a call can only start as a new "
            "dial-out through admission and policy",
        )
        raise Malformed(403, "an INVITE with Replaces is refused", invite.call_id)
    max_forwards = message.header("max-forwards")
    if max_forwards is not None and max_forwards.strip() == "0":
        raise Malformed(483, "Max-Forwards is 0", invite.call_id)
    if invite.session_expires is not None and invite.session_expires < min_se_s:
        raise Malformed(
            422,
            f"Session-Expires {invite.session_expires} s is below the gateway's minimum of {min_se_s} s",
            invite.call_id,
            [("Min-SE", str(min_se_s))],
        )
    return message, invite


class Malformed(Exception):
    """A request refused at the edge: the status, the sentence for its Warning and log line, extra headers."""

    def __init__(
        self, status: int, detail: str, call_id: str | None = None, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.call_id = call_id
        self.headers = list(headers or [])


def _accepts_sdp(accept_values: list[str]) -> bool:
    """RFC 3261 §21.4.7: without an Accept header, application/sdp is assumed."""
    if not accept_values:
        return True
    for value in accept_values:
        media = value.split(";", 1)[0].strip().lower()
        if media in ("application/sdp", "application/*", "*/*"):
            return True
    return False


def body_bytes(raw: bytes) -> bytes:
    """The body as the request's Content-Length delimits it: what follows in
    a datagram is discarded (RFC 3261 §18.3), as sip.parse_request does.
    pjsip hands over the whole datagram, so without this a body longer than
    its Content-Length was checked and relayed whole (found by fuzzing)."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, body = raw[:crlf], raw[crlf + 4 :]
    elif lf >= 0:
        head, body = raw[:lf], raw[lf + 2 :]
    else:
        return b""
    for line in head.split(b"\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            value = value.strip()
            if value.isdigit() and int(value) <= len(body):
                return body[: int(value)]
            break
    return body


def _call_id_of(head: bytes) -> str:
    for line in head.split(b"\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"call-id", b"i"):
            return value.strip().decode("utf-8", "replace")
    return ""
