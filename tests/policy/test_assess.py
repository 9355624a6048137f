"""`assess` (rules 2–6) + `decide_assessed` (rules 7–9) = `decide`, and the ledger's `charges`."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from policy_testlib import (
    AFTER_PROMO,
    BASE,
    DE_BERLIN,
    FR_PARIS,
    IN_PROMO,
    JM_NUMBER,
    PARIS,
    US_NYC,
    make_settings,
    run,
)

from gateway.config import parse_policy_sections
from policy import (
    Assessment,
    Bucket,
    CallRequest,
    ChargeSpec,
    Decision,
    NormalizedNumber,
    Organizer,
    Reason,
    Snapshot,
    assess,
    decide,
    decide_assessed,
)

ORGANIZERS = [o["id"] for o in BASE["organizers"]] + ["nobody@example.com", None, "  "]
NUMBERS = [
    FR_PARIS,
    "+33 1 42 68 53 00",
    "0142685300",
    DE_BERLIN,
    US_NYC,
    JM_NUMBER,
    "+1 787 200 1234",
    "+19002001234",
    "112",
    "911",
    "3950",
    "12ab",
    "",
    "+97912345678",
    "+881612345678",
    "+5372345678",
    "+61 2 9374 4000",
    "tel:0142685300;phone-context=+33",
    "1" * 200,
]
NOWS = [IN_PROMO, AFTER_PROMO, datetime(2018, 6, 30, 23, 59, 59, tzinfo=PARIS), datetime(2018, 7, 1, tzinfo=PARIS)]
SNAPSHOTS = [
    Snapshot(),
    Snapshot(pool_used_minutes=1500),
    Snapshot(pool_used_minutes=1500, credits_balance=1.0),
    Snapshot(pool_used_minutes=1497, credits_balance=0),
    Snapshot(concurrent_organizer=5),
    Snapshot(concurrent_tenant=50),
    Snapshot(calls_last_minute_organizer=10),
    Snapshot(distinct_destinations_today=100),
    Snapshot(distinct_destinations_today=100, destination_seen_today=True),
    Snapshot(addon_used_minutes=5000),
    Snapshot(promotion_used_minutes=22_499),
]
TENANT_REQUESTS = [None, "contoso", "FABRIKAM", "other"]


def _split(request: CallRequest, snapshot: Snapshot, now: datetime, settings) -> Decision:
    assessed = assess(request, now, settings)
    if isinstance(assessed, Decision):
        return assessed
    return decide_assessed(assessed, snapshot, now, settings)


def _settings_variants():
    yield "base", make_settings()
    extension_on = make_settings(
        promotions=[
            {"name": "seed", "end": "2018-06-30"},
            {"name": "extension", "start": "2018-07-01", "end": "2019-11-30", "monthly_cap_minutes_per_user": 900},
        ]
    )
    yield "extension", extension_on
    yield (
        "per_second",
        make_settings(billing_increment="second", credits={"default_rate_per_minute": 0, "rates": {"FR": 0.02}}),
    )


@pytest.mark.parametrize(
    ("name", "settings_"), list(_settings_variants()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_assess_then_decide_assessed_equals_decide_everywhere(name, settings_):
    checked = allowed = 0
    for organizer, dialled, now, snapshot in itertools.product(ORGANIZERS, NUMBERS, NOWS, SNAPSHOTS):
        request = CallRequest(organizer=organizer, dialled=dialled, location="ZW")
        whole = decide(request, snapshot, now, settings_)
        assert _split(request, snapshot, now, settings_) == whole, (organizer, dialled, now, snapshot)
        checked += 1
        allowed += whole.allow
    assert checked == len(ORGANIZERS) * len(NUMBERS) * len(NOWS) * len(SNAPSHOTS)
    assert 0 < allowed < checked


@pytest.mark.parametrize("tenant", TENANT_REQUESTS)
def test_equivalence_when_the_request_names_a_tenant(settings, tenant):
    for organizer, dialled in itertools.product(ORGANIZERS, (FR_PARIS, US_NYC, "12ab")):
        request = CallRequest(organizer=organizer, dialled=dialled, tenant=tenant)
        assert _split(request, Snapshot(), AFTER_PROMO, settings) == decide(request, Snapshot(), AFTER_PROMO, settings)


# The table of docs/dialout-rules.md ("Test cases that must hold"), as (organiser, dialled, now, snapshot).
RULES_TABLE = [
    ("alice@contoso.com", "+33 1 42 68 53 00", datetime(2018, 5, 1, 10, tzinfo=PARIS), Snapshot()),
    ("alice@contoso.com", "+33 1 42 68 53 00", datetime(2018, 7, 1, tzinfo=PARIS), Snapshot(pool_used_minutes=10)),
    ("erin@fabrikam.com", "+1 212 200 1234", AFTER_PROMO, Snapshot()),
    ("erin@fabrikam.com", "+1 876 209 1234", AFTER_PROMO, Snapshot()),
    ("frank@fabrikam.com", "+1 876 209 1234", AFTER_PROMO, Snapshot()),
    ("dmitri@contoso.com", FR_PARIS, AFTER_PROMO, Snapshot()),
    ("bob@contoso.com", "+49 30 901820", AFTER_PROMO, Snapshot()),
    ("erin@fabrikam.com", "+1 900 200 1234", AFTER_PROMO, Snapshot()),
    ("alice@contoso.com", "112", AFTER_PROMO, Snapshot()),
    ("erin@fabrikam.com", "911", AFTER_PROMO, Snapshot()),
    ("alice@contoso.com", "15", AFTER_PROMO, Snapshot()),
    ("alice@contoso.com", "12ab", AFTER_PROMO, Snapshot()),
    ("alice@contoso.com", FR_PARIS, AFTER_PROMO, Snapshot(pool_used_minutes=1500, credits_balance=1.0)),
    ("hugo@nocredit.example", FR_PARIS, AFTER_PROMO, Snapshot(pool_used_minutes=57)),
]


@pytest.mark.parametrize(("organizer", "dialled", "now", "snapshot"), RULES_TABLE)
def test_rules_table_is_the_same_split_or_whole(settings, organizer, dialled, now, snapshot):
    request = CallRequest(organizer=organizer, dialled=dialled, initiator="guest@example.org", location="ZW")
    whole = decide(request, snapshot, now, settings)
    assessed = assess(request, now, settings)
    if whole.reason.stage in ("identity", "destination", "licence", "policy"):
        assert assessed == whole  # rules 2–6 deny without any counter
    else:
        assert isinstance(assessed, Assessment)
        assert decide_assessed(assessed, snapshot, now, settings) == whole
        # The assessment's trace is the start of the decision's.
        assert whole.trace[: len(assessed.trace)] == assessed.trace
        assert [c.rule for c in assessed.trace][-1] == "policy"


# --- what an Assessment carries ---------------------------------------------------------------------------


def test_assessment_carries_what_the_caller_reads_counters_with(settings):
    a = assess(CallRequest(organizer="ALICE@contoso.com", dialled="01 42 68 53 00"), AFTER_PROMO, settings)
    assert isinstance(a, Assessment)
    assert isinstance(a.organizer, Organizer) and a.organizer is settings.organizer("alice@contoso.com")
    assert (a.tenant_id, a.organizer_id) == ("contoso", "alice@contoso.com")
    assert (a.e164, a.region) == (FR_PARIS, "FR")
    assert isinstance(a.number, NormalizedNumber) and a.number.e164 == FR_PARIS
    assert a.tz == "Europe/Paris" and a.period == "2019-01"
    assert a.now is AFTER_PROMO and a.local.utcoffset() == timedelta(hours=1)
    assert [c.rule for c in a.trace] == ["identity", "destination", "number_class", "licence", "policy"]
    assert all(c.outcome == "pass" for c in a.trace)


def test_assessment_is_frozen_and_slotted(settings):
    a = assess(CallRequest(organizer="alice@contoso.com", dialled=FR_PARIS), AFTER_PROMO, settings)
    assert dataclasses.is_dataclass(a) and not hasattr(a, "__dict__") and hasattr(type(a), "__slots__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.e164 = "+1"  # type: ignore[misc]


def test_period_is_tenant_local_for_counters(settings):
    # 2018-06-30 22:30 UTC is already July in Paris, still June in New York.
    now = datetime(2018, 6, 30, 22, 30, tzinfo=UTC)
    paris = assess(CallRequest(organizer="alice@contoso.com", dialled=FR_PARIS), now, settings)
    new_york = assess(CallRequest(organizer="erin@fabrikam.com", dialled=US_NYC), now, settings)
    assert (paris.period, paris.tz) == ("2018-07", "Europe/Paris")
    assert (new_york.period, new_york.tz) == ("2018-06", "America/New_York")


@pytest.mark.parametrize(
    ("organizer", "dialled", "reason"),
    [
        (None, FR_PARIS, Reason.ORGANIZER_MISSING),
        ("nobody@example.com", FR_PARIS, Reason.ORGANIZER_UNKNOWN),
        ("alice@contoso.com", "12ab", Reason.NUMBER_INVALID),
        ("alice@contoso.com", "112", Reason.DESTINATION_BLOCKED),
        ("dmitri@contoso.com", FR_PARIS, Reason.NO_AUDIO_CONFERENCING),
        ("grace@fabrikam.com", US_NYC, Reason.DIALOUT_DISABLED),
        ("bob@contoso.com", DE_BERLIN, Reason.NOT_DOMESTIC),
        ("chloe@contoso.com", JM_NUMBER, Reason.OUTSIDE_ZONE_A),
    ],
)
def test_cheap_denials_come_from_assess_alone(settings, organizer, dialled, reason):
    d = assess(CallRequest(organizer=organizer, dialled=dialled), AFTER_PROMO, settings)
    assert isinstance(d, Decision) and not d.allow and d.reason is reason and d.charges == ()


def test_decide_assessed_needs_the_instant_assess_was_given(settings):
    a = assess(CallRequest(organizer="alice@contoso.com", dialled=FR_PARIS), AFTER_PROMO, settings)
    same_instant = AFTER_PROMO.astimezone(UTC)
    assert decide_assessed(a, Snapshot(), same_instant, settings) == decide_assessed(
        a, Snapshot(), AFTER_PROMO, settings
    )
    with pytest.raises(ValueError, match="needs the `now` given to assess"):
        decide_assessed(a, Snapshot(), AFTER_PROMO + timedelta(seconds=1), settings)


def test_assess_needs_an_aware_now(settings):
    with pytest.raises(ValueError, match="timezone-aware"):
        assess(CallRequest(organizer="alice@contoso.com", dialled=FR_PARIS), datetime(2019, 1, 1), settings)


# --- charges: what the ledger reserves, straight from the Decision ---------------------------------------


def test_charges_pool_then_credits(settings):
    # The credits cap is the tenant's configured balance (the ledger tracks spending), whatever the snapshot says.
    d = run(settings, "alice@contoso.com", FR_PARIS, snapshot=Snapshot(pool_used_minutes=1000, credits_balance=1.0))
    assert d.allow and d.tz == "Europe/Paris"
    assert d.charges == (
        ChargeSpec(Bucket.TENANT_POOL, 1500.0, 0.0),
        ChargeSpec(Bucket.CREDITS, 100.0, 0.02),
    )
    assert [c.bucket for c in d.charges] == [b for b, _ in d.allowances]


def test_charges_credits_only(settings):
    d = run(settings, "alice@contoso.com", FR_PARIS, snapshot=Snapshot(pool_used_minutes=1500))
    assert d.charges == (ChargeSpec(Bucket.CREDITS, 100.0, 0.02),)


def test_charges_free_credits_destination_has_rate_zero():
    s = make_settings(credits={"default_rate_per_minute": 0})
    d = run(s, "alice@contoso.com", "+61 2 9374 4000", snapshot=Snapshot(pool_used_minutes=1500))
    assert d.allowances == ((Bucket.CREDITS, None),)
    assert d.charges == (ChargeSpec(Bucket.CREDITS, 100.0, 0.0),)


def test_a_negative_zero_rate_is_plain_free():
    s = make_settings(credits={"default_rate_per_minute": -0.0})
    d = run(s, "alice@contoso.com", "+61 2 9374 4000", snapshot=Snapshot(pool_used_minutes=1500))
    assert str(d.charges[0].rate_per_minute) == "0.0"


def test_charges_uncapped_promotion(settings):
    d = run(settings, "alice@contoso.com", FR_PARIS, IN_PROMO)
    assert d.bucket is Bucket.PROMOTION
    assert d.charges[0] == ChargeSpec(Bucket.PROMOTION, None, 0.0)
    assert [c.bucket for c in d.charges] == [Bucket.PROMOTION, Bucket.TENANT_POOL, Bucket.CREDITS]


def test_charges_capped_promotion_is_cap_times_subscription_licences():
    data = copy.deepcopy(BASE)
    data["policy"]["promotions"] = [
        {"name": "ext", "start": "2018-07-01", "end": "2019-11-30", "monthly_cap_minutes_per_user": 900}
    ]
    s = parse_policy_sections(data)
    d = run(s, "alice@contoso.com", FR_PARIS, AFTER_PROMO, Snapshot(promotion_used_minutes=100))
    assert d.bucket is Bucket.PROMOTION
    assert d.charges[0] == ChargeSpec(Bucket.PROMOTION, 900.0 * 25, 0.0)  # contoso: 25 subscription licences


def test_charges_usca_unlimited(settings):
    d = run(settings, "erin@fabrikam.com", US_NYC)
    assert d.tz == "America/New_York"
    assert d.charges == (ChargeSpec(Bucket.USCA_UNLIMITED, None, 0.0), ChargeSpec(Bucket.TENANT_POOL, 600.0, 0.0))


def test_denials_carry_no_charges_but_the_tenant_timezone(settings):
    d = run(settings, "alice@contoso.com", FR_PARIS, snapshot=Snapshot(concurrent_organizer=99))
    assert not d.allow and d.charges == () and d.tz == "Europe/Paris"
    assert run(settings, "nobody@example.com", FR_PARIS).tz is None


def test_charge_spec_is_frozen_and_slotted():
    c = ChargeSpec(Bucket.CREDITS, 1.0, 0.5)
    assert not hasattr(c, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.rate_per_minute = 0  # type: ignore[misc]


def test_to_dict_shows_charges_and_tz(settings):
    out = run(settings, "alice@contoso.com", FR_PARIS).to_dict()
    assert out["tz"] == "Europe/Paris"
    assert out["charges"] == [
        {"bucket": "tenant_pool", "cap_minutes": 1500.0, "rate_per_minute": 0.0},
        {"bucket": "credits", "cap_minutes": 100.0, "rate_per_minute": 0.02},
    ]


# --- the same chain as the gateway builds today (gateway/service.py, _open_ledger and _promotion_cap) ------


def _gateway_chain(settings, decision: Decision, now: datetime) -> tuple[tuple[str, float | None, float], ...]:
    """A copy of what gateway/service.py computes from a Decision today (commit 2f8ba4f), as
    (bucket, cap, rate) rows: the reference `Decision.charges` must reproduce."""
    org = settings.organizer(decision.organizer)
    tenant, cat = org.tenant, settings.catalogue

    def promotion_cap(region):
        day = now.astimezone(tenant.tz).date()
        for promo in cat.promotions:
            if promo.covers(day, region or ""):
                if promo.monthly_cap_minutes_per_user is None:
                    return None
                return promo.monthly_cap_minutes_per_user * tenant.subscription_licences
        return None

    chain = []
    for bucket, _seconds in decision.allowances:
        if bucket is Bucket.TENANT_POOL:
            chain.append((bucket.value, tenant.pool_minutes, 0.0))
        elif bucket is Bucket.CREDITS:
            chain.append((bucket.value, tenant.credits_balance, decision.credit_rate_per_minute or 0.0))
        elif bucket is Bucket.PROMOTION:
            chain.append((bucket.value, promotion_cap(decision.region), 0.0))
        else:
            chain.append((bucket.value, None, 0.0))
    return tuple(chain)


@pytest.mark.parametrize(
    ("name", "settings_"), list(_settings_variants()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_charges_reproduce_the_gateways_ledger_chain(name, settings_):
    allowed = 0
    for organizer, dialled, now, snapshot in itertools.product(ORGANIZERS, NUMBERS, NOWS, SNAPSHOTS):
        d = decide(CallRequest(organizer=organizer, dialled=dialled), snapshot, now, settings_)
        if not d.allow:
            assert d.charges == ()
            continue
        allowed += 1
        mine = tuple((c.bucket.value, c.cap_minutes, c.rate_per_minute) for c in d.charges)
        assert mine == _gateway_chain(settings_, d, now), (organizer, dialled, now, snapshot)
        assert d.tz == settings_.organizer(organizer).tenant.timezone
    assert allowed > 50


def test_charges_name_the_promotion_that_pays_when_an_earlier_one_is_used_up():
    # Where the gateway's _promotion_cap differs: it returns the cap of the first promotion
    # covering the day even when decide() skipped it as used up and a later one pays.
    # charges carry the cap of the promotion decide() chose, so the ledger agrees with it.
    data = copy.deepcopy(BASE)
    data["policy"]["promotions"] = [
        {"name": "small", "start": "2018-07-01", "end": "2019-11-30", "monthly_cap_minutes_per_user": 10},
        {"name": "large", "start": "2018-07-01", "end": "2019-11-30", "monthly_cap_minutes_per_user": 20},
    ]
    s = parse_policy_sections(data)
    d = run(s, "alice@contoso.com", FR_PARIS, AFTER_PROMO, Snapshot(promotion_used_minutes=300))
    assert d.bucket is Bucket.PROMOTION and d.allowances[0] == (Bucket.PROMOTION, 200 * 60)
    assert d.charges[0] == ChargeSpec(Bucket.PROMOTION, 20.0 * 25, 0.0)  # "large": 500 min, 300 used
    assert _gateway_chain(s, d, AFTER_PROMO)[0] == (
        "promotion",
        10.0 * 25,
        0.0,
    )  # today's gateway: 250, already used up
