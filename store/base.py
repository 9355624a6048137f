"""The store: ledger, reservations, counters, alerts and directory.

The business logic lives here once; `SQLiteStore` and `PostgresStore` only
supply a connection, the transaction verbs and the placeholder style. The SQL
is written for both dialects (SQLite >= 3.35 for RETURNING and upserts).

Every public method is one transaction. Writes on SQLite start with
`BEGIN IMMEDIATE` (one writer at a time across processes); on PostgreSQL the
rows that decide a reservation are locked by the upsert that reads them
(`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`), and the reservation itself
is a conditional `UPDATE ... WHERE used + reserved + :x <= :capacity`, so two
gateways can never both spend the last minute of a pool.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from store.alerts import WebhookNotifier
from store.types import LIFETIME, BucketSpec, CallOpen, Grant, Settlement, StoreError

EPS = 1e-9
LIVE = "('open', 'answered')"
RATE_WINDOW_S = 60  # calls per minute: the organiser's calls of the last 60 whole seconds
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(sqlite|postgresql))?\.sql$")

_CALL_COLUMNS = (
    "call_id, instance_id, tenant, organizer, e164, region, tz, period, day, started_at, "
    "answered_at, heartbeat_at, state, increment_s, max_duration_s, chain, chain_pos, nres, "
    "bucket, granted_s, outcome, talk_s, billed_units, charges, recovered"
)


class _Retry(Exception):
    """Roll back and run the transaction again (lost a race on a unique key)."""


def _epoch(dt: datetime) -> float:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: the store needs aware datetimes")
    return dt.timestamp()


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {tz!r}") from exc


def period_of(dt: datetime, tz: str) -> str:
    """The billing period (YYYY-MM) of an aware datetime in the tenant's timezone."""
    return dt.astimezone(_zone(tz)).strftime("%Y-%m")


def _period_day(dt: datetime, tz: str) -> tuple[str, str]:
    day = dt.astimezone(_zone(tz)).strftime("%Y-%m-%d")
    return day[:7], day


def _encode_chain(chain: Iterable[BucketSpec]) -> str:
    return json.dumps([[s.bucket, s.capacity, s.rate_per_minute] for s in chain], separators=(",", ":"))


def _decode_chain(text: str) -> tuple[BucketSpec, ...]:
    return tuple(BucketSpec(b, c, r) for b, c, r in json.loads(text))


def load_migrations(dialect: str) -> list[tuple[int, str, list[str]]]:
    """(version, name, statements) from store/migrations/NNN_name[.dialect].sql, in order.

    A dialect-specific file (NNN_name.sqlite.sql) wins over the shared one.
    """
    chosen: dict[int, tuple[str, Path, bool]] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            continue
        version, name, only = int(m.group(1)), m.group(2), m.group(3)
        if only and only != dialect:
            continue
        if version in chosen and not only:
            continue
        chosen[version] = (name, path, bool(only))
    out = []
    for version in sorted(chosen):
        name, path, _ = chosen[version]
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
        statements = [s.strip() for s in text.split(";") if s.strip()]
        out.append((version, name, statements))
    return out


class Store(ABC):
    """Ledger, reservations, counters and directory behind one interface."""

    dialect: str = ""
    for_update: str = ""  # row lock suffix for SELECTs on PostgreSQL

    def __init__(self, *, instance_id: str, chunk_s: int = 300, log=None,
                 credits_floor: float = 0.0, alert_webhook: str | None = None) -> None:
        if chunk_s < 1:
            raise ValueError("chunk_s must be at least 1 second")
        if log is None:
            import structlog
            log = structlog.get_logger("dialout.store")
        self.instance_id = instance_id
        self.chunk_s = int(chunk_s)
        self.log = log
        self.credits_floor = float(credits_floor)
        self._alerted: set[tuple[str, str, str]] = set()
        self._pending_alerts: list[tuple[tuple[str, str, str], str, dict]] = []
        self._notifier = WebhookNotifier(alert_webhook, log) if alert_webhook else None

    # ------------------------------------------------------------------ dialect hooks

    @abstractmethod
    def _x(self, sql: str, params: tuple | list = ()) -> Any:
        """Execute one statement (written with ? placeholders); return the cursor."""

    @abstractmethod
    def _xmany(self, sql: str, rows: list[tuple]) -> None: ...

    @abstractmethod
    def _begin(self, write: bool, single_statement: bool = False) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def _classify(self, exc: BaseException) -> str | None:
        """'reconnect', 'retry' (deadlock, serialization), 'error' (driver error) or None."""

    @abstractmethod
    def _connect(self): ...

    def _reconnect(self) -> None:
        self._close_connection()
        self._conn = self._connect()
        self._cur = self._conn.cursor()

    @abstractmethod
    def _table_exists(self, name: str) -> bool: ...

    def _lock_migrations(self) -> None:
        """Serialise concurrent `migrate()` calls (SQLite: BEGIN IMMEDIATE already does)."""

    @abstractmethod
    def _close_connection(self) -> None: ...

    # ------------------------------------------------------------------ transactions

    def _run(self, fn: Callable[[], Any], *, write: bool = True, single_statement: bool = False) -> Any:
        """Run `fn` as one transaction, retried on conflicts and once after a reconnect.

        `single_statement`: `fn` reads with one statement, which is consistent
        on its own, so SQLite runs it without BEGIN/COMMIT.
        """
        reconnected = False
        attempts = 0
        while True:
            attempts += 1
            try:
                self._begin(write, single_statement)
                try:
                    result = fn()
                    self._commit()
                except BaseException:
                    self._pending_alerts.clear()
                    try:
                        self._rollback()
                    except Exception:  # noqa: BLE001 - the original error matters more
                        pass
                    raise
            except _Retry:
                if attempts < 5:
                    continue
                raise StoreError("transaction kept conflicting; giving up") from None
            except StoreError:
                raise
            except Exception as exc:
                kind = self._classify(exc)
                if kind == "reconnect" and not reconnected:
                    reconnected = True
                    self.log.warning("store_reconnect", dialect=self.dialect, error=str(exc))
                    self._reconnect()
                    continue
                if kind == "retry" and attempts < 5:
                    continue
                if kind is not None:
                    raise StoreError(f"{self.dialect} store: {exc}") from exc
                raise
            if self._pending_alerts:
                self._emit_alerts()
            return result

    # ------------------------------------------------------------------ schema

    def migrate(self) -> int:
        """Apply pending migrations; idempotent. Returns the schema version."""
        migrations = load_migrations(self.dialect)
        latest = migrations[-1][0] if migrations else 0

        def fn() -> int:
            self._lock_migrations()
            self._x("CREATE TABLE IF NOT EXISTS schema_version ("
                    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
            current = self._x("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            if current > latest:
                raise StoreError(f"database schema version {current} is newer than this gateway "
                                 f"knows ({latest}); upgrade dialout-gateway")
            now = datetime.now(timezone.utc).timestamp()
            for version, name, statements in migrations:
                if version <= current:
                    continue
                for statement in statements:
                    self._x(statement)
                self._x("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                        (version, name, now))
                self.log.info("store_migrated", dialect=self.dialect, version=version, name=name)
            return latest

        return self._run(fn)

    def schema_version(self) -> int:
        """The applied schema version; 0 for an empty database."""
        def fn() -> int:
            if not self._table_exists("schema_version"):
                return 0
            return self._x("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        return self._run(fn, write=False)

    # ------------------------------------------------------------------ counters

    def snapshot(self, *, tenant: str, organizer: str, e164: str | None, tz: str, now: datetime) -> dict:
        """What the policy needs for one decision. used/spent include live reservations.

        One statement of primary-key lookups into the running counters
        (migration 002), so its cost does not grow with the ledger.
        """
        period, day = _period_day(now, tz)
        last_minute_from = int(_epoch(now)) - RATE_WINDOW_S

        def fn() -> dict:
            row = self._x(
                "SELECT"
                " (SELECT used + reserved FROM buckets WHERE tenant = ? AND period = ? AND bucket = 'tenant_pool'),"
                " (SELECT used + reserved FROM buckets WHERE tenant = ? AND period = ? AND bucket = 'promotion'),"
                " (SELECT used + reserved FROM buckets WHERE tenant = ? AND period = ? AND bucket = 'credits'),"
                " (SELECT addon_minutes FROM organizer_periods WHERE organizer = ? AND period = ?),"
                " (SELECT calls FROM live_calls WHERE scope = 'organizer' AND id = ?),"
                " (SELECT calls FROM live_calls WHERE scope = 'tenant' AND id = ?),"
                " (SELECT SUM(calls) FROM organizer_seconds WHERE organizer = ? AND second > ?),"
                " (SELECT distinct_destinations FROM organizer_days WHERE organizer = ? AND day = ?),"
                " (SELECT COUNT(*) FROM organizer_destinations WHERE organizer = ? AND day = ? AND e164 = ?)",
                (tenant, period, tenant, period, tenant, LIFETIME, organizer, period, organizer, tenant,
                 organizer, last_minute_from, organizer, day, organizer, day, e164 or "")).fetchone()
            return {
                "pool_used_minutes": round(row[0] or 0.0, 9),
                "promotion_used_minutes": round(row[1] or 0.0, 9),
                "credits_spent": round(row[2] or 0.0, 9),
                "addon_used_minutes": float(row[3] or 0.0),
                "concurrent_organizer": int(row[4] or 0),
                "concurrent_tenant": int(row[5] or 0),
                "calls_last_minute_organizer": int(row[6] or 0),
                "distinct_destinations_today": int(row[7] or 0),
                "destination_seen_today": bool(row[8]),
            }

        return self._run(fn, write=False, single_statement=True)

    def _count_opened(self, organizer: str, tenant: str, day: str, e164: str, started: float) -> None:
        """The guard counters of a call just opened (inside open_call's transaction)."""
        self._x("INSERT INTO live_calls (scope, id, calls) VALUES ('organizer', ?, 1), ('tenant', ?, 1)"
                " ON CONFLICT (scope, id) DO UPDATE SET calls = live_calls.calls + 1", (organizer, tenant))
        self._x("INSERT INTO organizer_seconds (organizer, second, calls) VALUES (?, ?, 1)"
                " ON CONFLICT (organizer, second) DO UPDATE SET calls = organizer_seconds.calls + 1",
                (organizer, int(started)))
        new_destination = self._x(
            "INSERT INTO organizer_destinations (organizer, day, e164) VALUES (?, ?, ?)"
            " ON CONFLICT (organizer, day, e164) DO NOTHING", (organizer, day, e164)).rowcount == 1
        if new_destination:
            self._x("INSERT INTO organizer_days (organizer, day, distinct_destinations) VALUES (?, ?, 1)"
                    " ON CONFLICT (organizer, day) DO UPDATE"
                    " SET distinct_destinations = organizer_days.distinct_destinations + 1", (organizer, day))

    def _count_settled(self, organizer: str, tenant: str, period: str, addon_minutes: float) -> None:
        """The guard counters of a live call being settled (inside its transaction)."""
        self._x("UPDATE live_calls SET calls = calls - 1 WHERE calls > 0 AND"
                " ((scope = 'organizer' AND id = ?) OR (scope = 'tenant' AND id = ?))", (organizer, tenant))
        if addon_minutes:
            self._x("INSERT INTO organizer_periods (organizer, period, addon_minutes) VALUES (?, ?, ?)"
                    " ON CONFLICT (organizer, period) DO UPDATE"
                    " SET addon_minutes = organizer_periods.addon_minutes + excluded.addon_minutes",
                    (organizer, period, addon_minutes))

    def prune_counters(self, now: datetime) -> None:
        """Drop per-second call counts that no rate window can reach any more."""
        horizon = int(_epoch(now)) - 5 * RATE_WINDOW_S
        self._run(lambda: self._x("DELETE FROM organizer_seconds WHERE second < ?", (horizon,)))

    # ------------------------------------------------------------------ reservations

    def _chunk_units(self, increment_s: int) -> int:
        return max(1, self.chunk_s // increment_s)

    def _reserve(self, call_id: str, tenant: str, period: str, chain: tuple[BucketSpec, ...],
                 start_pos: int, seq: int, granted: int, increment_s: int,
                 max_duration_s: int | None) -> tuple[int, int, str, int | None] | None:
        """Reserve the next chunk from chain[start_pos:], inside the caller's transaction.

        Returns (chain position, next seq, bucket, total granted seconds or None
        for unlimited), or None when no bucket has a billing unit left.
        """
        want = self._chunk_units(increment_s)
        if max_duration_s is not None:
            remaining_s = max_duration_s - granted
            if remaining_s <= 0:
                return None
            want = min(want, math.ceil(remaining_s / increment_s))
        for pos in range(start_pos, len(chain)):
            spec = chain[pos]
            is_credits = spec.bucket == "credits"
            bperiod = LIFETIME if is_credits else period
            unit_amount = increment_s / 60.0 * (spec.rate_per_minute if is_credits else 1.0)
            if spec.capacity is None:
                cur = self._x("INSERT INTO reservations (call_id, seq, tenant, period, bucket, units, unit_amount,"
                              " amount) VALUES (?, ?, ?, ?, ?, NULL, ?, 0) ON CONFLICT (call_id, seq) DO NOTHING",
                              (call_id, seq, tenant, bperiod, spec.bucket, unit_amount))
                if cur.rowcount != 1:
                    raise _Retry()
                return pos, seq + 1, spec.bucket, None
            capacity = float(spec.capacity)
            # Upsert = lock the bucket row and read its latest committed state.
            used, reserved = self._x(
                "INSERT INTO buckets (tenant, period, bucket, capacity, used, reserved) VALUES (?, ?, ?, ?, 0, 0)"
                " ON CONFLICT (tenant, period, bucket) DO UPDATE SET capacity = excluded.capacity"
                " RETURNING used, reserved",
                (tenant, bperiod, spec.bucket, capacity)).fetchall()[0]
            left = capacity - used - reserved
            if unit_amount > 0:
                units = min(want, math.floor(left / unit_amount + EPS))
            else:
                units = want if left >= -EPS else 0
            if units <= 0:
                continue
            amount = units * unit_amount
            cur = self._x("UPDATE buckets SET reserved = reserved + ? WHERE tenant = ? AND period = ? AND bucket = ?"
                          " AND used + reserved + ? <= ?",
                          (amount, tenant, bperiod, spec.bucket, amount, capacity + EPS))
            if cur.rowcount != 1:  # cannot happen while we hold the row; never overspend if it does
                continue
            cur = self._x("INSERT INTO reservations (call_id, seq, tenant, period, bucket, units, unit_amount, amount)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_id, seq) DO NOTHING",
                          (call_id, seq, tenant, bperiod, spec.bucket, units, unit_amount, amount))
            if cur.rowcount != 1:
                raise _Retry()  # the Call-ID already has this chunk: a replayed open_call
            total = granted + units * increment_s
            if max_duration_s is not None:
                total = min(total, max_duration_s)
            return pos, seq + 1, spec.bucket, total
        return None

    def open_call(self, call: CallOpen) -> Grant | None:
        """Reserve the first chunk and record the call; idempotent per call_id.

        None: nothing could be reserved (the gateway rejects no_entitlement) and
        nothing is recorded. Otherwise the call counts in the live counters at once.
        """
        if call.increment_s < 1:
            raise ValueError("increment_s must be at least 1")
        started = _epoch(call.started_at)
        period, day = _period_day(call.started_at, call.tz)
        chain_json = _encode_chain(call.chain)

        replay = [False]  # first try without the lookup: a repeated Call-ID is rare

        def fn() -> Grant | None:
            try:
                return attempt()
            except _Retry:
                replay[0] = True
                raise

        def attempt() -> Grant | None:
            if replay[0]:
                row = self._x("SELECT bucket, granted_s FROM calls WHERE call_id = ?", (call.call_id,)).fetchone()
                if row is not None:
                    return Grant(row[0], row[1])
            got = self._reserve(call.call_id, call.tenant, period, call.chain, 0, 0, 0,
                                call.increment_s, call.max_duration_s)
            if got is None:
                if not replay[0]:  # nothing left: but is this Call-ID already open?
                    row = self._x("SELECT bucket, granted_s FROM calls WHERE call_id = ?", (call.call_id,)).fetchone()
                    if row is not None:
                        return Grant(row[0], row[1])
                return None
            pos, nres, bucket, granted = got
            cur = self._x(
                "INSERT INTO calls (call_id, instance_id, tenant, organizer, e164, region, tz, period, day,"
                " started_at, state, increment_s, max_duration_s, chain, chain_pos, nres, bucket, granted_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (call_id) DO NOTHING",
                (call.call_id, self.instance_id, call.tenant, call.organizer, call.e164, call.region, call.tz,
                 period, day, started, call.increment_s, call.max_duration_s, chain_json, pos, nres, bucket,
                 granted))
            if cur.rowcount != 1:
                raise _Retry()  # the Call-ID is already open (a retransmission, or another instance): roll back, return its grant
            self._count_opened(call.organizer, call.tenant, day, call.e164, started)
            return Grant(bucket, granted)

        return self._run(fn)

    def extend(self, call_id: str, now: datetime) -> Grant | None:
        """Reserve the next chunk (same bucket, or the next in the chain when dry).

        None: exhausted (or the call is closed or unknown); the current grant stands.
        An answered call's heartbeat moves to `now` as well.
        """
        now_ts = _epoch(now)

        def fn() -> Grant | None:
            row = self._x("SELECT tenant, period, chain, chain_pos, nres, bucket, granted_s, increment_s,"
                          " max_duration_s, state, answered_at FROM calls WHERE call_id = ?" + self.for_update,
                          (call_id,)).fetchone()
            if row is None or row[9] == "closed":
                return None
            tenant, period, chain, pos, nres, bucket, granted, inc, max_d, _state, answered_at = row
            if granted is None:
                return Grant(bucket, None)
            got = self._reserve(call_id, tenant, period, _decode_chain(chain), pos, nres, granted, inc, max_d)
            if got is None:
                return None
            pos, nres, bucket, granted = got
            self._x("UPDATE calls SET chain_pos = ?, nres = ?, bucket = ?, granted_s = ?,"
                    " heartbeat_at = CASE WHEN answered_at IS NULL THEN heartbeat_at ELSE ? END WHERE call_id = ?",
                    (pos, nres, bucket, granted, now_ts, call_id))
            return Grant(bucket, granted)

        return self._run(fn)

    def answered(self, call_id: str, at: datetime) -> None:
        at_ts = _epoch(at)
        self._run(lambda: self._x("UPDATE calls SET answered_at = ?, state = 'answered'"
                                  " WHERE call_id = ? AND state = 'open'", (at_ts, call_id)))

    def heartbeat(self, call_ids: Iterable[str], at: datetime) -> None:
        """Record that these calls are still up at `at`: one transaction for all."""
        at_ts = _epoch(at)
        rows = [(at_ts, cid) for cid in sorted(set(call_ids))]
        if not rows:
            return
        self._run(lambda: self._xmany(
            f"UPDATE calls SET heartbeat_at = ? WHERE call_id = ? AND state IN {LIVE}", rows))

    # ------------------------------------------------------------------ settlement

    def close_call(self, call_id: str, ended_at: datetime, outcome: str, *,
                   a_status: int | None = None, b_status: int | None = None,
                   answered_at: datetime | None = None) -> Settlement:
        """Settle a call; idempotent: a second close returns the first Settlement.

        `answered_at` is the caller's own record of the answer, used when the
        `answered()` write itself was lost (e.g. the disk was full then).
        """
        end_ts = _epoch(ended_at)

        def fn() -> Settlement:
            row = self._x(f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?" + self.for_update,
                          (call_id,)).fetchone()
            if row is None:
                self.log.warning("store_close_unknown_call", call_id=call_id, outcome=outcome)
                return Settlement(call_id, outcome, 0.0, 0, 60, (), False)
            if row[12] == "closed":
                return self._settlement_of(row)
            if row[10] is None and answered_at is not None:
                row = (*row[:10], _epoch(answered_at), *row[11:])
            return self._settle(row, end_ts, outcome, False, a_status, b_status)

        return self._run(fn)

    @staticmethod
    def _settlement_of(row) -> Settlement:
        charges = tuple((b, a) for b, a in json.loads(row[23] or "[]"))
        return Settlement(row[0], row[20], row[21] or 0.0, row[22] or 0, row[13], charges, bool(row[24]))

    def _settle(self, row, end_ts: float, outcome: str, recovered: bool,
                a_status: int | None, b_status: int | None) -> Settlement:
        (call_id, _inst, tenant, org, _e164, _region, _tz, period, _day, _started, answered_at,
         _hb, _state, inc, max_d, _chain, _pos, _nres, _bucket, granted, *_rest) = row
        talk = round(max(0.0, end_ts - answered_at), 3) if answered_at is not None else 0.0
        billable = talk
        if granted is not None:
            billable = min(billable, granted)
        if max_d is not None:
            billable = min(billable, max_d)
        units_left = billed_units = max(0, math.ceil(billable / inc - EPS)) if billable > 0 else 0
        charges: dict[str, float] = {}
        addon = 0.0
        checks: list[tuple[str, float, float | None]] = []
        for seq, bperiod, bucket, units, unit_amount, amount in self._x(
                "SELECT seq, period, bucket, units, unit_amount, amount FROM reservations"
                " WHERE call_id = ? ORDER BY seq", (call_id,)).fetchall():
            take = units_left if units is None else min(units_left, units)
            units_left -= take
            debit = take * unit_amount
            if debit or amount:
                used, capacity = self._x(
                    "INSERT INTO buckets (tenant, period, bucket, capacity, used, reserved) VALUES (?, ?, ?, NULL, ?, 0)"
                    " ON CONFLICT (tenant, period, bucket) DO UPDATE SET used = buckets.used + excluded.used,"
                    " reserved = CASE WHEN buckets.reserved - ? < ? THEN 0 ELSE buckets.reserved - ? END"
                    " RETURNING used, capacity",
                    (tenant, bperiod, bucket, debit, amount, EPS, amount)).fetchall()[0]
                if bucket in ("tenant_pool", "credits"):
                    checks.append((bucket, used, capacity))
            self._x("UPDATE reservations SET debited = ? WHERE call_id = ? AND seq = ?", (debit, call_id, seq))
            if debit:
                charges[bucket] = charges.get(bucket, 0.0) + debit
            if bucket == "usca_unlimited":
                addon += debit
        charge_list = tuple((b, round(a, 6)) for b, a in charges.items())
        self._count_settled(org, tenant, period, addon)
        self._x("UPDATE calls SET state = 'closed', ended_at = ?, outcome = ?, a_status = ?, b_status = ?,"
                " talk_s = ?, billed_units = ?, addon_minutes = ?, charges = ?, recovered = ? WHERE call_id = ?",
                (end_ts, outcome, a_status, b_status, talk, billed_units, addon,
                 json.dumps(charge_list, separators=(",", ":")), int(recovered), call_id))
        for bucket, used, capacity in checks:
            self._check_alerts(tenant, period, bucket, used, capacity, end_ts)
        return Settlement(call_id, outcome, talk, billed_units, inc, charge_list, recovered)

    def recover_open_calls(self, now: datetime, *, stale_after_s: float | None = None,
                           include_own: bool = True) -> list[Settlement]:
        """Settle this instance's calls left open by a previous run, outcome "recovered".

        Each is charged up to its last heartbeat (or its answer time: talk 0
        when no heartbeat followed the answer). With `stale_after_s`, calls of
        other instances whose last sign of life is older than that are settled
        too (an instance that died for good). A running gateway sweeps with
        `include_own=False`, so that its own live calls are left alone.
        """
        now_ts = _epoch(now)

        def find() -> list[str]:
            ids = [r[0] for r in self._x(
                f"SELECT call_id FROM calls WHERE instance_id = ? AND state IN {LIVE}",
                (self.instance_id,)).fetchall()] if include_own else []
            if stale_after_s is not None:
                ids += [r[0] for r in self._x(
                    f"SELECT call_id FROM calls WHERE state IN {LIVE} AND instance_id <> ?"
                    " AND COALESCE(heartbeat_at, answered_at, started_at) < ?",
                    (self.instance_id, now_ts - stale_after_s)).fetchall()]
            return ids

        out = []
        for call_id in self._run(find, write=False):
            def fn(call_id=call_id) -> Settlement | None:
                row = self._x(f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?" + self.for_update,
                              (call_id,)).fetchone()
                if row is None or row[12] == "closed":
                    return None
                answered_at, heartbeat_at = row[10], row[11]
                if answered_at is None:
                    end = row[9]
                else:
                    end = max(answered_at, heartbeat_at if heartbeat_at is not None else answered_at)
                return self._settle(row, end, "recovered", True, None, None)

            settlement = self._run(fn)
            if settlement is not None:
                self.log.warning("call_recovered", call_id=call_id, talk_s=settlement.talk_s,
                                 billed_units=settlement.billed_units, charges=settlement.charges)
                out.append(settlement)
        return out

    # ------------------------------------------------------------------ alerts

    def _check_alerts(self, tenant: str, period: str, bucket: str, used: float,
                      capacity: float | None, now_ts: float) -> None:
        if capacity is None:
            return
        if bucket == "tenant_pool":
            if capacity <= 0:
                return
            percent = used / capacity * 100.0
            for level in (80, 100):
                if percent + EPS >= level:
                    self._raise_alert(tenant, period, f"pool_{level}", "pool_threshold", now_ts,
                                      percent=level, used_minutes=round(used, 6), pool_minutes=capacity)
        elif bucket == "credits":
            left = capacity - used
            if left <= self.credits_floor + EPS:
                self._raise_alert(tenant, period, "credits_low", "credits_low", now_ts,
                                  balance_left=round(left, 6), floor=self.credits_floor, balance=capacity)

    def _raise_alert(self, tenant: str, period: str, kind: str, event: str, now_ts: float, **detail) -> None:
        key = (tenant, period, kind)
        if key in self._alerted:
            return
        cur = self._x("INSERT INTO alerts (tenant, period, kind, created_at, detail) VALUES (?, ?, ?, ?, ?)"
                      " ON CONFLICT (tenant, period, kind) DO NOTHING",
                      (tenant, period, kind, now_ts, json.dumps(detail)))
        if cur.rowcount == 1:
            self._pending_alerts.append((key, event, {"tenant": tenant, "period": period, **detail}))
        else:
            self._alerted.add(key)

    def _emit_alerts(self) -> None:
        pending, self._pending_alerts = self._pending_alerts, []
        for key, event, fields in pending:
            self._alerted.add(key)
            self.log.warning(event, **fields)
            if self._notifier is not None:
                self._notifier.post({"event": event, **fields})

    def alerts(self, *, tenant: str | None = None) -> list[dict]:
        """Alerts raised so far (for reports and tests)."""
        sql = "SELECT tenant, period, kind, created_at, detail FROM alerts"
        params: tuple = ()
        if tenant is not None:
            sql += " WHERE tenant = ?"
            params = (tenant,)
        rows = self._run(lambda: self._x(sql + " ORDER BY created_at, kind", params).fetchall(), write=False)
        return [{"tenant": t, "period": p, "kind": k, "created_at": c, **json.loads(d)} for t, p, k, c, d in rows]

    # ------------------------------------------------------------------ ledger reads

    def call_row(self, call_id: str) -> dict | None:
        """One call as a dict (for tests, `explain` and operators)."""
        def fn():
            cur = self._x("SELECT * FROM calls WHERE call_id = ?", (call_id,))
            row = cur.fetchone()
            if row is None:
                return None
            return dict(zip([d[0] for d in cur.description], row))
        return self._run(fn, write=False)

    def bucket_row(self, tenant: str, period: str, bucket: str) -> dict | None:
        row = self._run(lambda: self._x(
            "SELECT capacity, used, reserved FROM buckets WHERE tenant = ? AND period = ? AND bucket = ?",
            (tenant, period, bucket)).fetchone(), write=False)
        if row is None:
            return None
        return {"capacity": row[0], "used": row[1], "reserved": row[2]}

    def usage_report(self, *, tenant: str | None = None, month: str | None = None, tenants_config=(),
                     now: datetime | None = None, top: int = 5, pool_minutes_per_licence: int = 60) -> dict:
        """Per tenant: pool size/used/remaining, credits spent/left, add-on minutes, top organisers
        and destinations. `month` is YYYY-MM (default: the current month in each tenant's timezone)."""
        from store.report import build_usage_report
        return build_usage_report(self, tenant=tenant, month=month, tenants_config=tenants_config,
                                  now=now or datetime.now(timezone.utc), top=top,
                                  pool_minutes_per_licence=pool_minutes_per_licence)

    # ------------------------------------------------------------------ directory

    def import_directory(self, tenants: list[dict], organizers: list[dict]) -> tuple[int, int]:
        """Upsert tenants and organisers (dicts with the TOML keys). Returns the counts."""
        now = datetime.now(timezone.utc).timestamp()
        trows = [(str(t["id"]), json.dumps(t, sort_keys=True), now) for t in tenants]
        orows = [(str(o["id"]), str(o["tenant"]), json.dumps(o, sort_keys=True), now) for o in organizers]

        def fn() -> tuple[int, int]:
            if trows:
                self._xmany("INSERT INTO tenants (id, data, updated_at) VALUES (?, ?, ?) ON CONFLICT (id)"
                            " DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at", trows)
            if orows:
                self._xmany("INSERT INTO organizers (id, tenant, data, updated_at) VALUES (?, ?, ?, ?)"
                            " ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, data = excluded.data,"
                            " updated_at = excluded.updated_at", orows)
            return len(trows), len(orows)

        return self._run(fn)

    def directory_rows(self) -> tuple[list[dict], list[dict]]:
        """All imported (tenants, organizers), as dicts with the TOML keys, ordered by id."""
        def fn():
            tenants = [json.loads(d) for (d,) in self._x("SELECT data FROM tenants ORDER BY id").fetchall()]
            organizers = [json.loads(d) for (d,) in self._x("SELECT data FROM organizers ORDER BY id").fetchall()]
            return tenants, organizers
        return self._run(fn, write=False)

    # ------------------------------------------------------------------ lifecycle

    def start_background_maintenance(self) -> None:
        """Move housekeeping I/O off the caller's thread (the gateway's SIP
        loop). Nothing to do by default; SQLite checkpoints its WAL there."""

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()
            self._notifier = None
        self._close_connection()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
