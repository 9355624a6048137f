"""Rows of the ledger tables that more than one part of the store reads.

Rows are read by name, never by position: `StoreCore._one` / `_all` build a
named tuple from each result row and check, once per statement, that the
statement's column names are exactly the tuple's fields. A SELECT written
with `columns(CallRow)` therefore cannot drift from the type.

Row types used by a single module live next to their query (for example
`CounterRow` in counters.py, the report's rows in report.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

# Amounts are floats: compare them with this tolerance.
EPS = 1e-9

# The states of a call that is still up (open = ringing, answered = talking).
LIVE = "('open', 'answered')"


def columns(row_type: type[tuple[Any, ...]]) -> str:
    """The SELECT list of a row type: its fields, comma-separated."""
    return ", ".join(row_type._fields)  # type: ignore[attr-defined]


class CallRow(NamedTuple):
    """A `calls` row as reservation and settlement read it (see migration 001)."""

    call_id: str
    instance_id: str
    tenant: str
    organizer: str
    e164: str
    region: str
    tz: str
    period: str
    day: str
    started_at: float
    answered_at: float | None
    heartbeat_at: float | None
    state: str  # open -> answered -> closed
    increment_s: int
    max_duration_s: int | None
    chain: str  # JSON [[bucket, capacity, rate_per_minute], ...]
    chain_pos: int
    nres: int  # reservations so far: the next chunk's seq
    bucket: str
    granted_s: int | None
    outcome: str | None
    talk_s: float | None
    billed_units: int | None
    charges: str | None  # JSON [[bucket, amount], ...], at settlement
    recovered: int


CALL_COLUMNS = columns(CallRow)


class GrantRow(NamedTuple):
    """The newest grant of a call (what a replayed open_call returns)."""

    bucket: str
    granted_s: int | None


class ChunkRow(NamedTuple):
    """One `reservations` row: a chunk reserved for a call."""

    seq: int
    period: str
    bucket: str
    units: int | None  # None: an unlimited bucket
    unit_amount: float  # bucket units per billing unit
    amount: float  # held in buckets.reserved until settlement


class BucketLevel(NamedTuple):
    """A bucket row's totals, as the reservation upsert returns them."""

    used: float
    reserved: float


class BucketAfterDebit(NamedTuple):
    """A bucket row after settlement moved a debit into `used`."""

    used: float
    capacity: float | None


class BucketRow(NamedTuple):
    """One `buckets` row (`bucket_row()` returns it as a dict)."""

    capacity: float | None
    used: float
    reserved: float
