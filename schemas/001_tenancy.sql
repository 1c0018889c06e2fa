-- Organizations, their API keys (only a SHA-256 hash of each key is stored) and projects.
-- Rows are never updated in place: a revocation is a new api_keys row with a higher version.

CREATE TABLE IF NOT EXISTS {database}.organizations
(
    org_id     UInt64,
    name       String,
    created_at DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY org_id
{layout: every node};

CREATE TABLE IF NOT EXISTS {database}.api_keys
(
    key_hash   String,   -- lowercase hex SHA-256 of the key
    org_id     UInt64,
    revoked    UInt8,
    version    UInt64,   -- milliseconds since epoch of the change; the highest version wins
    created_at DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_hash
{layout: every node};

CREATE TABLE IF NOT EXISTS {database}.projects
(
    project_id  UInt32,
    project_key String,
    org_id      UInt64,
    name        String,
    created_at  DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY project_id
{layout: every node};
