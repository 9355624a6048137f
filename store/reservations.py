"""Reservations: a call's quota, taken chunk by chunk (docs/ledger.md, "How charging works").

- `open_call` reserves the first chunk and records the call (`calls` row,
  state `open`), and counts it in the guard counters.
- `extend` reserves the next chunk, from the same bucket or the next one in
  the call's chain when that bucket is dry.
- `answered` and `heartbeat` record that the call is talking / still up:
  settlement and recovery charge from these times.

Why two gateways cannot both spend the last minute: a reservation starts
with an upsert of the bucket row (`INSERT ... ON CONFLICT DO UPDATE ...
RETURNING`), which locks it and reads its latest committed state; then a
conditional `UPDATE ... WHERE used + reserved + :x <= :capacity` takes the
chunk. Settlement (settlement.py) debits and releases the chunks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime

from store.core import RetryTransaction
from store.counters import CountersMixin
from store.periods import epoch, period_and_day
from store.rows import CALL_COLUMNS, EPS, LIVE, BucketLevel, CallRow, GrantRow
from store.types import LIFETIME, BucketSpec, CallOpen, Grant

_compact_json = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps would build one per call


def encode_chain(chain: Iterable[BucketSpec]) -> str:
    return _compact_json([[s.bucket, s.capacity, s.rate_per_minute] for s in chain])


def decode_chain(text: str) -> tuple[BucketSpec, ...]:
    return tuple(BucketSpec(b, c, r) for b, c, r in json.loads(text))


class ReservationsMixin(CountersMixin):
    def _chunk_units(self, increment_s: int) -> int:
        return max(1, self.chunk_s // increment_s)

    def _reserve(
        self,
        call_id: str,
        tenant: str,
        period: str,
        chain: tuple[BucketSpec, ...],
        start_pos: int,
        seq: int,
        granted: int,
        increment_s: int,
        max_duration_s: int | None,
    ) -> tuple[int, int, str, int | None] | None:
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
                cur = self._x(
                    "INSERT INTO reservations (call_id, seq, tenant, period, bucket, units, unit_amount,"
                    " amount) VALUES (?, ?, ?, ?, ?, NULL, ?, 0) ON CONFLICT (call_id, seq) DO NOTHING",
                    (call_id, seq, tenant, bperiod, spec.bucket, unit_amount),
                )
                if cur.rowcount != 1:
                    raise RetryTransaction()
                return pos, seq + 1, spec.bucket, None
            capacity = float(spec.capacity)
            # Upsert = lock the bucket row and read its latest committed state.
            level = self._one(
                BucketLevel,
                "INSERT INTO buckets (tenant, period, bucket, capacity, used, reserved) VALUES (?, ?, ?, ?, 0, 0)"
                " ON CONFLICT (tenant, period, bucket) DO UPDATE SET capacity = excluded.capacity"
                " RETURNING used, reserved",
                (tenant, bperiod, spec.bucket, capacity),
            )
            assert level is not None  # the upsert always returns its row
            left = capacity - level.used - level.reserved
            if unit_amount > 0:
                units = min(want, math.floor(left / unit_amount + EPS))
            else:
                units = want if left >= -EPS else 0
            if units <= 0:
                continue
            amount = units * unit_amount
            cur = self._x(
                "UPDATE buckets SET reserved = reserved + ? WHERE tenant = ? AND period = ? AND bucket = ?"
                " AND used + reserved + ? <= ?",
                (amount, tenant, bperiod, spec.bucket, amount, capacity + EPS),
            )
            if cur.rowcount != 1:  # cannot happen while we hold the row; never overspend if it does
                continue
            cur = self._x(
                "INSERT INTO reservations (call_id, seq, tenant, period, bucket, units, unit_amount, amount)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_id, seq) DO NOTHING",
                (call_id, seq, tenant, bperiod, spec.bucket, units, unit_amount, amount),
            )
            if cur.rowcount != 1:
                raise RetryTransaction()  # the Call-ID already has this chunk: a replayed open_call
            total = granted + units * increment_s
            if max_duration_s is not None:
                total = min(total, max_duration_s)
            return pos, seq + 1, spec.bucket, total
        return None

    def _grant_of(self, call_id: str) -> Grant | None:
        row = self._one(GrantRow, "SELECT bucket, granted_s FROM calls WHERE call_id = ?", (call_id,))
        return None if row is None else Grant(row.bucket, row.granted_s)

    def open_call(self, call: CallOpen) -> Grant | None:
        """Reserve the first chunk and record the call; idempotent per call_id.

        None: nothing could be reserved (the gateway rejects no_entitlement) and
        nothing is recorded. Otherwise the call counts in the live counters at once.
        """
        if call.increment_s < 1:
            raise ValueError("increment_s must be at least 1")
        started = epoch(call.started_at)
        period, day = period_and_day(call.started_at, call.tz)
        chain_json = encode_chain(call.chain)

        replay = False  # first try without the lookup: a repeated Call-ID is rare

        def fn() -> Grant | None:
            nonlocal replay
            try:
                return attempt()
            except RetryTransaction:
                replay = True
                raise

        def attempt() -> Grant | None:
            if replay:
                grant = self._grant_of(call.call_id)
                if grant is not None:
                    return grant
            got = self._reserve(
                call.call_id, call.tenant, period, call.chain, 0, 0, 0, call.increment_s, call.max_duration_s
            )
            if got is None:
                # Nothing left: but is this Call-ID already open?
                return None if replay else self._grant_of(call.call_id)
            pos, nres, bucket, granted = got
            cur = self._x(
                "INSERT INTO calls (call_id, instance_id, tenant, organizer, e164, region, tz, period, day,"
                " started_at, state, increment_s, max_duration_s, chain, chain_pos, nres, bucket, granted_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (call_id) DO NOTHING",
                (
                    call.call_id,
                    self.instance_id,
                    call.tenant,
                    call.organizer,
                    call.e164,
                    call.region,
                    call.tz,
                    period,
                    day,
                    started,
                    call.increment_s,
                    call.max_duration_s,
                    chain_json,
                    pos,
                    nres,
                    bucket,
                    granted,
                ),
            )
            if cur.rowcount != 1:
                # The Call-ID is already open (a retransmission, or another
                # instance): roll back, return its grant.
                raise RetryTransaction()
            self._count_opened(call.organizer, call.tenant, day, call.e164, started)
            return Grant(bucket, granted)

        return self._run(fn)

    def extend(self, call_id: str, now: datetime) -> Grant | None:
        """Reserve the next chunk (same bucket, or the next in the chain when dry).

        None: exhausted (or the call is closed or unknown); the current grant stands.
        An answered call's heartbeat moves to `now` as well.
        """
        now_ts = epoch(now)

        def fn() -> Grant | None:
            call = self._one(
                CallRow, f"SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?" + self.for_update, (call_id,)
            )
            if call is None or call.state == "closed":
                return None
            if call.granted_s is None:
                return Grant(call.bucket, None)
            got = self._reserve(
                call_id,
                call.tenant,
                call.period,
                decode_chain(call.chain),
                call.chain_pos,
                call.nres,
                call.granted_s,
                call.increment_s,
                call.max_duration_s,
            )
            if got is None:
                return None
            pos, nres, bucket, granted = got
            self._x(
                "UPDATE calls SET chain_pos = ?, nres = ?, bucket = ?, granted_s = ?,"
                " heartbeat_at = CASE WHEN answered_at IS NULL THEN heartbeat_at ELSE ? END WHERE call_id = ?",
                (pos, nres, bucket, granted, now_ts, call_id),
            )
            return Grant(bucket, granted)

        return self._run(fn)

    def answered(self, call_id: str, at: datetime) -> None:
        at_ts = epoch(at)
        self._run(
            lambda: self._x(
                "UPDATE calls SET answered_at = ?, state = 'answered' WHERE call_id = ? AND state = 'open'",
                (at_ts, call_id),
            )
        )

    def heartbeat(self, call_ids: Iterable[str], at: datetime) -> None:
        """Record that these calls are still up at `at`: one transaction for all."""
        at_ts = epoch(at)
        rows = [(at_ts, cid) for cid in sorted(set(call_ids))]
        if not rows:
            return
        self._run(lambda: self._xmany(f"UPDATE calls SET heartbeat_at = ? WHERE call_id = ? AND state IN {LIVE}", rows))
