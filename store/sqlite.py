"""SQLite backend: embedded, WAL mode, one connection per process.

Durability: WAL with synchronous=NORMAL. A committed transaction survives a
crash of the process (kill -9) because it is already in the WAL file; only an
OS crash or power loss can lose the last transactions before a checkpoint.
Several processes may share one file: writers take `BEGIN IMMEDIATE` and wait
up to busy_timeout for each other.

Checkpoints (copying the WAL into the database file, with an fsync) are the
only step that waits for the disk. In the gateway they run on a background
thread with its own connection (`start_background_maintenance`), so that a
slow fsync never stalls the SIP loop: with synchronous=NORMAL a commit itself
only appends to the WAL.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Unpack

from store.base import Store, StoreOptions
from store.core import Params
from store.types import StoreError


class SQLiteStore(Store):
    dialect = "sqlite"
    _conn: sqlite3.Connection
    _cur: sqlite3.Cursor

    def __init__(self, path: str, *, busy_timeout_ms: int = 10000, **kwargs: Unpack[StoreOptions]) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._conn = self._connect()
        self._cur = self._conn.cursor()
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000.0,
                cached_statements=256,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if self.path != ":memory:":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"SQLite database {self.path}: cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from None
        return conn

    def _x(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        return self._cur.execute(sql, params)

    def _xmany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(sql, rows)

    def _begin(self, write: bool, single_statement: bool = False) -> None:
        if write:
            self._cur.execute("BEGIN IMMEDIATE")
        elif not single_statement:  # one statement alone is already atomic (autocommit)
            self._cur.execute("BEGIN")

    def _commit(self) -> None:
        if self._conn.in_transaction:
            self._cur.execute("COMMIT")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _transaction_alive(self) -> bool:
        # SQLite rolls a transaction back on its own after some errors (a full
        # disk, an I/O error): a savepoint taken then would start a new one.
        return self._conn.in_transaction

    def _classify(self, exc: BaseException) -> str | None:
        if isinstance(exc, sqlite3.Error):
            return "error"
        return None

    def _table_exists(self, name: str) -> bool:
        return self._x("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None

    CHECKPOINT_INTERVAL_S = 0.5
    RESTART_WAIT_S = 0.05
    WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024

    def start_background_maintenance(self) -> None:
        if self.path == ":memory:" or self._checkpointer is not None:
            return
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")  # commits never checkpoint (nor fsync)
        # Once a checkpoint lets the WAL start over, cut its file back to this size.
        self._conn.execute(f"PRAGMA journal_size_limit = {self.WAL_SIZE_LIMIT_BYTES}")
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        conn = None
        failing = False
        while not self._stop_checkpoints.wait(self.CHECKPOINT_INTERVAL_S):
            try:
                if conn is None:
                    # A short busy timeout: a RESTART that cannot get its turn soon is
                    # retried at the next interval rather than queueing writers behind it.
                    conn = sqlite3.connect(
                        self.path, isolation_level=None, check_same_thread=False, timeout=self.RESTART_WAIT_S
                    )
                # PASSIVE copies what it can without waiting for (or blocking)
                # writers; the slow part, the fsync, happens here. Then RESTART,
                # with little left to copy, waits out the current writer so that
                # the next one starts the WAL over: otherwise, with commits always
                # landing during the checkpoint, the WAL would grow for ever and
                # every commit would pay for appending to a growing file.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                if failing:
                    self.log.info("store_checkpoint_recovered", path=self.path)
                failing = False
            except sqlite3.Error as exc:
                if not failing:  # once per failure episode, e.g. a full disk
                    self.log.warning("store_checkpoint_failed", path=self.path, error=str(exc))
                failing = True
        if conn is not None:
            conn.close()

    def _stop_background(self) -> None:
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            self._checkpointer.join(timeout=5)
            self._checkpointer = None

    def close(self) -> None:
        self._stop_background()
        super().close()

    def _close_connection(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
