//! A user's statistics as a value: what the statement (`users::USER_STATS_SQL`) and a
//! fold (`users::fold`) both answer, and its JSON form in the API.
//!
//! Contract: the fields mean what the `users` module header defines; a user without a
//! live session has no statistics (`None` wherever they are read), never a zero count.

use serde::Deserialize;
use sessions_shared::clickhouse::Row;

use super::fold;

/// A user's statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct UserStats {
    pub session_count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
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

impl From<fold::Stats> for UserStats {
    fn from((session_count, first_seen, last_seen): fold::Stats) -> Self {
        UserStats {
            session_count,
            first_seen,
            last_seen,
        }
    }
}
