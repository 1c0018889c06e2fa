-- Every key (project_id, user_id, start_ts) the read model ever held a row under, per
-- session: a grow-only set, one row per key, written by the ingest worker before the
-- first row under that key. A worker that loads a session takes the union of these
-- keys and the ones its stored state names, so an old key is tombstoned even when the
-- state that named it lost to a tied state of another worker in a merge.
CREATE TABLE IF NOT EXISTS {database}.session_keys
(
    session_id  UInt64,
    project_id  UInt32,
    user_id     String,
    start_ts    Int64,
    written_at  DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY (session_id, project_id, user_id, start_ts)
{layout: sharded by cityHash64(session_id)};
