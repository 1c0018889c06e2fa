-- Sessions belong to their project: a session is identified by (project_id, session_id)
-- (docs/events.md). The worker's durable state was keyed by session id alone, so two
-- projects' sessions of one id shared a `session_state` row (a ReplacingMergeTree keyed
-- by session_id keeps one of them) and their chunks. A sorting key cannot change in
-- place, so the state moves to two tables keyed by project first. Each table is
-- sharded by session id like `session_keys` and `deleted_sessions`.
--
-- `session_state` and `session_applied` are left as they were and no longer written
-- or read by the worker (docs/operations.md, "Upgrading to project-keyed state").
--
-- The two INSERTs copy what the old tables hold: per session, its winning state (the
-- highest version: the state a load would have taken), under the project that state
-- names (`"project":[index,projectId]` in its JSON), and every chunk of that session
-- under the same project. They read only the old tables, so running them again (a
-- migration interrupted before it was recorded, or started by two processes at once)
-- writes the same rows again, which the engines' keys merge; on a cluster they go
-- through the Distributed tables, once, from the node that runs the migration.
-- Session 0 (deletion markers) and states without a project are not copied.

CREATE TABLE IF NOT EXISTS {database}.project_session_state
(
    project_id UInt32,
    session_id UInt64,
    version    UInt64,   -- number of distinct events applied: grows with every change
    state      String,
    updated_at DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project_id, session_id)
{layout: sharded by cityHash64(session_id)};

CREATE TABLE IF NOT EXISTS {database}.project_session_applied
(
    project_id   UInt32,
    session_id   UInt64,
    version      UInt64,   -- the state version (applied events) the chunk brings the set to
    base_version UInt64,   -- the state version it adds to; 0 for a checkpoint
    ranges       String,   -- JSON: [start, end] or a lone index per range
    written_at   DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY (project_id, session_id, version, base_version)
{layout: sharded by cityHash64(session_id)};

INSERT INTO {database}.project_session_state (project_id, session_id, version, state, updated_at)
SELECT
    toUInt32OrZero(extract(winning_state, '"project":.[0-9]+,([0-9]+)')) AS owner_project_id,
    session_id,
    winning_version,
    winning_state,
    last_updated_at
FROM
(
    SELECT
        session_id,
        max(version) AS winning_version,
        argMax(state, version) AS winning_state,
        max(updated_at) AS last_updated_at
    FROM {database}.session_state
    WHERE session_id != 0
    GROUP BY session_id
)
WHERE owner_project_id != 0;

INSERT INTO {database}.project_session_applied (project_id, session_id, version, base_version, ranges, written_at)
SELECT owner_project_id, session_id, version, base_version, ranges, written_at
FROM {database}.session_applied
GLOBAL ALL INNER JOIN
(
    SELECT
        session_id,
        toUInt32OrZero(extract(argMax(state, version), '"project":.[0-9]+,([0-9]+)')) AS owner_project_id
    FROM {database}.session_state
    WHERE session_id != 0
    GROUP BY session_id
) AS owner USING session_id
WHERE owner_project_id != 0
