-- Projects' platforms and ids, and the live copy of the read model.
--
-- Two tables beside `projects` (whose columns cannot change in place: no ALTER here).
--
-- `project_platforms`: each project's platform, `web` or `ios`, written before the
-- project's own row; a project without a row here (created before this table) is `web`.
--
-- `project_id_claims`: how a project id is taken when several processes create projects
-- at once (replicas answering `POST /api/v1/projects`, `sessions-admin`). A creator
-- writes a claim (candidate id, its fresh project key), then reads the claims of that id
-- (sequentially consistent on a cluster); the id is its own only when its claim is the
-- only one it sees, else it claims another. Of two claims of one id, the one read later
-- sees the other, so no two creators both win (control/src/tenancy.rs).
CREATE TABLE IF NOT EXISTS {database}.project_platforms
(
    project_id UInt32,
    platform   String
)
ENGINE = ReplacingMergeTree
ORDER BY project_id
{layout: every node};

CREATE TABLE IF NOT EXISTS {database}.project_id_claims
(
    project_id  UInt32,
    project_key String,
    claimed_at  DateTime
)
ENGINE = MergeTree
ORDER BY (project_id, project_key)
{layout: every node};

-- `live_sessions`: what `GET /api/v1/:projectKey/assist/sessions` reads. At each flush
-- the worker writes every changed session's live row here too (the same columns and
-- values as its row in `sessions`, tombstones excepted), `updated_at` being the flush's
-- time on the worker's clock. Sorted by project, then that time, so the sessions a
-- project's events reached within the last N seconds are one primary-key range, read
-- at a cost set by those sessions alone, whatever the project's history; per session
-- the highest version wins, and a session whose winner is `ended` is not live.
--
-- Growth: partitioned by day; the worker drops partitions older than yesterday once
-- an hour (ingest/src/sink/live.rs), so the table holds one to two days of flushes.
-- Sharded by session, like the worker's state: a session's rows are on one shard.
CREATE TABLE IF NOT EXISTS {database}.live_sessions
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
PARTITION BY toYYYYMMDD(updated_at)
ORDER BY (project_id, updated_at, session_id)
SETTINGS index_granularity = 1024
{layout: sharded by cityHash64(session_id)};
