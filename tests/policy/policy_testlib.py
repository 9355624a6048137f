"""Shared test data for tests/policy: a small directory and catalogue built from a TOML-shaped dict."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers

from gateway.config import parse_policy_sections
from policy import CallRequest, Decision, PolicySettings, Snapshot, decide

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")

BASE: dict[str, Any] = {
    "policy": {
        "credits": {"default_rate_per_minute": 0.25, "rates": {"US": 0.01, "FR": 0.02, "JM": 0.20}},
        "guards": {
            "max_concurrent_per_organizer": 5,
            "max_concurrent_per_tenant": 50,
            "max_calls_per_minute_per_organizer": 10,
            "max_distinct_destinations_per_day": 100,
            "high_risk_regions": ["CU", "SO"],
        },
        "usca_addon": {"fair_use_minutes_per_month": 5000},
    },
    "tenants": [
        {
            "id": "contoso",
            "timezone": "Europe/Paris",
            "subscription_licences": 25,
            "credits": {"enabled": True, "balance": 100.0},
        },
        {"id": "fabrikam", "timezone": "America/New_York", "subscription_licences": 10},
        {
            "id": "nocredit",
            "timezone": "UTC",
            "subscription_licences": 1,
            "credits": {"enabled": False, "balance": 500.0},
        },
    ],
    "organizers": [
        # subscription, any, credits licence
        {
            "id": "alice@contoso.com",
            "tenant": "contoso",
            "usage_location": "FR",
            "audio_conferencing": "subscription",
            "credits_licence": True,
            "dialout_policy": "any",
        },
        {
            "id": "bob@contoso.com",
            "tenant": "contoso",
            "usage_location": "FR",
            "audio_conferencing": "subscription",
            "dialout_policy": "domestic",
        },
        {
            "id": "chloe@contoso.com",
            "tenant": "contoso",
            "usage_location": "DE",
            "audio_conferencing": "pay_per_minute",
            "credits_licence": True,
            "dialout_policy": "zone_a",
        },
        {
            "id": "dmitri@contoso.com",
            "tenant": "contoso",
            "usage_location": "FR",
            "audio_conferencing": "none",
            "credits_licence": True,
            "usca_addon": True,
            "dialout_policy": "any",
        },
        {
            "id": "erin@fabrikam.com",
            "tenant": "fabrikam",
            "usage_location": "US",
            "audio_conferencing": "subscription",
            "usca_addon": True,
            "dialout_policy": "any",
        },
        {
            "id": "frank@fabrikam.com",
            "tenant": "fabrikam",
            "usage_location": "US",
            "audio_conferencing": "pay_per_minute",
            "usca_addon": True,
            "dialout_policy": "any",
        },
        {
            "id": "grace@fabrikam.com",
            "tenant": "fabrikam",
            "usage_location": "CA",
            "audio_conferencing": "subscription",
            "dialout_policy": "disabled",
        },
        {
            "id": "hugo@nocredit.example",
            "tenant": "nocredit",
            "usage_location": "FR",
            "audio_conferencing": "subscription",
            "credits_licence": True,
            "dialout_policy": "any",
        },
    ],
}

# Well-formed, valid numbers (phonenumbers' metadata agrees).
FR_PARIS = "+33142685300"
DE_BERLIN = "+4930901820"
US_NYC = "+12122001234"
US_PREMIUM = "+19002001234"
JM_NUMBER = "+18762091234"
AFTER_PROMO = datetime(2019, 1, 15, 12, 0, tzinfo=PARIS)
IN_PROMO = datetime(2018, 5, 1, 12, 0, tzinfo=PARIS)


def example_e164(region: str) -> str:
    """A valid number of `region` from phonenumbers' own metadata."""
    for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
        number = phonenumbers.example_number_for_type(region, kind)
        if number is not None and phonenumbers.region_code_for_number(number) == region:
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    number = phonenumbers.example_number(region)
    assert number is not None, region
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def make_settings(**overrides: Any) -> PolicySettings:
    """BASE with `policy` keys overridden (shallow, per key)."""
    data = copy.deepcopy(BASE)
    data["policy"].update(copy.deepcopy(overrides))
    return parse_policy_sections(data)


def run(
    settings: PolicySettings,
    organizer: str | None,
    dialled: str,
    now: datetime = AFTER_PROMO,
    snapshot: Snapshot | None = None,
    **request: Any,
) -> Decision:
    return decide(CallRequest(organizer=organizer, dialled=dialled, **request), snapshot or Snapshot(), now, settings)
