"""Settlement: what a call is charged when it ends, or after a crash.

- `close_call` settles a call at its end (BYE, CANCEL, failure, timeout).
- `recover_open_calls` settles the calls a crashed instance left open,
  charged up to their last heartbeat.

Both go through `_settle`, and only a call not yet closed is settled, so
settlement is idempotent per Call-ID: a second close (a late BYE after
recovery, or a second recovery) returns the stored `Settlement` and
charges nothing. Settling debits the call's chunks in the order they were
reserved, releases the rest, decrements the guard counters and checks the
pool and credits alerts, all in the call's one transaction.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from functools import partial
from typing import NamedTuple, cast

from store.alerts import AlertsMixin
from store.counters import CountersMixin
from store.periods import epoch
from store.rows import CALL_COLUMNS, EPS, LIVE, BucketAfterDebit, CallRow, ChunkRow
from store.types import Settlement

_SELECT_CALL = f"SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?"
_compact_json = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps would build one per call


class CallIdRow(NamedTuple):
    call_id: str


def settlement_of(call: CallRow) -> Settlement:
    """The stored Settlement of a closed call."""
    charges = tuple((b, a) for b, a in json.loads(call.charges or "[]"))
    return Settlement(
        call.call_id,
        cast(str, call.outcome),  # a closed call's is always set
        call.talk_s or 0.0,
        call.billed_units or 0,
        call.increment_s,
        charges,
        bool(call.recovered),
    )


class SettlementMixin(CountersMixin, AlertsMixin):
    def close_call(
        self,
        call_id: str,
        ended_at: datetime,
        outcome: str,
        *,
        a_status: int | None = None,
        b_status: int | None = None,
        answered_at: datetime | None = None,
    ) -> Settlement:
        """Settle a call; idempotent: a second close returns the first Settlement.

        `answered_at` is the caller's own record of the answer, used when the
        `answered()` write itself was lost (e.g. the disk was full then).
        """
        end_ts = epoch(ended_at)
        answered_ts = epoch(answered_at) if answered_at is not None else None

        def fn() -> Settlement:
            call = self._one(CallRow, _SELECT_CALL + self.for_update, (call_id,))
            if call is None:
                self.log.warning("store_close_unknown_call", call_id=call_id, outcome=outcome)
                return Settlement(call_id, outcome, 0.0, 0, 60, (), False)
            if call.state == "closed":
                return settlement_of(call)
            if call.answered_at is None and answered_ts is not None:
                call = call._replace(answered_at=answered_ts)
            return self._settle(call, end_ts, outcome, False, a_status, b_status)

        return self._run(fn)

    def _settle(
        self, call: CallRow, end_ts: float, outcome: str, recovered: bool, a_status: int | None, b_status: int | None
    ) -> Settlement:
        """Charge a live call and close it, inside the caller's transaction."""
        talk = round(max(0.0, end_ts - call.answered_at), 3) if call.answered_at is not None else 0.0
        billable = talk
        if call.granted_s is not None:
            billable = min(billable, call.granted_s)
        if call.max_duration_s is not None:
            billable = min(billable, call.max_duration_s)
        inc = call.increment_s
        units_left = billed_units = max(0, math.ceil(billable / inc - EPS)) if billable > 0 else 0
        charges: dict[str, float] = {}
        addon = 0.0
        checks: list[tuple[str, BucketAfterDebit]] = []
        chunks = self._all(
            ChunkRow,
            "SELECT seq, period, bucket, units, unit_amount, amount FROM reservations WHERE call_id = ? ORDER BY seq",
            (call.call_id,),
        )
        for chunk in chunks:
            take = units_left if chunk.units is None else min(units_left, chunk.units)
            units_left -= take
            debit = take * chunk.unit_amount
            if debit or chunk.amount:
                after = self._one(
                    BucketAfterDebit,
                    "INSERT INTO buckets (tenant, period, bucket, capacity, used, reserved) VALUES (?, ?, ?, NULL, ?, 0)"
                    " ON CONFLICT (tenant, period, bucket) DO UPDATE SET used = buckets.used + excluded.used,"
                    " reserved = CASE WHEN buckets.reserved - ? < ? THEN 0 ELSE buckets.reserved - ? END"
                    " RETURNING used, capacity",
                    (call.tenant, chunk.period, chunk.bucket, debit, chunk.amount, EPS, chunk.amount),
                )
                assert after is not None  # the upsert always returns its row
                if chunk.bucket in ("tenant_pool", "credits"):
                    checks.append((chunk.bucket, after))
            self._x(
                "UPDATE reservations SET debited = ? WHERE call_id = ? AND seq = ?", (debit, call.call_id, chunk.seq)
            )
            if debit:
                charges[chunk.bucket] = charges.get(chunk.bucket, 0.0) + debit
            if chunk.bucket == "usca_unlimited":
                addon += debit
        charge_list = tuple((b, round(a, 6)) for b, a in charges.items())
        self._count_settled(call.organizer, call.tenant, call.period, addon)
        self._x(
            "UPDATE calls SET state = 'closed', ended_at = ?, outcome = ?, a_status = ?, b_status = ?,"
            " talk_s = ?, billed_units = ?, addon_minutes = ?, charges = ?, recovered = ? WHERE call_id = ?",
            (
                end_ts,
                outcome,
                a_status,
                b_status,
                talk,
                billed_units,
                addon,
                _compact_json(charge_list),
                int(recovered),
                call.call_id,
            ),
        )
        for bucket, after in checks:
            self._check_alerts(call.tenant, call.period, bucket, after.used, after.capacity, end_ts)
        return Settlement(call.call_id, outcome, talk, billed_units, inc, charge_list, recovered)

    def recover_open_calls(
        self, now: datetime, *, stale_after_s: float | None = None, include_own: bool = True
    ) -> list[Settlement]:
        """Settle this instance's calls left open by a previous run, outcome "recovered".

        Each is charged up to its last heartbeat (or its answer time: talk 0
        when no heartbeat followed the answer). With `stale_after_s`, calls of
        other instances whose last sign of life is older than that are settled
        too (an instance that died for good). A running gateway sweeps with
        `include_own=False`, so that its own live calls are left alone.
        """
        now_ts = epoch(now)
        out = []
        for call_id in self._run(lambda: self._live_call_ids(now_ts, stale_after_s, include_own), write=False):
            settlement = self._run(partial(self._recover, call_id))
            if settlement is not None:
                out.append(settlement)
        return out

    def _live_call_ids(self, now_ts: float, stale_after_s: float | None, include_own: bool) -> list[str]:
        ids: list[str] = []
        if include_own:
            ids += [
                r.call_id
                for r in self._all(
                    CallIdRow,
                    f"SELECT call_id FROM calls WHERE instance_id = ? AND state IN {LIVE}",
                    (self.instance_id,),
                )
            ]
        if stale_after_s is not None:
            ids += [
                r.call_id
                for r in self._all(
                    CallIdRow,
                    f"SELECT call_id FROM calls WHERE state IN {LIVE} AND instance_id <> ?"
                    " AND COALESCE(heartbeat_at, answered_at, started_at) < ?",
                    (self.instance_id, now_ts - stale_after_s),
                )
            ]
        return ids

    def _recover(self, call_id: str) -> Settlement | None:
        """Settle one abandoned call up to its last sign of life (inside a transaction)."""
        call = self._one(CallRow, _SELECT_CALL + self.for_update, (call_id,))
        if call is None or call.state == "closed":
            return None
        if call.answered_at is None:
            end = call.started_at
        else:
            end = max(call.answered_at, call.heartbeat_at if call.heartbeat_at is not None else call.answered_at)
        settlement = self._settle(call, end, "recovered", True, None, None)
        self._after_commit(
            lambda: self.log.warning(
                "call_recovered",
                call_id=call_id,
                talk_s=settlement.talk_s,
                billed_units=settlement.billed_units,
                charges=settlement.charges,
            )
        )
        return settlement
