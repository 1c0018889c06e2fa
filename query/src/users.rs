//! The ClickHouse side of `GET /api/v1/:projectKey/users/:userId`: a user's statistics.
//!
//! Contract (spec/api-users.md): over the sessions the sessions endpoint returns for
//! the user with no date filter (per `session_id` the highest-`version` row among the
//! user's rows wins, tombstones drop the session), `sessionCount` is their number,
//! `firstSeen` their smallest `startTs`, `lastSeen` their largest `startTs + duration`.
//! `None` when the user has no live session. Values are bound, never spliced.

use serde::Deserialize;
use sessions_shared::clickhouse::{Row, Store, StoreError};

/// A user's statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct UserStats {
    pub session_count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// The statistics query: one pass over the user's rows (their key range).
pub const USER_STATS_SQL: &str = "SELECT count() AS session_count, min(s_start_ts) AS first_seen, \
     max(s_start_ts + toInt64(s_duration)) AS last_seen \
     FROM (SELECT argMax(start_ts, version) AS s_start_ts, argMax(duration, version) AS s_duration, \
     argMax(deleted, version) AS s_deleted FROM sessions WHERE project_id = ? AND user_id = ? \
     GROUP BY session_id) WHERE s_deleted = 0";

/// The user's statistics, `None` for a user without a live session.
pub async fn fetch_user_stats(
    store: &Store,
    project_id: u32,
    user_id: &str,
) -> Result<Option<UserStats>, StoreError> {
    let stats: UserStats = store
        .run(|client| {
            client
                .query(USER_STATS_SQL)
                .bind(project_id)
                .bind(user_id)
                .fetch_one()
        })
        .await?;
    Ok((stats.session_count > 0).then_some(stats))
}

/// The contract's user object (field order is the contract's).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserJson<'a> {
    pub user_id: &'a str,
    pub session_count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
}

impl UserStats {
    pub fn api<'a>(&self, user_id: &'a str) -> UserJson<'a> {
        UserJson {
            user_id,
            session_count: self.session_count,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        }
    }
}
