"""The durable usage ledger and the shared counters (see docs/ledger.md).

store = open_store("sqlite:///var/ledger.db")        # or "postgresql://user@host:5432/db"
store.migrate()
grant = store.open_call(CallOpen(...))               # reserve the first chunk
grant = store.extend(call_id, now)                   # before the granted time runs out
store.answered(call_id, at); store.heartbeat(ids, at)
settlement = store.close_call(call_id, ended_at, "normal")

with store.batch():                                  # several methods, one commit
    ...

writer = LedgerWriter(url_or_settings, post=loop.call_soon)   # off the SIP thread, group-committed
writer.submit(lambda store: store.open_call(call), on_done=callback)
"""

from __future__ import annotations

from store.base import Store
from store.core import Batch, TransactionConflict, TransactionLost
from store.factory import open_store
from store.periods import period_of
from store.types import BUCKETS, LIFETIME, BucketSpec, CallOpen, Grant, Settlement, StoreError
from store.writer import LedgerWriter, WriterStats, WriterStopped

__all__ = [
    "BUCKETS",
    "LIFETIME",
    "Batch",
    "BucketSpec",
    "CallOpen",
    "Grant",
    "LedgerWriter",
    "Settlement",
    "Store",
    "StoreError",
    "TransactionConflict",
    "TransactionLost",
    "WriterStats",
    "WriterStopped",
    "open_store",
    "period_of",
]
