//! The one ClickHouse query behind the endpoint: a page of a user's live sessions.
//!
//! Contract (`read_model`): per `session_id`, the row with the highest `version` among
//! the rows that match the filter wins, and the session is dropped when that row is a
//! tombstone. Filters (project, user, `start_ts` bounds, keyset position) apply to the
//! stored rows, so a session moved to another user or start time is found only under
//! its current key. Order is `(start_ts, session_id)` ascending, `session_id` as an
//! unsigned integer. Every value is bound with the client's `?` placeholders; the SQL
//! text is assembled only from fixed fragments (`read_model::latest_sessions_sql`).

use sessions_shared::clickhouse::{Store, StoreError};
use sessions_shared::read_model::{latest_sessions_sql, Session};

use crate::cursor::Position;

/// What one page asks for.
#[derive(Clone, Copy, Debug)]
pub struct PageQuery<'a> {
    pub project_id: u32,
    pub user_id: &'a str,
    pub start_date: Option<i64>,
    pub end_date: Option<i64>,
    pub after: Option<Position>,
    /// Rows to fetch (the page size plus one, to learn whether a next page exists).
    pub fetch: u32,
}

/// The SQL for `query`, with `?` placeholders bound in the order of [`fetch_page`].
pub fn page_sql(query: &PageQuery<'_>) -> String {
    let mut filter = String::from("project_id = ? AND user_id = ?");
    if query.start_date.is_some() {
        filter.push_str(" AND start_ts >= ?");
    }
    if query.end_date.is_some() {
        filter.push_str(" AND start_ts <= ?");
    }
    if query.after.is_some() {
        filter.push_str(" AND (start_ts > ? OR (start_ts = ? AND session_id > ?))");
    }
    latest_sessions_sql(&filter, "ORDER BY s_start_ts, session_id LIMIT ?")
}

/// Runs the page query (one ClickHouse request, under the store's time bound).
pub async fn fetch_page(store: &Store, query: &PageQuery<'_>) -> Result<Vec<Session>, StoreError> {
    let sql = page_sql(query);
    store
        .run(|client| {
            let mut request = client
                .query(&sql)
                .bind(query.project_id)
                .bind(query.user_id);
            if let Some(start_date) = query.start_date {
                request = request.bind(start_date);
            }
            if let Some(end_date) = query.end_date {
                request = request.bind(end_date);
            }
            if let Some(after) = query.after {
                request = request
                    .bind(after.start_ts)
                    .bind(after.start_ts)
                    .bind(after.session_id);
            }
            request.bind(query.fetch).fetch_all::<Session>()
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_optional_filters() {
        let base = PageQuery {
            project_id: 1,
            user_id: "u",
            start_date: None,
            end_date: None,
            after: None,
            fetch: 51,
        };
        assert_eq!(page_sql(&base).matches('?').count(), 3);
        let full = PageQuery {
            start_date: Some(1),
            end_date: Some(2),
            after: Some(Position {
                start_ts: 1,
                session_id: 2,
            }),
            ..base
        };
        assert_eq!(page_sql(&full).matches('?').count(), 8);
        assert!(!page_sql(&full).contains("FINAL"));
    }
}
