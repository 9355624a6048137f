"""The running counters behind the fair-use and fraud guards (migration 002).

The snapshot read on every INVITE is one statement of primary-key lookups
into these counters, so its cost does not grow with the ledger. They are
written in the same transaction as the call they count: `open_call`
increments them once its call row is inserted, settlement decrements them.

| table | key | counts |
|---|---|---|
| `live_calls` | (scope, id) | calls open or answered, per organiser and per tenant |
| `organizer_seconds` | (organizer, second) | calls started per epoch second (the rate window) |
| `organizer_destinations`, `organizer_days` | (organizer, day[, e164]) | distinct destinations per day |
| `organizer_periods` | (organizer, period) | settled US/CA add-on minutes per month |
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from store.core import StoreCore
from store.periods import epoch, period_and_day
from store.types import LIFETIME

RATE_WINDOW_S = 60  # calls per minute: the organiser's calls of the last 60 whole seconds


class CounterRow(NamedTuple):
    """What `snapshot` reads; each field is one primary-key lookup (None: no row)."""

    pool_used: float | None
    promotion_used: float | None
    credits_spent: float | None
    addon_minutes: float | None
    concurrent_organizer: int | None
    concurrent_tenant: int | None
    calls_last_minute: int | None
    distinct_destinations: int | None
    destination_seen: int


_SNAPSHOT_SQL = (
    "SELECT"
    " (SELECT used + reserved FROM buckets WHERE tenant = ? AND period = ? AND bucket = 'tenant_pool') AS pool_used,"
    " (SELECT used + reserved FROM buckets WHERE tenant = ? AND period = ? AND bucket = 'promotion')"
    " AS promotion_used,"
    " (SELECT used + reserved FROM buckets WHERE tenant = ? AND period = ? AND bucket = 'credits') AS credits_spent,"
    " (SELECT addon_minutes FROM organizer_periods WHERE organizer = ? AND period = ?) AS addon_minutes,"
    " (SELECT calls FROM live_calls WHERE scope = 'organizer' AND id = ?) AS concurrent_organizer,"
    " (SELECT calls FROM live_calls WHERE scope = 'tenant' AND id = ?) AS concurrent_tenant,"
    " (SELECT SUM(calls) FROM organizer_seconds WHERE organizer = ? AND second > ?) AS calls_last_minute,"
    " (SELECT distinct_destinations FROM organizer_days WHERE organizer = ? AND day = ?) AS distinct_destinations,"
    " (SELECT COUNT(*) FROM organizer_destinations WHERE organizer = ? AND day = ? AND e164 = ?)"
    " AS destination_seen"
)


class CountersMixin(StoreCore):
    def snapshot(self, *, tenant: str, organizer: str, e164: str | None, tz: str, now: datetime) -> dict[str, Any]:
        """What the policy needs for one decision. used/spent include live reservations.

        One statement of primary-key lookups into the running counters
        (migration 002), so its cost does not grow with the ledger.
        """
        period, day = period_and_day(now, tz)
        last_minute_from = int(epoch(now)) - RATE_WINDOW_S
        params = (
            tenant,
            period,
            tenant,
            period,
            tenant,
            LIFETIME,
            organizer,
            period,
            organizer,
            tenant,
            organizer,
            last_minute_from,
            organizer,
            day,
            organizer,
            day,
            e164 or "",
        )

        def fn() -> dict[str, Any]:
            row = self._one(CounterRow, _SNAPSHOT_SQL, params)
            assert row is not None  # a SELECT without FROM: always one row
            return {
                "pool_used_minutes": round(row.pool_used or 0.0, 9),
                "promotion_used_minutes": round(row.promotion_used or 0.0, 9),
                "credits_spent": round(row.credits_spent or 0.0, 9),
                "addon_used_minutes": float(row.addon_minutes or 0.0),
                "concurrent_organizer": int(row.concurrent_organizer or 0),
                "concurrent_tenant": int(row.concurrent_tenant or 0),
                "calls_last_minute_organizer": int(row.calls_last_minute or 0),
                "distinct_destinations_today": int(row.distinct_destinations or 0),
                "destination_seen_today": bool(row.destination_seen),
            }

        return self._run(fn, write=False, single_statement=True)

    def _count_opened(self, organizer: str, tenant: str, day: str, e164: str, started: float) -> None:
        """The guard counters of a call just opened (inside open_call's transaction)."""
        self._x(
            "INSERT INTO live_calls (scope, id, calls) VALUES ('organizer', ?, 1), ('tenant', ?, 1)"
            " ON CONFLICT (scope, id) DO UPDATE SET calls = live_calls.calls + 1",
            (organizer, tenant),
        )
        self._x(
            "INSERT INTO organizer_seconds (organizer, second, calls) VALUES (?, ?, 1)"
            " ON CONFLICT (organizer, second) DO UPDATE SET calls = organizer_seconds.calls + 1",
            (organizer, int(started)),
        )
        new_destination = (
            self._x(
                "INSERT INTO organizer_destinations (organizer, day, e164) VALUES (?, ?, ?)"
                " ON CONFLICT (organizer, day, e164) DO NOTHING",
                (organizer, day, e164),
            ).rowcount
            == 1
        )
        if new_destination:
            self._x(
                "INSERT INTO organizer_days (organizer, day, distinct_destinations) VALUES (?, ?, 1)"
                " ON CONFLICT (organizer, day) DO UPDATE"
                " SET distinct_destinations = organizer_days.distinct_destinations + 1",
                (organizer, day),
            )

    def _count_settled(self, organizer: str, tenant: str, period: str, addon_minutes: float) -> None:
        """The guard counters of a live call being settled (inside its transaction)."""
        self._x(
            "UPDATE live_calls SET calls = calls - 1 WHERE calls > 0 AND"
            " ((scope = 'organizer' AND id = ?) OR (scope = 'tenant' AND id = ?))",
            (organizer, tenant),
        )
        if addon_minutes:
            self._x(
                "INSERT INTO organizer_periods (organizer, period, addon_minutes) VALUES (?, ?, ?)"
                " ON CONFLICT (organizer, period) DO UPDATE"
                " SET addon_minutes = organizer_periods.addon_minutes + excluded.addon_minutes",
                (organizer, period, addon_minutes),
            )

    def prune_counters(self, now: datetime) -> None:
        """Drop per-second call counts that no rate window can reach any more."""
        horizon = int(epoch(now)) - 5 * RATE_WINDOW_S
        self._run(lambda: self._x("DELETE FROM organizer_seconds WHERE second < ?", (horizon,)))
