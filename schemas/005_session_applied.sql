-- The applied event indexes of sessions whose set is too large to store inside their
-- `session_state` row (ingest/src/durable_state.rs): chunks, append-only. A chunk holds
-- the indexes applied between the state versions `base_version` and `version`, or, with
-- `base_version` 0, a checkpoint: the whole set at `version`. A chained state names its
-- checkpoint; a load unites the chunks of a chain from a checkpoint up to the state's
-- version. Chunks are written before the state that needs them. Equal keys hold equal
-- sets (the argument: ingest/src/exactly_once.rs, step 7), so a merge keeps any of them.
CREATE TABLE IF NOT EXISTS {database}.session_applied
(
    session_id   UInt64,
    version      UInt64,   -- the state version (applied events) the chunk brings the set to
    base_version UInt64,   -- the state version it adds to; 0 for a checkpoint
    ranges       String,   -- JSON: [start, end] or a lone index per range
    written_at   DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY (session_id, version, base_version)
{layout: sharded by cityHash64(session_id)};
