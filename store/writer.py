"""`LedgerWriter`: ledger I/O off the SIP thread, with group commit.

The SIP loop must never wait for the database: with every ledger operation
on the loop, a stalled PostgreSQL froze the whole instance (an INVITE that
needed no ledger got no answer for 10 s), and each call cost three commits.
The writer owns a Store connection of its own and one thread:

    writer = LedgerWriter(settings.store, post=stack.call_soon, log=log)
    writer.submit(lambda store: store.open_call(call_open), on_done=relay_or_reject)
    ...
    if writer.oldest_pending_age_s() > 2.0:   # the database is stalled: fail fast
        reject 503
    ...
    writer.stop(timeout=5.0)

- `submit(op, on_done)` never blocks: it queues `op`, a function
  `op(store) -> result` that calls the Store's public methods.
- The thread takes everything queued (up to `max_batch`) and runs it, in
  order, in ONE transaction (`Store.batch()`): one commit for the lot.
  A store method that fails rolls back alone and its op gets the
  exception; the others commit. (The batch first runs without
  savepoints; only when a method fails is it run again with one savepoint
  per method, so the common case pays for none.)
- Only once the commit has succeeded is each op's `on_done(result)` (or
  `on_done(exception)`) handed to `post`, the SIP loop's thread-safe
  "run this on the loop" (pjsua2: a queue the loop drains). `on_done` is
  never called on the writer thread. So a completion means durable: the
  caller may dial the trunk.
- If the commit fails, every op of the batch gets the exception. If the
  connection is lost, the store re-opens it and the batch runs once more
  (the store's usual "reconnect once, replay"). If the batch lost a
  deadlock or a lock wait with another instance (PostgreSQL), it is rolled
  back and runs again after a short random pause. Every store write is
  idempotent or harmless to replay; an op may therefore run more than once
  before it completes, and must have no effect outside the store.

(Longer than 400 lines on purpose: the queue, the batch loop, its retries
and the hand-back to the loop share one lock and one set of invariants, and
are easiest to check in one place.)
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from store.base import Store
from store.core import Logger, TransactionConflict, TransactionLost
from store.factory import open_store
from store.settings import StoreSettings, open_from_settings
from store.types import StoreError

Op = Callable[[Store], Any]
Post = Callable[[Callable[[], None]], None]


class WriterStopped(StoreError):
    """`submit` after `stop`: the writer takes no more work."""


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters since the writer started, for metrics."""

    submitted: int  # ops submitted
    completed: int  # ops finished: committed, or failed (their completion posted)
    op_errors: int  # ... of which the outcome was an exception
    batches: int  # transactions committed
    batch_errors: int  # transactions that did not commit (each op in them failed, or was run again)
    reconnects: int  # batches run again after the connection was lost
    reruns: int  # batches run again with a savepoint per store method, because one failed
    conflicts: int  # batches rolled back by a deadlock, serialization failure or lock timeout, and run again
    commit_seconds: float  # total time spent in COMMIT
    batch_seconds: float  # total time from BEGIN to the end of COMMIT
    largest_batch: int  # most ops in one transaction
    pending: int  # ops queued or running now
    oldest_pending_age_s: float  # how long the oldest of them has waited


@dataclass(slots=True)
class _Item:
    op: Op
    on_done: Callable[[Any], None] | None
    submitted: float  # time.monotonic()
    urgent: bool = True  # commit within linger_s (else within background_linger_s)
    wake: bool = True  # its completion wakes the loop (else it waits for the loop's next turn)


class LedgerWriter:
    """One background thread that runs store operations in group-committed batches."""

    MAX_CONFLICT_RUNS = 10

    def __init__(
        self,
        source: StoreSettings | str,
        post: Post,
        *,
        log: Logger | None = None,
        max_batch: int = 100,
        linger_s: float = 0.0,
        lock_timeout_s: float | None = 0.2,
        background_maintenance: bool = True,
        name: str = "ledger-writer",
        background_linger_s: float = 0.05,
        post_lazy: Post | None = None,
        **store_options: Any,
    ) -> None:
        """Open the writer's own Store connection and start its thread.

        - `source`: the `[store]` settings, or a store URL with `open_store`'s
          keyword options (`instance_id`, `chunk_s`, `credits_floor`,
          `alert_webhook`) in `store_options`. Use the same `instance_id` as
          the gateway's own store: recovery settles calls by instance.
        - `post(callback)`: hands `callback` to the SIP loop (thread-safe).
        - `max_batch`: the most ops in one transaction (bounds how long a
          batch holds its locks).
        - `linger_s`: how long the oldest queued urgent op may wait for others
          to join its batch (0: take what is queued, add no delay).
        - `background_linger_s`: the same for ops submitted with
          `urgent=False` (settlements, heartbeats): they wait longer, so that
          many share one commit and one wake-up of each thread.
        - `post_lazy(callback)`: like `post`, without waking the loop, for
          completions nobody waits for (`submit(..., wake=False)`); defaults
          to `post`.
        - `lock_timeout_s` (PostgreSQL): a lock wait longer than this rolls
          the batch back and runs it again, instead of waiting. A batch holds
          its row locks until it commits, so two instances' batches can
          deadlock; PostgreSQL would only notice after `deadlock_timeout`
          (1 s by default). None: wait.
        - `background_maintenance`: start the store's housekeeping thread
          (SQLite WAL checkpoints), so that commits never checkpoint.

        Raises StoreError when the database cannot be reached.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if linger_s < 0:
            raise ValueError("linger_s must be >= 0")
        if log is None:
            import structlog

            log = structlog.get_logger("dialout.store")
        if isinstance(source, StoreSettings):
            if store_options:
                raise TypeError("store options come from the settings; pass a URL to give them here")
            self._store = open_from_settings(source, log=log)
        else:
            self._store = open_store(source, log=log, **store_options)
        if lock_timeout_s is not None:
            self._store.set_lock_timeout(lock_timeout_s)
        self._post = post
        self._post_lazy = post_lazy or post
        self.log = log
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.background_linger_s = max(linger_s, background_linger_s)
        self._urgent_since: float | None = None  # when the oldest queued urgent op was submitted
        self._background_maintenance = background_maintenance
        # `_lock` guards the queue and the counters. The writer sleeps on
        # `_wake`, a lock held while nobody has woken it: `submit` releases it
        # only when the writer is asleep (`_sleeping`) and must see the op, so
        # a submit is otherwise one short hold of `_lock`, and a batch costs
        # the two threads one wake-up, not one per op. (A Condition's
        # wait/notify is Python code, a new lock per wait.) `_cond` on the same
        # lock is only for `stop()`, which waits for the queue to drain.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wake = threading.Lock()
        self._wake.acquire()
        self._sleeping = False
        self._queue: deque[_Item] = deque()
        self._in_flight: list[_Item] = []
        self._stopping = False
        self._submitted = self._completed = self._op_errors = 0
        self._batches = self._batch_errors = self._reconnects = self._reruns = self._conflicts = 0
        self._largest = 0
        self._commit_s = self._batch_s = 0.0
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ any thread

    def submit(
        self, op: Op, on_done: Callable[[Any], None] | None = None, *, urgent: bool = True, wake: bool | None = None
    ) -> None:
        """Queue `op(store)`; `on_done(result or exception)` is posted once it has committed.

        `urgent=False` lets the op wait up to `background_linger_s` for others
        to share its commit (a settlement, a heartbeat); `wake=False` posts
        its completion without waking the loop (default: `wake=urgent`).
        Never blocks and never touches the database. Raises WriterStopped after `stop()`.
        """
        now = time.monotonic()
        item = _Item(op, on_done, now, urgent, urgent if wake is None else wake)
        with self._lock:
            if self._stopping:
                raise WriterStopped("the ledger writer is stopped")
            queue = self._queue
            queue.append(item)
            self._submitted += 1
            # Wake the writer only when it sleeps and may be waiting for this:
            # a first op, a first urgent op while it lingers over background
            # ones, or a full batch. Otherwise it is busy, or lingering on
            # purpose, and takes the queue when its batch is done.
            first_urgent = urgent and self._urgent_since is None
            if first_urgent:
                self._urgent_since = now
            if self._sleeping and (len(queue) == 1 or first_urgent or len(queue) >= self.max_batch):
                self._sleeping = False
                self._wake.release()

    def pending(self) -> int:
        """Ops submitted and not finished yet: queued, or in the running batch."""
        with self._lock:
            return len(self._queue) + len(self._in_flight)

    def oldest_pending_age_s(self) -> float:
        """Seconds the oldest unfinished op has waited since `submit` (0.0: none)."""
        with self._lock:
            first = self._in_flight[0] if self._in_flight else (self._queue[0] if self._queue else None)
            return 0.0 if first is None else time.monotonic() - first.submitted

    def stats(self) -> WriterStats:
        with self._lock:
            first = self._in_flight[0] if self._in_flight else (self._queue[0] if self._queue else None)
            return WriterStats(
                submitted=self._submitted,
                completed=self._completed,
                op_errors=self._op_errors,
                batches=self._batches,
                batch_errors=self._batch_errors,
                reconnects=self._reconnects,
                reruns=self._reruns,
                conflicts=self._conflicts,
                commit_seconds=self._commit_s,
                batch_seconds=self._batch_s,
                largest_batch=self._largest,
                pending=len(self._queue) + len(self._in_flight),
                oldest_pending_age_s=0.0 if first is None else time.monotonic() - first.submitted,
            )

    def stop(self, timeout: float = 5.0) -> bool:
        """Take no more ops, finish the queued ones, then end the thread.

        Returns within `timeout` seconds whatever the database does: True
        when every op has finished, False when some are still waiting (a
        frozen database). Those still complete, and the thread still ends
        and closes its connection, when the database answers again.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping = True
            if self._sleeping:
                self._sleeping = False
                self._wake.release()
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            finished = not self._queue and not self._in_flight
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return finished

    # ------------------------------------------------------------------ the writer thread

    def _main(self) -> None:
        try:
            if self._background_maintenance:
                self._store.start_background_maintenance()
            while True:
                items = self._next_batch()
                if items is None:
                    break
                self._execute(items)
        except BaseException:
            self.log.exception("ledger_writer_died")
            raise
        finally:
            try:
                self._store.close()
            except Exception as exc:  # noqa: BLE001 - nothing left to do with it
                self.log.warning("ledger_writer_close_failed", error=str(exc))

    def _sleep(self, timeout: float | None) -> None:
        """Called with `_lock` held: release it until `submit` or `stop` wakes
        this thread (or `timeout` seconds pass), then take it again."""
        self._sleeping = True
        self._lock.release()
        woken = False
        try:
            woken = self._wake.acquire() if timeout is None else self._wake.acquire(True, timeout)
        finally:
            self._lock.acquire()
            if self._sleeping:  # nobody woke us
                self._sleeping = False
            elif not woken:  # woken between the timeout and now: take the wake back
                self._wake.acquire()

    def _next_batch(self) -> list[_Item] | None:
        with self._lock:
            queue = self._queue
            while not queue:
                if self._stopping:
                    return None
                self._sleep(None)
            while len(queue) < self.max_batch and not self._stopping:
                if self._urgent_since is not None:
                    deadline = self._urgent_since + self.linger_s
                else:
                    deadline = queue[0].submitted + self.background_linger_s
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._sleep(remaining)
            if len(queue) <= self.max_batch:
                items = list(queue)
                queue.clear()
                self._urgent_since = None
            else:
                items = [queue.popleft() for _ in range(self.max_batch)]
                self._urgent_since = next((item.submitted for item in queue if item.urgent), None)
            self._in_flight = items
            return items

    def _complete(self, completions: list[tuple[Callable[[Any], None], Any]]) -> None:
        """On the loop thread: each op's on_done, in order; one that raises does not stop the rest."""
        for on_done, outcome in completions:
            try:
                on_done(outcome)
            except Exception:
                self.log.exception("ledger_completion_failed")

    def _execute(self, items: list[_Item]) -> None:
        """Run `items` in one transaction; then post their completions, in order.

        First without savepoints (the common case: nothing fails, and each
        store method saves two statements). If a store method fails, that
        attempt cannot commit: it is rolled back and the batch runs again
        with a savepoint per method, which isolates the failure. If even
        then an op takes the whole transaction down, it fails alone and the
        others run once more.
        """
        todo = items
        savepoints = replayed = False
        commit_s = batch_s = 0.0
        batch_errors = reconnects = reruns = conflicts = committed = 0
        done: list[tuple[_Item, Any]] = []
        reordered = False
        while todo:
            outcomes: list[Any] = []
            culprit: tuple[_Item, BaseException] | None = None
            started = time.perf_counter()
            try:
                with self._store.batch(savepoints=savepoints) as batch:
                    for item in todo:
                        try:
                            outcome = item.op(self._store)
                        except Exception as exc:  # noqa: BLE001 - it is this op's outcome
                            outcome = exc
                        if batch.broken is not None:
                            if not isinstance(batch.broken, TransactionLost):
                                culprit = (item, outcome if isinstance(outcome, Exception) else batch.broken)
                            break
                        outcomes.append(outcome)
            except TransactionConflict as exc:
                # Rolled back to break a lock cycle with another instance: run it
                # again, after a random pause so that the two do not meet again.
                batch_errors += 1
                conflicts += 1
                if conflicts < self.MAX_CONFLICT_RUNS:
                    time.sleep(random.uniform(0.0, min(0.05, 0.01 * conflicts)))
                    continue
                self.log.error("ledger_batch_failed", ops=len(todo), error=str(exc))
                done += [(item, exc) for item in todo]
                break
            except TransactionLost as exc:
                batch_errors += 1
                if not replayed:
                    # The store has re-opened its connection: run the batch once more.
                    replayed = True
                    reconnects += 1
                    continue
                done += [(item, exc) for item in todo]
                break
            except Exception as exc:  # noqa: BLE001 - the batch's outcome, given to each op
                if culprit is not None and not savepoints:
                    reruns += 1
                    savepoints = True
                    continue
                batch_errors += 1
                if culprit is not None:
                    # One op took the whole transaction down: it fails, the others run again.
                    done.append(culprit)
                    reordered = True
                    todo = [item for item in todo if item is not culprit[0]]
                    continue
                self.log.error("ledger_batch_failed", ops=len(todo), error=str(exc) or type(exc).__name__)
                done += [(item, exc) for item in todo]
                break
            finally:
                batch_s += time.perf_counter() - started
            committed = len(todo)
            commit_s = batch.commit_s
            done += list(zip(todo, outcomes))
            break
        if reordered:
            order = {id(item): i for i, item in enumerate(items)}
            done.sort(key=lambda pair: order[id(pair[0])])
        errors = 0
        wake = False
        completions = []
        for item, outcome in done:
            if isinstance(outcome, BaseException):
                errors += 1
            if item.on_done is not None:
                completions.append((item.on_done, outcome))
            wake = wake or item.wake
        if completions:
            try:
                # One job for the whole batch: one wake-up of the loop, not one per op,
                # and none at all when no completion in it is awaited.
                (self._post if wake else self._post_lazy)(partial(self._complete, completions))
            except Exception as exc:  # noqa: BLE001 - the loop is gone; the data is committed
                self.log.error("ledger_writer_post_failed", error=str(exc) or type(exc).__name__)
        with self._lock:
            self._in_flight = []
            self._completed += len(done)
            self._op_errors += errors
            self._batches += committed > 0
            self._batch_errors += batch_errors
            self._reconnects += reconnects
            self._reruns += reruns
            self._conflicts += conflicts
            self._commit_s += commit_s
            self._batch_s += batch_s
            if committed > self._largest:
                self._largest = committed
            if self._stopping:  # stop() waits for the queue to drain
                self._cond.notify_all()
