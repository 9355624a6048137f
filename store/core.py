"""What every part of the store builds on: one connection, transactions, and
rows read by name.

(Longer than the other modules, on purpose: a method on its own and a method
inside a batch go through the same `_run`, and their retry, reconnect and
rollback rules are easiest to check side by side.)

`StoreCore` owns the connection. The backends (sqlite.py, postgres.py) fill
in its dialect hooks; the parts of the store (reservations.py,
settlement.py, counters.py, ...) only use `_run`, `_x`, `_one`, `_all` and
`_after_commit`.

Transactions
------------
Every public store method puts its work in a function `fn` and hands it to
`_run(fn)`:

- **On its own**, `fn` is one transaction, committed before the method
  returns. It is run again when it lost a race on a unique key
  (`RetryTransaction`), after a deadlock or serialization failure, and once
  after the connection was lost and re-opened. Every write is idempotent or
  harmless to replay (see postgres.py).
- **Inside `batch()`**, `fn` runs in the batch's one transaction, and
  nothing commits until the batch ends. With `batch(savepoints=True)` (the
  default) each `fn` runs in a SAVEPOINT: a method that fails rolls back to
  it and raises, and what the batch did before and does after stands. With
  `savepoints=False` there is no savepoint to roll back to (two statements,
  on PostgreSQL two round trips, fewer per method), so a method that fails
  breaks the batch, which then cannot commit: run it again with savepoints.
  In both, a lost connection (`TransactionLost`) or a deadlock, a
  serialization failure or a lock timeout (`TransactionConflict`) breaks the
  batch: it is rolled back whole and can be run again.
  `store.writer.LedgerWriter` builds group commit on this.

Effects that must not happen unless the data is committed (alert log lines
and webhooks, the `call_recovered` line) are queued with `_after_commit` and
run after the commit; a rollback, of the transaction or of a method's
savepoint, drops them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar

from store.types import StoreError

Row = TypeVar("Row", bound=tuple[Any, ...])
T = TypeVar("T")
Params = tuple[Any, ...] | list[Any]

_MAX_ATTEMPTS = 5


class Logger(Protocol):
    """What the store needs of a logger: structlog's bound loggers have it."""

    def info(self, event: str, /, **kw: Any) -> object: ...

    def warning(self, event: str, /, **kw: Any) -> object: ...

    def error(self, event: str, /, **kw: Any) -> object: ...

    def exception(self, event: str, /, **kw: Any) -> object: ...


class Cursor(Protocol):
    """What the store reads from the DB-API cursor that `_x` returns."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Sequence[Sequence[Any]] | None: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


class RetryTransaction(Exception):
    """Raised inside `fn`: roll back and run it again (it lost a race on a unique key)."""


class TransactionLost(StoreError):
    """The connection was lost inside a batch: none of the batch is known to
    have committed. The store has re-opened its connection (or raised
    StoreError if it could not), so the batch can be run again."""


class TransactionConflict(TransactionLost):
    """The batch's transaction lost a deadlock or a serialization conflict, or
    one of its lock waits timed out: it was rolled back, none of it committed,
    and it can be run again (the connection is fine). Retrying one method in
    its savepoint would not do: the locks that close the cycle may have been
    taken by the batch's earlier methods, which keep them until the end."""


@dataclass(slots=True)
class Batch:
    """The transaction scope that `StoreCore.batch()` yields."""

    savepoints: bool = True  # each store method in a savepoint of its own
    commit_s: float = 0.0  # time spent in COMMIT, once the batch has committed
    # Set when the transaction cannot go on: the connection was lost
    # (TransactionLost), the database rolled the whole transaction back (e.g.
    # a full disk), or, without savepoints, a method failed half-way. Every
    # later store call in the batch raises, and the batch does not commit.
    broken: BaseException | None = None
    depth: int = 0  # nesting of savepoints


class BatchScope:
    """`with store.batch() as batch:` (a class, not a generator: the ledger
    writer opens one per group commit, and contextlib's machinery cost more
    than the rest of the scope)."""

    __slots__ = ("_batch", "_savepoints", "_store")

    def __init__(self, store: StoreCore, savepoints: bool) -> None:
        self._store = store
        self._savepoints = savepoints
        self._batch: Batch | None = None  # None: nested, the outer batch's block owns the transaction

    def __enter__(self) -> Batch:
        store = self._store
        if store._batch is not None:
            return store._batch
        self._batch = store._start_batch(self._savepoints)
        return self._batch

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if self._batch is None:
            return False
        try:
            self._store._end_batch(self._batch, exc)
        except BaseException as raised:
            if exc is None or raised is not exc:
                raise
            exc.__traceback__ = tb  # the block's own error, as it was raised
        return False


class StoreCore(ABC):
    """One connection, its transactions, and the typed-row helpers."""

    dialect: str = ""
    for_update: str = ""  # row lock suffix for SELECTs on PostgreSQL
    # The backend's connection and its cursor (sqlite3 or psycopg), from
    # `_connect`; each backend declares its own types.
    _conn: Any
    _cur: Any

    def __init__(self, *, instance_id: str, chunk_s: int = 300, log: Logger | None = None) -> None:
        if chunk_s < 1:
            raise ValueError("chunk_s must be at least 1 second")
        if log is None:
            import structlog

            log = structlog.get_logger("dialout.store")
        self.instance_id = instance_id
        self.chunk_s = int(chunk_s)
        self.log: Logger = log
        self._batch: Batch | None = None
        self._after_commit_effects: list[Callable[[], object]] = []
        self._checked_statements: set[tuple[type, str]] = set()

    # ------------------------------------------------------------------ dialect hooks

    @abstractmethod
    def _x(self, sql: str, params: Params = ()) -> Cursor:
        """Execute one statement (written with ? placeholders); return the cursor."""

    @abstractmethod
    def _xmany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...

    @abstractmethod
    def _begin(self, write: bool, single_statement: bool = False) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def _transaction_alive(self) -> bool:
        """False when the open transaction is gone (connection closed, or rolled
        back by the database on its own), so that a savepoint must not be used."""

    @abstractmethod
    def _classify(self, exc: BaseException) -> str | None:
        """'reconnect', 'retry' (deadlock, serialization), 'error' (driver error) or None."""

    @abstractmethod
    def _connect(self) -> Any:
        """Open the backend's connection (`_conn`)."""

    def _reconnect(self) -> None:
        self._close_connection()
        self._conn = self._connect()
        self._cur = self._conn.cursor()

    @abstractmethod
    def _table_exists(self, name: str) -> bool: ...

    def set_lock_timeout(self, seconds: float | None) -> None:
        """Make a lock wait longer than `seconds` fail as a conflict (a batch
        then runs again) instead of waiting; None: wait as long as it takes.
        PostgreSQL only; SQLite's writers queue on its busy timeout."""

    def _lock_migrations(self) -> None:
        """Serialise concurrent `migrate()` calls (SQLite: BEGIN IMMEDIATE already does)."""

    @abstractmethod
    def _close_connection(self) -> None: ...

    # ------------------------------------------------------------------ rows by name

    def _one(self, row_type: type[Row], sql: str, params: Params = ()) -> Row | None:
        """The first row of `sql` as a `row_type`, or None."""
        cur = self._x(sql, params)
        self._check_columns(row_type, sql, cur)
        got = cur.fetchone()
        return None if got is None else row_type._make(got)  # type: ignore[attr-defined]

    def _all(self, row_type: type[Row], sql: str, params: Params = ()) -> list[Row]:
        """Every row of `sql` as a `row_type`."""
        cur = self._x(sql, params)
        self._check_columns(row_type, sql, cur)
        make = row_type._make  # type: ignore[attr-defined]
        return [make(r) for r in cur.fetchall()]

    def _scalar(self, sql: str, params: Params = ()) -> Any:
        """The single value of a one-column, one-row statement."""
        (value,) = self._x(sql, params).fetchone()
        return value

    def _check_columns(self, row_type: type[tuple[Any, ...]], sql: str, cur: Cursor) -> None:
        """Once per statement: its column names must be the row type's fields."""
        key = (row_type, sql)
        if key in self._checked_statements:
            return
        names = tuple(d[0] for d in cur.description or ())
        fields: tuple[str, ...] = row_type._fields  # type: ignore[attr-defined]  # a NamedTuple class
        if names != fields:
            raise TypeError(f"statement returns columns {names}, but {row_type.__name__} has fields {fields}: {sql}")
        self._checked_statements.add(key)

    # ------------------------------------------------------------------ effects after commit

    def _after_commit(self, effect: Callable[[], object]) -> None:
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

    def _run(self, fn: Callable[[], T], *, write: bool = True, single_statement: bool = False) -> T:
        """Run `fn` as one transaction (or, inside `batch()`, as one savepoint).

        `single_statement`: `fn` reads with one statement, which is consistent
        on its own, so SQLite runs it without BEGIN/COMMIT.
        """
        batch = self._batch
        if batch is not None:
            if batch.savepoints:
                return self._run_in_savepoint(fn, batch)
            if batch.broken is None:
                try:
                    return fn()
                except BaseException as exc:
                    self._break_batch(exc, batch)
                    raise
            return self._run_in_batch(fn, batch)
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

    def _batch_error(self, exc: BaseException, kind: str | None) -> BaseException | None:
        """The TransactionLost that a method's error means for its batch, if any."""
        if isinstance(exc, TransactionLost):
            return exc
        if kind == "reconnect":
            return TransactionLost(f"{self.dialect} store: connection lost: {exc}")
        if kind == "retry":
            return TransactionConflict(f"{self.dialect} store: {exc}")
        return None

    def _broken_batch(self, batch: Batch) -> TransactionLost:
        return TransactionLost(f"{self.dialect} store: the batch cannot go on ({batch.broken})")

    def _run_in_batch(self, fn: Callable[[], T], batch: Batch) -> T:
        """`fn` straight in the batch's transaction: if it fails, the batch is broken.

        (`_run` inlines the common case: a batch not broken yet.)
        """
        if batch.broken is not None:
            raise self._broken_batch(batch) from batch.broken
        try:
            return fn()
        except BaseException as exc:
            self._break_batch(exc, batch)
            raise

    def _break_batch(self, exc: BaseException, batch: Batch) -> None:
        """`exc` came out of a method run straight in `batch`: mark the batch broken
        (its writes so far cannot be undone alone) and raise what the caller
        should see instead of `exc`, if that is something else."""
        kind = None if isinstance(exc, (RetryTransaction, StoreError)) else self._classify(exc)
        error = self._batch_error(exc, kind)
        if error is None:
            if isinstance(exc, RetryTransaction):
                error = StoreError(
                    f"{self.dialect} store: lost a race on a unique key; run the batch again with savepoints"
                )
            elif kind is not None:
                error = StoreError(f"{self.dialect} store: {exc}")
            else:
                error = exc
        batch.broken = batch.broken or error
        if error is not exc:
            raise error from exc

    def _run_in_savepoint(self, fn: Callable[[], T], batch: Batch) -> T:
        """`fn` inside the batch's transaction: all of it, or (on error) none of it."""
        if batch.broken is not None:
            raise self._broken_batch(batch) from batch.broken
        batch.depth += 1
        name = f"op{batch.depth}"
        attempts = 0
        try:
            while True:
                attempts += 1
                mark = len(self._after_commit_effects)
                try:
                    if not self._transaction_alive():
                        raise TransactionLost(f"{self.dialect} store: the batch's transaction is gone")
                    self._x(f"SAVEPOINT {name}")
                    result = fn()
                    self._x(f"RELEASE SAVEPOINT {name}")
                except BaseException as exc:
                    del self._after_commit_effects[mark:]
                    kind = None if isinstance(exc, (RetryTransaction, StoreError)) else self._classify(exc)
                    lost = self._batch_error(exc, kind)
                    if lost is not None:
                        batch.broken = batch.broken or lost
                        if lost is exc:
                            raise
                        raise lost from exc
                    if not self._undo_savepoint(name):
                        # The database dropped the whole transaction (SQLite does on a full disk).
                        error = StoreError(f"{self.dialect} store: {exc}") if kind is not None else exc
                        batch.broken = batch.broken or error
                        if error is exc:
                            raise
                        raise error from exc
                    if isinstance(exc, RetryTransaction):
                        if attempts < _MAX_ATTEMPTS:
                            continue
                        raise StoreError("transaction kept conflicting; giving up") from None
                    if kind is not None:
                        raise StoreError(f"{self.dialect} store: {exc}") from exc
                    raise
                return result
        finally:
            batch.depth -= 1

    def _undo_savepoint(self, name: str) -> bool:
        """Roll back to the savepoint; False when the transaction itself is gone."""
        try:
            if not self._transaction_alive():
                return False
            self._x(f"ROLLBACK TO SAVEPOINT {name}")
            self._x(f"RELEASE SAVEPOINT {name}")
            return True
        except Exception:  # noqa: BLE001 - whatever the reason, the transaction cannot go on
            return False

    def batch(self, *, savepoints: bool = True) -> BatchScope:
        """One transaction around several store method calls: one commit at the end.

            with store.batch():
                grant = store.open_call(call)
                store.answered(other_call_id, at)

        - Each store method inside runs in a savepoint of its own: when it
          raises, its own writes are rolled back and the others stand. The
          methods behave as on their own in every other way (the same return
          values, idempotence and retries), except that nothing is durable
          until the batch has committed.
        - `savepoints=False` saves the two savepoint statements per method,
          for callers that can run the batch again: the first method that
          raises breaks the batch (`Batch.broken`), later ones raise at once,
          and the batch does not commit.
        - The batch commits when the block ends normally. If the block raises,
          or the commit fails, everything is rolled back and the error raised.
        - If the connection is lost, the store re-opens it and the batch raises
          `TransactionLost` (or StoreError if the database cannot be reached):
          run the whole batch again. A deadlock, a serialization failure or a
          lock wait that timed out raises `TransactionConflict` (a
          TransactionLost): run it again, after a short random pause. If the
          transaction is gone for another reason, `Batch.broken` says why and
          the batch raises that.
        - Nested `batch()` blocks join the outer one (and its `savepoints`).
        - Effects after commit (alerts, the `call_recovered` line) run after
          the batch's commit, on the thread that runs the batch.
        """
        return BatchScope(self, savepoints)

    def _start_batch(self, savepoints: bool) -> Batch:
        """BEGIN the outermost batch's transaction (BatchScope.__enter__)."""
        batch = Batch(savepoints=savepoints)
        self._begin_batch()
        self._batch = batch
        return batch

    def _end_batch(self, batch: Batch, error: BaseException | None) -> None:
        """Commit the outermost batch, or, when its block raised `error` (or the
        batch is broken, or the commit fails), roll it back and raise."""
        try:
            if error is not None:
                raise error
            if batch.broken is not None:
                raise batch.broken
            if not self._transaction_alive():
                raise StoreError(f"{self.dialect} store: the batch's transaction was rolled back")
            started = time.perf_counter()
            self._commit()
            batch.commit_s = time.perf_counter() - started
        except BaseException as exc:
            self._batch = None
            self._after_commit_effects.clear()
            try:
                self._rollback()
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            if exc is batch.broken and not isinstance(exc, TransactionLost):
                raise
            if isinstance(exc, TransactionConflict):
                raise
            kind = None if isinstance(exc, StoreError) else self._classify(exc)
            if kind == "retry":  # the commit itself lost a serialization conflict
                raise TransactionConflict(f"{self.dialect} store: {exc}") from exc
            if isinstance(exc, TransactionLost) or kind == "reconnect":
                self.log.warning("store_reconnect", dialect=self.dialect, error=str(exc))
                self._reconnect()  # StoreError if the database cannot be reached
                if isinstance(exc, TransactionLost):
                    raise
                raise TransactionLost(f"{self.dialect} store: connection lost: {exc}") from exc
            if kind is not None:
                raise StoreError(f"{self.dialect} store: {exc}") from exc
            raise
        self._batch = None
        if self._after_commit_effects:
            self._run_after_commit()

    def _begin_batch(self) -> None:
        try:
            self._begin(True)
        except Exception as exc:
            kind = self._classify(exc)
            if kind == "reconnect":
                self.log.warning("store_reconnect", dialect=self.dialect, error=str(exc))
                self._reconnect()
                self._begin(True)
            elif kind is not None:
                raise StoreError(f"{self.dialect} store: {exc}") from exc
            else:
                raise

    # ------------------------------------------------------------------ lifecycle

    def start_background_maintenance(self) -> None:
        """Move housekeeping I/O off the caller's thread (the gateway's SIP
        loop). Nothing to do by default; SQLite checkpoints its WAL there."""

    def close(self) -> None:
        self._close_connection()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
