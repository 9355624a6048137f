"""PostgreSQL backend through psycopg 3: shared by several gateway instances.

Autocommit is off and every store method is one explicit transaction
(READ COMMITTED). Bucket rows are locked by the upsert that reads them, call
rows by SELECT ... FOR UPDATE, always in the order call row, then buckets in
chain order, so concurrent instances queue instead of deadlocking (and a
deadlock or serialization failure, should one happen, is retried). A dropped
connection is re-opened once and the transaction replayed; every write is
idempotent or harmless to replay (a replayed `extend` at worst reserves a chunk
that settlement releases).

A batch (`Store.batch()`, the ledger writer's group commit) holds the locks of
all its methods until it commits, so the batches of two instances can lock
the same rows in opposite orders: such a deadlock, a serialization failure or
a lock wait beyond `set_lock_timeout()` rolls the whole batch back
(TransactionConflict) and the writer runs it again.
"""

from __future__ import annotations

import re
from typing import Any, Unpack

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from store.base import Store, StoreOptions
from store.core import Params
from store.types import StoreError


def mask_url(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class PostgresStore(Store):
    dialect = "postgresql"
    for_update = " FOR UPDATE"
    _conn: psycopg.Connection[TupleRow]
    _cur: psycopg.Cursor[TupleRow]

    def __init__(self, url: str, *, connect_timeout_s: int = 5, **kwargs: Unpack[StoreOptions]) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.lock_timeout_s: float | None = None
        self._sql_cache: dict[str, str] = {}
        self._conn = self._connect()
        self._cur = self._conn.cursor()

    def _connect(self) -> psycopg.Connection[TupleRow]:
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=False,
                connect_timeout=self.connect_timeout_s,
                application_name=f"dialout-gw:{self.instance_id}"[:63],
            )
            if self.lock_timeout_s is not None:
                self._set_lock_timeout(conn)
            return conn
        except (psycopg.Error, ValueError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot connect to PostgreSQL at {mask_url(self.url)}: {message}") from None

    def _set_lock_timeout(self, conn: psycopg.Connection[TupleRow]) -> None:
        ms = 0 if self.lock_timeout_s is None else max(1, round(self.lock_timeout_s * 1000))
        conn.execute(f"SET lock_timeout = {int(ms)}")
        conn.commit()

    def set_lock_timeout(self, seconds: float | None) -> None:
        self.lock_timeout_s = seconds
        self._set_lock_timeout(self._conn)

    def _sql(self, sql: str) -> str:
        out = self._sql_cache.get(sql)
        if out is None:
            out = self._sql_cache[sql] = sql.replace("?", "%s")
        return out

    def _x(self, sql: str, params: Params = ()) -> psycopg.Cursor[TupleRow]:
        return self._cur.execute(self._sql(sql), params)

    def _xmany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(self._sql(sql), rows)

    def _begin(self, write: bool, single_statement: bool = False) -> None:
        pass  # psycopg opens the transaction on the first statement

    def _commit(self) -> None:
        self._conn.commit()

    def _rollback(self) -> None:
        if not self._conn.closed:
            self._conn.rollback()

    def _transaction_alive(self) -> bool:
        return not (self._conn.closed or self._conn.broken)

    def _classify(self, exc: BaseException) -> str | None:
        if isinstance(exc, (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.LockNotAvailable)):
            return "retry"
        if isinstance(exc, psycopg.OperationalError) and (self._conn.closed or self._conn.broken):
            return "reconnect"
        if isinstance(exc, psycopg.Error):
            return "error"
        return None

    def _table_exists(self, name: str) -> bool:
        row = self._x("SELECT to_regclass(?)", (name,)).fetchone()
        return row[0] is not None  # type: ignore[index]  # psycopg: fetchone() may be None; not here

    def _lock_migrations(self) -> None:
        self._x("SELECT pg_advisory_xact_lock(7242016001)")  # any constant; one migrator at a time

    def _close_connection(self) -> None:
        try:
            self._conn.close()
        except psycopg.Error:
            pass

    def _raw_connection(self) -> psycopg.Connection[TupleRow]:
        """For tests that simulate a dropped connection."""
        return self._conn


__all__ = ["PostgresStore", "StoreError", "mask_url"]
