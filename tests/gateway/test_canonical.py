"""The canonical `call` line: every field an operator needs, from the call's decision, invite and record."""

from __future__ import annotations

from call.actions import CallRecord, TrunkAttempt
from gateway.canonical import canonical_fields
from policy import Reason
from store import Settlement
from tests.policy.policy_testlib import FR_PARIS, JM_NUMBER, make_settings, run


def _record(**overrides: object) -> CallRecord:
    fields: dict[str, object] = dict(
        reason="completed",
        bridge_status=200,
        trunk_status=200,
        answered=True,
        answered_at=10.0,
        ended_at=72.5,
        setup_ms=812.3456,
        ended_by="bridge",
        ledger_open=True,
        admitted=True,
        trunk="carrier-a",
        trunk_attempts=(TrunkAttempt("carrier-b", 503, "192.0.2.7:5060"), TrunkAttempt("carrier-a", 200)),
    )
    fields.update(overrides)
    return CallRecord(**fields)  # type: ignore[arg-type]


def test_an_answered_call_carries_its_decision_attempts_and_bill() -> None:
    decision = run(make_settings(), "alice@contoso.com", FR_PARIS)
    assert decision.allow
    settlement = Settlement("c1", "completed", 62.5, 2, 60, (("tenant_pool", 2.0),), False)

    line = canonical_fields("c1", decision, None, _record(), settlement)

    assert line["call_id"] == "c1"
    assert line["decision"] == "allow"
    assert line["organizer"] == "alice@contoso.com"
    assert line["destination"] == FR_PARIS
    assert line["talk_s"] == 62.5
    assert line["setup_ms"] == 812.35
    assert line["billed_units"] == 2
    assert line["charges"] == {"tenant_pool": 2.0}
    # The failed-over attempt keeps the address it tried; the direct one has none.
    assert line["trunk_attempts"] == [
        {"trunk": "carrier-b", "status": 503, "next_hop": "192.0.2.7:5060"},
        {"trunk": "carrier-a", "status": 200},
    ]
    assert "trace" not in line


def test_a_denial_explains_itself_with_its_rule_trace() -> None:
    decision = run(make_settings(), "bob@contoso.com", JM_NUMBER)  # a domestic-only organiser dials Jamaica
    assert not decision.allow and decision.reason is Reason.NOT_DOMESTIC
    record = _record(
        reason=decision.reason.value,
        bridge_status=403,
        trunk_status=None,
        answered=False,
        answered_at=None,
        ledger_open=False,
        admitted=False,
        trunk=None,
        trunk_attempts=(),
    )

    line = canonical_fields("c2", decision, None, record, None)

    assert line["decision"] == "deny"
    assert line["reason"] == decision.reason.value
    assert line["explanation"] == decision.explanation
    assert line["trace"] and all(isinstance(step, str) for step in line["trace"])
    assert line["billed_units"] == 0 and line["charges"] == {} and line["talk_s"] == 0.0
