-- Background jobs (today: `delete_user_data`), as an append-only log of their changes:
-- every change of a job (scheduled, claimed by a runner, lease renewed, cancelled,
-- completed, failed) is one row holding the whole job as it then is. What a job *is*
-- is a pure function of its rows (control/src/jobs/view.rs): the first terminal row
-- decides its outcome, whatever runs later; until then the latest row. Small, read
-- whole per project: on every node.
CREATE TABLE IF NOT EXISTS {database}.jobs
(
    job_id       UInt64,
    project_id   UInt32,
    action       String,
    reference_id String,   -- the user id a deletion is about (the only place it stays)
    description  String,
    status       String,   -- scheduled | running | completed | failed | cancelled
    created_at   Int64,    -- epoch ms
    start_at     Int64,    -- epoch ms: created_at + DELETION_GRACE_SECS
    updated_at   Int64,    -- epoch ms of this change; 0 for the scheduling row
    errors       String,   -- empty: no error
    runner       String,   -- the runner that wrote a running/terminal row
    attempt      UInt32,   -- claims so far (a claim of a lapsed lease is a new attempt)
    lease_until  Int64     -- epoch ms: a running job whose lease lapsed is resumed
)
ENGINE = MergeTree
ORDER BY (project_id, job_id, updated_at)
{layout: every node};

-- Sessions erased by a deletion job: the bare fact, nothing about their user. The
-- ingest worker drops every later event of these sessions (deleted stays deleted), so it
-- reads this table by session id: sharded like the worker's state.
CREATE TABLE IF NOT EXISTS {database}.deleted_sessions
(
    session_id UInt64,
    project_id UInt32,
    deleted_at DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY (session_id, project_id)
{layout: sharded by cityHash64(session_id)};
