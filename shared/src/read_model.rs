//! Rows of the `sessions` read-model table (schemas/002_sessions.sql), as written by the
//! ingest worker and read by the query service.
//!
//! Versioning contract: a live row carries `2 * applied_events + 1`, a tombstone
//! (`deleted = 1`, written under a key the session no longer has) `2 * applied_events`.
//! Readers keep, per `session_id`, the row with the highest version among the rows that
//! match their filter, and drop the session when that row is a tombstone.

use serde::{Deserialize, Serialize};

use crate::clickhouse::Row;
use crate::session::{SessionKey, SessionRow};

/// One row of `sessions`, borrowed from a [`SessionRow`] for writing.
#[derive(Debug, Row, Serialize)]
pub struct SessionRecord<'a> {
    pub project_id: u32,
    pub user_id: &'a str,
    pub start_ts: i64,
    pub session_id: u64,
    pub version: u64,
    pub deleted: u8,
    pub user_uuid: &'a str,
    pub user_agent: &'a str,
    pub user_os: &'a str,
    pub user_browser: &'a str,
    pub user_device: &'a str,
    pub user_country: &'a str,
    pub duration: u64,
    pub events_count: u32,
    pub pages_count: u32,
    pub errors_count: u32,
    pub ended: u8,
    /// Seconds since the epoch (ClickHouse `DateTime`).
    pub updated_at: u32,
}

pub fn live_version(applied_events: u64) -> u64 {
    applied_events * 2 + 1
}

pub fn tombstone_version(applied_events: u64) -> u64 {
    applied_events * 2
}

impl<'a> SessionRecord<'a> {
    /// The live row of a session whose state holds `applied_events` distinct events.
    pub fn live(row: &'a SessionRow, applied_events: u64, updated_at: u32) -> Self {
        SessionRecord {
            project_id: row.project_id,
            user_id: &row.user_id,
            start_ts: row.start_ts,
            session_id: row.session_id,
            version: live_version(applied_events),
            deleted: 0,
            user_uuid: &row.user_uuid,
            user_agent: &row.user_agent,
            user_os: &row.user_os,
            user_browser: &row.user_browser,
            user_device: &row.user_device,
            user_country: &row.user_country,
            duration: row.duration,
            events_count: row.events_count,
            pages_count: row.pages_count,
            errors_count: row.errors_count,
            ended: u8::from(row.ended),
            updated_at,
        }
    }

    /// A tombstone hiding whatever the session wrote under `key` before.
    pub fn tombstone(
        session_id: u64,
        key: &'a SessionKey,
        applied_events: u64,
        updated_at: u32,
    ) -> Self {
        SessionRecord {
            project_id: key.project_id,
            user_id: &key.user_id,
            start_ts: key.start_ts,
            session_id,
            version: tombstone_version(applied_events),
            deleted: 1,
            user_uuid: "",
            user_agent: "",
            user_os: "",
            user_browser: "",
            user_device: "",
            user_country: "",
            duration: 0,
            events_count: 0,
            pages_count: 0,
            errors_count: 0,
            ended: 0,
            updated_at,
        }
    }
}

/// What the API returns for one session (the seed's fourteen fields), as read back.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct StoredSession {
    pub project_id: u32,
    pub session_id: u64,
    pub user_uuid: String,
    pub user_id: String,
    pub user_agent: String,
    pub user_os: String,
    pub user_browser: String,
    pub user_device: String,
    pub user_country: String,
    pub start_ts: i64,
    pub duration: u64,
    pub events_count: u32,
    pub pages_count: u32,
    pub errors_count: u32,
}

impl From<&SessionRow> for StoredSession {
    fn from(row: &SessionRow) -> Self {
        StoredSession {
            project_id: row.project_id,
            session_id: row.session_id,
            user_uuid: row.user_uuid.clone(),
            user_id: row.user_id.clone(),
            user_agent: row.user_agent.clone(),
            user_os: row.user_os.clone(),
            user_browser: row.user_browser.clone(),
            user_device: row.user_device.clone(),
            user_country: row.user_country.clone(),
            start_ts: row.start_ts,
            duration: row.duration,
            events_count: row.events_count,
            pages_count: row.pages_count,
            errors_count: row.errors_count,
        }
    }
}

/// The live sessions of the whole table (every session's winning row, tombstones
/// dropped), ordered by session id: what tests compare with a reference.
pub const ALL_LIVE_SESSIONS_SQL: &str = "\
SELECT project_id, session_id, user_uuid, user_id, user_agent, user_os, user_browser, user_device, \
       user_country, start_ts, duration, events_count, pages_count, errors_count \
FROM ( \
    SELECT session_id, \
           argMax(project_id, version) AS project_id, argMax(user_uuid, version) AS user_uuid, \
           argMax(user_id, version) AS user_id, argMax(user_agent, version) AS user_agent, \
           argMax(user_os, version) AS user_os, argMax(user_browser, version) AS user_browser, \
           argMax(user_device, version) AS user_device, argMax(user_country, version) AS user_country, \
           argMax(start_ts, version) AS start_ts, argMax(duration, version) AS duration, \
           argMax(events_count, version) AS events_count, argMax(pages_count, version) AS pages_count, \
           argMax(errors_count, version) AS errors_count, argMax(deleted, version) AS is_deleted \
    FROM sessions GROUP BY session_id \
) WHERE is_deleted = 0 ORDER BY session_id";
