"""`Store.batch()`: several store methods in one transaction, each isolated in
a savepoint. Every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import pytest

from store import BucketSpec, Grant, StoreError, TransactionLost, open_store
from tests.store.helpers import POOL, Recorder, at, call, snap


def count_commits(store) -> list[int]:
    """Wrap the store's COMMIT; the returned list grows by one per commit."""
    commits: list[int] = []
    real = store._commit

    def counting():
        commits.append(1)
        real()

    store._commit = counting
    return commits


def other_view(store_url):
    """A second connection, as another process would see the database."""
    return open_store(store_url, instance_id="observer")


def test_a_batch_is_one_commit_and_methods_behave_as_on_their_own(store, store_url):
    commits = count_commits(store)
    observer = other_view(store_url)
    try:
        with store.batch() as batch:
            assert store.open_call(call("c1")) == Grant(POOL, 300)
            assert store.open_call(call("c2")) == Grant(POOL, 300)
            store.answered("c1", at(0))
            assert store.extend("c1", at(280)) == Grant(POOL, 600)
            assert store.close_call("c2", at(5), "cancelled").billed_units == 0
            assert snap(store)["concurrent_organizer"] == 1  # the batch sees its own writes
            assert observer.call_row("c1") is None  # nobody else does, until the commit
            assert commits == []
        assert commits == [1]
        assert batch.commit_s > 0 and batch.broken is None
        assert observer.call_row("c1")["state"] == "answered"
        assert observer.bucket_row("t1", "2018-07", POOL) == {"capacity": 600.0, "used": 0.0, "reserved": 10.0}
        # Afterwards each method is its own transaction again.
        store.close_call("c1", at(61), "normal")
        assert commits == [1, 1]
        assert observer.call_row("c1")["state"] == "closed"
    finally:
        observer.close()


def test_a_method_that_fails_rolls_back_alone(store, store_url):
    """open_call fails after it has reserved its chunk (NOT NULL region): that
    chunk is rolled back with it; what came before and after commits."""
    with store.batch():
        assert store.open_call(call("before")) == Grant(POOL, 300)
        with pytest.raises(StoreError, match="(?i)null"):
            store.open_call(call("broken", region=None))
        with pytest.raises(ValueError, match="naive"):
            store.answered("before", at(0).replace(tzinfo=None))
        assert store.open_call(call("after")) == Grant(POOL, 300)
    observer = other_view(store_url)
    try:
        assert observer.call_row("broken") is None
        assert observer.call_row("before") is not None and observer.call_row("after") is not None
        assert observer.bucket_row("t1", "2018-07", POOL)["reserved"] == 10.0  # two chunks, not three
        assert snap(observer)["concurrent_organizer"] == 2
    finally:
        observer.close()


def test_without_savepoints_a_failing_method_breaks_the_batch(store):
    commits = count_commits(store)
    with pytest.raises(StoreError, match="(?i)null"), store.batch(savepoints=False) as batch:
        assert batch.savepoints is False
        store.open_call(call("c1"))
        with pytest.raises(StoreError):
            store.open_call(call("broken", region=None))
        assert batch.broken is not None
        with pytest.raises(TransactionLost):  # nothing more runs in a broken batch
            store.open_call(call("c2"))
    assert commits == []
    assert store.call_row("c1") is None and store.bucket_row("t1", "2018-07", POOL) is None
    commits.clear()
    with store.batch(savepoints=False):  # when nothing fails it commits as usual
        store.open_call(call("c1"))
        store.answered("c1", at(0))
    assert commits == [1] and store.call_row("c1")["state"] == "answered"


def test_a_replayed_open_call_inside_one_batch(store):
    """The second open_call of a Call-ID loses the race on its unique key: its
    savepoint is rolled back and retried, and it returns the first grant."""
    with store.batch():
        g1 = store.open_call(call("c1"))
        g2 = store.open_call(call("c1"))
    assert g1 == g2 == Grant(POOL, 300)
    assert store.bucket_row("t1", "2018-07", POOL)["reserved"] == 5.0
    assert snap(store)["concurrent_organizer"] == 1


def test_a_block_that_raises_rolls_everything_back(store):
    commits = count_commits(store)
    with pytest.raises(RuntimeError), store.batch():
        store.open_call(call("c1"))
        raise RuntimeError("caller gave up")
    assert commits == []
    assert store.call_row("c1") is None
    assert store.bucket_row("t1", "2018-07", POOL) is None


def test_the_blocks_own_error_comes_out_as_raised(store):
    error = RuntimeError("caller gave up")
    with pytest.raises(RuntimeError) as raised, store.batch():
        store.open_call(call("c1"))
        raise error
    assert raised.value is error and raised.value.__cause__ is None
    assert raised.traceback[-1].name == "test_the_blocks_own_error_comes_out_as_raised"
    with store.batch():  # the next batch starts afresh
        store.open_call(call("c2"))
    assert store.call_row("c1") is None and store.call_row("c2") is not None


def test_nested_batches_join_the_outer_one(store):
    commits = count_commits(store)
    with store.batch() as outer:
        store.open_call(call("c1"))
        with store.batch() as inner:
            store.open_call(call("c2"))
        assert inner is outer and commits == []
    assert commits == [1]
    assert store.call_row("c2") is not None


def test_alerts_are_raised_only_once_the_batch_has_committed(store_url):
    log = Recorder()
    s = open_store(store_url, instance_id="gw", log=log, chunk_s=600)
    try:
        s.migrate()
        pool = BucketSpec(POOL, 10)
        s.open_call(call("c1", pool))
        s.answered("c1", at(0))
        with pytest.raises(RuntimeError), s.batch():
            s.close_call("c1", at(540), "normal")  # 9 of 10 minutes: 80 %
            assert log.named("pool_threshold") == []
            raise RuntimeError("rolled back")
        assert log.named("pool_threshold") == [] and s.alerts() == []
        with s.batch():
            s.close_call("c1", at(540), "normal")
            assert log.named("pool_threshold") == []  # not yet: nothing is committed
        assert [e["percent"] for e in log.named("pool_threshold")] == [80]
        assert [a["kind"] for a in s.alerts()] == ["pool_80"]
    finally:
        s.close()


def test_a_transaction_dropped_by_the_database_breaks_the_batch(store):
    """SQLite rolls a transaction back by itself on a full disk: later methods
    must not run outside it (they would autocommit), and the batch must not
    report a commit."""

    def drop_the_transaction():
        if store.dialect == "sqlite":
            store._conn.execute("ROLLBACK")
        else:
            store._conn.rollback()
        raise OSError("disk full")

    with pytest.raises(OSError), store.batch() as batch:
        store.open_call(call("c1"))
        with pytest.raises(OSError):
            store._run(drop_the_transaction)
        assert isinstance(batch.broken, OSError)
        with pytest.raises(TransactionLost):
            store.open_call(call("c2"))
    assert store.call_row("c1") is None and store.call_row("c2") is None
    assert store.open_call(call("c3")) == Grant(POOL, 300)  # the store carries on


@pytest.mark.postgres
def test_postgres_connection_lost_inside_a_batch(pg_schema_url):
    import psycopg

    s = open_store(pg_schema_url, instance_id="gw")
    try:
        s.migrate()
        with pytest.raises(TransactionLost), s.batch() as batch:
            s.open_call(call("c1"))
            with psycopg.connect(pg_schema_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (s._conn.info.backend_pid,))
            with pytest.raises(TransactionLost):
                s.open_call(call("c2"))
            assert isinstance(batch.broken, TransactionLost)
        # Nothing committed, and the store re-opened its connection: run it again.
        with s.batch():
            s.open_call(call("c1"))
            s.open_call(call("c2"))
        assert s.call_row("c1") is not None and s.call_row("c2") is not None
        assert s.bucket_row("t1", "2018-07", POOL)["reserved"] == 10.0
    finally:
        s.close()


@pytest.mark.postgres
def test_postgres_lock_timeout_rolls_the_batch_back_as_a_conflict(pg_schema_url):
    import psycopg

    from store import TransactionConflict

    s = open_store(pg_schema_url, instance_id="gw")
    try:
        s.migrate()
        s.open_call(call("c0"))  # the pool's bucket row exists
        s.set_lock_timeout(0.1)
        with psycopg.connect(pg_schema_url) as other:  # another instance, in the middle of a transaction
            other.execute("SELECT * FROM buckets FOR UPDATE")
            for savepoints in (True, False):
                with pytest.raises(TransactionConflict), s.batch(savepoints=savepoints) as batch:
                    s.answered("c0", at(0))
                    with pytest.raises(TransactionConflict, match="lock timeout"):
                        s.open_call(call("c1"))
                    assert isinstance(batch.broken, TransactionConflict)
            other.rollback()
        assert s.call_row("c0")["state"] == "open"  # the whole batch was rolled back
        with s.batch():  # same connection, no reconnect needed
            s.open_call(call("c1"))
        assert s.bucket_row("t1", "2018-07", POOL)["reserved"] == 10.0
    finally:
        s.close()
