-- The read model: one live row per session, laid out for the endpoint's access path
-- (project, user, startTs range, keyset pages on (startTs, sessionId)).
--
-- A session's key (project_id, user_id, start_ts) can change while it runs (setUserID
-- mid-session, a late session_start). The ingest worker then writes a tombstone
-- (deleted = 1) under every key the session was ever written under, and the live row
-- under the current one. Versions: live rows carry 2 * appliedEvents + 1, tombstones
-- 2 * appliedEvents, so a newer state always wins and a live row beats the tombstone
-- written in the same flush. Readers take argMax(..., version) per session_id and drop
-- sessions whose winning row is a tombstone.
CREATE TABLE IF NOT EXISTS {database}.sessions
(
    project_id     UInt32,
    user_id        String,
    start_ts       Int64,
    session_id     UInt64,
    version        UInt64,
    deleted        UInt8,
    user_uuid      String,
    user_agent     String,
    user_os        String,
    user_browser   String,
    user_device    String,
    user_country   String,
    duration       UInt64,
    events_count   UInt32,
    pages_count    UInt32,
    errors_count   UInt32,
    ended          UInt8,
    updated_at     DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project_id, user_id, start_ts, session_id)
-- Granules of 1,024 rows: a page reads a granule or two per part (8,192 measured
-- 15-25% slower per page). Databases created with 8,192 move with
-- `sessions-admin rebuild-sessions` (control/src/rebuild.rs).
SETTINGS index_granularity = 1024
{layout: sharded by cityHash64(project_id, user_id)};

-- The ingest worker's durable per-session state: everything needed to keep aggregating a
-- session exactly after a restart, a rebalance or an eviction (the set of applied event
-- indexes, the aggregates, every key the session was written under). `state` is JSON.
CREATE TABLE IF NOT EXISTS {database}.session_state
(
    session_id UInt64,
    version    UInt64,   -- number of distinct events applied: grows with every change
    state      String,
    updated_at DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY session_id
{layout: sharded by cityHash64(session_id)};
