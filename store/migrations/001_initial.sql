-- The ledger, counters and directory. Dialect-neutral: runs on SQLite >= 3.35
-- and PostgreSQL >= 12. Times are Unix epoch seconds (double precision), so
-- the same SQL compares them on both; use to_timestamp(x) / datetime(x,
-- 'unixepoch') to read them.

-- Directory: tenants and organisers imported with `dialout-gw directory import`.
-- `data` is the row as JSON, with the same keys as the TOML [[tenants]] /
-- [[organizers]] tables; the policy layer validates it.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    data        TEXT NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE organizers (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    data        TEXT NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX organizers_tenant ON organizers (tenant);

-- One row per tenant, period and bucket. `period` is YYYY-MM in the tenant's
-- timezone, or 'lifetime' for credits (a balance, not an allowance). Units:
-- minutes for promotion, usca_unlimited and tenant_pool; money for credits.
-- used + reserved <= capacity always holds (capacity NULL = unlimited).
CREATE TABLE buckets (
    tenant    TEXT NOT NULL,
    period    TEXT NOT NULL,
    bucket    TEXT NOT NULL,
    capacity  DOUBLE PRECISION,
    used      DOUBLE PRECISION NOT NULL DEFAULT 0,
    reserved  DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, period, bucket)
);

-- One row per call (Call-ID). state: open -> answered -> closed.
-- Open and answered calls are the live counters; closed calls are the ledger.
CREATE TABLE calls (
    call_id         TEXT PRIMARY KEY,
    instance_id     TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    organizer       TEXT NOT NULL,
    e164            TEXT NOT NULL,
    region          TEXT NOT NULL,
    tz              TEXT NOT NULL,
    period          TEXT NOT NULL,
    day             TEXT NOT NULL,
    started_at      DOUBLE PRECISION NOT NULL,
    answered_at     DOUBLE PRECISION,
    heartbeat_at    DOUBLE PRECISION,
    ended_at        DOUBLE PRECISION,
    state           TEXT NOT NULL,
    increment_s     INTEGER NOT NULL,
    max_duration_s  INTEGER,
    chain           TEXT NOT NULL,
    chain_pos       INTEGER NOT NULL,
    nres            INTEGER NOT NULL,
    bucket          TEXT NOT NULL,
    granted_s       INTEGER,
    outcome         TEXT,
    a_status        INTEGER,
    b_status        INTEGER,
    talk_s          DOUBLE PRECISION,
    billed_units    INTEGER,
    addon_minutes   DOUBLE PRECISION NOT NULL DEFAULT 0,
    charges         TEXT,
    recovered       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX calls_live_organizer ON calls (organizer) WHERE state IN ('open', 'answered');
CREATE INDEX calls_live_tenant ON calls (tenant) WHERE state IN ('open', 'answered');
CREATE INDEX calls_live_instance ON calls (instance_id) WHERE state IN ('open', 'answered');
CREATE INDEX calls_organizer_started ON calls (organizer, started_at);
CREATE INDEX calls_organizer_day ON calls (organizer, day, e164);
CREATE INDEX calls_organizer_period ON calls (organizer, period);
CREATE INDEX calls_tenant_period ON calls (tenant, period);

-- The chunks reserved for a call, in order. amount = units x unit_amount is
-- held in buckets.reserved until settlement moves `debited` into buckets.used
-- and releases the rest. units NULL = an unlimited bucket.
CREATE TABLE reservations (
    call_id      TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    tenant       TEXT NOT NULL,
    period       TEXT NOT NULL,
    bucket       TEXT NOT NULL,
    units        INTEGER,
    unit_amount  DOUBLE PRECISION NOT NULL,
    amount       DOUBLE PRECISION NOT NULL,
    debited      DOUBLE PRECISION,
    PRIMARY KEY (call_id, seq)
);

-- Alerts already raised: one row per tenant, period and kind
-- (pool_80, pool_100, credits_low), so each fires once.
CREATE TABLE alerts (
    tenant      TEXT NOT NULL,
    period      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    detail      TEXT NOT NULL,
    PRIMARY KEY (tenant, period, kind)
);
