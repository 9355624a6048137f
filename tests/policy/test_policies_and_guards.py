"""Organiser policies (ours and Microsoft's names), identity, licence, guards."""

from __future__ import annotations

import copy

import pytest
from policy_testlib import BASE, DE_BERLIN, FR_PARIS, US_NYC, example_e164, run

from gateway.config import parse_policy_sections
from policy import (
    MICROSOFT_POLICY_NAMES,
    Bucket,
    DialoutPolicy,
    PolicyConfigError,
    Reason,
    Snapshot,
    parse_dialout_policy,
)

# Microsoft's OnlineDialOutPolicy instances: the meeting (CPC) half decides.
EXPECTED_TAGS = {
    "DialoutCPCandPSTNInternational": "any",
    "DialoutCPCInternationalPSTNDomestic": "any",
    "DialoutCPCInternationalPSTNDisabled": "any",
    "DialoutCPCDomesticPSTNInternational": "domestic",
    "DialoutCPCandPSTNDomestic": "domestic",
    "DialoutCPCDomesticPSTNDisabled": "domestic",
    "DialoutCPCDisabledPSTNInternational": "disabled",
    "DialoutCPCDisabledPSTNDomestic": "disabled",
    "DialoutCPCandPSTNDisabled": "disabled",
    "DialoutCPCZoneAPSTNInternational": "zone_a",
    "DialoutCPCZoneAPSTNDomestic": "zone_a",
    "DialoutCPCZoneAPSTNDisabled": "zone_a",
}

# (destination, expected reason per policy) for an organiser in FR
OUTCOMES = {
    "any": {FR_PARIS: Reason.ALLOWED, DE_BERLIN: Reason.ALLOWED, "+54 11 2345 6789": Reason.ALLOWED},
    "domestic": {FR_PARIS: Reason.ALLOWED, DE_BERLIN: Reason.NOT_DOMESTIC, "+54 11 2345 6789": Reason.NOT_DOMESTIC},
    "zone_a": {FR_PARIS: Reason.ALLOWED, DE_BERLIN: Reason.ALLOWED, "+54 11 2345 6789": Reason.OUTSIDE_ZONE_A},
    "disabled": {
        FR_PARIS: Reason.DIALOUT_DISABLED,
        DE_BERLIN: Reason.DIALOUT_DISABLED,
        "+54 11 2345 6789": Reason.DIALOUT_DISABLED,
    },
}


def test_every_microsoft_name_is_known():
    assert set(MICROSOFT_POLICY_NAMES) == set(EXPECTED_TAGS)


def _with_policy(name: str):
    data = copy.deepcopy(BASE)
    data["organizers"][0]["dialout_policy"] = name  # alice: FR, subscription, credits
    return parse_policy_sections(data)


@pytest.mark.parametrize("tag", sorted(EXPECTED_TAGS))
@pytest.mark.parametrize("spelling", ["tag:{}", "{}", "TAG:{}", "tag:{}  ", "{lower}"])
def test_every_dialoutcpc_tag_maps_and_decides(tag, spelling):
    text = tag.lower() if spelling == "{lower}" else spelling.format(tag)
    assert parse_dialout_policy(text) is DialoutPolicy(EXPECTED_TAGS[tag])
    s = _with_policy(text)
    for number, reason in OUTCOMES[EXPECTED_TAGS[tag]].items():
        d = run(s, "alice@contoso.com", number)
        assert d.reason is reason, (tag, number, d.explanation)
        assert d.status == reason.status


@pytest.mark.parametrize("ours", ["any", "domestic", "zone_a", "disabled", "ANY", " Zone_A "])
def test_our_four_names(ours):
    assert parse_dialout_policy(ours) is DialoutPolicy(ours.strip().lower())


@pytest.mark.parametrize(
    "bad", ["", "international", "tag:DialoutCPC", "tag:DialoutCPCandPSTNWorld", "tag:", None, 3, ["any"]]
)
def test_unknown_policy_names_are_config_errors(bad):
    with pytest.raises(PolicyConfigError) as err:
        parse_dialout_policy(bad, "organizers[0].dialout_policy")
    assert "organizers[0].dialout_policy" in str(err.value) and "tag:DialoutCPC" in str(err.value)


def test_domestic_compares_regions_exactly_pr_is_not_us():
    data = copy.deepcopy(BASE)
    data["organizers"][4]["dialout_policy"] = "domestic"  # erin, US
    s = parse_policy_sections(data)
    assert run(s, "erin@fabrikam.com", US_NYC).allow
    assert run(s, "erin@fabrikam.com", "+1 787 200 1234").reason is Reason.NOT_DOMESTIC
    assert run(s, "erin@fabrikam.com", example_e164("CA")).reason is Reason.NOT_DOMESTIC
    # An equivalence group widens it.
    data["policy"]["domestic_equivalence"] = [["US", "PR", "VI"]]
    s = parse_policy_sections(data)
    d = run(s, "erin@fabrikam.com", "+1 787 200 1234")
    assert d.allow and d.bucket is Bucket.TENANT_POOL
    assert run(s, "erin@fabrikam.com", example_e164("CA")).reason is Reason.NOT_DOMESTIC


def test_domestic_follows_usage_location_not_physical_location(settings):
    d = run(settings, "bob@contoso.com", FR_PARIS, location="DE")
    assert d.allow
    assert run(settings, "bob@contoso.com", DE_BERLIN, location="DE").reason is Reason.NOT_DOMESTIC


# --- identity -----------------------------------------------------------------------


@pytest.mark.parametrize("organizer", [None, "", "   "])
def test_missing_organizer(settings, organizer):
    d = run(settings, organizer, FR_PARIS)
    assert (d.allow, d.reason, d.status) == (False, Reason.ORGANIZER_MISSING, 403)
    assert d.e164 is None  # nothing about the number before identity passes


def test_unknown_organizer_says_nothing_about_the_number(settings):
    d = run(settings, "mallory@evil.example", "+19002001234")
    assert (d.reason, d.status) == (Reason.ORGANIZER_UNKNOWN, 403)
    assert d.e164 is None and d.region is None


def test_organizer_ids_are_case_insensitive(settings):
    assert run(settings, "  Alice@Contoso.COM ", FR_PARIS).allow


def test_tenant_mismatch_is_unknown(settings):
    assert run(settings, "alice@contoso.com", FR_PARIS, tenant="fabrikam").reason is Reason.ORGANIZER_UNKNOWN
    assert run(settings, "alice@contoso.com", FR_PARIS, tenant="CONTOSO").allow


def test_decision_order_number_before_licence_before_policy(settings):
    # dmitri has no licence: a junk number still reports 484 first.
    assert run(settings, "dmitri@contoso.com", "12ab").reason is Reason.NUMBER_INVALID
    assert run(settings, "dmitri@contoso.com", "112").reason is Reason.DESTINATION_BLOCKED
    # grace (disabled) with a blocked number: the number class comes first.
    assert run(settings, "grace@fabrikam.com", "+19002001234").reason is Reason.DESTINATION_BLOCKED
    # dmitri: licence before policy and guards
    assert (
        run(settings, "dmitri@contoso.com", FR_PARIS, snapshot=Snapshot(concurrent_organizer=99)).reason
        is Reason.NO_AUDIO_CONFERENCING
    )


def test_addon_without_audio_conferencing_is_refused(settings):
    # The add-on's prerequisite is Audio Conferencing (seed 001).
    assert run(settings, "dmitri@contoso.com", US_NYC).reason is Reason.NO_AUDIO_CONFERENCING


def test_pay_per_minute_addon_holder_gets_usca(settings):
    d = run(settings, "frank@fabrikam.com", US_NYC)
    assert d.allow and d.bucket is Bucket.USCA_UNLIMITED and d.fallback_buckets == ()


# --- guards ---------------------------------------------------------------------------
# BASE limits: 5 per organiser, 50 per tenant, 10 calls/min, 100 distinct/day, CU and SO high-risk.


@pytest.mark.parametrize(
    ("snapshot", "reason", "retry_after"),
    [
        (Snapshot(concurrent_organizer=4), Reason.ALLOWED, None),
        (Snapshot(concurrent_organizer=5), Reason.LIMIT_CONCURRENCY, 30),
        (Snapshot(concurrent_tenant=49), Reason.ALLOWED, None),
        (Snapshot(concurrent_tenant=50), Reason.LIMIT_CONCURRENCY, 30),
        (Snapshot(calls_last_minute_organizer=9), Reason.ALLOWED, None),
        (Snapshot(calls_last_minute_organizer=10), Reason.LIMIT_RATE, 60),
        (Snapshot(distinct_destinations_today=99), Reason.ALLOWED, None),
        (Snapshot(distinct_destinations_today=100), Reason.FRAUD_SUSPECTED, None),
        (Snapshot(distinct_destinations_today=100, destination_seen_today=True), Reason.ALLOWED, None),
        (Snapshot(concurrent_organizer=5, calls_last_minute_organizer=10), Reason.LIMIT_CONCURRENCY, 30),
        (Snapshot(calls_last_minute_organizer=10, distinct_destinations_today=500), Reason.LIMIT_RATE, 60),
    ],
)
def test_guards_at_their_limits(settings, snapshot, reason, retry_after):
    d = run(settings, "alice@contoso.com", FR_PARIS, snapshot=snapshot)
    assert d.reason is reason and d.status == reason.status
    assert d.retry_after_s == retry_after
    if reason in (Reason.LIMIT_CONCURRENCY, Reason.LIMIT_RATE):
        assert d.status == 480 and reason.transient


@pytest.mark.parametrize("region", ["CU", "SO"])
def test_high_risk_regions_are_fraud_suspected(settings, region):
    d = run(settings, "alice@contoso.com", example_e164(region))
    assert (d.allow, d.reason, d.status) == (False, Reason.FRAUD_SUSPECTED, 403)


@pytest.mark.parametrize(
    ("used", "number", "reason", "bucket"),
    [
        (4999, US_NYC, Reason.ALLOWED, Bucket.USCA_UNLIMITED),
        (5000, US_NYC, Reason.FAIR_USE_EXCEEDED, None),
        (5000, example_e164("CA"), Reason.FAIR_USE_EXCEEDED, None),
        # fair use concerns the add-on only: other destinations go on
        (5000, FR_PARIS, Reason.ALLOWED, Bucket.TENANT_POOL),
        (5000, "+1 787 200 1234", Reason.ALLOWED, Bucket.TENANT_POOL),
    ],
)
def test_addon_fair_use(settings, used, number, reason, bucket):
    d = run(settings, "erin@fabrikam.com", number, snapshot=Snapshot(addon_used_minutes=used))
    assert d.reason is reason and d.bucket is bucket


def test_addon_does_not_touch_the_pool(settings):
    # Pool exhausted: the add-on still pays for US/CA.
    d = run(settings, "erin@fabrikam.com", US_NYC, snapshot=Snapshot(pool_used_minutes=10**6))
    assert d.allow and d.bucket is Bucket.USCA_UNLIMITED and d.fallback_buckets == ()
