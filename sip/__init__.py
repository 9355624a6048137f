"""Pure SIP helpers for the gateway: request and URI parsing, the bridge's
INVITE as data, rejection/BYE headers, and SDP passthrough checks.

No pjsua2, no I/O, stdlib only (see ``house-style.md``).
"""

from .errors import SipParseError
from .inbound import HeaderNames, InboundInvite, invite_from_request, read_invite
from .message import (
    Address,
    SipRequest,
    canonical_header_name,
    header_key,
    parse_address,
    parse_request,
    split_header_list,
)
from .responses import (
    bye_reason_header,
    reason_phrase,
    reject_headers,
    sanitize_text,
    strip_headers,
)
from .sdp import check_sdp, connection_address, extract_sdp, is_hold, media_ports
from .uri import DialledNumber, SipUri, TelUri, dialled_from_request_uri, parse_uri

__all__ = [
    "Address",
    "DialledNumber",
    "HeaderNames",
    "InboundInvite",
    "SipParseError",
    "SipRequest",
    "SipUri",
    "TelUri",
    "bye_reason_header",
    "canonical_header_name",
    "check_sdp",
    "connection_address",
    "dialled_from_request_uri",
    "extract_sdp",
    "header_key",
    "invite_from_request",
    "is_hold",
    "media_ports",
    "parse_address",
    "parse_request",
    "parse_uri",
    "read_invite",
    "reason_phrase",
    "reject_headers",
    "sanitize_text",
    "split_header_list",
    "strip_headers",
]
