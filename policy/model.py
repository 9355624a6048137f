"""Frozen data: requests, counters, decisions and the parsed directory/catalogue."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from policy.numbers import NormalizedNumber, NumberType
from policy.reasons import Bucket, Reason

#: The 44 countries of the seed's complimentary dial-out period (= "Zone A").
ZONE_A: frozenset[str] = frozenset(
    [
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
)

#: Regions of the US/Canada add-on. Other +1 regions (JM, DO, PR, …) are not in it.
USCA_REGIONS: frozenset[str] = frozenset({"US", "CA"})


class AudioConferencing(StrEnum):
    SUBSCRIPTION = "subscription"
    PAY_PER_MINUTE = "pay_per_minute"
    NONE = "none"


class DialoutPolicy(StrEnum):
    ANY = "any"
    DOMESTIC = "domestic"
    ZONE_A = "zone_a"
    DISABLED = "disabled"


#: Microsoft's OnlineDialOutPolicy names → the meeting (CPC, conferencing) part.
#: The PSTN part (the user's own calls) does not concern meeting dial-out.
MICROSOFT_POLICY_NAMES: dict[str, DialoutPolicy] = {
    "DialoutCPCandPSTNInternational": DialoutPolicy.ANY,
    "DialoutCPCInternationalPSTNDomestic": DialoutPolicy.ANY,
    "DialoutCPCInternationalPSTNDisabled": DialoutPolicy.ANY,
    "DialoutCPCDomesticPSTNInternational": DialoutPolicy.DOMESTIC,
    "DialoutCPCandPSTNDomestic": DialoutPolicy.DOMESTIC,
    "DialoutCPCDomesticPSTNDisabled": DialoutPolicy.DOMESTIC,
    "DialoutCPCDisabledPSTNInternational": DialoutPolicy.DISABLED,
    "DialoutCPCDisabledPSTNDomestic": DialoutPolicy.DISABLED,
    "DialoutCPCandPSTNDisabled": DialoutPolicy.DISABLED,
    "DialoutCPCZoneAPSTNInternational": DialoutPolicy.ZONE_A,
    "DialoutCPCZoneAPSTNDomestic": DialoutPolicy.ZONE_A,
    "DialoutCPCZoneAPSTNDisabled": DialoutPolicy.ZONE_A,
}


class BillingIncrement(StrEnum):
    MINUTE = "minute"
    SECOND = "second"

    @property
    def seconds(self) -> int:
        return 60 if self is BillingIncrement.MINUTE else 1


# --- the request and its counters -------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One dial-out attempt as the bridge described it."""

    organizer: str | None
    dialled: str  # Request-URI user part or tel: URI text, may carry ;phone-context=
    tenant: str | None = None
    initiator: str | None = None  # logged only: the licence is the organiser's
    meeting: str | None = None
    location: str | None = None  # reported physical country: logged, never decides


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counters the rules need, read by the caller. `Snapshot()` = nothing used yet."""

    pool_used_minutes: float = 0  # tenant, this calendar month (tenant tz)
    promotion_used_minutes: float = 0  # tenant, this month, for capped promotions
    credits_balance: float | None = None  # None: the tenant's configured balance
    addon_used_minutes: float = 0  # organiser, this month (fair use of the US/CA add-on)
    concurrent_organizer: int = 0  # calls in progress, not counting this one
    concurrent_tenant: int = 0
    calls_last_minute_organizer: int = 0
    distinct_destinations_today: int = 0  # organiser, today (tenant tz)
    destination_seen_today: bool = False  # a repeat does not add to the distinct count

    def __post_init__(self) -> None:
        # A `nan` counter compares false with every limit, so a guard would
        # never trigger: refuse it (and inf, and non-numbers) here, fail closed.
        values = (
            self.pool_used_minutes,
            self.promotion_used_minutes,
            self.addon_used_minutes,
            self.concurrent_organizer,
            self.concurrent_tenant,
            self.calls_last_minute_organizer,
            self.distinct_destinations_today,
        )
        try:
            if all(map(math.isfinite, values)) and (
                self.credits_balance is None or math.isfinite(self.credits_balance)
            ):
                return
        except (TypeError, OverflowError):
            pass
        for name in _COUNTERS:
            value = getattr(self, name)
            if name == "credits_balance" and value is None:
                continue
            if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
                raise ValueError(f"Snapshot.{name}: expected a finite number, got {value!r:.40}")


_COUNTERS = (
    "pool_used_minutes",
    "promotion_used_minutes",
    "credits_balance",
    "addon_used_minutes",
    "concurrent_organizer",
    "concurrent_tenant",
    "calls_last_minute_organizer",
    "distinct_destinations_today",
)


# --- the decision --------------------------------------------------------------------


class Check(NamedTuple):
    """One rule the engine checked: `outcome` is pass, fail, skip or info."""

    rule: str
    outcome: str
    detail: str


@dataclass(frozen=True, slots=True)
class ChargeSpec:
    """One bucket of an allowed call's charging chain, as the ledger must reserve it.

    `cap_minutes` is the size of the bucket's monthly pool that the ledger must
    not exceed: the tenant's pool minutes (`tenant_pool`), the promotion's
    monthly cap × subscription licences (`promotion`, None when uncapped), the
    tenant's configured credits balance (`credits`), None (`usca_unlimited`).
    `rate_per_minute` is the credit rate for `credits`, 0 for the others.
    """

    bucket: Bucket
    cap_minutes: float | None
    rate_per_minute: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: Reason
    status: int
    bucket: Bucket | None = None
    fallback_buckets: tuple[Bucket, ...] = ()
    allowances: tuple[tuple[Bucket, int | None], ...] = ()  # seconds per bucket, charging order
    max_duration_s: int | None = None
    e164: str | None = None
    region: str | None = None
    number_type: NumberType | None = None
    tenant: str | None = None
    organizer: str | None = None
    credit_rate_per_minute: float | None = None
    retry_after_s: int | None = None
    period: str | None = None  # "YYYY-MM" in the tenant's timezone: the period charged
    billing_increment_s: int | None = None
    explanation: str = ""
    trace: tuple[Check, ...] = ()
    charges: tuple[ChargeSpec, ...] = ()  # allowed: one per allowance, charging order
    tz: str | None = None  # the tenant's IANA timezone, when the organiser is known

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape `dialout-gw explain` prints."""
        return {
            "allow": self.allow,
            "status": self.status,
            "reason": self.reason.value,
            "bucket": self.bucket.value if self.bucket else None,
            "fallback_buckets": [b.value for b in self.fallback_buckets],
            "allowances": [{"bucket": b.value, "seconds": s} for b, s in self.allowances],
            "max_duration_s": self.max_duration_s,
            "e164": self.e164,
            "region": self.region,
            "number_type": self.number_type.value if self.number_type else None,
            "tenant": self.tenant,
            "organizer": self.organizer,
            "credit_rate_per_minute": self.credit_rate_per_minute,
            "retry_after_s": self.retry_after_s,
            "period": self.period,
            "billing_increment_s": self.billing_increment_s,
            "explanation": self.explanation,
            "trace": [{"rule": c.rule, "outcome": c.outcome, "detail": c.detail} for c in self.trace],
            "charges": [
                {"bucket": c.bucket.value, "cap_minutes": c.cap_minutes, "rate_per_minute": c.rate_per_minute}
                for c in self.charges
            ],
            "tz": self.tz,
        }


@dataclass(frozen=True, slots=True)
class Assessment:
    """A request that passed rules 2–6 (identity, destination, number class,
    licence, organiser policy), from `assess`.

    It carries what `decide_assessed` needs for rules 7–9, and what the caller
    needs to read the counters for the `Snapshot`: tenant, organiser, E.164
    destination, the tenant's timezone and the period (tenant-local "YYYY-MM").
    `now` is the instant assessed; `decide_assessed` must be given the same one.
    """

    organizer: Organizer
    tenant_id: str
    organizer_id: str
    e164: str
    region: str
    number: NormalizedNumber
    tz: str
    period: str
    now: datetime
    local: datetime  # `now` in the tenant's timezone
    trace: tuple[Check, ...]


# --- the catalogue -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Promotion:
    """A complimentary window: inclusive local dates, optional pooled monthly cap."""

    name: str
    end: date
    start: date | None = None  # None: open start
    regions: frozenset[str] = ZONE_A
    monthly_cap_minutes_per_user: float | None = None  # × subscription licences, pooled
    enabled: bool = True

    def covers(self, day: date, region: str) -> bool:
        return self.enabled and region in self.regions and day <= self.end and (self.start is None or day >= self.start)


SEED_PROMOTION = Promotion(name="complimentary-dialout-2018", end=date(2018, 6, 30))
EXTENDED_PROMOTION = Promotion(
    name="complimentary-dialout-extension-2019",
    start=date(2018, 7, 1),
    end=date(2019, 11, 30),
    monthly_cap_minutes_per_user=900,
    enabled=False,
)

#: Blocked unless `blocked_number_types` says otherwise. UNKNOWN is a number
#: phonenumbers cannot classify: it may be a premium range (+979 …, DE 0900 …)
#: the metadata does not type, so it is never called by default.
DEFAULT_BLOCKED_TYPES: frozenset[NumberType] = frozenset(
    {
        NumberType.UNKNOWN,
        NumberType.PREMIUM_RATE,
        NumberType.SHARED_COST,
        NumberType.UAN,
        NumberType.PERSONAL_NUMBER,
        NumberType.PAGER,
        NumberType.SATELLITE,
        NumberType.VOICEMAIL,
    }
)
#: Always blocked, whatever the config says.
ALWAYS_BLOCKED_TYPES: frozenset[NumberType] = frozenset({NumberType.EMERGENCY, NumberType.SHORT_CODE})


@dataclass(frozen=True, slots=True)
class Guards:
    max_concurrent_per_organizer: int = 10
    max_concurrent_per_tenant: int = 300
    max_calls_per_minute_per_organizer: int = 20
    max_distinct_destinations_per_day: int = 200
    high_risk_regions: frozenset[str] = frozenset()
    retry_after_concurrency_s: int = 30
    retry_after_rate_s: int = 60


@dataclass(frozen=True, slots=True)
class Catalogue:
    zone_a: frozenset[str] = ZONE_A
    promotions: tuple[Promotion, ...] = (SEED_PROMOTION, EXTENDED_PROMOTION)
    usca_regions: frozenset[str] = USCA_REGIONS
    addon_fair_use_minutes_per_month: float = 10_000
    pool_minutes_per_subscription: float = 60
    pool_excluded_types: frozenset[NumberType] = frozenset({NumberType.PREMIUM_RATE})
    credit_rates: dict[str, float] = field(default_factory=dict)  # region → price per minute
    default_credit_rate: float = 0.25
    credits_currency: str = "USD"
    blocked_types: frozenset[NumberType] = DEFAULT_BLOCKED_TYPES | ALWAYS_BLOCKED_TYPES
    billing_increment: BillingIncrement = BillingIncrement.MINUTE
    max_call_length_s: int = 4 * 3600
    # "valid": a number outside every assigned range is number_invalid. See
    # docs/policy.md ("Unassigned and unclassified numbers") for why not "possible".
    number_validation: str = "valid"
    domestic_equivalence: tuple[frozenset[str], ...] = ()
    guards: Guards = Guards()

    def credit_rate(self, region: str) -> float:
        return self.credit_rates.get(region, self.default_credit_rate)


# --- the directory -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    timezone: str = "UTC"
    tz: ZoneInfo = field(default=ZoneInfo("UTC"), compare=False, repr=False)
    subscription_licences: int = 0
    credits_enabled: bool = False
    credits_balance: float = 0.0
    pool_minutes: float = 0.0  # precomputed: licences × pool_minutes_per_subscription
    caller_id: str | None = None  # E.164; the caller ID of the tenant's calls (policy.routing.caller_id_for)


@dataclass(frozen=True, slots=True)
class Organizer:
    id: str  # as written in the config
    tenant: Tenant
    usage_location: str
    audio_conferencing: AudioConferencing = AudioConferencing.NONE
    usca_addon: bool = False
    credits_licence: bool = False
    dialout_policy: DialoutPolicy = DialoutPolicy.DISABLED
    policy_name: str = "disabled"  # as written in the config (may be a tag:DialoutCPC… name)
    domestic_regions: frozenset[str] = frozenset()  # precomputed: usage location + equivalents


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Directory + catalogue: everything `decide` needs besides the request and counters."""

    catalogue: Catalogue
    tenants: dict[str, Tenant]  # keyed by casefolded id
    organizers: dict[str, Organizer]  # keyed by casefolded id

    def organizer(self, organizer_id: str) -> Organizer | None:
        return self.organizers.get(organizer_id.strip().casefold())

    def tenant(self, tenant_id: str) -> Tenant | None:
        return self.tenants.get(tenant_id.strip().casefold())
