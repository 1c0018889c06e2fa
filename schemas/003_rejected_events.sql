-- Dead letters: one row per rejected message or batch element. Keyed by where the input
-- came from, so a redelivered message leaves one row per rejection after a merge
-- (read with FINAL for exact counts).
CREATE TABLE IF NOT EXISTS {database}.rejected_events
(
    topic       String,
    `partition` Int32,
    `offset`    Int64,
    element     Int32,    -- position in a batch message, -1 for the whole message
    reason      String,
    detail      String,
    payload     String,   -- the raw bytes, truncated to 64 KiB
    received_at DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, `partition`, `offset`, element)
{layout: sharded by cityHash64(topic, `partition`, `offset`)};
