"""The bridge's INVITE as data: what the gateway and the policy engine need.

See "SIP contract with the bridge" in ``dialout-rules.md``: the dialled
number is the Request-URI user part or a ``tel:`` URI; the organiser, tenant,
meeting, initiator and physical location come from ``X-Dialout-*`` headers
whose names are configurable (:class:`HeaderNames`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SipParseError
from .message import SipRequest, parse_address, parse_header_params, parse_request
from .sdp import extract_sdp
from .uri import DialledNumber, dialled_from_request_uri

__all__ = ["HeaderNames", "InboundInvite", "invite_from_request", "read_invite"]


@dataclass(frozen=True, slots=True)
class HeaderNames:
    """Names of the bridge's headers (config keys, defaults from the spec).
    Look-ups ignore case."""

    organizer: str = "X-Dialout-Organizer"
    tenant: str = "X-Dialout-Tenant"
    meeting: str = "X-Dialout-Meeting"
    initiator: str = "X-Dialout-Initiator"
    location: str = "X-Dialout-Location"


DEFAULT_HEADER_NAMES = HeaderNames()


@dataclass(frozen=True, slots=True)
class InboundInvite:
    """One INVITE from the bridge.

    ``dialled`` is the string for the policy engine
    (:attr:`DialledNumber.policy_input`); ``dialled_number`` keeps the parts.
    The ``X-Dialout-*`` values are stripped, and None when absent or blank;
    ``organizer is None`` is the policy's ``organizer_missing``.
    ``sdp`` is the body when it is ``application/sdp``, or the SDP part of a
    multipart body, None when there is none or it is blank;
    ``has_sdp`` is ``sdp is not None``.
    ``session_expires``/``min_se`` are the RFC 4028 delta-seconds, None when
    absent or not a number; ``session_refresher`` is ``uac``/``uas``/None.
    """

    call_id: str
    request_uri: str
    from_uri: str
    to_uri: str
    dialled: str
    dialled_number: DialledNumber
    organizer: str | None
    tenant: str | None
    meeting: str | None
    initiator: str | None
    location: str | None
    has_sdp: bool
    sdp: str | None
    session_expires: int | None
    session_refresher: str | None
    min_se: int | None


def _value(req: SipRequest, name: str) -> str | None:
    """First non-blank value, stripped."""
    for value in req.headers_all(name):
        value = value.strip()
        if value:
            return value
    return None


def _unique_value(req: SipRequest, name: str) -> str | None:
    """Like :func:`_value`, but two different non-blank values are an error:
    the organiser decides who pays, so ambiguity must not pass silently."""
    found: str | None = None
    for value in req.headers_all(name):
        value = value.strip()
        if not value:
            continue
        if found is None:
            found = value
        elif value != found:
            raise SipParseError(f"conflicting {name} headers")
    return found


def _delta_seconds(value: str | None) -> tuple[int | None, str | None]:
    if value is None:
        return None, None
    number, semi, params = value.partition(";")
    number = number.strip(" \t")
    seconds = int(number) if number.isdigit() and number.isascii() and len(number) <= 10 else None
    refresher: str | None = None
    if semi:
        try:
            for key, val in parse_header_params(params):
                if key == "refresher" and val:
                    refresher = val.lower()
        except SipParseError:
            refresher = None
    return seconds, refresher


def invite_from_request(req: SipRequest, header_names: HeaderNames = DEFAULT_HEADER_NAMES) -> InboundInvite:
    """Build an :class:`InboundInvite` from an already parsed request."""
    if req.method != "INVITE":
        raise SipParseError("request is not an INVITE")
    dialled = dialled_from_request_uri(req.uri)
    sdp = extract_sdp(req.header("content-type"), req.body)
    if sdp is not None and not sdp.strip():
        sdp = None
    session_expires, refresher = _delta_seconds(req.header("session-expires"))
    min_se, _ = _delta_seconds(req.header("min-se"))
    return InboundInvite(
        call_id=req.call_id,
        request_uri=req.uri,
        from_uri=parse_address(req.header("from") or "").uri,
        to_uri=parse_address(req.header("to") or "").uri,
        dialled=dialled.policy_input,
        dialled_number=dialled,
        organizer=_unique_value(req, header_names.organizer),
        tenant=_unique_value(req, header_names.tenant),
        meeting=_value(req, header_names.meeting),
        initiator=_value(req, header_names.initiator),
        location=_value(req, header_names.location),
        has_sdp=sdp is not None,
        sdp=sdp,
        session_expires=session_expires,
        session_refresher=refresher,
        min_se=min_se,
    )


def read_invite(raw: str | bytes, header_names: HeaderNames = DEFAULT_HEADER_NAMES) -> InboundInvite:
    """Parse the raw INVITE text (pjsua2's ``rdata.wholeMsg``).

    Raises :class:`SipParseError` for a malformed message (status hint 400,
    505 for a foreign SIP version), a non-INVITE, or a Request-URI that is
    not ``sip:``/``sips:``/``tel:`` (416). A missing organiser is *not* an
    error here: ``organizer`` is None and the policy answers
    ``organizer_missing``.
    """
    return invite_from_request(parse_request(raw), header_names)
