"""`LedgerWriter`: ledger operations on a thread of their own, group-committed,
completions handed to the SIP loop. Both backends; the stalled-database
tests freeze a real PostgreSQL (SIGSTOP) and lock a real SQLite file."""

from __future__ import annotations

import queue
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from store import Grant, LedgerWriter, StoreError, WriterStopped, open_store
from store.settings import StoreSettings
from tests.store.helpers import POOL, Recorder, at, call

ROOT = Path(__file__).resolve().parents[2]


class Loop:
    """The SIP loop as the writer sees it: `post(callback)` queues the callback
    (from any thread); the test runs the queued callbacks on its own thread."""

    def __init__(self):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.posted_from: set[str] = set()

    def post(self, callback):
        self.posted_from.add(threading.current_thread().name)
        self.jobs.put(callback)

    def run_until(self, predicate, timeout=15.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for completions")
            try:
                self.jobs.get(timeout=0.02)()
            except queue.Empty:
                pass


class Done:
    """Completions in the order they ran, with the thread that ran each."""

    def __init__(self):
        self.results: list = []
        self.threads: list[str] = []

    def __call__(self, result):
        self.results.append(result)
        self.threads.append(threading.current_thread().name)

    def __len__(self):
        return len(self.results)


@pytest.fixture
def loop():
    return Loop()


@pytest.fixture
def migrated(store_url):
    s = open_store(store_url, instance_id="gw-test")
    s.migrate()
    s.close()
    return store_url


def new_writer(url, loop, **kw):
    kw.setdefault("log", Recorder())
    return LedgerWriter(url, loop.post, instance_id="gw-test", **kw)


def hold(writer):
    """Keep the writer busy until the returned event is set, so that what is
    submitted meanwhile queues up and runs as one batch."""
    started, release = threading.Event(), threading.Event()

    def blocker(store):
        started.set()
        release.wait(10)

    writer.submit(blocker)
    assert started.wait(10)
    return release


def count_commits(writer) -> list[int]:
    commits: list[int] = []
    real = writer._store._commit

    def counting():
        commits.append(1)
        real()

    writer._store._commit = counting
    return commits


def test_ops_run_in_order_and_complete_on_the_loop(migrated, loop):
    writer = new_writer(migrated, loop)
    ran_on: set[str] = set()
    order: list[int] = []
    done = Done()
    try:

        def op(i):
            def run(store):
                ran_on.add(threading.current_thread().name)
                order.append(i)
                return store.open_call(call(f"c{i}"))

            return run

        for i in range(30):
            writer.submit(op(i), done)
        loop.run_until(lambda: len(done) == 30)
    finally:
        assert writer.stop(10)
    assert order == list(range(30))
    assert done.results == [Grant(POOL, 300)] * 30
    assert ran_on == {"ledger-writer"}
    assert loop.posted_from == {"ledger-writer"}
    assert set(done.threads) == {threading.current_thread().name}  # never on the writer thread


def test_completions_are_posted_never_called_by_the_writer(migrated, loop):
    writer = new_writer(migrated, loop)
    done = Done()
    try:
        writer.submit(lambda store: store.open_call(call("c1")), done)
        deadline = time.monotonic() + 10
        while writer.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert writer.pending() == 0 and len(done) == 0  # finished, but only posted
        loop.run_until(lambda: len(done) == 1)
        assert done.results == [Grant(POOL, 300)]
    finally:
        writer.stop(10)


def test_a_completion_that_raises_does_not_stop_the_others(migrated, loop):
    log = Recorder()
    writer = new_writer(migrated, loop, log=log)
    done = Done()

    def bad_callback(result):
        raise RuntimeError("a bug in the caller")

    try:
        release = hold(writer)
        writer.submit(lambda store: store.open_call(call("c1")), bad_callback)
        writer.submit(lambda store: store.open_call(call("c2")), done)
        release.set()
        loop.run_until(lambda: len(done) == 1)
        assert done.results == [Grant(POOL, 300)]
        assert len(log.named("ledger_completion_failed")) == 1
    finally:
        writer.stop(10)


def test_a_batch_commits_once(migrated, loop):
    writer = new_writer(migrated, loop)
    done = Done()
    try:
        commits = count_commits(writer)
        release = hold(writer)
        for i in range(20):
            writer.submit(lambda store, i=i: store.open_call(call(f"c{i}")), done)
        assert writer.pending() == 21
        release.set()
        loop.run_until(lambda: len(done) == 20)
        stats = writer.stats()
        assert commits == [1, 1]  # the blocker's batch, then all twenty in one
        assert (stats.batches, stats.largest_batch, stats.completed, stats.op_errors) == (2, 20, 21, 0)
        assert stats.commit_seconds > 0 and stats.batch_seconds >= stats.commit_seconds
    finally:
        writer.stop(10)
    check = open_store(migrated, instance_id="gw-test")
    assert check.bucket_row("t1", "2018-07", POOL)["reserved"] == 100.0
    check.close()


def test_a_retransmitted_open_call_in_one_batch(migrated, loop):
    writer = new_writer(migrated, loop)
    done = Done()
    try:
        release = hold(writer)
        writer.submit(lambda store: store.open_call(call("c1")), done)
        writer.submit(lambda store: store.open_call(call("c1")), done)
        release.set()
        loop.run_until(lambda: len(done) == 2)
        assert done.results == [Grant(POOL, 300)] * 2
        assert writer.stats().reruns == 1
    finally:
        writer.stop(10)
    check = open_store(migrated, instance_id="gw-test")
    assert check.bucket_row("t1", "2018-07", POOL)["reserved"] == 5.0
    check.close()


def test_max_batch_bounds_a_transaction(migrated, loop):
    writer = new_writer(migrated, loop, max_batch=7)
    done = Done()
    try:
        release = hold(writer)
        for i in range(20):
            writer.submit(lambda store, i=i: store.open_call(call(f"c{i}")), done)
        release.set()
        loop.run_until(lambda: len(done) == 20)
        assert writer.stats().largest_batch == 7 and writer.stats().batches == 1 + 3
    finally:
        writer.stop(10)


def test_a_sleeping_writer_is_woken_by_a_new_op_and_by_stop(migrated, loop):
    """Between batches the writer sleeps: each first op wakes it, ops
    submitted while it is busy run right after its batch, and stop() wakes
    an idle writer at once."""
    writer = new_writer(migrated, loop)
    done = Done()
    try:
        for i in range(3):
            writer.submit(lambda store, i=i: store.open_call(call(f"c{i}")), done)
            loop.run_until(lambda n=i + 1: len(done) == n, timeout=2)
            time.sleep(0.05)  # asleep again
        release = hold(writer)
        for i in range(3, 6):
            writer.submit(lambda store, i=i: store.open_call(call(f"c{i}")), done)
        release.set()
        loop.run_until(lambda: len(done) == 6, timeout=2)
        assert done.results == [Grant(POOL, 300)] * 6
        assert writer.stats().batches == 3 + 1 + 1
        time.sleep(0.05)
    finally:
        started = time.monotonic()
        assert writer.stop(5) is True
    assert time.monotonic() - started < 1.0


def test_linger_gathers_ops_into_one_batch(migrated, loop):
    writer = new_writer(migrated, loop, linger_s=0.3)
    done = Done()
    try:
        for i in range(5):
            writer.submit(lambda store, i=i: store.open_call(call(f"c{i}")), done)
        loop.run_until(lambda: len(done) == 5)
        assert (writer.stats().batches, writer.stats().largest_batch) == (1, 5)
    finally:
        writer.stop(10)


def test_a_failing_op_does_not_affect_the_others(migrated, loop):
    writer = new_writer(migrated, loop)
    done = Done()
    try:
        commits = count_commits(writer)
        release = hold(writer)
        writer.submit(lambda store: store.open_call(call("c1")), done)
        # Fails inside the database after its chunk is reserved (region NOT NULL).
        writer.submit(lambda store: store.open_call(call("bad", region=None)), done)
        writer.submit(lambda store: store.open_call(call("c2")), done)
        writer.submit(lambda store: 1 / 0, done)  # fails in Python
        writer.submit(lambda store: store.answered("c1", at(0)), done)
        release.set()
        loop.run_until(lambda: len(done) == 5)
        ok1, bad, ok2, zero, answered = done.results
        assert ok1 == ok2 == Grant(POOL, 300) and answered is None
        assert isinstance(bad, StoreError) and isinstance(zero, ZeroDivisionError)
        assert commits == [1, 1]
        # The first attempt, without savepoints, broke at `bad` and was rolled
        # back; the rerun isolated each store method in a savepoint.
        assert (writer.stats().op_errors, writer.stats().reruns, writer.stats().batch_errors) == (2, 1, 0)
    finally:
        writer.stop(10)
    check = open_store(migrated, instance_id="gw-test")
    try:
        assert check.call_row("bad") is None
        assert check.call_row("c1")["state"] == "answered" and check.call_row("c2")["state"] == "open"
        assert check.bucket_row("t1", "2018-07", POOL)["reserved"] == 10.0
    finally:
        check.close()


def test_an_op_that_takes_the_transaction_down_fails_alone(migrated, loop):
    """The database dropping the whole transaction under one op (SQLite does on
    a full disk) fails that op; the others are run again and commit."""
    writer = new_writer(migrated, loop)
    done = Done()

    def drop_the_transaction(store):
        def fn():
            if store.dialect == "sqlite":
                store._conn.execute("ROLLBACK")
            else:
                store._conn.rollback()
            raise OSError("disk full")

        return store._run(fn)

    try:
        release = hold(writer)
        writer.submit(lambda store: store.open_call(call("c1")), done)
        writer.submit(drop_the_transaction, done)
        writer.submit(lambda store: store.open_call(call("c2")), done)
        release.set()
        loop.run_until(lambda: len(done) == 3)
        assert done.results[0] == done.results[2] == Grant(POOL, 300)
        assert isinstance(done.results[1], OSError)
        assert (writer.stats().reruns, writer.stats().batch_errors) == (1, 1)
    finally:
        writer.stop(10)
    check = open_store(migrated, instance_id="gw-test")
    assert check.bucket_row("t1", "2018-07", POOL)["reserved"] == 10.0
    check.close()


def test_a_failed_commit_fails_every_op_of_the_batch(migrated, loop):
    writer = new_writer(migrated, loop)
    done = Done()
    try:
        release = hold(writer)
        store = writer._store
        real_commit = store._commit
        error = (
            sqlite3.OperationalError("disk I/O error")
            if store.dialect == "sqlite"
            else __import__("psycopg").OperationalError("server closed the connection unexpectedly")
        )

        calls: list[int] = []

        def failing_commit():  # the blocker's batch commits; the next one fails
            calls.append(1)
            if len(calls) == 1:
                return real_commit()
            store._commit = real_commit
            raise error

        for i in range(3):
            writer.submit(lambda s, i=i: s.open_call(call(f"c{i}")), done)
        store._commit = failing_commit
        release.set()
        loop.run_until(lambda: len(done) == 3)
        assert all(isinstance(r, StoreError) for r in done.results), done.results
        assert len(calls) == 2
        assert writer.stats().batch_errors == 1 and writer.stats().op_errors == 3
        # The next batch works again.
        writer.submit(lambda s: s.open_call(call("later")), done)
        loop.run_until(lambda: len(done) == 4)
        assert done.results[3] == Grant(POOL, 300)
    finally:
        writer.stop(10)
    check = open_store(migrated, instance_id="gw-test")
    try:
        assert [check.call_row(f"c{i}") for i in range(3)] == [None] * 3
        assert check.call_row("later") is not None
    finally:
        check.close()


def test_sqlite_reservation_is_on_disk_when_its_completion_is_posted(tmp_path):
    """Durability before the caller dials the trunk: at the moment the writer
    posts the completion, the database files (as kill -9 would leave them)
    already hold the call and its reservation."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    s = open_store(url, instance_id="gw-test")
    s.migrate()
    s.close()
    seen: list[tuple] = []

    def post(callback):
        crash = tmp_path / f"crash{len(seen)}"
        crash.mkdir()
        for suffix in ("", "-wal"):
            src = tmp_path / f"ledger.db{suffix}"
            if src.exists():
                shutil.copy(src, crash / f"ledger.db{suffix}")
        conn = sqlite3.connect(crash / "ledger.db")
        try:
            seen.append(
                (
                    conn.execute("SELECT state FROM calls WHERE call_id = 'c1'").fetchall(),
                    conn.execute("SELECT amount FROM reservations WHERE call_id = 'c1'").fetchall(),
                    conn.execute("SELECT reserved FROM buckets").fetchall(),
                )
            )
        finally:
            conn.close()

    writer = LedgerWriter(url, post, instance_id="gw-test", log=Recorder(), background_maintenance=False)
    try:
        writer.submit(lambda store: store.open_call(call("c1")), lambda grant: None)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        writer.stop(10)
    assert seen == [([("open",)], [(5.0,)], [(5.0,)])]


def test_stop_finishes_the_queue_then_refuses_work(migrated, loop):
    writer = new_writer(migrated, loop)
    done = Done()
    for i in range(50):
        writer.submit(lambda store, i=i: store.open_call(call(f"c{i}")), done)
    assert writer.stop(10) is True
    assert not writer._thread.is_alive()
    assert writer.pending() == 0 and writer.oldest_pending_age_s() == 0.0
    loop.run_until(lambda: len(done) == 50)
    with pytest.raises(WriterStopped):
        writer.submit(lambda store: None)


def test_opens_from_settings(tmp_path, loop):
    url = f"sqlite:///{tmp_path}/ledger.db"
    s = open_store(url, instance_id="gw-a")
    s.migrate()
    s.close()
    writer = LedgerWriter(StoreSettings(url=url, instance_id="gw-a", chunk_s=120), loop.post, log=Recorder())
    done = Done()
    try:
        writer.submit(lambda store: (store.instance_id, store.open_call(call("c1"))), done)
        loop.run_until(lambda: len(done) == 1)
        assert done.results == [("gw-a", Grant(POOL, 120))]
    finally:
        writer.stop(10)
    with pytest.raises(StoreError):
        LedgerWriter("mysql://nope", loop.post)


# --------------------------------------------------------------------------- a stalled database


def _stalled_checks(writer, loop, done, unfreeze):
    """With the database stalled: submit returns at once, the age of the
    oldest op grows, stop() keeps its timeout; once the database is back
    the work completes."""
    started = time.monotonic()
    writer.submit(lambda store: store.open_call(call("stalled")), done)
    writer.submit(lambda store: store.answered("stalled", at(1)), done)
    assert time.monotonic() - started < 0.05
    time.sleep(0.6)
    first = writer.oldest_pending_age_s()
    assert first >= 0.5 and writer.pending() == 2
    time.sleep(0.4)
    assert writer.oldest_pending_age_s() >= first + 0.3
    assert len(done) == 0
    started = time.monotonic()
    assert writer.stop(timeout=1.0) is False
    assert 0.9 <= time.monotonic() - started < 1.5
    with pytest.raises(WriterStopped):
        writer.submit(lambda store: None)
    unfreeze()
    loop.run_until(lambda: len(done) == 2, timeout=30)
    assert done.results == [Grant(POOL, 300), None]
    writer._thread.join(15)
    assert not writer._thread.is_alive() and writer.pending() == 0


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_stalled_postgres_never_blocks_the_caller(own_pg_server, loop):
    s = open_store(own_pg_server.url, instance_id="gw-test")
    s.migrate()
    s.close()
    writer = new_writer(own_pg_server.url, loop)
    done = Done()
    writer.submit(lambda store: store.schema_version(), done)  # connected and warm
    loop.run_until(lambda: len(done) == 1)
    done.results.clear()
    try:
        assert own_pg_server.freeze() >= 3  # the postmaster and its backends, the writer's among them
        _stalled_checks(writer, loop, done, own_pg_server.unfreeze)
    finally:
        own_pg_server.unfreeze()
        writer.stop(5)


@pytest.mark.timeout(120)
def test_stalled_sqlite_never_blocks_the_caller(tmp_path, loop):
    """SQLite's stall: another process holds the write lock (the writer waits
    up to its busy timeout, 10 s)."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    s = open_store(url, instance_id="gw-test")
    s.migrate()
    s.close()
    writer = new_writer(url, loop)
    done = Done()
    locker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        _stalled_checks(writer, loop, done, lambda: locker.execute("ROLLBACK"))
    finally:
        locker.close()
        writer.stop(5)


@pytest.mark.postgres
def test_postgres_lost_connection_replays_the_batch(pg_schema_url, loop):
    import psycopg

    s = open_store(pg_schema_url, instance_id="gw-test")
    s.migrate()
    s.close()
    writer = new_writer(pg_schema_url, loop)
    done = Done()
    killed: list[int] = []

    def kill_my_backend_once(store):
        if not killed:
            killed.append(store._conn.info.backend_pid)
            with psycopg.connect(pg_schema_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (killed[0],))
        return "survived"

    try:
        release = hold(writer)
        writer.submit(lambda store: store.open_call(call("c1")), done)
        writer.submit(kill_my_backend_once, done)
        writer.submit(lambda store: store.open_call(call("c2")), done)
        release.set()
        loop.run_until(lambda: len(done) == 3)
        assert done.results == [Grant(POOL, 300), "survived", Grant(POOL, 300)]
        stats = writer.stats()
        assert (stats.reconnects, stats.batch_errors, stats.op_errors) == (1, 1, 0)
        assert writer._store._conn.info.backend_pid != killed[0]
    finally:
        writer.stop(10)
    check = open_store(pg_schema_url, instance_id="gw-test")
    try:
        assert check.bucket_row("t1", "2018-07", POOL)["reserved"] == 10.0  # replayed, not doubled
    finally:
        check.close()


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_two_instances_batches_that_deadlock_both_complete(pg_schema_url):
    """A batch holds its bucket row locks until it commits, so two instances
    whose batches reserve from two tenants' pools in opposite orders deadlock.
    The writer's lock timeout (0.2 s, well before PostgreSQL's deadlock_timeout
    of 1 s) rolls a batch back; it runs again, and every op completes correctly."""
    s = open_store(pg_schema_url, instance_id="judge")
    s.migrate()
    s.close()
    loop_a, loop_b = Loop(), Loop()
    a = LedgerWriter(pg_schema_url, loop_a.post, instance_id="gw-a", log=Recorder())
    b = LedgerWriter(pg_schema_url, loop_b.post, instance_id="gw-b", log=Recorder())
    both_hold_one = threading.Barrier(2, timeout=10)
    done_a, done_b = Done(), Done()

    def meet_once(store):
        if store.instance_id not in met:
            met.add(store.instance_id)
            both_hold_one.wait()

    met: set[str] = set()
    try:
        release_a, release_b = hold(a), hold(b)
        for writer, done, tenants in ((a, done_a, ("t1", "t2")), (b, done_b, ("t2", "t1"))):
            first, second = tenants
            org = "alice" if writer is a else "bob"  # only the buckets (and tenant counters) are shared
            writer.submit(lambda st, t=first, o=org: st.open_call(call(f"{o}-{t}", tenant=t, organizer=o)), done)
            writer.submit(meet_once, done)
            writer.submit(lambda st, t=second, o=org: st.open_call(call(f"{o}-{t}", tenant=t, organizer=o)), done)
        started = time.monotonic()
        release_a.set()
        release_b.set()
        loop_a.run_until(lambda: len(done_a) == 3, timeout=30)
        loop_b.run_until(lambda: len(done_b) == 3, timeout=30)
        assert [done_a.results[0], done_a.results[2], done_b.results[0], done_b.results[2]] == [Grant(POOL, 300)] * 4
        assert a.stats().conflicts + b.stats().conflicts >= 1  # a batch was rolled back and ran again
        assert time.monotonic() - started < 1.0  # sooner than PostgreSQL's deadlock detection
    finally:
        a.stop(10)
        b.stop(10)
    check = open_store(pg_schema_url, instance_id="judge")
    try:
        for tenant in ("t1", "t2"):
            assert check.bucket_row(tenant, "2018-07", POOL)["reserved"] == 10.0
    finally:
        check.close()
