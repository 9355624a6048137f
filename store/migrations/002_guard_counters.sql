-- Running counters for the fair-use and fraud guards. They are written in the
-- same transactions as the calls they count (open_call, settlement), so the
-- snapshot read on every INVITE is a handful of primary-key lookups however
-- large the calls table grows. The calls table stays the record; these rows
-- are derived from it and the backfill below rebuilds them for an existing
-- ledger.

-- Calls open or answered right now, per organiser and per tenant.
CREATE TABLE live_calls (
    scope  TEXT NOT NULL,            -- 'organizer' or 'tenant'
    id     TEXT NOT NULL,
    calls  INTEGER NOT NULL,
    PRIMARY KEY (scope, id)
);

-- Calls placed per organiser per whole second of started_at (epoch seconds):
-- the last 60 rows are the organiser's calls of the last minute. Rows older
-- than a few minutes are pruned by the gateway's heartbeat.
CREATE TABLE organizer_seconds (
    organizer  TEXT NOT NULL,
    second     BIGINT NOT NULL,
    calls      INTEGER NOT NULL,
    PRIMARY KEY (organizer, second)
);

-- Each destination an organiser called per day (tenant timezone), and how
-- many distinct ones that makes: the fraud guard's counter.
CREATE TABLE organizer_destinations (
    organizer  TEXT NOT NULL,
    day        TEXT NOT NULL,
    e164       TEXT NOT NULL,
    PRIMARY KEY (organizer, day, e164)
);
CREATE TABLE organizer_days (
    organizer              TEXT NOT NULL,
    day                    TEXT NOT NULL,
    distinct_destinations  INTEGER NOT NULL,
    PRIMARY KEY (organizer, day)
);

-- US/CA add-on minutes settled per organiser and billing period (fair use).
CREATE TABLE organizer_periods (
    organizer      TEXT NOT NULL,
    period         TEXT NOT NULL,
    addon_minutes  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (organizer, period)
);

INSERT INTO live_calls (scope, id, calls)
    SELECT 'organizer', organizer, COUNT(*) FROM calls WHERE state IN ('open', 'answered') GROUP BY organizer;
INSERT INTO live_calls (scope, id, calls)
    SELECT 'tenant', tenant, COUNT(*) FROM calls WHERE state IN ('open', 'answered') GROUP BY tenant;
INSERT INTO organizer_seconds (organizer, second, calls)
    SELECT organizer, CAST(FLOOR(started_at) AS BIGINT), COUNT(*) FROM calls
    WHERE started_at > (SELECT MAX(started_at) FROM calls) - 300
    GROUP BY organizer, CAST(FLOOR(started_at) AS BIGINT);
INSERT INTO organizer_destinations (organizer, day, e164)
    SELECT DISTINCT organizer, day, e164 FROM calls;
INSERT INTO organizer_days (organizer, day, distinct_destinations)
    SELECT organizer, day, COUNT(*) FROM organizer_destinations GROUP BY organizer, day;
INSERT INTO organizer_periods (organizer, period, addon_minutes)
    SELECT organizer, period, SUM(addon_minutes) FROM calls GROUP BY organizer, period;

-- The calls indexes that served the old counting queries: every call write
-- had to update them, and nothing reads through them any more. Kept: the
-- primary key, live calls by instance (recovery) and (tenant, period)
-- (usage reports).
DROP INDEX IF EXISTS calls_live_organizer;
DROP INDEX IF EXISTS calls_live_tenant;
DROP INDEX IF EXISTS calls_organizer_started;
DROP INDEX IF EXISTS calls_organizer_day;
DROP INDEX IF EXISTS calls_organizer_period;
