"""The store suite: every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from zoneinfo import ZoneInfo

import pytest

from store import BucketSpec, Grant, StoreError, open_store
from store.base import load_migrations
from tests.store.helpers import POOL, T0, UTC, Recorder, at, call, snap

# --------------------------------------------------------------------------- schema


def test_migrations_are_idempotent(store_url):
    s = open_store(store_url, instance_id="gw")
    try:
        assert s.schema_version() == 0
        latest = load_migrations(s.dialect)[-1][0]
        assert s.migrate() == latest
        assert s.migrate() == latest
        assert s.schema_version() == latest
        # A second process migrating the same database is harmless too.
        other = open_store(store_url, instance_id="gw2")
        assert other.migrate() == latest
        other.close()
    finally:
        s.close()


def test_bad_urls_raise_store_error(tmp_path):
    for url in ("", "mysql://x@y/z", "sqlite:", "sqlite:///", "sqlite://relative.db"):
        with pytest.raises(StoreError):
            open_store(url)
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL at postgresql://u:\\*\\*\\*@127.0.0.1:1/db"):
        open_store("postgresql://u:secret@127.0.0.1:1/db")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open SQLite database"):
        open_store(f"sqlite:///{tmp_path}/file/sub/ledger.db")


def test_sqlite_relative_path_creates_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = open_store("sqlite:///var/sub/ledger.db")
    s.migrate()
    s.close()
    assert (tmp_path / "var" / "sub" / "ledger.db").exists()


# --------------------------------------------------------------------------- billing


def test_per_started_minute(store):
    assert store.open_call(call()) == Grant(POOL, 300)
    store.answered("c1", at(5))
    s = store.close_call("c1", at(5 + 61), "normal", a_status=200, b_status=200)
    assert (s.talk_s, s.billed_units, s.increment_s, s.charges, s.recovered) == (61.0, 2, 60, ((POOL, 2.0),), False)
    assert store.bucket_row("t1", "2018-07", POOL) == {"capacity": 600.0, "used": 2.0, "reserved": 0.0}
    row = store.call_row("c1")
    assert (row["state"], row["outcome"], row["a_status"], row["b_status"]) == ("closed", "normal", 200, 200)


def test_exact_minute_is_one_unit(store):
    store.open_call(call())
    store.answered("c1", at(0))
    assert store.close_call("c1", at(60), "normal").billed_units == 1


def test_per_second(store):
    store.open_call(call(increment_s=1))
    store.answered("c1", at(2))
    s = store.close_call("c1", at(2 + 61.2), "normal")
    assert (s.billed_units, s.increment_s) == (62, 1)
    assert s.charges == ((POOL, round(62 / 60, 6)),)
    assert store.bucket_row("t1", "2018-07", POOL)["used"] == pytest.approx(62 / 60)
    assert store.bucket_row("t1", "2018-07", POOL)["reserved"] == pytest.approx(0.0, abs=1e-9)


def test_credits_are_money_at_the_destination_rate(store):
    chain = (BucketSpec("credits", 10.0, rate_per_minute=0.25),)
    assert store.open_call(call("c1", *chain)) == Grant("credits", 300)
    assert snap(store)["credits_spent"] == pytest.approx(1.25)  # the live reservation
    store.answered("c1", at(0))
    s = store.close_call("c1", at(130), "normal")
    assert s.charges == (("credits", 0.75),)
    assert snap(store)["credits_spent"] == pytest.approx(0.75)
    # Credits are a balance, not a monthly allowance: the next month still sees the spend.
    assert snap(store, now=datetime(2018, 9, 1, tzinfo=UTC))["credits_spent"] == pytest.approx(0.75)


def test_close_is_idempotent(store):
    store.open_call(call())
    store.answered("c1", at(0))
    first = store.close_call("c1", at(90), "normal")
    again = store.close_call("c1", at(900), "trunk_failure", a_status=500)
    assert again == first
    assert store.bucket_row("t1", "2018-07", POOL)["used"] == 2.0
    assert store.call_row("c1")["outcome"] == "normal"


def test_open_is_idempotent(store):
    g1 = store.open_call(call())
    g2 = store.open_call(call())
    assert g1 == g2 == Grant(POOL, 300)
    assert store.bucket_row("t1", "2018-07", POOL)["reserved"] == 5.0
    # Replayed when the pool is dry: still the first grant, nothing more reserved.
    assert store.open_call(call("c2", BucketSpec(POOL, 5))) is None
    assert store.open_call(call("c1", BucketSpec(POOL, 5))) == Grant(POOL, 300)
    store.close_call("c1", at(10), "cancelled")
    assert store.open_call(call()) == Grant(POOL, 300)  # a replay after the close changes nothing
    row = store.bucket_row("t1", "2018-07", POOL)
    assert (row["used"], row["reserved"]) == (0.0, 0.0)


def test_unused_reservation_is_released(store):
    store.open_call(call())
    assert snap(store)["pool_used_minutes"] == 5.0  # the chunk is held while the call is up
    store.answered("c1", at(0))
    store.close_call("c1", at(30), "normal")
    assert store.bucket_row("t1", "2018-07", POOL) == {"capacity": 600.0, "used": 1.0, "reserved": 0.0}
    assert snap(store)["pool_used_minutes"] == 1.0


def test_never_answered_charges_nothing(store):
    store.open_call(call())
    s = store.close_call("c1", at(20), "cancelled", a_status=487)
    assert (s.talk_s, s.billed_units, s.charges) == (0.0, 0, ())
    assert store.bucket_row("t1", "2018-07", POOL) == {"capacity": 600.0, "used": 0.0, "reserved": 0.0}


def test_extension_moves_to_the_next_bucket(store):
    chain = (BucketSpec(POOL, 7), BucketSpec("credits", 10.0, rate_per_minute=0.5))
    assert store.open_call(call("c1", *chain)) == Grant(POOL, 300)
    store.answered("c1", at(0))
    assert store.extend("c1", at(280)) == Grant(POOL, 420)  # the pool's last 2 minutes
    assert store.extend("c1", at(400)) == Grant("credits", 720)  # pool dry: credits
    assert snap(store, now=at(400))["pool_used_minutes"] == 7.0
    assert snap(store, now=at(400))["credits_spent"] == pytest.approx(2.5)
    s = store.close_call("c1", at(600), "normal")
    assert s.billed_units == 10
    assert s.charges == ((POOL, 7.0), ("credits", 1.5))
    assert store.bucket_row("t1", "lifetime", "credits") == {"capacity": 10.0, "used": 1.5, "reserved": 0.0}
    assert store.bucket_row("t1", "2018-07", POOL) == {"capacity": 7.0, "used": 7.0, "reserved": 0.0}


def test_exhaustion_returns_none_and_billing_stops_at_the_grant(store):
    assert store.open_call(call("c1", BucketSpec(POOL, 3))) == Grant(POOL, 180)
    store.answered("c1", at(0))
    assert store.extend("c1", at(170)) is None
    # The gateway cut the call a little late: never bill more than granted.
    s = store.close_call("c1", at(181.5), "duration_exhausted")
    assert (s.talk_s, s.billed_units, s.charges) == (181.5, 3, ((POOL, 3.0),))
    assert store.open_call(call("c2", BucketSpec(POOL, 3))) is None


def test_open_returns_none_and_records_nothing_when_all_is_spent(store):
    assert store.open_call(call("c1", BucketSpec(POOL, 0.5), BucketSpec("credits", 0.01, 0.5))) is None
    assert store.call_row("c1") is None
    assert snap(store)["concurrent_organizer"] == 0
    assert store.open_call(call("c2")) == Grant(POOL, 300)


def test_partial_unit_is_never_granted(store):
    # 2.5 minutes left, per started minute: grant 2 minutes, not 3.
    assert store.open_call(call("c1", BucketSpec(POOL, 2.5))) == Grant(POOL, 120)


def test_unlimited_bucket_and_addon_minutes(store):
    chain = (BucketSpec("usca_unlimited", None),)
    assert store.open_call(call("c1", *chain, e164="+12125550100", region="US")) == Grant("usca_unlimited", None)
    store.answered("c1", at(0))
    assert store.extend("c1", at(290)) == Grant("usca_unlimited", None)
    s = store.close_call("c1", at(125), "normal")
    assert s.charges == (("usca_unlimited", 3.0),)
    snapshot = snap(store)
    assert snapshot["addon_used_minutes"] == 3.0
    assert snapshot["pool_used_minutes"] == 0.0
    # Fair-use minutes are per organiser.
    assert snap(store, organizer="bob")["addon_used_minutes"] == 0.0


def test_max_duration_caps_grants(store):
    assert store.open_call(call(max_duration_s=400)) == Grant(POOL, 300)
    assert store.extend("c1", at(290)) == Grant(POOL, 400)
    assert store.extend("c1", at(390)) is None
    assert store.bucket_row("t1", "2018-07", POOL)["reserved"] == 7.0
    store.answered("c1", at(0))
    assert store.close_call("c1", at(500), "duration_exhausted").billed_units == 7  # ceil(400 / 60)


def test_max_duration_caps_unlimited(store):
    store.open_call(call("c1", BucketSpec("promotion", None), max_duration_s=100))
    store.answered("c1", at(0))
    s = store.close_call("c1", at(200), "duration_exhausted")
    assert s.charges == (("promotion", 2.0),)
    assert snap(store)["promotion_used_minutes"] == 2.0


def test_extend_on_closed_or_unknown_call(store):
    store.open_call(call())
    store.close_call("c1", at(10), "cancelled")
    assert store.extend("c1", at(20)) is None
    assert store.extend("nope", at(20)) is None
    s = store.close_call("nope", at(20), "cancelled")
    assert (s.billed_units, s.charges) == (0, ())


# --------------------------------------------------------------------------- counters


def test_counters_see_open_calls_and_decrement_on_every_end_path(store):
    chain = (BucketSpec(POOL, 600),)
    store.open_call(call("cancel", *chain))
    store.open_call(call("answered", *chain, started=at(1)))
    store.open_call(call("failure", *chain, started=at(2), e164="+33142685301"))
    store.open_call(call("crash", *chain, started=at(3), e164="+33142685302"))
    store.open_call(call("other", *chain, started=at(4), organizer="bob"))
    s = snap(store, now=at(5), e164="+33142685300")
    assert (s["concurrent_organizer"], s["concurrent_tenant"]) == (4, 5)
    assert s["calls_last_minute_organizer"] == 4
    assert s["distinct_destinations_today"] == 3
    assert s["destination_seen_today"] is True
    assert snap(store, now=at(5), e164="+33999")["destination_seen_today"] is False

    store.answered("answered", at(6))
    store.answered("crash", at(6))
    store.close_call("cancel", at(7), "cancelled", a_status=487)
    assert snap(store, now=at(7))["concurrent_organizer"] == 3
    store.close_call("answered", at(67), "normal")
    store.close_call("failure", at(8), "trunk_failure", b_status=503)
    assert snap(store, now=at(8))["concurrent_organizer"] == 1
    recovered = store.recover_open_calls(at(100))
    assert {r.call_id for r in recovered} == {"crash", "other"}
    s = snap(store, now=at(100))
    assert (s["concurrent_organizer"], s["concurrent_tenant"]) == (0, 0)
    # Rate: only calls started in the last 60 s; the destinations of today stay.
    assert s["calls_last_minute_organizer"] == 0
    assert snap(store, now=at(50))["calls_last_minute_organizer"] == 4
    assert s["distinct_destinations_today"] == 3
    # The bucket holds only what was billed.
    assert store.bucket_row("t1", "2018-07", POOL) == {"capacity": 600.0, "used": 2.0, "reserved": 0.0}


def _counters_from_the_ledger(store, now, organizer="alice", tenant="t1", e164="+33142685300"):
    """The guard counters computed the slow way, from the calls table alone."""
    since = int(now.timestamp()) - 60
    day = now.astimezone(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%d")
    x = store._run(
        lambda: store._x(
            "SELECT (SELECT COUNT(*) FROM calls WHERE organizer = ? AND state IN ('open', 'answered')),"
            " (SELECT COUNT(*) FROM calls WHERE tenant = ? AND state IN ('open', 'answered')),"
            " (SELECT COUNT(*) FROM calls WHERE organizer = ? AND started_at >= ?),"
            " (SELECT COUNT(DISTINCT e164) FROM calls WHERE organizer = ? AND day = ?),"
            " (SELECT COUNT(*) FROM calls WHERE organizer = ? AND day = ? AND e164 = ?),"
            " (SELECT COALESCE(SUM(addon_minutes), 0) FROM calls WHERE organizer = ? AND period = ?)",
            (organizer, tenant, organizer, since + 1, organizer, day, organizer, day, e164, organizer, day[:7]),
        ).fetchone(),
        write=False,
    )
    return {
        "concurrent_organizer": x[0],
        "concurrent_tenant": x[1],
        "calls_last_minute_organizer": x[2],
        "distinct_destinations_today": x[3],
        "destination_seen_today": bool(x[4]),
        "addon_used_minutes": x[5],
    }


def _guard_counters(store, now, e164="+33142685300"):
    s = snap(store, now=now, e164=e164)
    return {
        k: s[k]
        for k in (
            "concurrent_organizer",
            "concurrent_tenant",
            "calls_last_minute_organizer",
            "distinct_destinations_today",
            "destination_seen_today",
            "addon_used_minutes",
        )
    }


def test_running_counters_agree_with_the_ledger_on_every_path(store):
    """The counters the snapshot reads (migration 002) are kept in step with the
    calls table through open, replayed open, answer, extend, close, a second
    close and recovery."""
    unlimited = (BucketSpec("usca_unlimited", None),)
    pool = (BucketSpec(POOL, 600),)
    for i in range(12):
        chain = unlimited if i % 3 == 0 else pool
        store.open_call(
            call(f"c{i}", *chain, organizer="alice" if i % 4 else "bob", e164=f"+3314268530{i % 5}", started=at(i * 7))
        )
    store.open_call(call("c1", *pool, started=at(7)))  # a retransmitted INVITE: no double count
    assert _guard_counters(store, at(80)) == _counters_from_the_ledger(store, at(80))
    for i in (0, 3, 6):
        store.answered(f"c{i}", at(i * 7 + 1))
    store.extend("c3", at(100))
    store.close_call("c3", at(200), "normal")
    store.close_call("c3", at(300), "normal")  # idempotent: counted once
    store.close_call("c0", at(150), "normal")
    store.close_call("c5", at(60), "trunk_failure", b_status=486)
    store.recover_open_calls(at(400))
    for now in (at(30), at(80), at(400)):
        for e164 in ("+33142685300", "+33142685304", "+33999"):
            assert _guard_counters(store, now, e164) == _counters_from_the_ledger(store, now, e164=e164), (now, e164)
    # alice's add-on minutes: c3 talked 178 s (3 min); c0 is bob's; c6 was
    # recovered with no heartbeat after its answer (talk 0).
    assert _guard_counters(store, at(400))["addon_used_minutes"] == 3.0


def test_migration_002_backfills_the_counters_of_an_existing_ledger(store):
    store.open_call(call("live", BucketSpec("usca_unlimited", None), started=at(0)))
    store.open_call(call("done", BucketSpec("usca_unlimited", None), started=at(1), e164="+33142685301"))
    store.answered("done", at(2))
    store.close_call("done", at(122), "normal")
    before = _guard_counters(store, at(30))
    assert before["concurrent_organizer"] == 1 and before["distinct_destinations_today"] == 2
    assert before["addon_used_minutes"] == 2.0

    def back_to_version_1():
        for table in (
            "live_calls",
            "organizer_seconds",
            "organizer_destinations",
            "organizer_days",
            "organizer_periods",
        ):
            store._x(f"DROP TABLE {table}")
        store._x("DELETE FROM schema_version WHERE version = 2")

    store._run(back_to_version_1)
    assert store.schema_version() == 1
    assert store.migrate() == 2
    assert _guard_counters(store, at(30)) == before


def test_prune_keeps_the_rate_window(store):
    for i in range(3):
        store.open_call(call(f"c{i}", BucketSpec("usca_unlimited", None), started=at(i * 200)))
    store.prune_counters(at(400))  # c0 (t=0) is beyond any window; c1 (t=200) is not
    rows = store._run(lambda: store._x("SELECT second FROM organizer_seconds ORDER BY second").fetchall(), write=False)
    assert [r[0] - int(T0.timestamp()) for r in rows] == [200, 400]
    assert snap(store, now=at(430))["calls_last_minute_organizer"] == 1


def test_sqlite_snapshot_is_primary_key_lookups_only(tmp_path):
    """The INVITE path never scans: every part of the snapshot is a keyed search."""
    store = open_store(f"sqlite:///{tmp_path}/ledger.db", instance_id="gw")
    store.migrate()
    captured = []
    real_x = store._x
    store._x = lambda sql, params=(): captured.append((sql, params)) or real_x(sql, params)
    snap(store, e164="+33142685300")
    store._x = real_x
    ((sql, params),) = captured
    plan = [row[3] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]
    assert plan and not [line for line in plan if line.startswith("SCAN") and line != "SCAN CONSTANT ROW"], plan
    assert all("calls" not in line.split() for line in plan), plan
    store.close()


def test_sqlite_checkpoints_run_off_the_writer_thread(tmp_path):
    """The writer never checkpoints (a checkpoint fsyncs, which would stall the
    SIP loop); the background thread copies committed calls into the main
    database file within a second or so."""
    import shutil
    import sqlite3
    import time

    store = open_store(f"sqlite:///{tmp_path}/ledger.db", instance_id="gw")
    store.migrate()
    store.start_background_maintenance()
    assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for i in range(50):
        store.open_call(call(f"c{i}", BucketSpec("usca_unlimited", None)))
    deadline = time.monotonic() + 10
    while True:
        shutil.copy(tmp_path / "ledger.db", tmp_path / "main-file-only.db")  # without its WAL
        copy = sqlite3.connect(tmp_path / "main-file-only.db")
        try:
            in_main_file = copy.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        except sqlite3.OperationalError:
            in_main_file = 0  # not even the schema checkpointed yet
        copy.close()
        if in_main_file == 50 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    store.close()
    assert in_main_file == 50
    assert store._checkpointer is None


def test_destination_day_is_in_the_tenant_timezone(store):
    # 23:30 UTC on 10 July is already 11 July in Paris.
    store.open_call(call(started=datetime(2018, 7, 10, 23, 30, tzinfo=UTC)))
    assert store.call_row("c1")["day"] == "2018-07-11"
    assert snap(store, now=datetime(2018, 7, 11, 8, 0, tzinfo=UTC))["distinct_destinations_today"] == 1
    assert snap(store, now=datetime(2018, 7, 10, 12, 0, tzinfo=UTC))["distinct_destinations_today"] == 0


# --------------------------------------------------------------------------- periods


def test_call_is_charged_to_the_month_it_started_in_tenant_time(store):
    # 2018-07-31 23:59 in Paris is 21:59 UTC; the call runs into August.
    start = datetime(2018, 7, 31, 21, 59, tzinfo=UTC)
    store.open_call(call(started=start))
    store.answered("c1", start + timedelta(seconds=10))
    store.extend("c1", start + timedelta(seconds=300))
    store.close_call("c1", start + timedelta(seconds=10 + 330), "normal")
    assert store.call_row("c1")["period"] == "2018-07"
    assert store.bucket_row("t1", "2018-07", POOL)["used"] == 6.0
    assert store.bucket_row("t1", "2018-08", POOL) is None
    august = snap(store, now=datetime(2018, 7, 31, 22, 30, tzinfo=UTC))  # 00:30 on 1 Aug in Paris
    assert august["pool_used_minutes"] == 0.0
    # In UTC the same instant is still July.
    other = call("c2", tenant="t2", tz="UTC", started=start)
    store.open_call(other)
    assert store.call_row("c2")["period"] == "2018-07"


def test_new_month_has_a_fresh_pool(store):
    store.open_call(call("c1", BucketSpec(POOL, 3)))
    assert store.open_call(call("c2", BucketSpec(POOL, 3))) is None
    august = datetime(2018, 8, 1, 8, 0, tzinfo=UTC)
    assert store.open_call(call("c3", BucketSpec(POOL, 3), started=august)) == Grant(POOL, 180)


# --------------------------------------------------------------------------- recovery


def test_recovery_settles_to_last_heartbeat(store_url):
    gw1 = open_store(store_url, instance_id="gw1")
    gw2 = open_store(store_url, instance_id="gw2")
    try:
        gw1.migrate()
        gw1.open_call(call("a"))
        gw1.open_call(call("ringing"))
        gw1.open_call(call("no-hb"))
        gw2.open_call(call("theirs", organizer="bob"))
        for cid in ("a", "no-hb"):
            gw1.answered(cid, at(10))
        gw2.answered("theirs", at(10))
        gw1.heartbeat(["a", "ringing"], at(40))
        gw1.heartbeat(["a", "ringing", "unknown-id"], at(130))
        gw2.heartbeat(["theirs"], at(40))
        gw1.close()  # "crash": nothing else is written

        gw1 = open_store(store_url, instance_id="gw1")
        recovered = {s.call_id: s for s in gw1.recover_open_calls(at(1000))}
        assert set(recovered) == {"a", "ringing", "no-hb"}
        a = recovered["a"]
        assert (a.outcome, a.recovered, a.talk_s, a.billed_units, a.charges) == (
            "recovered",
            True,
            120.0,
            2,
            ((POOL, 2.0),),
        )
        assert recovered["ringing"].billed_units == 0
        assert recovered["no-hb"].talk_s == 0.0
        assert gw1.call_row("a")["recovered"] == 1
        # Idempotent: a late BYE or a second recovery changes nothing.
        assert gw1.close_call("a", at(2000), "normal") == a
        assert gw1.recover_open_calls(at(1000)) == []
        assert gw1.bucket_row("t1", "2018-07", POOL) == {"capacity": 600.0, "used": 2.0, "reserved": 5.0}
        # Another instance's calls are left alone unless they are stale.
        assert gw2.call_row("theirs")["state"] == "answered"
        swept = gw1.recover_open_calls(at(1000), stale_after_s=600)
        assert [s.call_id for s in swept] == ["theirs"] and swept[0].talk_s == 30.0
        assert gw1.bucket_row("t1", "2018-07", POOL)["reserved"] == 0.0
    finally:
        gw1.close()
        gw2.close()


def test_a_running_gateway_sweeps_only_other_instances_stale_calls(store_url):
    gw1 = open_store(store_url, instance_id="gw1")
    gw2 = open_store(store_url, instance_id="gw2")
    try:
        gw1.migrate()
        gw1.open_call(call("mine"))
        gw2.open_call(call("theirs", organizer="bob"))
        gw1.answered("mine", at(10))
        gw2.answered("theirs", at(10))
        swept = gw1.recover_open_calls(at(1000), stale_after_s=600, include_own=False)
        assert [s.call_id for s in swept] == ["theirs"]
        assert gw1.call_row("mine")["state"] == "answered"  # its own live call is untouched
    finally:
        gw1.close()
        gw2.close()


def test_extend_moves_the_heartbeat_of_an_answered_call(store):
    store.open_call(call())
    store.answered("c1", at(0))
    store.extend("c1", at(280))
    assert store.call_row("c1")["heartbeat_at"] == at(280).timestamp()


# --------------------------------------------------------------------------- alerts


def test_pool_alerts_fire_once_per_period(store_url):
    log = Recorder()
    s1 = open_store(store_url, instance_id="gw1", log=log, chunk_s=600)
    s2 = open_store(store_url, instance_id="gw2", log=log, chunk_s=600)
    try:
        s1.migrate()
        pool = BucketSpec(POOL, 10)
        for i, (store, talk) in enumerate([(s1, 420), (s2, 60), (s1, 30), (s2, 60), (s1, 60)]):
            store.open_call(call(f"c{i}", pool))
            store.answered(f"c{i}", at(0))
            store.close_call(f"c{i}", at(talk), "normal")
        # 7 -> 8 (80 %) -> 9 -> 10 (100 %) -> 10 (nothing left to grant for c4)
        events = log.named("pool_threshold")
        assert [(e["tenant"], e["period"], e["percent"]) for e in events] == [
            ("t1", "2018-07", 80),
            ("t1", "2018-07", 100),
        ]
        assert sorted(a["kind"] for a in s1.alerts(tenant="t1")) == ["pool_100", "pool_80"]
        # Next month: fresh period, fresh alerts.
        aug = datetime(2018, 8, 2, tzinfo=UTC)
        s2.open_call(call("aug", pool, started=aug))
        s2.answered("aug", aug)
        s2.close_call("aug", aug + timedelta(seconds=300), "normal")
        s2.open_call(call("aug2", pool, started=aug))
        s2.answered("aug2", aug)
        s2.close_call("aug2", aug + timedelta(seconds=300), "normal")
        assert [e["period"] for e in log.named("pool_threshold")] == ["2018-07", "2018-07", "2018-08", "2018-08"]
    finally:
        s1.close()
        s2.close()


def test_credits_low_alert_and_webhook(store_url):
    received: list[dict] = []
    attempts = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            attempts.append(1)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if len(attempts) == 1:
                self.send_response(500)  # first delivery fails: retried
            else:
                received.append(json.loads(body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = Recorder()
    s = open_store(store_url, log=log, credits_floor=1.0, alert_webhook=f"http://127.0.0.1:{server.server_port}/alerts")
    try:
        s.migrate()
        s._notifier.backoff_s = 0.05
        credits = BucketSpec("credits", 5.0, rate_per_minute=1.0)
        for i, talk in enumerate([180, 60, 60]):
            s.open_call(call(f"c{i}", credits))
            s.answered(f"c{i}", at(0))
            s.close_call(f"c{i}", at(talk), "normal")
        low = log.named("credits_low")
        assert len(low) == 1 and low[0]["balance_left"] == 1.0 and low[0]["floor"] == 1.0
        s.close()  # drains the webhook queue
        assert len(received) == 1 and received[0]["event"] == "credits_low" and received[0]["tenant"] == "t1"
        assert len(attempts) == 2
    finally:
        s.close()
        server.shutdown()


# --------------------------------------------------------------------------- heartbeat, directory, report


def test_heartbeat_many_calls_in_one_go(store):
    ids = [f"c{i}" for i in range(50)]
    for cid in ids:
        store.open_call(call(cid))
        store.answered(cid, at(0))
    store.heartbeat(ids, at(30))
    store.heartbeat([], at(31))
    assert {store.call_row(cid)["heartbeat_at"] for cid in ids} == {at(30).timestamp()}


def test_directory_round_trip(store):
    tenants = [
        {
            "id": "contoso",
            "timezone": "Europe/Paris",
            "subscription_licences": 25,
            "credits": {"enabled": True, "balance": 120.0},
        }
    ]
    organizers = [
        {
            "id": "alice@contoso.com",
            "tenant": "contoso",
            "usage_location": "FR",
            "audio_conferencing": "subscription",
            "usca_addon": False,
            "credits_licence": True,
            "dialout_policy": "any",
        }
    ]
    assert store.import_directory(tenants, organizers) == (1, 1)
    assert store.directory_rows() == (tenants, organizers)
    tenants[0]["subscription_licences"] = 30
    assert store.import_directory(tenants, []) == (1, 0)
    assert store.directory_rows()[0][0]["subscription_licences"] == 30


def test_usage_report(store):
    store.import_directory(
        [
            {
                "id": "t1",
                "timezone": "Europe/Paris",
                "subscription_licences": 10,
                "credits": {"enabled": True, "balance": 20.0},
            }
        ],
        [],
    )
    chain = (BucketSpec(POOL, 600), BucketSpec("credits", 20.0, 0.5))
    for cid, org, e164, talk in [
        ("a", "alice", "+33142685300", 125),
        ("b", "bob", "+33142685301", 30),
        ("c", "alice", "+33142685301", 61),
    ]:
        store.open_call(call(cid, *chain, organizer=org, e164=e164))
        store.answered(cid, at(0))
        store.close_call(cid, at(talk), "normal")
    store.open_call(call("usca", BucketSpec("usca_unlimited", None), organizer="carol", e164="+12125550100"))
    store.answered("usca", at(0))
    store.close_call("usca", at(240), "normal")
    store.open_call(call("live", *chain))
    report = store.usage_report(tenant=None, month="2018-07", tenants_config=())
    (t1,) = report["tenants"]
    assert t1["pool"] == {
        "size_minutes": 600.0,
        "used_minutes": 6.0,
        "reserved_minutes": 5.0,
        "remaining_minutes": 589.0,
        "percent_used": 1.8,
    }
    assert t1["credits"]["balance"] == 20.0 and t1["credits"]["left"] == 20.0
    assert t1["addon_minutes"] == 4.0
    assert t1["calls"]["total"] == 5 and t1["calls"]["live"] == 1
    assert [o["organizer"] for o in t1["top_organizers"]][:2] == ["alice", "carol"]
    assert t1["top_organizers"][0]["billed_minutes"] == 5.0
    assert t1["top_destinations"][0]["e164"] == "+12125550100"
    # Config wins over the imported directory; an unknown month is empty.
    cfg = [{"id": "t1", "timezone": "Europe/Paris", "subscription_licences": 2}]
    assert (
        store.usage_report(tenant="t1", month="2018-07", tenants_config=cfg)["tenants"][0]["pool"]["size_minutes"]
        == 120.0
    )
    empty = store.usage_report(tenant="t1", month="2019-01", tenants_config=())["tenants"][0]
    assert empty["calls"]["total"] == 0 and empty["pool"]["used_minutes"] == 0.0


# --------------------------------------------------------------------------- PostgreSQL specifics


@pytest.mark.postgres
def test_postgres_reconnects_once_after_a_dropped_connection(pg_schema_url):
    import psycopg

    s = open_store(pg_schema_url, instance_id="gw")
    try:
        s.migrate()
        s.open_call(call("c1"))
        pid = s._conn.info.backend_pid
        with psycopg.connect(pg_schema_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        s.answered("c1", at(0))  # reconnects and replays
        assert s.close_call("c1", at(61), "normal").billed_units == 2
        assert s._conn.info.backend_pid != pid
    finally:
        s.close()
