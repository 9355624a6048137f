"""The entitlement policy engine: pure rules, no I/O.

`decide(request, snapshot, now, settings)` turns one dial-out attempt, the
counters the caller read and the current time into a `Decision`. It is
`assess(request, now, settings)` (rules 2–6, no counters: a denial or an
`Assessment` saying whose counters to read) then
`decide_assessed(assessment, snapshot, now, settings)` (rules 7–9). An allowed
`Decision` carries the ledger's `charges` (`ChargeSpec`s) and the tenant `tz`.
`route(e164, region, trunks)` orders the trunks for an allowed call
(policy/routing.py). See docs/dialout-rules.md for the rules and
docs/policy.md for the config.
"""

from policy.config import PolicyConfigError, parse_dialout_policy, parse_policy_sections
from policy.engine import assess, decide, decide_assessed
from policy.model import (
    MICROSOFT_POLICY_NAMES,
    ZONE_A,
    Assessment,
    AudioConferencing,
    BillingIncrement,
    CallRequest,
    Catalogue,
    ChargeSpec,
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
from policy.routing import Trunk, caller_id_for, check_trunks, route

__all__ = [
    "MICROSOFT_POLICY_NAMES",
    "ZONE_A",
    "Assessment",
    "AudioConferencing",
    "BillingIncrement",
    "Bucket",
    "CallRequest",
    "Catalogue",
    "ChargeSpec",
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
    "Trunk",
    "assess",
    "caller_id_for",
    "check_trunks",
    "decide",
    "decide_assessed",
    "normalize_destination",
    "parse_dialout_policy",
    "parse_policy_sections",
    "route",
]
