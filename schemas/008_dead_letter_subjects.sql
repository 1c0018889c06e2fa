-- Who each dead letter names: one row per (project, session, user) that the rejected
-- payload's parsed content names (docs/operations.md, "Dead letters and deletion"),
-- under the dead letter's key. A user's deletion finds the dead letters that name the
-- user here, by exact match, whatever escaping the producer used and wherever in the
-- payload the id was (`rejected_events.payload` keeps only its first 64 KiB). The
-- worker writes these rows before the dead letters themselves.
--
-- Sharded like `rejected_events`, so a dead letter and its subjects are on one shard.
-- Dead letters written before this table existed have no rows here; a deletion
-- matches those by their stored text.

CREATE TABLE IF NOT EXISTS {database}.dead_letter_subjects
(
    topic       String,
    `partition` Int32,
    `offset`    Int64,
    element     Int32,    -- as in rejected_events
    project_id  UInt32,   -- 0: the payload names no valid project
    session_id  UInt64,   -- 0: no valid session
    user_id     String    -- empty: no user
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, `partition`, `offset`, element, project_id, session_id, user_id)
{layout: sharded by cityHash64(topic, `partition`, `offset`)};
