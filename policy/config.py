"""From validated config values to the frozen `PolicySettings`, and the bounds they obey.

The `[policy]`, `[[tenants]]` and `[[organizers]]` tables are validated by the
one config schema (`gateway/schema.py`, pydantic), which imports the bounds
below; `build_policy_settings` then builds the catalogue and the directory
from the validated values. It reads no file and checks nothing the schema
has not: pure construction, stdlib and phonenumbers only.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from policy.model import (
    ALWAYS_BLOCKED_TYPES,
    DEFAULT_BLOCKED_TYPES,
    EXTENDED_PROMOTION,
    MICROSOFT_POLICY_NAMES,
    SEED_PROMOTION,
    USCA_REGIONS,
    ZONE_A,
    AudioConferencing,
    BillingIncrement,
    Catalogue,
    DialoutPolicy,
    Guards,
    Organizer,
    PolicySettings,
    Promotion,
    Tenant,
)
from policy.numbers import NumberType

_MS_NAMES = {name.casefold(): value for name, value in MICROSOFT_POLICY_NAMES.items()}

# Sanity bounds of the numeric keys. A value outside them is a typo (or a
# tampered file), never a setting: `nan` compares false with everything, so a
# `nan` limit never triggers, and a rate of 1e-310 makes a balance last forever.
# Every bound is documented in docs/config.md (generated from the schema).

#: Minutes (pool per licence, fair use, promotion caps): at most this many.
MAX_MINUTES = 1_000_000
#: Credit rates: 0 (free) or at least MIN_CREDIT_RATE per minute, at most MAX_CREDIT_RATE.
MIN_CREDIT_RATE = 0.0001
MAX_CREDIT_RATE = 1_000_000
#: Credits balance of a tenant, in the credits currency.
MAX_CREDITS_BALANCE = 1_000_000_000_000
#: Licences of one tenant (subscription or pay-per-minute).
MAX_LICENCES = 10_000_000
#: The longest call `max_call_length_s` may authorise: one day.
MAX_CALL_LENGTH_S = 86_400
#: Guards: calls in progress, calls per minute, distinct numbers per day.
MAX_GUARD_LIMIT = 1_000_000
#: Retry-After of the transient guards, in seconds.
MAX_RETRY_AFTER_S = 86_400


class PolicyConfigError(Exception):
    """A policy name that `parse_dialout_policy` does not know. `key` is its path."""

    def __init__(self, key: str, expected: str, got: Any = None, *, has_got: bool = True) -> None:
        self.key = key
        self.expected = expected
        message = f"{key}: expected {expected}"
        if has_got:
            message += f", got {got!r}"
        super().__init__(message)


def parse_dialout_policy(value: Any, key: str = "dialout_policy") -> DialoutPolicy:
    """Our four names, or Microsoft's `tag:DialoutCPC…` names (with or without `tag:`)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return DialoutPolicy(text.lower())
        except ValueError:
            pass
        bare = text[4:] if text.lower().startswith("tag:") else text
        found = _MS_NAMES.get(bare.casefold())
        if found is not None:
            return found
    raise PolicyConfigError(key, "one of any, domestic, zone_a, disabled, or a tag:DialoutCPC… policy name", value)


# --- building the settings ----------------------------------------------------------------


def build_policy_settings(spec: Any) -> PolicySettings:
    """`PolicySettings` from a validated config (`gateway.schema.ConfigFile`, or anything
    with its `policy`, `tenants` and `organizers` attributes). Values are taken as
    valid: ids unique, organisers' tenants defined, regions and timezones known."""
    catalogue = _catalogue(spec.policy)
    default_tz = spec.policy.default_timezone
    default_policy_name = spec.policy.default_dialout_policy
    default_policy = parse_dialout_policy(default_policy_name)

    tenants: dict[str, Tenant] = {}
    for row in spec.tenants:
        timezone = row.timezone or default_tz
        tenants[row.id.casefold()] = Tenant(
            id=row.id,
            timezone=timezone,
            tz=ZoneInfo(timezone),
            subscription_licences=row.subscription_licences,
            credits_enabled=row.credits.enabled,
            credits_balance=float(row.credits.balance),
            pool_minutes=row.subscription_licences * catalogue.pool_minutes_per_subscription,
            caller_id=row.caller_id,
        )

    organizers: dict[str, Organizer] = {}
    for row in spec.organizers:
        if row.dialout_policy is not None:
            policy_name, policy = row.dialout_policy, parse_dialout_policy(row.dialout_policy)
        else:
            policy_name, policy = default_policy_name, default_policy
        domestic = {row.usage_location}
        for group in catalogue.domestic_equivalence:
            if row.usage_location in group:
                domestic |= group
        organizers[row.id.casefold()] = Organizer(
            id=row.id,
            tenant=tenants[row.tenant.casefold()],
            usage_location=row.usage_location,
            audio_conferencing=AudioConferencing(row.audio_conferencing),
            usca_addon=row.usca_addon,
            credits_licence=row.credits_licence,
            dialout_policy=policy,
            policy_name=policy_name,
            domestic_regions=frozenset(domestic),
        )

    return PolicySettings(
        catalogue=catalogue,
        tenants=MappingProxyType(tenants),  # type: ignore[arg-type]
        organizers=MappingProxyType(organizers),  # type: ignore[arg-type]
    )


def _types(names: Any) -> frozenset[NumberType]:
    return frozenset(NumberType(name) for name in names)


def _catalogue(p: Any) -> Catalogue:
    zone_a = frozenset(p.zone_a) if p.zone_a is not None else ZONE_A
    if p.promotions is not None:
        promotions = tuple(
            Promotion(
                name=row.name,
                start=row.start,
                end=row.end,
                regions=zone_a if row.regions == "zone_a" else frozenset(row.regions),
                monthly_cap_minutes_per_user=(
                    float(row.monthly_cap_minutes_per_user) if row.monthly_cap_minutes_per_user is not None else None
                ),
                enabled=row.enabled,
            )
            for row in p.promotions
        )
    else:
        promotions = tuple(
            Promotion(pr.name, pr.end, pr.start, zone_a, pr.monthly_cap_minutes_per_user, pr.enabled)
            for pr in (SEED_PROMOTION, EXTENDED_PROMOTION)
        )
    blocked = _types(p.blocked_number_types) if p.blocked_number_types is not None else DEFAULT_BLOCKED_TYPES
    g = p.guards
    return Catalogue(
        zone_a=zone_a,
        promotions=promotions,
        usca_regions=frozenset(p.usca_addon.regions) if p.usca_addon.regions is not None else USCA_REGIONS,
        addon_fair_use_minutes_per_month=float(p.usca_addon.fair_use_minutes_per_month),
        pool_minutes_per_subscription=float(p.pool.minutes_per_subscription),
        pool_excluded_types=_types(p.pool.excluded_number_types),
        credit_rates=MappingProxyType(dict(p.credits.rates)),  # type: ignore[arg-type]
        default_credit_rate=float(p.credits.default_rate_per_minute),
        credits_currency=p.credits.currency,
        blocked_types=blocked | ALWAYS_BLOCKED_TYPES,
        billing_increment=BillingIncrement(p.billing_increment),
        max_call_length_s=p.max_call_length_s,
        number_validation=p.number_validation,
        domestic_equivalence=tuple(frozenset(group) for group in p.domestic_equivalence),
        guards=Guards(
            max_concurrent_per_organizer=g.max_concurrent_per_organizer,
            max_concurrent_per_tenant=g.max_concurrent_per_tenant,
            max_calls_per_minute_per_organizer=g.max_calls_per_minute_per_organizer,
            max_distinct_destinations_per_day=g.max_distinct_destinations_per_day,
            high_risk_regions=frozenset(g.high_risk_regions),
            retry_after_concurrency_s=g.retry_after_concurrency_s,
            retry_after_rate_s=g.retry_after_rate_s,
        ),
    )
