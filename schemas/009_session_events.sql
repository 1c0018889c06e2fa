-- The second read model: each event of a listed type (page, click, input, error,
-- custom) that a session applied, once per (project_id, session_id, event_index): the
-- very event the session row counted (docs/design.md, "Session events"). The worker
-- writes a flush's events before the states that count them, so a crash in between
-- replays them and writes the same rows again, which this engine merges.
--
-- Laid out for the events endpoint: one session's events in (timestamp, event_index)
-- order, a page at a time, each page a range of the primary key after the previous
-- page's last event. Granules of 1,024 rows, as `sessions`: a page reads a granule or
-- two per part beyond its own rows. The texts sit in their type's columns (the others
-- are empty strings, which cost a byte before compression); the URL parts the API
-- shows (host, path, query) are derived from `url` when read.
--
-- Sharded by session id, like the worker's state: one session's events on one shard.

CREATE TABLE IF NOT EXISTS {database}.session_events
(
    project_id  UInt32,
    session_id  UInt64,
    timestamp   Int64,    -- the event's timestamp, epoch ms (client clock)
    event_index UInt64,   -- the event's index in its session (the API's messageId)
    event_type  Enum8('LOCATION' = 1, 'CLICK' = 2, 'INPUT' = 3, 'ERROR' = 4, 'CUSTOM' = 5),
    url         String,   -- LOCATION
    referrer    String,   -- LOCATION
    label       String,   -- CLICK, INPUT
    selector    String,   -- CLICK
    name        String,   -- ERROR, CUSTOM
    message     String,   -- ERROR
    payload     String    -- CUSTOM
)
ENGINE = ReplacingMergeTree
ORDER BY (project_id, session_id, timestamp, event_index)
SETTINGS index_granularity = 1024
{layout: sharded by cityHash64(session_id)};
