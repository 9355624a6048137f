"""The pure entitlement decision (docs/dialout-rules.md, "Decision order").

Rule 1 (trusted source) is the gateway's: it runs before any lookup. This
module applies rules 2–9 in order; the first rule that fails decides. Nothing
here reads a clock, a file or a counter: `now` and the `Snapshot` come in.

The rules come in two halves, so that a caller can answer the cheap denials
before it reads any counter:

- `assess(request, now, settings)`: rules 2–6 (identity, destination, number
  class, licence, organiser policy). A denial `Decision`, or an `Assessment`
  that names the tenant, organiser, E.164 number, timezone and period whose
  counters the caller then reads.
- `decide_assessed(assessment, snapshot, now, settings)`: rules 7–9 (guards,
  bucket choice, duration), continuing the assessment's trace.

`decide(request, snapshot, now, settings)` is both in a row.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import lru_cache, partial

from policy.model import (
    Assessment,
    AudioConferencing,
    CallRequest,
    ChargeSpec,
    Check,
    Decision,
    DialoutPolicy,
    Organizer,
    PolicySettings,
    Snapshot,
    Tenant,
)
from policy.numbers import NormalizedNumber, normalize_destination
from policy.reasons import Bucket, Reason

PASS, FAIL, SKIP, INFO = "pass", "fail", "skip", "info"

#: `_check((rule, outcome, detail))` is `Check(rule, outcome, detail)` without the
#: NamedTuple's Python-level __new__: a decision appends about ten of them.
_check = partial(tuple.__new__, Check)


def _deny(
    reason: Reason,
    explanation: str,
    trace: list[Check],
    organizer: Organizer | None = None,
    number: NormalizedNumber | None = None,
    retry_after_s: int | None = None,
    period: str | None = None,
) -> Decision:
    return Decision(
        allow=False,
        reason=reason,
        status=reason.status,
        e164=number.e164 if number else None,
        region=number.region if number else None,
        number_type=number.number_type if number else None,
        tenant=organizer.tenant.id if organizer else None,
        organizer=organizer.id if organizer else None,
        retry_after_s=retry_after_s,
        period=period,
        explanation=explanation,
        trace=tuple(trace),
        tz=organizer.tenant.timezone if organizer else None,
    )


def _shown(dialled: str) -> str:
    """The dialled string for an explanation: quoted, and cut short if it is long
    (it goes into a SIP Warning header and the call's log line)."""
    if not isinstance(dialled, str) or len(dialled) <= 40:
        return repr(dialled)
    return f"{dialled[:32]!r}… ({len(dialled)} characters)"


def _who(org: Organizer) -> str:
    return f"organiser {org.id} has policy {org.policy_name} (usage location {org.usage_location})"


def _dest(number: NormalizedNumber) -> str:
    return f"{number.e164} is in {number.region} ({number.number_type})"


def decide(request: CallRequest, snapshot: Snapshot, now: datetime, settings: PolicySettings) -> Decision:
    """Decide whether `request` may go out now and which entitlement pays for it.

    The same as `assess` then, unless it denied, `decide_assessed`.
    """
    # The two halves without the Assessment object in between (decide is the hot path).
    assessed = _assess(request, now, settings)
    if type(assessed) is Decision:
        return assessed
    org, number, local, period, trace = assessed  # type: ignore[misc]
    return _decide(org, number, local, period, trace, snapshot, settings)


def assess(request: CallRequest, now: datetime, settings: PolicySettings) -> Decision | Assessment:
    """Rules 2–6, which need no counter: a denial `Decision`, or an `Assessment`.

    An `Assessment` says whose counters to read (tenant, organiser, E.164
    number, the tenant's timezone and period) before `decide_assessed`.
    `now` must be timezone-aware (ValueError otherwise, or when it does not
    exist in the tenant's timezone, within hours of year 1 or 9999).
    """
    assessed = _assess(request, now, settings)
    if type(assessed) is Decision:
        return assessed
    org, number, local, period, trace = assessed  # type: ignore[misc]
    return Assessment(
        organizer=org,
        tenant_id=org.tenant.id,
        organizer_id=org.id,
        e164=number.e164 or "",  # set: a number that is not special (those are blocked at rule 4)
        region=number.region or "",
        number=number,
        tz=org.tenant.timezone,
        period=period,
        now=now,
        local=local,
        trace=tuple(trace),
    )


_Assessed = tuple[Organizer, NormalizedNumber, datetime, str, list[Check]]


def _assess(request: CallRequest, now: datetime, settings: PolicySettings) -> Decision | _Assessed:
    """`assess` without the Assessment: (organizer, number, local time, period, trace)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("`now` must be a timezone-aware datetime")
    cat = settings.catalogue
    trace: list[Check] = []
    if request.location:
        trace.append(_check(("location", INFO, f"reported physical location {request.location} (logged only)")))

    # 2. Identity ---------------------------------------------------------------
    organizer_id = (request.organizer or "").strip()
    if not organizer_id:
        trace.append(_check(("identity", FAIL, "no organiser named")))
        return _deny(Reason.ORGANIZER_MISSING, "the request names no meeting organiser", trace)
    org = settings.organizers.get(organizer_id.casefold())
    if org is None:
        trace.append(_check(("identity", FAIL, f"organiser {organizer_id} is not in the directory")))
        return _deny(Reason.ORGANIZER_UNKNOWN, f"organiser {organizer_id} is not in the directory", trace)
    tenant: Tenant = org.tenant
    if request.tenant and request.tenant.strip().casefold() != tenant.id.casefold():
        trace.append(
            _check(("identity", FAIL, f"organiser {org.id} belongs to tenant {tenant.id}, not {request.tenant}"))
        )
        return _deny(
            Reason.ORGANIZER_UNKNOWN,
            f"organiser {org.id} is not known in tenant {request.tenant}",
            trace,
        )
    local = _tenant_local(now, tenant)
    period = f"{local.year:04d}-{local.month:02d}"
    trace.append(
        _check(("identity", PASS, f"organiser {org.id} of tenant {tenant.id}; local time {local.isoformat()}"))
    )

    # 3. Destination ----------------------------------------------------------------
    number = normalize_destination(request.dialled, org.usage_location, cat.number_validation)
    if not number.ok:
        shown = _shown(request.dialled)
        trace.append(_check(("destination", FAIL, f"{shown}: {number.error}")))
        return _deny(
            Reason.NUMBER_INVALID,
            f"{shown} is not a dialable number in {org.usage_location}: {number.error}",
            trace,
            org,
            period=period,
        )
    if number.is_special:
        trace.append(
            _check(("destination", PASS, f"{request.dialled!r} is a {number.number_type} number in {number.region}"))
        )
    else:
        trace.append(_check(("destination", PASS, f"{request.dialled!r} → {number.e164}, region {number.region}")))

    # 4. Number class -------------------------------------------------------------------
    if number.number_type in cat.blocked_types:
        trace.append(_check(("number_class", FAIL, f"{number.number_type} numbers are blocked")))
        what = request.dialled.strip() if number.is_special else number.e164
        return _deny(
            Reason.DESTINATION_BLOCKED,
            f"{what} is a {number.number_type} number, which dial-out never calls",
            trace,
            org,
            number,
            period=period,
        )
    trace.append(_check(("number_class", PASS, f"{number.number_type}")))
    region: str = number.region  # type: ignore[assignment]

    # 5. Licence --------------------------------------------------------------------------
    if org.audio_conferencing is AudioConferencing.NONE:
        trace.append(_check(("licence", FAIL, f"organiser {org.id} holds no Audio Conferencing licence")))
        return _deny(
            Reason.NO_AUDIO_CONFERENCING,
            f"organiser {org.id} holds no Audio Conferencing licence",
            trace,
            org,
            number,
            period=period,
        )
    trace.append(_check(("licence", PASS, f"Audio Conferencing {org.audio_conferencing}")))

    # 6. Organiser policy -------------------------------------------------------------------
    policy = org.dialout_policy
    if policy is DialoutPolicy.DISABLED:
        trace.append(_check(("policy", FAIL, f"policy {org.policy_name} disables meeting dial-out")))
        return _deny(
            Reason.DIALOUT_DISABLED, f"{_who(org)}, which disables meeting dial-out", trace, org, number, period=period
        )
    if policy is DialoutPolicy.DOMESTIC and region not in org.domestic_regions:
        trace.append(_check(("policy", FAIL, f"domestic: {region} is not {org.usage_location}")))
        return _deny(Reason.NOT_DOMESTIC, f"{_who(org)}; {_dest(number)}", trace, org, number, period=period)
    if policy is DialoutPolicy.ZONE_A and region not in cat.zone_a:
        trace.append(_check(("policy", FAIL, f"zone_a: {region} is not in Zone A")))
        return _deny(
            Reason.OUTSIDE_ZONE_A, f"{_who(org)}; {_dest(number)}, outside Zone A", trace, org, number, period=period
        )
    trace.append(_check(("policy", PASS, f"{org.policy_name} ({policy}) allows {region}")))
    return org, number, local, period, trace


def decide_assessed(assessment: Assessment, snapshot: Snapshot, now: datetime, settings: PolicySettings) -> Decision:
    """Rules 7–9 for a request that `assess` passed: guards, the bucket that
    pays (and the ledger's `charges`), the authorised duration.

    `snapshot` holds the counters read for `assessment` (its tenant, organiser,
    number and period); `now` must be the instant given to `assess`, since the
    period and the promotion day were reckoned from it (ValueError otherwise).
    """
    if now is not assessment.now and now != assessment.now:
        raise ValueError(
            f"decide_assessed() needs the `now` given to assess() ({assessment.now.isoformat()}), got {now.isoformat()}"
        )
    a = assessment
    return _decide(a.organizer, a.number, a.local, a.period, list(a.trace), snapshot, settings)


def _decide(
    org: Organizer,
    number: NormalizedNumber,
    local: datetime,
    period: str,
    trace: list[Check],
    snapshot: Snapshot,
    settings: PolicySettings,
) -> Decision:
    """Rules 7–9; `trace` is the assessment's, extended in place."""
    cat = settings.catalogue
    tenant = org.tenant
    region: str = number.region  # type: ignore[assignment]

    # 7. Fair-use and fraud guards -----------------------------------------------------------
    g = cat.guards
    if snapshot.concurrent_organizer >= g.max_concurrent_per_organizer:
        detail = f"organiser has {snapshot.concurrent_organizer} dial-outs in progress (limit {g.max_concurrent_per_organizer})"
        trace.append(_check(("guard_concurrency", FAIL, detail)))
        return _deny(Reason.LIMIT_CONCURRENCY, detail, trace, org, number, g.retry_after_concurrency_s, period)
    if snapshot.concurrent_tenant >= g.max_concurrent_per_tenant:
        detail = f"tenant {tenant.id} has {snapshot.concurrent_tenant} dial-outs in progress (limit {g.max_concurrent_per_tenant})"
        trace.append(_check(("guard_concurrency", FAIL, detail)))
        return _deny(Reason.LIMIT_CONCURRENCY, detail, trace, org, number, g.retry_after_concurrency_s, period)
    trace.append(
        _check(
            (
                "guard_concurrency",
                PASS,
                f"organiser {snapshot.concurrent_organizer}, tenant {snapshot.concurrent_tenant}",
            )
        )
    )
    if snapshot.calls_last_minute_organizer >= g.max_calls_per_minute_per_organizer:
        detail = (
            f"organiser placed {snapshot.calls_last_minute_organizer} calls in the last minute "
            f"(limit {g.max_calls_per_minute_per_organizer})"
        )
        trace.append(_check(("guard_rate", FAIL, detail)))
        return _deny(Reason.LIMIT_RATE, detail, trace, org, number, g.retry_after_rate_s, period)
    trace.append(_check(("guard_rate", PASS, f"{snapshot.calls_last_minute_organizer} calls in the last minute")))
    if region in g.high_risk_regions:
        detail = f"{region} is on the high-risk destination list"
        trace.append(_check(("guard_fraud", FAIL, detail)))
        return _deny(Reason.FRAUD_SUSPECTED, f"{number.e164}: {detail}", trace, org, number, period=period)
    if (
        not snapshot.destination_seen_today
        and snapshot.distinct_destinations_today >= g.max_distinct_destinations_per_day
    ):
        detail = (
            f"organiser already called {snapshot.distinct_destinations_today} distinct numbers today "
            f"(limit {g.max_distinct_destinations_per_day})"
        )
        trace.append(_check(("guard_fraud", FAIL, detail)))
        return _deny(Reason.FRAUD_SUSPECTED, detail, trace, org, number, period=period)
    trace.append(_check(("guard_fraud", PASS, f"{snapshot.distinct_destinations_today} distinct destinations today")))
    addon_applies = org.usca_addon and region in cat.usca_regions
    if addon_applies:
        if snapshot.addon_used_minutes >= cat.addon_fair_use_minutes_per_month:
            detail = (
                f"organiser used {snapshot.addon_used_minutes:g} US/CA add-on minutes this month "
                f"(fair use {cat.addon_fair_use_minutes_per_month:g})"
            )
            trace.append(_check(("guard_fair_use", FAIL, detail)))
            return _deny(Reason.FAIR_USE_EXCEEDED, detail, trace, org, number, period=period)
        trace.append(_check(("guard_fair_use", PASS, f"{snapshot.addon_used_minutes:g} add-on minutes this month")))

    # 8. Which entitlement pays ------------------------------------------------------------------
    unit = cat.billing_increment.seconds
    subscription = org.audio_conferencing is AudioConferencing.SUBSCRIPTION
    non_premium = number.number_type not in cat.pool_excluded_types
    allowances: list[tuple[Bucket, int | None]] = []
    charges: list[ChargeSpec] = []  # the same buckets, as the ledger reserves them

    # 8.1 promotion
    if subscription and non_premium:
        day = local.date()
        for promo in cat.promotions:
            if not promo.covers(day, region):
                continue
            if promo.monthly_cap_minutes_per_user is None:
                allowances.append((Bucket.PROMOTION, None))
                charges.append(_UNCAPPED[Bucket.PROMOTION])
                trace.append(_check(("bucket_promotion", PASS, f"{promo.name} covers {region} on {day}")))
                break
            cap = promo.monthly_cap_minutes_per_user * tenant.subscription_licences
            left = _seconds(cap - snapshot.promotion_used_minutes, unit)
            if left > 0:
                allowances.append((Bucket.PROMOTION, left))
                charges.append(_charge(Bucket.PROMOTION, cap))
                trace.append(
                    _check(("bucket_promotion", PASS, f"{promo.name} covers {region} on {day}; {left} s of cap left"))
                )
                break
            trace.append(_check(("bucket_promotion", SKIP, f"{promo.name}: monthly cap of {cap:g} min used up")))
        else:
            trace.append(_check(("bucket_promotion", SKIP, f"no active promotion covers {region} on {day}")))
    else:
        trace.append(_check(("bucket_promotion", SKIP, "needs a subscription organiser and a non-premium number")))

    # 8.2 US/CA add-on
    if addon_applies:
        allowances.append((Bucket.USCA_UNLIMITED, None))
        charges.append(_UNCAPPED[Bucket.USCA_UNLIMITED])
        trace.append(_check(("bucket_usca_unlimited", PASS, f"add-on covers {region}; pool not drawn")))
    elif org.usca_addon:
        trace.append(_check(("bucket_usca_unlimited", SKIP, f"add-on covers US and CA only, not {region}")))

    # 8.3 tenant pool
    if subscription and non_premium and region in cat.zone_a:
        left = _seconds(tenant.pool_minutes - snapshot.pool_used_minutes, unit)
        if left > 0:
            allowances.append((Bucket.TENANT_POOL, left))
            charges.append(_charge(Bucket.TENANT_POOL, tenant.pool_minutes))
            trace.append(_check(("bucket_tenant_pool", PASS, f"{left} s left of {tenant.pool_minutes:g} min")))
        else:
            trace.append(_check(("bucket_tenant_pool", SKIP, f"pool of {tenant.pool_minutes:g} min used up")))
    else:
        trace.append(
            _check(("bucket_tenant_pool", SKIP, "needs a subscription organiser and a non-premium Zone A number"))
        )

    # 8.4 Communications Credits
    rate = cat.credit_rate(region)
    if org.credits_licence and tenant.credits_enabled:
        balance = tenant.credits_balance if snapshot.credits_balance is None else snapshot.credits_balance
        # The ledger caps credits at the configured balance (it tracks what is spent).
        if balance > 0 and rate <= 0:
            allowances.append((Bucket.CREDITS, None))
            charges.append(_charge(Bucket.CREDITS, tenant.credits_balance, rate))
            trace.append(_check(("bucket_credits", PASS, f"balance {balance:g}, {region} is free")))
        else:
            left = _seconds(balance / rate, unit) if balance > 0 else 0
            if left > 0:
                allowances.append((Bucket.CREDITS, left))
                charges.append(_charge(Bucket.CREDITS, tenant.credits_balance, rate))
                trace.append(_check(("bucket_credits", PASS, f"balance {balance:g} at {rate:g}/min → {left} s")))
            else:
                trace.append(
                    _check(
                        (
                            "bucket_credits",
                            SKIP,
                            f"balance {balance:g} does not pay a {unit}-s increment at {rate:g}/min",
                        )
                    )
                )
    else:
        why = (
            "organiser holds no credits licence"
            if not org.credits_licence
            else f"tenant {tenant.id} has credits disabled"
        )
        trace.append(_check(("bucket_credits", SKIP, why)))

    if not allowances:
        return _deny(
            Reason.NO_ENTITLEMENT,
            f"{_who(org)}; {_dest(number)}; no promotion, add-on, pool minutes or credits pay for it",
            trace,
            org,
            number,
            period=period,
        )

    # 9. Authorised duration -------------------------------------------------------------------------
    total = 0
    for _, seconds in allowances:
        if seconds is None:
            total = cat.max_call_length_s
            break
        total += seconds
    max_duration = min(total, cat.max_call_length_s)
    trace.append(_check(("duration", PASS, f"{max_duration} s (global maximum {cat.max_call_length_s} s)")))

    bucket = allowances[0][0]
    uses_credits = charges[-1].bucket is Bucket.CREDITS  # credits, when they apply, come last
    return Decision(
        allow=True,
        reason=Reason.ALLOWED,
        status=200,
        bucket=bucket,
        fallback_buckets=tuple([b for b, _ in allowances[1:]]),
        allowances=tuple(allowances),
        max_duration_s=max_duration,
        e164=number.e164,
        region=region,
        number_type=number.number_type,
        tenant=tenant.id,
        organizer=org.id,
        credit_rate_per_minute=rate if uses_credits else None,
        period=period,
        billing_increment_s=unit,
        explanation=f"{_who(org)}; {_dest(number)}; charged to {bucket} for up to {max_duration} s",
        trace=tuple(trace),
        charges=tuple(charges),
        tz=tenant.timezone,
    )


def _tenant_local(now: datetime, tenant: Tenant) -> datetime:
    """`now` in the tenant's timezone. A `now` within hours of year 1 or 9999
    may not exist there: a clear ValueError, not datetime's OverflowError."""
    try:
        return now.astimezone(tenant.tz)
    except OverflowError:
        raise ValueError(
            f"now={now.isoformat()} is outside years 1-9999 in tenant {tenant.id}'s timezone {tenant.timezone}"
        ) from None


#: ChargeSpecs are immutable and few (per tenant, promotion and credit rate):
#: shared rather than built for every call. Bounded, as configs are reloaded.
_charge = lru_cache(maxsize=1024)(ChargeSpec)
_UNCAPPED = {bucket: ChargeSpec(bucket, None) for bucket in (Bucket.PROMOTION, Bucket.USCA_UNLIMITED)}


def _seconds(minutes: float, unit: int) -> int:
    """Whole seconds that `minutes` pay for when billing per `unit` seconds."""
    if minutes <= 0:
        return 0
    # Round to a microsecond first so that 2.9999999 stays 180 s, not 179.
    seconds = math.floor(round(minutes * 60, 6))
    return seconds - seconds % unit
