"""`Store`: the ledger, reservations, counters, alerts and directory behind one interface.

The business logic is written once, for both dialects; `SQLiteStore` and
`PostgresStore` only supply a connection, the transaction verbs and the
placeholder style. Each concern has its own module, and `Store` puts them
together:

| module | concern | public methods |
|---|---|---|
| core.py | connection, transactions, savepoints, rows by name | `batch`, `close` |
| schema.py | migrations | `migrate`, `schema_version` |
| counters.py | the guard counters | `snapshot`, `prune_counters` |
| reservations.py | quota chunks, answer, heartbeats | `open_call`, `extend`, `answered`, `heartbeat` |
| settlement.py | charging a call, crash recovery | `close_call`, `recover_open_calls` |
| alerts.py | pool and credits alerts (webhook.py delivers) | `alerts` |
| directory.py | imported tenants and organisers | `import_directory`, `directory_rows` |
| report.py | reading the ledger | `call_row`, `bucket_row`, `usage_report` |

Every public method is one transaction (or, inside `batch()`, one savepoint
of the batch's transaction). Writes on SQLite start with `BEGIN IMMEDIATE`
(one writer at a time across processes); on PostgreSQL the rows that decide
a reservation are locked by the upsert that reads them.
"""

from __future__ import annotations

from typing import Required, TypedDict

from store.core import Logger
from store.periods import period_of
from store.report import ReportsMixin
from store.reservations import ReservationsMixin
from store.schema import SchemaMixin, load_migrations
from store.settlement import SettlementMixin

__all__ = ["Store", "StoreOptions", "load_migrations", "period_of"]


class StoreOptions(TypedDict, total=False):
    """The keyword options every backend takes (`open_store` passes them on)."""

    instance_id: Required[str]
    chunk_s: int
    log: Logger | None
    credits_floor: float
    alert_webhook: str | None


class Store(ReservationsMixin, SettlementMixin, SchemaMixin, ReportsMixin):
    """Ledger, reservations, counters and directory behind one interface."""
