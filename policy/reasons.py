"""The closed vocabularies other systems see: reason codes and buckets.

These strings appear in decisions, SIP headers, logs, metrics labels and
`dialout-gw explain`. They are a contract (see docs/dialout-rules.md,
"Names that other systems see"): never rename a member's value.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a call was allowed, rejected or ended. Each code knows its SIP status.

    `status` is the final response the gateway sends (or, for codes that end a
    call already set up, the cause it puts in the BYE's Reason header).
    `transient` codes are sent with a `Retry-After` header.
    """

    # `_ignore_` keeps the helper names below out of the member list.
    _ignore_ = ["status", "transient", "stage"]

    status: int
    transient: bool
    stage: str

    def __new__(cls, value: str, status: int, stage: str, transient: bool = False) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.stage = stage
        member.transient = transient
        return member

    # success
    ALLOWED = "allowed", 200, "success"
    # admission (produced by the gateway before any lookup)
    UNTRUSTED_SOURCE = "untrusted_source", 403, "admission"
    OVERLOADED = "overloaded", 503, "admission", True
    # identity
    ORGANIZER_MISSING = "organizer_missing", 403, "identity"
    ORGANIZER_UNKNOWN = "organizer_unknown", 403, "identity"
    # destination
    NUMBER_INVALID = "number_invalid", 484, "destination"
    DESTINATION_BLOCKED = "destination_blocked", 403, "destination"
    # licence and policy
    NO_AUDIO_CONFERENCING = "no_audio_conferencing", 403, "licence"
    DIALOUT_DISABLED = "dialout_disabled", 403, "policy"
    NOT_DOMESTIC = "not_domestic", 403, "policy"
    OUTSIDE_ZONE_A = "outside_zone_a", 403, "policy"
    # guards
    LIMIT_CONCURRENCY = "limit_concurrency", 480, "guard", True
    LIMIT_RATE = "limit_rate", 480, "guard", True
    FRAUD_SUSPECTED = "fraud_suspected", 403, "guard"
    FAIR_USE_EXCEEDED = "fair_use_exceeded", 403, "guard"
    # money
    NO_ENTITLEMENT = "no_entitlement", 403, "money"
    # routing: the policy allows the call, but no configured trunk serves the destination
    NO_ROUTE = "no_route", 404, "routing"
    # message: an SDP that cannot be relayed safely
    SDP_INVALID = "sdp_invalid", 488, "message"
    # relay outcomes (produced by the gateway)
    TRUNK_FAILURE = "trunk_failure", 502, "relay"  # the trunk's own status is passed through; 502 if it has none
    TRUNK_TIMEOUT = "trunk_timeout", 408, "relay"
    DURATION_EXHAUSTED = "duration_exhausted", 403, "relay"  # BYE mid-call; cause in its Reason header

    @property
    def sip_cause(self) -> int:
        """The `cause=` of the RFC 3326 `Reason: SIP;cause=…;text="<code>"` header."""
        return self.status

    @property
    def reason_header(self) -> str:
        """The full RFC 3326 Reason header value for this code."""
        return f'SIP;cause={self.status};text="{self.value}"'


class Bucket(StrEnum):
    """An entitlement that can pay for a call, in the order they are tried."""

    PROMOTION = "promotion"
    USCA_UNLIMITED = "usca_unlimited"
    TENANT_POOL = "tenant_pool"
    CREDITS = "credits"
