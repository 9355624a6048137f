"""Time in the ledger: epoch seconds, and the tenant's billing period and day.

The database keeps times as Unix epoch seconds (the same SQL on both
dialects); periods (`YYYY-MM`) and days (`YYYY-MM-DD`) are reckoned in the
tenant's timezone, at the moment the call *started*.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def epoch(dt: datetime) -> float:
    """Unix seconds of an aware datetime; a naive one is a programming error."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: the store needs aware datetimes")
    return dt.timestamp()


@lru_cache(maxsize=256)
def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {tz!r}") from exc


def period_of(dt: datetime, tz: str) -> str:
    """The billing period (YYYY-MM) of an aware datetime in the tenant's timezone."""
    local = dt.astimezone(zone(tz))
    return f"{local.year:04d}-{local.month:02d}"


def period_and_day(dt: datetime, tz: str) -> tuple[str, str]:
    """(YYYY-MM, YYYY-MM-DD) of an aware datetime in the tenant's timezone."""
    return _period_and_day(dt.timestamp(), tz)


@lru_cache(maxsize=256)
def _period_and_day(ts: float, tz: str) -> tuple[str, str]:
    # Cached by instant: a call's admission asks twice for the same one (its
    # counters, then its reservation), and the answer depends on nothing else.
    local = datetime.fromtimestamp(ts, zone(tz))  # f-strings: strftime costs more than the rest of this
    period = f"{local.year:04d}-{local.month:02d}"
    return period, f"{period}-{local.day:02d}"
