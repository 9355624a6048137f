"""The entitlement policy engine: pure rules, no I/O.

`decide(request, snapshot, now, settings)` turns one dial-out attempt, the
counters the caller read and the current time into a `Decision`. It is
`assess(request, now, settings)` (rules 2–6, no counters: a denial or an
`Assessment` saying whose counters to read) then
`decide_assessed(assessment, snapshot, now, settings)` (rules 7–9). An allowed
`Decision` carries the ledger's `charges` (`ChargeSpec`s) and the tenant `tz`.
`route(e164, region, trunks)` orders the trunks for an allowed call
(policy/routing.py). See docs/dialout-rules.md for the rules, docs/policy.md
and docs/routing.md for how they are configured.

The config is validated by `gateway/schema.py`; `build_policy_settings`
turns the validated values into `PolicySettings` (`gateway.config.load_config`
and `gateway.config.parse_policy_sections` do both).
"""

from policy.config import PolicyConfigError, build_policy_settings, parse_dialout_policy
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
    "build_policy_settings",
    "caller_id_for",
    "check_trunks",
    "decide",
    "decide_assessed",
    "normalize_destination",
    "parse_dialout_policy",
    "route",
]
