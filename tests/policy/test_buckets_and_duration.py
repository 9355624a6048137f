"""Bucket choice, fallback order and authorised duration."""

from __future__ import annotations

import copy

import pytest
from policy_testlib import BASE, FR_PARIS, US_NYC, example_e164, make_settings, run

from gateway.config import ConfigValueError, parse_policy_sections
from policy import Bucket, Reason, Snapshot

POOL_S = 1500 * 60  # contoso: 25 licences × 60 min


@pytest.mark.parametrize(
    ("snapshot", "bucket", "fallbacks", "allowances", "max_s"),
    [
        # full pool, tenant balance 100.0 at FR 0.02/min = 5000 min
        (
            Snapshot(),
            Bucket.TENANT_POOL,
            (Bucket.CREDITS,),
            ((Bucket.TENANT_POOL, POOL_S), (Bucket.CREDITS, 300_000)),
            14_400,
        ),
        # 1 min of pool + 0.10 credits (5 min)
        (
            Snapshot(pool_used_minutes=1499, credits_balance=0.10),
            Bucket.TENANT_POOL,
            (Bucket.CREDITS,),
            ((Bucket.TENANT_POOL, 60), (Bucket.CREDITS, 300)),
            360,
        ),
        # per started minute: 2.5 min left of pool pays 2 whole minutes
        (
            Snapshot(pool_used_minutes=1497.5, credits_balance=0),
            Bucket.TENANT_POOL,
            (),
            ((Bucket.TENANT_POOL, 120),),
            120,
        ),
        # balance below one minute's price: credits do not apply
        (Snapshot(pool_used_minutes=1500, credits_balance=0.019), None, (), (), None),
        (Snapshot(pool_used_minutes=1500, credits_balance=0.02), Bucket.CREDITS, (), ((Bucket.CREDITS, 60),), 60),
        (Snapshot(pool_used_minutes=1500, credits_balance=0), None, (), (), None),
        (Snapshot(pool_used_minutes=1500, credits_balance=-5), None, (), (), None),
        (
            Snapshot(pool_used_minutes=2000, credits_balance=None),
            Bucket.CREDITS,
            (),
            ((Bucket.CREDITS, 300_000),),
            14_400,
        ),
    ],
)
def test_pool_then_credits(settings, snapshot, bucket, fallbacks, allowances, max_s):
    d = run(settings, "alice@contoso.com", FR_PARIS, snapshot=snapshot)
    assert d.bucket is bucket
    assert d.fallback_buckets == fallbacks
    assert d.allowances == allowances
    assert d.max_duration_s == max_s
    if bucket is None:
        assert (d.allow, d.reason, d.status) == (False, Reason.NO_ENTITLEMENT, 403)


def test_per_second_billing():
    s = make_settings(billing_increment="second")
    d = run(s, "alice@contoso.com", FR_PARIS, snapshot=Snapshot(pool_used_minutes=1497.5, credits_balance=0.01))
    assert d.allowances == ((Bucket.TENANT_POOL, 150), (Bucket.CREDITS, 30))
    assert d.max_duration_s == 180 and d.billing_increment_s == 1


def test_global_maximum_caps_everything():
    s = make_settings(max_call_length_s=600)
    assert run(s, "erin@fabrikam.com", US_NYC).max_duration_s == 600
    assert run(s, "alice@contoso.com", FR_PARIS).max_duration_s == 600
    d = run(s, "alice@contoso.com", FR_PARIS, snapshot=Snapshot(pool_used_minutes=1498, credits_balance=0))
    assert d.max_duration_s == 120


def test_credit_rate_by_region_with_default(settings):
    d = run(settings, "chloe@contoso.com", example_e164("GB"), snapshot=Snapshot(credits_balance=2.5))
    assert d.credit_rate_per_minute == pytest.approx(0.25)  # default rate
    assert d.max_duration_s == 600
    d = run(settings, "chloe@contoso.com", FR_PARIS, snapshot=Snapshot(credits_balance=2.5))
    assert d.credit_rate_per_minute == pytest.approx(0.02)
    assert d.max_duration_s == 125 * 60


def test_credits_need_both_licence_and_tenant_enabled(settings):
    # bob: no credits licence, contoso has credits
    d = run(settings, "bob@contoso.com", FR_PARIS, snapshot=Snapshot(pool_used_minutes=1500, credits_balance=100))
    assert d.reason is Reason.NO_ENTITLEMENT
    # hugo: credits licence, tenant has credits disabled (even with a balance)
    d = run(settings, "hugo@nocredit.example", FR_PARIS, snapshot=Snapshot(pool_used_minutes=60, credits_balance=100))
    assert d.reason is Reason.NO_ENTITLEMENT


def test_pool_is_60_minutes_per_subscription_licence_and_ppm_adds_nothing():
    data = copy.deepcopy(BASE)
    data["tenants"][2]["pay_per_minute_licences"] = 1000
    s = parse_policy_sections(data)
    assert s.tenant("nocredit").pool_minutes == 60
    assert s.tenant("contoso").pool_minutes == 1500
    d = run(s, "hugo@nocredit.example", FR_PARIS, snapshot=Snapshot(pool_used_minutes=59))
    assert d.max_duration_s == 60
    assert (
        run(s, "hugo@nocredit.example", FR_PARIS, snapshot=Snapshot(pool_used_minutes=60)).reason
        is Reason.NO_ENTITLEMENT
    )


def test_pool_only_for_zone_a(settings):
    d = run(settings, "hugo@nocredit.example", example_e164("AR"))
    assert d.reason is Reason.NO_ENTITLEMENT


def test_decision_carries_what_the_gateway_needs(settings):
    d = run(settings, "alice@contoso.com", "01 42 68 53 00")
    assert d.e164 == FR_PARIS and d.region == "FR" and d.number_type.value == "fixed_line"
    assert d.tenant == "contoso" and d.organizer == "alice@contoso.com"
    assert d.credit_rate_per_minute == pytest.approx(0.02)  # credits are in the chain
    assert d.explanation.startswith("organiser alice@contoso.com has policy any (usage location FR)")
    assert [c.rule for c in d.trace][:3] == ["identity", "destination", "number_class"]
    as_dict = d.to_dict()
    for key in (
        "allow",
        "status",
        "reason",
        "bucket",
        "fallback_buckets",
        "e164",
        "region",
        "number_type",
        "max_duration_s",
        "explanation",
        "trace",
    ):
        assert key in as_dict
    assert as_dict["reason"] == "allowed" and as_dict["bucket"] == "tenant_pool"
    assert as_dict["fallback_buckets"] == ["credits"]
    import json

    json.dumps(as_dict)  # serialisable


def test_denials_carry_no_bucket_nor_duration(settings):
    d = run(settings, "bob@contoso.com", "+49 30 901820")
    assert d.bucket is None and d.fallback_buckets == () and d.max_duration_s is None and d.allowances == ()
    assert d.trace[-1].outcome == "fail" and d.trace[-1].rule == "policy"


# --- non-finite numbers never reach the arithmetic (regressions) --------------------------------------


def test_a_nan_fair_use_threshold_is_refused_at_load_not_a_silent_bypass():

    with pytest.raises(ConfigValueError, match="fair_use_minutes_per_month: expected a finite number"):
        make_settings(usca_addon={"fair_use_minutes_per_month": float("nan")})
    # With a sane threshold, an organiser over it is refused.
    s = make_settings(usca_addon={"fair_use_minutes_per_month": 5000})
    d = run(s, "erin@fabrikam.com", US_NYC, snapshot=Snapshot(addon_used_minutes=1e9))
    assert d.reason is Reason.FAIR_USE_EXCEEDED


def test_a_subnormal_rate_is_refused_at_load_it_used_to_overflow_the_duration():

    with pytest.raises(ConfigValueError, match=r"policy\.credits\.rates\.FR"):
        make_settings(credits={"rates": {"FR": 1e-310}})
    # The smallest rate allowed still gives a finite, capped duration.
    s = make_settings(credits={"rates": {"FR": 0.0001}})
    d = run(s, "alice@contoso.com", FR_PARIS, snapshot=Snapshot(pool_used_minutes=1500, credits_balance=1e12))
    assert d.allow and d.bucket is Bucket.CREDITS and d.max_duration_s == s.catalogue.max_call_length_s


@pytest.mark.parametrize(
    "field",
    [
        "pool_used_minutes",
        "promotion_used_minutes",
        "addon_used_minutes",
        "credits_balance",
        "concurrent_organizer",
        "concurrent_tenant",
        "calls_last_minute_organizer",
        "distinct_destinations_today",
    ],
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "3"])
def test_snapshot_refuses_non_finite_counters(field, bad):
    # nan >= limit is False: a nan counter would pass every guard. Fail closed instead.
    with pytest.raises(ValueError, match=f"Snapshot.{field}: expected a finite number"):
        Snapshot(**{field: bad})
