"""The entitlement policy engine: pure rules, no I/O.

`decide(request, snapshot, now, settings)` turns one dial-out attempt, the
counters the caller read and the current time into a `Decision`. See
docs/dialout-rules.md for the rules and docs/policy.md for the config.
"""

from policy.config import PolicyConfigError, parse_dialout_policy, parse_policy_sections
from policy.engine import decide
from policy.model import (
    MICROSOFT_POLICY_NAMES,
    ZONE_A,
    AudioConferencing,
    BillingIncrement,
    CallRequest,
    Catalogue,
    Check,
    Decision,
    DialoutPolicy,
    Guards,
    Organizer,
    PolicySettings,
    Promotion,
    Snapshot,
    Tenant,
)
from policy.numbers import NormalizedNumber, NumberType, normalize_destination
from policy.reasons import Bucket, Reason

__all__ = [
    "MICROSOFT_POLICY_NAMES",
    "ZONE_A",
    "AudioConferencing",
    "BillingIncrement",
    "Bucket",
    "CallRequest",
    "Catalogue",
    "Check",
    "Decision",
    "DialoutPolicy",
    "Guards",
    "NormalizedNumber",
    "NumberType",
    "Organizer",
    "PolicyConfigError",
    "PolicySettings",
    "Promotion",
    "Reason",
    "Snapshot",
    "Tenant",
    "decide",
    "normalize_destination",
    "parse_dialout_policy",
    "parse_policy_sections",
]
