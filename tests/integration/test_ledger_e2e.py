"""The ledger through the real gateway: kill -9 recovery, and two gateways on
one PostgreSQL racing for the last minutes of a pool."""

import os
import signal
import sqlite3
import time
import uuid
from datetime import UTC, datetime

import pytest

from store import open_store
from store.base import period_of
from tests.integration.gateway_proc import GatewayProcess, example_policy_text, gateway_config
from tests.integration.sipp_runner import free_port, run_sipp

pytestmark = pytest.mark.integration

TINY_TENANT = """
[[tenants]]
id = "tiny"
timezone = "Europe/Paris"
subscription_licences = 1           # a pool of 60 minutes
credits = { enabled = false, balance = 0.0 }
"""


def tiny_organizers(count: int) -> str:
    return "".join(
        f"""
[[organizers]]
id = "user{i}@tiny.example"
tenant = "tiny"
usage_location = "FR"
audio_conferencing = "subscription"
dialout_policy = "any"
"""
        for i in range(count)
    )


def relaxed_policy(extra: str = "") -> str:
    text = (
        example_policy_text()
        .replace("max_concurrent_per_organizer = 10", "max_concurrent_per_organizer = 1000")
        .replace("max_concurrent_per_tenant = 300", "max_concurrent_per_tenant = 1000")
        .replace("max_calls_per_minute_per_organizer = 20", "max_calls_per_minute_per_organizer = 1000")
    )
    return text + extra


def calls_rows(store_url: str) -> list[dict]:
    if store_url.startswith("sqlite:///"):
        conn = sqlite3.connect(store_url[len("sqlite:///") :])
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM calls")]
        conn.close()
        return rows
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(store_url, row_factory=dict_row) as conn:
        return list(conn.execute("SELECT * FROM calls"))


def bucket_used(store_url: str, tenant: str, bucket: str) -> tuple[float, float]:
    sql = "SELECT COALESCE(SUM(used), 0), COALESCE(SUM(reserved), 0) FROM buckets WHERE tenant = %s AND bucket = %s"
    if store_url.startswith("sqlite:///"):
        conn = sqlite3.connect(store_url[len("sqlite:///") :])
        row = conn.execute(sql.replace("%s", "?"), (tenant, bucket)).fetchone()
        conn.close()
        return row
    import psycopg

    with psycopg.connect(store_url) as conn:
        return conn.execute(sql, (tenant, bucket)).fetchone()


@pytest.fixture
def pg_database(postgres_url):
    import psycopg

    name = f"e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kill_9_with_calls_in_progress_loses_no_minute_and_charges_nothing_twice(backend, tmp_path, request):
    store_url = f"sqlite:///{tmp_path / 'ledger.db'}" if backend == "sqlite" else request.getfixturevalue("pg_database")
    heartbeat = 1
    sip_port, trunk_port = free_port(), free_port()
    text = gateway_config(
        sip_port=sip_port,
        trunk_port=trunk_port,
        db_path=tmp_path / "unused.db",
        store_url=store_url,
        heartbeat_s=heartbeat,
    )
    runs = [tmp_path / f"run{i}" for i in (1, 2, 3)]
    for run in runs:
        run.mkdir()
    gw = GatewayProcess(runs[0], text, sip_port=sip_port, trunk_port=trunk_port).start()
    calls = 5
    trunk = run_sipp(
        "trunk_answer.xml", "", tmp_path / "trunk", calls=calls, local_port=trunk_port, background=True, timeout_s=60
    )
    bridge = run_sipp(
        "bridge_call.xml",
        gw.target,
        tmp_path / "bridge",
        calls=calls,
        rate=20,
        service="+33142685300",
        local_port=free_port(),
        extra=["-key", "organizer", "alice@contoso.com", "-key", "location", "FR", "-d", "30000"],
        background=True,
        timeout_s=60,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if sum(1 for r in calls_rows(store_url) if r["state"] == "answered") == calls:
                break
            time.sleep(0.2)
        answered = {r["call_id"]: r["answered_at"] for r in calls_rows(store_url) if r["state"] == "answered"}
        assert len(answered) == calls
        time.sleep(3.2)
        os.kill(gw.proc.pid, signal.SIGKILL)
        killed_at = time.time()
        gw.proc.wait(10)
    finally:
        for sipp in (bridge, trunk):
            sipp.kill()
            sipp.communicate(timeout=10)

    # The restarted gateway settles every open call to its last heartbeat.
    restarted = GatewayProcess(runs[1], text, sip_port=sip_port, trunk_port=trunk_port).start()
    try:
        started = restarted.wait_for(lambda e: e.get("event") == "gateway_started")
        assert started["recovered_calls"] == calls
        recovered = [e for e in restarted.events() if e.get("event") == "call_recovered"]
        assert {e["call_id"] for e in recovered} == set(answered)
    finally:
        assert restarted.stop() == 0

    rows = {r["call_id"]: r for r in calls_rows(store_url)}
    for call_id, answered_at in answered.items():
        row = rows[call_id]
        truth = killed_at - answered_at
        assert row["state"] == "closed" and row["recovered"] and row["outcome"] == "recovered"
        assert truth - heartbeat - 0.5 <= row["talk_s"] <= truth + 0.01, (row["talk_s"], truth)
        assert row["billed_units"] == 1  # under a minute, per started minute
    used, reserved = bucket_used(store_url, "contoso", "tenant_pool")
    assert used == calls and reserved == 0  # each call charged once, reservations released

    # A third start finds nothing left to recover: settlement is idempotent.
    third = GatewayProcess(runs[2], text, sip_port=sip_port, trunk_port=trunk_port).start()
    assert third.wait_for(lambda e: e.get("event") == "gateway_started")["recovered_calls"] == 0
    assert third.stop() == 0
    assert bucket_used(store_url, "contoso", "tenant_pool") == (calls, 0)


@pytest.mark.postgres
def test_two_gateways_on_one_postgres_never_overspend_a_pool(pg_database, tmp_path):
    organizers = 4
    policy = relaxed_policy(TINY_TENANT + tiny_organizers(organizers))
    trunk_port = free_port()
    gateways = []
    for name in ("gw-a", "gw-b"):
        sip_port = free_port()
        text = gateway_config(
            sip_port=sip_port,
            trunk_port=trunk_port,
            db_path=tmp_path / "unused.db",
            store_url=pg_database,
            policy_text=policy,
        )
        # 5-minute chunks: the 60-minute pool holds at most 12 calls at once.
        text = text.replace("heartbeat_s = 30", f'heartbeat_s = 30\nchunk_s = 300\ninstance_id = "{name}"')
        (tmp_path / name).mkdir()
        gateways.append(GatewayProcess(tmp_path / name, text, sip_port=sip_port, trunk_port=trunk_port).start())
    per_gateway = 20
    trunk = run_sipp(
        "trunk_answer.xml",
        "",
        tmp_path / "trunk",
        calls=2 * per_gateway,
        local_port=trunk_port,
        background=True,
        timeout_s=60,
    )
    bridges = [
        run_sipp(
            "bridge_call.xml",
            gw.target,
            tmp_path / f"bridge-{i}",
            calls=per_gateway,
            rate=40,
            service="+33142685300",
            local_port=free_port(),
            extra=["-key", "organizer", f"user{i}@tiny.example", "-key", "location", "FR", "-d", "3000"],
            background=True,
            timeout_s=40,
        )
        for i, gw in enumerate(gateways)
    ]
    for b in bridges:
        b.communicate(timeout=60)
    trunk.kill()
    trunk.communicate(timeout=10)
    try:
        lines = []
        for gw in gateways:
            lines += gw.wait_calls(per_gateway, timeout_s=20)
    finally:
        for gw in gateways:
            assert gw.stop() == 0

    relayed = [e for e in lines if e["reason"] == "allowed"]
    refused = [e for e in lines if e["reason"] == "no_entitlement"]
    assert len(relayed) + len(refused) == 2 * per_gateway
    assert 1 <= len(relayed) <= 12  # never more calls than 5-minute chunks in 60 minutes
    assert {e["call_id"] for e in relayed} <= {r["call_id"] for r in calls_rows(pg_database)}
    assert all(e["explanation"] for e in refused)
    used, reserved = bucket_used(pg_database, "tiny", "tenant_pool")
    assert used <= 60 and reserved == 0
    assert used == sum(e["billed_units"] for e in relayed)


EDGE_TENANT = """
[[tenants]]
id = "edge"
timezone = "UTC"
subscription_licences = 1
credits = { enabled = true, balance = 0.03 }

[[organizers]]
id = "eve@edge.example"
tenant = "edge"
usage_location = "FR"
audio_conferencing = "subscription"
credits_licence = true
dialout_policy = "any"
"""


def test_pool_running_dry_mid_call_moves_charging_to_credits_then_cuts(tmp_path):
    """Per-second billing, 2-second chunks: 3 s of pool, then 3 s of credits
    (0.03 at 0.6/min), then a BYE on both legs."""
    policy = (
        example_policy_text()
        .replace('billing_increment = "minute"', 'billing_increment = "second"')
        .replace("FR = 0.024", "FR = 0.6")
    ) + EDGE_TENANT
    sip_port, trunk_port = free_port(), free_port()
    db = tmp_path / "ledger.db"
    text = gateway_config(sip_port=sip_port, trunk_port=trunk_port, db_path=db, policy_text=policy)
    text = text.replace("heartbeat_s = 30", "heartbeat_s = 30\nchunk_s = 2")
    gw = GatewayProcess(tmp_path, text, sip_port=sip_port, trunk_port=trunk_port)
    # 59.95 of the 60 pool minutes are used this month: 3 seconds are left.
    store = open_store(f"sqlite:///{db}")
    store.migrate()
    store.close()
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO buckets (tenant, period, bucket, capacity, used, reserved) VALUES (?, ?, ?, ?, ?, 0)",
        ("edge", period_of(datetime.now(UTC), "UTC"), "tenant_pool", 60, 59.95),
    )
    conn.commit()
    conn.close()

    gw.start()
    try:
        trunk = run_sipp(
            "trunk_answer.xml", "", tmp_path / "trunk", local_port=trunk_port, background=True, timeout_s=30
        )
        started = time.monotonic()
        bridge = run_sipp(
            "bridge_wait_bye.xml",
            gw.target,
            tmp_path / "bridge",
            service="+33142685300",
            local_port=free_port(),
            extra=["-key", "organizer", "eve@edge.example", "-key", "location", "FR"],
            timeout_s=20,
        )
        elapsed = time.monotonic() - started
        trunk.communicate(timeout=20)
        assert bridge.returncode == 0 and trunk.returncode == 0  # both legs got the BYE
        line = gw.wait_calls(1)[0]
    finally:
        gw.stop()
    assert line["bucket"] == "tenant_pool" and line["fallback_buckets"] == ["credits"]
    assert line["max_duration_s"] == 6 and line["reason"] == "duration_exhausted"
    assert 5.8 <= elapsed < 9
    assert line["billed_units"] == 6
    assert line["charges"]["tenant_pool"] == pytest.approx(0.05)
    assert line["charges"]["credits"] == pytest.approx(0.03)
    extended = [e for e in gw.events() if e.get("event") == "grant_extended"]
    assert [e["bucket"] for e in extended][-1] == "credits"
    assert bucket_used(f"sqlite:///{db}", "edge", "tenant_pool") == pytest.approx((60.0, 0))
