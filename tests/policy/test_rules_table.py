"""Every case of the table at the end of docs/dialout-rules.md ("Test cases that must hold")."""

from __future__ import annotations

import copy
from datetime import datetime

import pytest
from policy_testlib import AFTER_PROMO, BASE, FR_PARIS, JM_NUMBER, PARIS, US_NYC, US_PREMIUM, run

from gateway.config import parse_policy_sections
from policy import Bucket, Reason, Snapshot


def test_subscription_any_dials_paris_during_promotion(settings):
    d = run(settings, "alice@contoso.com", "+33 1 42 68 53 00", datetime(2018, 5, 1, 10, 0, tzinfo=PARIS))
    assert d.allow and d.reason is Reason.ALLOWED and d.status == 200
    assert d.bucket is Bucket.PROMOTION
    assert d.e164 == FR_PARIS and d.region == "FR"


def test_same_call_at_first_second_of_july_goes_to_pool(settings):
    d = run(
        settings,
        "alice@contoso.com",
        "+33 1 42 68 53 00",
        datetime(2018, 7, 1, 0, 0, 0, tzinfo=PARIS),
        Snapshot(pool_used_minutes=10),
    )
    assert d.allow and d.bucket is Bucket.TENANT_POOL
    assert Bucket.PROMOTION not in d.fallback_buckets


def test_addon_holder_roaming_in_zimbabwe_dials_new_york(settings):
    d = run(settings, "erin@fabrikam.com", "+1 212 200 1234", AFTER_PROMO, location="ZW")
    assert d.allow and d.bucket is Bucket.USCA_UNLIMITED
    assert d.region == "US"
    # Unlimited: nothing is deducted, only the global maximum caps the call.
    assert d.allowances[0] == (Bucket.USCA_UNLIMITED, None)
    assert d.max_duration_s == settings.catalogue.max_call_length_s
    # The reported location is recorded, never decisive.
    assert any(c.rule == "location" and "ZW" in c.detail for c in d.trace)


def test_addon_holder_roaming_same_decision_wherever_they_are(settings):
    base = run(settings, "erin@fabrikam.com", US_NYC)
    for where in ("ZW", "US", "FR", "CU", "KP", "", None):
        d = run(settings, "erin@fabrikam.com", US_NYC, location=where)
        assert (d.allow, d.reason, d.bucket, d.fallback_buckets, d.max_duration_s) == (
            base.allow,
            base.reason,
            base.bucket,
            base.fallback_buckets,
            base.max_duration_s,
        )


@pytest.mark.parametrize(
    ("organizer", "expected_reason", "expected_bucket"),
    [
        # erin: subscription, no credits licence/tenant credits disabled → nothing pays
        ("erin@fabrikam.com", Reason.NO_ENTITLEMENT, None),
        # frank: pay-per-minute, no credits → nothing pays
        ("frank@fabrikam.com", Reason.NO_ENTITLEMENT, None),
    ],
)
def test_addon_holder_dials_jamaica_is_not_the_addon(settings, organizer, expected_reason, expected_bucket):
    d = run(settings, organizer, "+1 876 209 1234")
    assert d.region == "JM" and d.e164 == JM_NUMBER
    assert d.reason is expected_reason and d.status == 403 and d.bucket is expected_bucket
    assert Bucket.USCA_UNLIMITED not in d.fallback_buckets


def test_addon_holder_with_credits_dials_jamaica_pays_with_credits():
    data = copy.deepcopy(BASE)
    data["tenants"][1]["credits"] = {"enabled": True, "balance": 10.0}
    data["organizers"][4]["credits_licence"] = True
    s = parse_policy_sections(data)
    d = run(s, "erin@fabrikam.com", JM_NUMBER)
    assert d.allow and d.bucket is Bucket.CREDITS and d.fallback_buckets == ()
    assert d.credit_rate_per_minute == pytest.approx(0.20)
    assert d.max_duration_s == 50 * 60  # 10.0 / 0.20 = 50 minutes


def test_initiator_without_licence_is_allowed_licence_is_the_organizers(settings):
    d = run(settings, "alice@contoso.com", FR_PARIS, initiator="guest-without-licence@example.org")
    assert d.allow and d.bucket is Bucket.TENANT_POOL


def test_organizer_without_audio_conferencing(settings):
    d = run(settings, "dmitri@contoso.com", FR_PARIS)
    assert not d.allow and d.reason is Reason.NO_AUDIO_CONFERENCING and d.status == 403


def test_domestic_policy_fr_dials_germany(settings):
    d = run(settings, "bob@contoso.com", "+49 30 901820")
    assert not d.allow and d.reason is Reason.NOT_DOMESTIC and d.status == 403
    assert d.region == "DE"
    assert "bob@contoso.com" in d.explanation and "FR" in d.explanation and "DE" in d.explanation


def test_premium_us_900_is_blocked(settings):
    d = run(settings, "erin@fabrikam.com", "+1 900 200 1234")
    assert not d.allow and d.reason is Reason.DESTINATION_BLOCKED and d.status == 403
    assert d.e164 == US_PREMIUM and d.number_type.value == "premium_rate"


@pytest.mark.parametrize(
    ("organizer", "dialled"),
    [
        ("alice@contoso.com", "112"),  # FR
        ("erin@fabrikam.com", "112"),  # US
        ("erin@fabrikam.com", "911"),
        ("grace@fabrikam.com", "911"),  # CA (policy disabled, but the number class comes first)
        ("alice@contoso.com", "15"),  # SAMU
        ("alice@contoso.com", "17"),
        ("alice@contoso.com", "18"),
        ("chloe@contoso.com", "110"),  # DE police
    ],
)
def test_emergency_numbers_are_blocked(settings, organizer, dialled):
    d = run(settings, organizer, dialled)
    assert not d.allow and d.reason is Reason.DESTINATION_BLOCKED and d.status == 403
    assert d.number_type.value == "emergency"
    assert d.e164 is None


def test_letters_are_number_invalid(settings):
    d = run(settings, "alice@contoso.com", "12ab")
    assert not d.allow and d.reason is Reason.NUMBER_INVALID and d.status == 484


def test_pool_exhausted_credits_pay_with_duration_from_balance(settings):
    # contoso: 25 licences → 1500 min pool, all used; credits 100.0 at FR rate 0.02 → 5000 min
    d = run(settings, "alice@contoso.com", FR_PARIS, snapshot=Snapshot(pool_used_minutes=1500, credits_balance=1.0))
    assert d.allow and d.bucket is Bucket.CREDITS and d.fallback_buckets == ()
    assert d.credit_rate_per_minute == pytest.approx(0.02)
    assert d.max_duration_s == 50 * 60  # 1.00 / 0.02 per minute


def test_pool_with_three_minutes_left_and_no_credits_is_cut_after_180_s(settings):
    d = run(settings, "hugo@nocredit.example", FR_PARIS, snapshot=Snapshot(pool_used_minutes=57))
    assert d.allow and d.bucket is Bucket.TENANT_POOL and d.fallback_buckets == ()
    assert d.max_duration_s == 180
