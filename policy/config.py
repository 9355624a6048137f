"""Parse the `[policy]`, `[[tenants]]` and `[[organizers]]` tables into frozen objects.

Input is the dict `tomllib` already loaded; this module reads no file.
Every error names the key path (e.g. `organizers[2].dialout_policy`) and what
was expected. Unknown keys are errors, so a typo never silently means "default".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

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
from policy.numbers import VALIDATION_LEVELS, NumberType

_MS_NAMES = {name.casefold(): value for name, value in MICROSOFT_POLICY_NAMES.items()}
_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)

# Sanity bounds of the numeric keys. A value outside them is a typo (or a
# tampered file), never a setting: `nan` compares false with everything, so a
# `nan` limit never triggers, and a rate of 1e-310 makes a balance last forever.
# Every bound is documented in docs/policy.md.

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
    """A bad value in the policy part of the config. `key` is its path."""

    def __init__(self, key: str, expected: str, got: Any = None, *, has_got: bool = True) -> None:
        self.key = key
        self.expected = expected
        message = f"{key}: expected {expected}"
        if has_got:
            message += f", got {got!r}"
        super().__init__(message)


# --- small typed readers -------------------------------------------------------------


class _Table:
    """A TOML table being read: tracks the key path and refuses unknown keys."""

    def __init__(self, data: Any, path: str, known: Iterable[str]) -> None:
        if not isinstance(data, Mapping):
            raise PolicyConfigError(path, "a table", data)
        unknown = set(data) - set(known)
        if unknown:
            first = sorted(unknown)[0]
            raise PolicyConfigError(
                _join(path, first), "one of the known keys: " + ", ".join(sorted(known)), has_got=False
            )
        self.data = data
        self.path = path

    def key(self, name: str) -> str:
        return _join(self.path, name)

    def has(self, name: str) -> bool:
        return name in self.data

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        if name not in self.data:
            if required:
                raise PolicyConfigError(self.key(name), "a string (required)", has_got=False)
            return default  # type: ignore[return-value]
        value = self.data[name]
        if not isinstance(value, str) or not value.strip():
            raise PolicyConfigError(self.key(name), "a non-empty string", value)
        return value.strip()

    def bool(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise PolicyConfigError(self.key(name), "true or false", value)
        return value

    def int(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        return _int(self.data.get(name, default), self.key(name), minimum, maximum)

    def number(
        self, name: str, default: float | None, minimum: float = 0, maximum: float = math.inf, *, above: bool = False
    ) -> float | None:
        """A finite number in [minimum, maximum] (or (minimum, maximum] with `above`); None stays None."""
        value = self.data.get(name, default)
        if value is None:
            return None
        return _number(value, self.key(name), minimum, maximum, above=above)

    def date(self, name: str, default: date | None = None, *, required: bool = False) -> date | None:
        if name not in self.data:
            if required:
                raise PolicyConfigError(self.key(name), "a date YYYY-MM-DD (required)", has_got=False)
            return default
        value = self.data[name]
        if isinstance(value, str):
            try:
                value = date.fromisoformat(value)
            except ValueError:
                raise PolicyConfigError(self.key(name), "a date YYYY-MM-DD", value) from None
        if not isinstance(value, date) or hasattr(value, "hour"):
            raise PolicyConfigError(self.key(name), "a date YYYY-MM-DD (no time: dates are whole local days)", value)
        return value

    def regions(self, name: str, default: frozenset[str], zone_a: frozenset[str] | None = None) -> frozenset[str]:
        if name not in self.data:
            return default
        return _regions(self.data[name], self.key(name), zone_a)

    def table(self, name: str, known: Iterable[str]) -> _Table:
        return _Table(self.data.get(name, {}), self.key(name), known)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _int(value: Any, key: str, minimum: int, maximum: int | None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        expected = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise PolicyConfigError(key, expected, value)
    return value


def _is_number(value: Any) -> bool:
    """An int or a finite float (TOML and JSON both know `inf` and `nan`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _number(value: Any, key: str, minimum: float, maximum: float, *, above: bool = False) -> float:
    low_ok = _is_number(value) and (value > minimum if above else value >= minimum)
    if not low_ok or value > maximum:
        expected = f"a finite number {'>' if above else '>='} {_show(minimum)}"
        if maximum != math.inf:
            expected += f" and <= {_show(maximum)}"
        raise PolicyConfigError(key, expected, value)
    return float(value)


def _rate(value: Any, key: str) -> float:
    """A price per minute: 0 (free), or a finite number in [MIN_CREDIT_RATE, MAX_CREDIT_RATE]."""
    if _is_number(value) and (value == 0 or MIN_CREDIT_RATE <= value <= MAX_CREDIT_RATE):
        return float(value) if value else 0.0  # -0.0 is free too: never show a charge of -0.0
    raise PolicyConfigError(
        key,
        f"a price per minute: 0 (free) or a finite number >= {_show(MIN_CREDIT_RATE)} and <= {_show(MAX_CREDIT_RATE)}",
        value,
    )


def _region(value: Any, key: str) -> str:
    if not isinstance(value, str) or value.strip().upper() not in _REGIONS:
        raise PolicyConfigError(key, "an ISO 3166 region code known to phonenumbers (e.g. FR, US)", value)
    return value.strip().upper()


def _regions(value: Any, key: str, zone_a: frozenset[str] | None = None) -> frozenset[str]:
    if zone_a is not None and value == "zone_a":
        return zone_a
    if not isinstance(value, list):
        expected = "a list of ISO region codes" + (' or "zone_a"' if zone_a is not None else "")
        raise PolicyConfigError(key, expected, value)
    return frozenset(_region(item, f"{key}[{i}]") for i, item in enumerate(value))


def _number_types(value: Any, key: str) -> frozenset[NumberType]:
    if not isinstance(value, list):
        raise PolicyConfigError(key, "a list of number types", value)
    names = ", ".join(t.value for t in NumberType)
    out = set()
    for i, item in enumerate(value):
        try:
            out.add(NumberType(item))
        except ValueError:
            raise PolicyConfigError(f"{key}[{i}]", f"one of {names}", item) from None
    return frozenset(out)


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
    raise PolicyConfigError(
        key, "one of any, domestic, zone_a, disabled, or a tag:DialoutCPC… policy name", value
    )


# --- [policy] ---------------------------------------------------------------------------

_POLICY_KEYS = (
    "default_timezone",
    "default_dialout_policy",
    "zone_a",
    "number_validation",
    "blocked_number_types",
    "billing_increment",
    "max_call_length_s",
    "domestic_equivalence",
    "promotions",
    "usca_addon",
    "pool",
    "credits",
    "guards",
)


def _parse_catalogue(data: Any) -> tuple[Catalogue, _Table]:
    p = _Table(data, "policy", _POLICY_KEYS)
    zone_a = p.regions("zone_a", ZONE_A)

    validation = p.str("number_validation", "valid")
    if validation not in VALIDATION_LEVELS:
        raise PolicyConfigError(p.key("number_validation"), '"possible" or "valid"', validation)

    blocked = DEFAULT_BLOCKED_TYPES
    if p.has("blocked_number_types"):
        blocked = _number_types(p.data["blocked_number_types"], p.key("blocked_number_types"))

    increment = p.str("billing_increment", "minute")
    try:
        billing = BillingIncrement(increment)
    except ValueError:
        raise PolicyConfigError(p.key("billing_increment"), '"minute" or "second"', increment) from None

    equivalence: list[frozenset[str]] = []
    groups = p.data.get("domestic_equivalence", [])
    if not isinstance(groups, list):
        raise PolicyConfigError(p.key("domestic_equivalence"), 'a list of region lists, e.g. [["US", "PR"]]', groups)
    for i, group in enumerate(groups):
        equivalence.append(_regions(group, f"{p.key('domestic_equivalence')}[{i}]"))

    promotions: tuple[Promotion, ...] = (SEED_PROMOTION, EXTENDED_PROMOTION)
    if p.has("promotions"):
        rows = p.data["promotions"]
        if not isinstance(rows, list):
            raise PolicyConfigError(p.key("promotions"), "an array of tables [[policy.promotions]]", rows)
        parsed = []
        names: set[str] = set()
        for i, row in enumerate(rows):
            t = _Table(row, f"policy.promotions[{i}]", ("name", "start", "end", "regions", "monthly_cap_minutes_per_user", "enabled"))
            name = t.str("name", required=True)
            if name in names:
                raise PolicyConfigError(t.key("name"), "a name not used by another promotion", name)
            names.add(name)
            start = t.date("start")
            end = t.date("end", required=True)
            assert end is not None
            if start is not None and start > end:
                raise PolicyConfigError(t.key("start"), f"a date on or before end ({end})", start)
            # A cap of 0 would be a disabled promotion: say `enabled = false` instead.
            cap = t.number("monthly_cap_minutes_per_user", None, 0, MAX_MINUTES, above=True)
            parsed.append(
                Promotion(
                    name=name,
                    start=start,
                    end=end,
                    regions=t.regions("regions", zone_a, zone_a),
                    monthly_cap_minutes_per_user=cap,
                    enabled=t.bool("enabled", True),
                )
            )
        promotions = tuple(parsed)
    elif p.has("zone_a"):
        promotions = tuple(
            Promotion(pr.name, pr.end, pr.start, zone_a, pr.monthly_cap_minutes_per_user, pr.enabled) for pr in promotions
        )

    addon = p.table("usca_addon", ("regions", "fair_use_minutes_per_month"))
    pool = p.table("pool", ("minutes_per_subscription", "excluded_number_types"))
    credits = p.table("credits", ("currency", "default_rate_per_minute", "rates"))
    guards = p.table(
        "guards",
        (
            "max_concurrent_per_organizer",
            "max_concurrent_per_tenant",
            "max_calls_per_minute_per_organizer",
            "max_distinct_destinations_per_day",
            "high_risk_regions",
            "retry_after_concurrency_s",
            "retry_after_rate_s",
        ),
    )
    defaults = Catalogue()
    rates: dict[str, float] = {}
    raw_rates = credits.data.get("rates", {})
    if not isinstance(raw_rates, Mapping):
        raise PolicyConfigError(credits.key("rates"), "a table of REGION = price per minute", raw_rates)
    for region, price in raw_rates.items():
        key = f"{credits.key('rates')}.{region}"
        rates[_region(region, key)] = _rate(price, key)

    dg = Guards()
    catalogue = Catalogue(
        zone_a=zone_a,
        promotions=promotions,
        usca_regions=addon.regions("regions", USCA_REGIONS),
        addon_fair_use_minutes_per_month=addon.number(  # type: ignore[arg-type]
            "fair_use_minutes_per_month", defaults.addon_fair_use_minutes_per_month, 0, MAX_MINUTES, above=True
        ),
        # 0 is allowed: a catalogue without a pool (credits and promotions only).
        pool_minutes_per_subscription=pool.number(  # type: ignore[arg-type]
            "minutes_per_subscription", defaults.pool_minutes_per_subscription, 0, MAX_MINUTES
        ),
        pool_excluded_types=(
            _number_types(pool.data["excluded_number_types"], pool.key("excluded_number_types"))
            if pool.has("excluded_number_types")
            else defaults.pool_excluded_types
        ),
        credit_rates=MappingProxyType(rates),  # type: ignore[arg-type]
        default_credit_rate=_rate(
            credits.data.get("default_rate_per_minute", defaults.default_credit_rate),
            credits.key("default_rate_per_minute"),
        ),
        credits_currency=credits.str("currency", defaults.credits_currency),
        blocked_types=blocked | ALWAYS_BLOCKED_TYPES,
        billing_increment=billing,
        max_call_length_s=p.int("max_call_length_s", defaults.max_call_length_s, 1, MAX_CALL_LENGTH_S),
        number_validation=validation,
        domestic_equivalence=tuple(equivalence),
        guards=Guards(
            max_concurrent_per_organizer=guards.int(
                "max_concurrent_per_organizer", dg.max_concurrent_per_organizer, 1, MAX_GUARD_LIMIT
            ),
            max_concurrent_per_tenant=guards.int("max_concurrent_per_tenant", dg.max_concurrent_per_tenant, 1, MAX_GUARD_LIMIT),
            max_calls_per_minute_per_organizer=guards.int(
                "max_calls_per_minute_per_organizer", dg.max_calls_per_minute_per_organizer, 1, MAX_GUARD_LIMIT
            ),
            max_distinct_destinations_per_day=guards.int(
                "max_distinct_destinations_per_day", dg.max_distinct_destinations_per_day, 1, MAX_GUARD_LIMIT
            ),
            high_risk_regions=guards.regions("high_risk_regions", dg.high_risk_regions),
            retry_after_concurrency_s=guards.int("retry_after_concurrency_s", dg.retry_after_concurrency_s, 1, MAX_RETRY_AFTER_S),
            retry_after_rate_s=guards.int("retry_after_rate_s", dg.retry_after_rate_s, 1, MAX_RETRY_AFTER_S),
        ),
    )
    return catalogue, p


# --- [[tenants]] and [[organizers]] ----------------------------------------------------------


def _rows(data: Mapping[str, Any], name: str) -> list[Any]:
    rows = data.get(name, [])
    if not isinstance(rows, list):
        raise PolicyConfigError(name, f"an array of tables [[{name}]]", rows)
    return rows


def _zone(name: str, key: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyConfigError(key, "an IANA timezone name such as Europe/Paris or UTC", name) from None


def parse_policy_sections(data: Mapping[str, Any]) -> PolicySettings:
    """Build `PolicySettings` from the top-level TOML dict (other keys are ignored)."""
    catalogue, p = _parse_catalogue(data.get("policy", {}))
    default_tz = p.str("default_timezone", "UTC")
    _zone(default_tz, p.key("default_timezone"))
    default_policy_name = p.str("default_dialout_policy", "disabled")
    default_policy = parse_dialout_policy(default_policy_name, p.key("default_dialout_policy"))

    tenants: dict[str, Tenant] = {}
    for i, row in enumerate(_rows(data, "tenants")):
        t = _Table(row, f"tenants[{i}]", ("id", "name", "timezone", "subscription_licences", "pay_per_minute_licences", "credits"))
        tenant_id = t.str("id", required=True)
        if tenant_id.casefold() in tenants:
            raise PolicyConfigError(t.key("id"), "an id not used by another tenant", tenant_id)
        t.str("name", "")
        timezone = t.str("timezone", default_tz)
        licences = t.int("subscription_licences", 0, 0, MAX_LICENCES)
        t.int("pay_per_minute_licences", 0, 0, MAX_LICENCES)  # informational: adds nothing to the pool
        credits = t.table("credits", ("enabled", "balance"))
        tenants[tenant_id.casefold()] = Tenant(
            id=tenant_id,
            timezone=timezone,
            tz=_zone(timezone, t.key("timezone")),
            subscription_licences=licences,
            credits_enabled=credits.bool("enabled", False),
            credits_balance=credits.number("balance", 0.0, 0, MAX_CREDITS_BALANCE),  # type: ignore[arg-type]
            pool_minutes=licences * catalogue.pool_minutes_per_subscription,
        )

    organizers: dict[str, Organizer] = {}
    for i, row in enumerate(_rows(data, "organizers")):
        t = _Table(
            row,
            f"organizers[{i}]",
            ("id", "tenant", "usage_location", "audio_conferencing", "usca_addon", "credits_licence", "dialout_policy"),
        )
        organizer_id = t.str("id", required=True)
        if organizer_id.casefold() in organizers:
            raise PolicyConfigError(t.key("id"), "an id not used by another organizer", organizer_id)
        tenant_id = t.str("tenant", required=True)
        tenant = tenants.get(tenant_id.casefold())
        if tenant is None:
            known = ", ".join(x.id for x in tenants.values()) or "none defined"
            raise PolicyConfigError(t.key("tenant"), f"the id of a [[tenants]] entry ({known})", tenant_id)
        if "usage_location" not in t.data:
            raise PolicyConfigError(t.key("usage_location"), "an ISO region code (required)", has_got=False)
        location = _region(t.data["usage_location"], t.key("usage_location"))
        ac = t.str("audio_conferencing", "none")
        try:
            audio = AudioConferencing(ac)
        except ValueError:
            raise PolicyConfigError(t.key("audio_conferencing"), "subscription, pay_per_minute or none", ac) from None
        if "dialout_policy" in t.data:
            policy_name = t.data["dialout_policy"]
            policy = parse_dialout_policy(policy_name, t.key("dialout_policy"))
            policy_name = policy_name.strip()
        else:
            policy_name, policy = default_policy_name, default_policy
        domestic = {location}
        for group in catalogue.domestic_equivalence:
            if location in group:
                domestic |= group
        organizers[organizer_id.casefold()] = Organizer(
            id=organizer_id,
            tenant=tenant,
            usage_location=location,
            audio_conferencing=audio,
            usca_addon=t.bool("usca_addon", False),
            credits_licence=t.bool("credits_licence", False),
            dialout_policy=policy,
            policy_name=policy_name,
            domestic_regions=frozenset(domestic),
        )

    return PolicySettings(
        catalogue=catalogue,
        tenants=MappingProxyType(tenants),  # type: ignore[arg-type]
        organizers=MappingProxyType(organizers),  # type: ignore[arg-type]
    )
