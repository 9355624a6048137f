"""The canonical log line: one `call` event per call, when it ends.

Every field an operator needs to explain the call from this line alone: who
asked (tenant, organiser, meeting), what was dialled and what it became, the
decision and its reason (with the rule trace of a denial), both legs' final
statuses, each trunk tried, and what the ledger billed. `dialout-gw logs`
and `explain` read these fields back.
"""

from __future__ import annotations

from typing import Any

from call.actions import CallRecord, TrunkAttempt
from policy import Decision
from sip.inbound import InboundInvite
from store import Settlement


def canonical_fields(
    call_id: str,
    d: Decision | None,
    inv: InboundInvite | None,
    record: CallRecord,
    settlement: Settlement | None,
) -> dict[str, Any]:
    """The fields of the call's `call` line (the settlement is None when the ledger was not opened or failed)."""
    fields: dict[str, Any] = {
        "call_id": call_id,
        "tenant": d.tenant if d else (inv.tenant if inv else None),
        "organizer": d.organizer if d and d.organizer else (inv.organizer if inv else None),
        "meeting": inv.meeting if inv else None,
        "initiator": inv.initiator if inv else None,
        "location": inv.location if inv else None,
        "dialled": inv.dialled if inv else None,
        "destination": d.e164 if d and d.e164 else None,
        "region": d.region if d else None,
        "number_type": str(d.number_type) if d and d.number_type else None,
        "decision": "allow" if record.admitted else "deny",
        "reason": record.reason,
        "bucket": str(d.bucket) if d and d.bucket else None,
        "fallback_buckets": [str(b) for b in d.fallback_buckets] if d else [],
        "max_duration_s": d.max_duration_s if d else None,
        "bridge_status": record.bridge_status,
        "trunk_status": record.trunk_status,
        "trunk": record.trunk,
        "trunk_attempts": [_attempt(a) for a in record.trunk_attempts],
        "setup_ms": round(record.setup_ms, 2) if record.setup_ms is not None else None,
        "talk_s": round(record.talk_s, 3),
        "billed_units": settlement.billed_units if settlement else 0,
        "charges": {b: amount for b, amount in settlement.charges} if settlement else {},
        "ended_by": record.ended_by,
        "explanation": record.explanation or (d.explanation if d else None),
    }
    if d is not None and not d.allow:
        fields["trace"] = [c.detail for c in d.trace]
    return fields


def _attempt(attempt: TrunkAttempt) -> dict[str, Any]:
    out: dict[str, Any] = {"trunk": attempt.trunk, "status": attempt.status}
    if attempt.next_hop:
        out["next_hop"] = attempt.next_hop
    return out
