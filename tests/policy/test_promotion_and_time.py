"""Promotion windows, the 44 countries, and exact boundary seconds in tenant time."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from policy_testlib import BASE, example_e164, make_settings, run

from gateway.config import parse_policy_sections
from policy import ZONE_A, Bucket, Reason, Snapshot

SEED_44 = [
    "AU",
    "AT",
    "BE",
    "BR",
    "BG",
    "CA",
    "CN",
    "HR",
    "CZ",
    "DK",
    "EE",
    "FI",
    "FR",
    "DE",
    "GR",
    "HK",
    "HU",
    "IN",
    "IE",
    "IT",
    "JP",
    "LU",
    "MY",
    "MX",
    "NL",
    "NZ",
    "NO",
    "PL",
    "PT",
    "PR",
    "RO",
    "RU",
    "SG",
    "SK",
    "SI",
    "ZA",
    "KR",
    "ES",
    "SE",
    "CH",
    "TW",
    "TH",
    "GB",
    "US",
]


def test_zone_a_is_the_seed_list():
    assert len(SEED_44) == 44 and set(SEED_44) == ZONE_A


@pytest.mark.parametrize("region", SEED_44)
def test_each_zone_a_country_is_free_inside_window_and_pool_outside(settings, region):
    number = example_e164(region)
    paris = ZoneInfo("Europe/Paris")
    last = datetime(2018, 6, 30, 23, 59, 59, tzinfo=paris)
    inside = run(settings, "alice@contoso.com", number, last)
    assert inside.region == region
    assert inside.allow and inside.bucket is Bucket.PROMOTION, inside.explanation
    outside = run(settings, "alice@contoso.com", number, last + timedelta(seconds=1))
    assert outside.allow and outside.bucket is Bucket.TENANT_POOL, outside.explanation
    assert Bucket.PROMOTION not in outside.fallback_buckets


@pytest.mark.parametrize("region", ["AR", "CL", "EG", "NG", "AE", "TR", "UA", "IL", "JM", "ZW", "IM"])
def test_outside_zone_a_is_never_the_promotion(settings, region):
    d = run(settings, "alice@contoso.com", example_e164(region), datetime(2018, 5, 1, tzinfo=UTC))
    assert d.bucket is Bucket.CREDITS  # alice has credits; neither promotion nor pool
    assert d.fallback_buckets == ()


def test_pay_per_minute_organiser_gets_no_promotion_nor_pool(settings):
    d = run(settings, "chloe@contoso.com", example_e164("DE"), datetime(2018, 5, 1, tzinfo=UTC))
    assert d.allow and d.bucket is Bucket.CREDITS and d.fallback_buckets == ()


# Exact seconds, tenant in Europe/Paris (UTC+2 in summer): the window ends at
# 2018-06-30 23:59:59 local = 21:59:59 UTC, whatever offset `now` carries.
@pytest.mark.parametrize(
    ("now", "bucket"),
    [
        (datetime(2018, 6, 30, 23, 59, 59, tzinfo=ZoneInfo("Europe/Paris")), Bucket.PROMOTION),
        (datetime(2018, 6, 30, 23, 59, 59, 999999, tzinfo=ZoneInfo("Europe/Paris")), Bucket.PROMOTION),
        (datetime(2018, 7, 1, 0, 0, 0, tzinfo=ZoneInfo("Europe/Paris")), Bucket.TENANT_POOL),
        (datetime(2018, 6, 30, 21, 59, 59, tzinfo=UTC), Bucket.PROMOTION),
        (datetime(2018, 6, 30, 22, 0, 0, tzinfo=UTC), Bucket.TENANT_POOL),
        # 23:30 UTC on the 30th is already July in Paris: not free any more.
        (datetime(2018, 6, 30, 23, 30, 0, tzinfo=UTC), Bucket.TENANT_POOL),
        (datetime(2018, 6, 30, 17, 59, 59, tzinfo=ZoneInfo("America/New_York")), Bucket.PROMOTION),
        (datetime(2018, 6, 30, 18, 0, 0, tzinfo=ZoneInfo("America/New_York")), Bucket.TENANT_POOL),
    ],
)
def test_boundary_seconds_in_paris_tenant(settings, now, bucket):
    d = run(settings, "alice@contoso.com", "+33142685300", now)
    assert d.bucket is bucket


# The same instants for the New York tenant (UTC-4 in summer): 23:30 UTC on
# 30 June is still 19:30 on 30 June in New York, so still free there.
@pytest.mark.parametrize(
    ("now", "bucket"),
    [
        (datetime(2018, 6, 30, 23, 59, 59, tzinfo=ZoneInfo("America/New_York")), Bucket.PROMOTION),
        (datetime(2018, 7, 1, 0, 0, 0, tzinfo=ZoneInfo("America/New_York")), Bucket.TENANT_POOL),
        (datetime(2018, 7, 1, 3, 59, 59, tzinfo=UTC), Bucket.PROMOTION),
        (datetime(2018, 7, 1, 4, 0, 0, tzinfo=UTC), Bucket.TENANT_POOL),
        (datetime(2018, 6, 30, 23, 30, 0, tzinfo=UTC), Bucket.PROMOTION),
    ],
)
def test_boundary_seconds_in_new_york_tenant(settings, now, bucket):
    # grace has dial-out disabled; use a zone_a-capable subscription organiser of fabrikam
    data = copy.deepcopy(BASE)
    data["organizers"][6]["dialout_policy"] = "any"
    s = parse_policy_sections(data)
    d = run(s, "grace@fabrikam.com", "+33142685300", now)
    assert d.bucket is bucket


def test_period_is_reckoned_in_tenant_time(settings):
    d = run(settings, "alice@contoso.com", "+33142685300", datetime(2018, 6, 30, 22, 0, tzinfo=UTC))
    assert d.period == "2018-07"
    d = run(settings, "alice@contoso.com", "+33142685300", datetime(2018, 6, 30, 21, 59, 59, tzinfo=UTC))
    assert d.period == "2018-06"


def test_naive_now_is_refused(settings):
    with pytest.raises(ValueError):
        run(settings, "alice@contoso.com", "+33142685300", datetime(2018, 6, 30, 12, 0))


EXTENSION = [
    {"name": "seed", "end": "2018-06-30"},
    {"name": "extension", "start": "2018-07-01", "end": "2019-11-30", "monthly_cap_minutes_per_user": 900},
]


def test_extension_is_off_by_default(settings):
    names = [(p.name, p.enabled) for p in settings.catalogue.promotions]
    assert names == [("complimentary-dialout-2018", True), ("complimentary-dialout-extension-2019", False)]
    ext = settings.catalogue.promotions[1]
    assert ext.monthly_cap_minutes_per_user == 900 and str(ext.end) == "2019-11-30"
    d = run(settings, "alice@contoso.com", "+33142685300", datetime(2019, 3, 1, tzinfo=ZoneInfo("Europe/Paris")))
    assert d.bucket is Bucket.TENANT_POOL


@pytest.mark.parametrize(
    ("now", "used", "bucket", "first_allowance"),
    [
        (datetime(2018, 7, 1, 0, 0, tzinfo=ZoneInfo("Europe/Paris")), 0, Bucket.PROMOTION, 25 * 900 * 60),
        (datetime(2019, 11, 30, 23, 59, 59, tzinfo=ZoneInfo("Europe/Paris")), 0, Bucket.PROMOTION, 25 * 900 * 60),
        (datetime(2019, 12, 1, 0, 0, tzinfo=ZoneInfo("Europe/Paris")), 0, Bucket.TENANT_POOL, 1500 * 60),
        # pooled cap: 25 licences × 900 = 22,500 minutes per month
        (datetime(2019, 3, 1, tzinfo=ZoneInfo("Europe/Paris")), 22_497, Bucket.PROMOTION, 180),
        (datetime(2019, 3, 1, tzinfo=ZoneInfo("Europe/Paris")), 22_500, Bucket.TENANT_POOL, 1500 * 60),
        (datetime(2018, 5, 1, tzinfo=ZoneInfo("Europe/Paris")), 10**9, Bucket.PROMOTION, None),  # seed: no cap
    ],
)
def test_enabled_extension_with_pooled_monthly_cap(now, used, bucket, first_allowance):
    s = make_settings(promotions=EXTENSION)
    d = run(s, "alice@contoso.com", "+33142685300", now, Snapshot(promotion_used_minutes=used))
    assert d.bucket is bucket
    assert d.allowances[0] == (bucket, first_allowance)
    if bucket is Bucket.PROMOTION and first_allowance is not None:
        # When the cap runs dry mid-call, charging moves on to the pool then credits.
        assert d.fallback_buckets == (Bucket.TENANT_POOL, Bucket.CREDITS)


def test_promotion_needs_a_subscription_organiser(settings):
    d = run(settings, "chloe@contoso.com", "+33142685300", datetime(2018, 5, 1, tzinfo=UTC))
    assert d.bucket is Bucket.CREDITS


def test_promotion_then_addon_order_for_us_number_during_window(settings):
    d = run(settings, "erin@fabrikam.com", "+12122001234", datetime(2018, 5, 1, tzinfo=UTC))
    assert d.bucket is Bucket.PROMOTION
    assert d.fallback_buckets == (Bucket.USCA_UNLIMITED, Bucket.TENANT_POOL)


def test_call_crossing_midnight_is_charged_to_start_period(settings):
    start = datetime(2018, 6, 30, 23, 59, 0, tzinfo=ZoneInfo("Europe/Paris"))
    d = run(settings, "alice@contoso.com", "+33142685300", start)
    assert d.bucket is Bucket.PROMOTION and d.period == "2018-06"
    assert d.reason is Reason.ALLOWED


# --- `now` at the edges of datetime's range (regression: OverflowError from astimezone) ---------------


@pytest.mark.parametrize(
    ("organizer", "now"),
    [
        ("alice@contoso.com", datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=5)))),  # Paris: before year 1
        ("erin@fabrikam.com", datetime(1, 1, 1, 2, 0, tzinfo=UTC)),  # New York (LMT -4:56): before year 1
        ("alice@contoso.com", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),  # Paris: after 9999
    ],
)
def test_now_outside_the_tenant_timezone_range_is_a_clear_value_error(settings, organizer, now):
    with pytest.raises(ValueError, match=r"now=.* is outside years 1-9999 in tenant \w+'s timezone "):
        run(settings, organizer, "+33142685300", now)


def test_now_close_to_the_edges_but_representable_still_decides(settings):
    d = run(settings, "alice@contoso.com", "+33142685300", datetime(9999, 12, 31, 20, 0, tzinfo=UTC))
    assert d.allow and d.period == "9999-12"
    d = run(settings, "erin@fabrikam.com", "+12122001234", datetime(1, 1, 1, 6, 0, tzinfo=UTC))
    assert d.allow and d.period == "0001-01"
