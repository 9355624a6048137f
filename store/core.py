"""What every part of the store builds on: one connection, transactions, and
rows read by name.

`StoreCore` owns the connection. The backends (sqlite.py, postgres.py) fill
in its dialect hooks; the parts of the store (reservations.py,
settlement.py, counters.py, ...) only use `_run`, `_x`, `_one`, `_all` and
`_after_commit`.

Transactions
------------
Every public store method puts its work in a function `fn` and hands it to
`_run(fn)`, which makes it one transaction, committed before the method
returns. `fn` is run again when it lost a race on a unique key (`RetryTransaction`), after a
deadlock or serialization failure, and once after the connection was lost
and re-opened. Every write is idempotent or harmless to replay (see
postgres.py).

Effects that must not happen unless the data is committed (alert log lines
and webhooks, the `call_recovered` line) are queued with `_after_commit` and
run after the commit; a rollback drops them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

from store.types import StoreError

Row = TypeVar("Row", bound=tuple)

_MAX_ATTEMPTS = 5


class RetryTransaction(Exception):
    """Raised inside `fn`: roll back and run it again (it lost a race on a unique key)."""


class StoreCore(ABC):
    """One connection, its transactions, and the typed-row helpers."""

    dialect: str = ""
    for_update: str = ""  # row lock suffix for SELECTs on PostgreSQL

    def __init__(self, *, instance_id: str, chunk_s: int = 300, log=None) -> None:
        if chunk_s < 1:
            raise ValueError("chunk_s must be at least 1 second")
        if log is None:
            import structlog
            log = structlog.get_logger("dialout.store")
        self.instance_id = instance_id
        self.chunk_s = int(chunk_s)
        self.log = log
        self._after_commit_effects: list[Callable[[], None]] = []
        self._checked_statements: set[tuple[type, str]] = set()

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

    # ------------------------------------------------------------------ rows by name

    def _one(self, row_type: type[Row], sql: str, params: tuple | list = ()) -> Row | None:
        """The first row of `sql` as a `row_type`, or None."""
        cur = self._x(sql, params)
        self._check_columns(row_type, sql, cur)
        got = cur.fetchone()
        return None if got is None else row_type._make(got)  # type: ignore[attr-defined]

    def _all(self, row_type: type[Row], sql: str, params: tuple | list = ()) -> list[Row]:
        """Every row of `sql` as a `row_type`."""
        cur = self._x(sql, params)
        self._check_columns(row_type, sql, cur)
        make = row_type._make  # type: ignore[attr-defined]
        return [make(r) for r in cur.fetchall()]

    def _scalar(self, sql: str, params: tuple | list = ()) -> Any:
        """The single value of a one-column, one-row statement."""
        (value,) = self._x(sql, params).fetchone()
        return value

    def _check_columns(self, row_type: type, sql: str, cur) -> None:
        """Once per statement: its column names must be the row type's fields."""
        key = (row_type, sql)
        if key in self._checked_statements:
            return
        names = tuple(d[0] for d in cur.description)
        if names != row_type._fields:  # type: ignore[attr-defined]
            raise TypeError(f"statement returns columns {names}, but {row_type.__name__} has fields "
                            f"{row_type._fields}: {sql}")  # type: ignore[attr-defined]
        self._checked_statements.add(key)

    # ------------------------------------------------------------------ effects after commit

    def _after_commit(self, effect: Callable[[], None]) -> None:
        """Run `effect` once the current transaction has committed (dropped on rollback)."""
        self._after_commit_effects.append(effect)

    def _run_after_commit(self) -> None:
        effects, self._after_commit_effects = self._after_commit_effects, []
        for effect in effects:
            try:
                effect()
            except Exception as exc:  # noqa: BLE001 - the data is committed; say so and go on
                self.log.error("store_after_commit_failed", error=f"{type(exc).__name__}: {exc}")

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
                    self._after_commit_effects.clear()
                    try:
                        self._rollback()
                    except Exception:  # noqa: BLE001 - the original error matters more
                        pass
                    raise
            except RetryTransaction:
                if attempts < _MAX_ATTEMPTS:
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
                if kind == "retry" and attempts < _MAX_ATTEMPTS:
                    continue
                if kind is not None:
                    raise StoreError(f"{self.dialect} store: {exc}") from exc
                raise
            if self._after_commit_effects:
                self._run_after_commit()
            return result

    # ------------------------------------------------------------------ lifecycle

    def start_background_maintenance(self) -> None:
        """Move housekeeping I/O off the caller's thread (the gateway's SIP
        loop). Nothing to do by default; SQLite checkpoints its WAL there."""

    def close(self) -> None:
        self._close_connection()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
