//! `GET /api/v1/:projectKey/assist/sessions`: the project's live sessions.
//!
//! Contract: a session is live when its newest row in `live_sessions` (the highest
//! `version`; schemas/010) was written within `LIVE_SESSION_SECS` before now, on this
//! service's clock, and says neither `ended` (its `session_end` applied) nor `deleted`.
//! The worker writes such a row, stamped with its own clock, at each flush that changed
//! the session, so "written within the window" is "its last event reached the worker
//! within the window" (give or take a flush interval and the two hosts' clock skew).
//!
//! Cost: both statements read only the project's rows written within the window, a
//! range of the table's primary key `(project_id, updated_at, session_id)`: they grow
//! with the live sessions and their flushes, never with the project's history. One
//! counts the live sessions matching (`total`, and the rows it read, for
//! `query_live_session_rows_read_total`); the other reads the page: newest `startTs`
//! first, then `sessionId` ascending, after the cursor's position, `limit + 1` sessions
//! to learn whether a next page exists. A session is filtered on its *current*
//! `userId` (the newest row's), so one that changed user is found under the new id.
//! Values are bound with `?`; the SQL is assembled from fixed fragments only.
//!
//! Query parameters: `userId` (exact, 1 to 256 bytes once decoded), `limit` (1..=200,
//! default 50), `cursor` (bound to the project and the `userId` filter); unknown ones
//! are ignored and kept for the next page's `Link`; a known one given twice is 400.

use std::sync::LazyLock;
use std::time::Duration;

use serde::Deserialize;
use sessions_shared::clickhouse::{Query, Row, Store, StoreError};
use sessions_shared::clock::epoch_seconds;
use sessions_shared::read_model::{Session, MAX_USER_ID_BYTES};
use tracing::instrument;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

use crate::cursor::Position;
use crate::error::{json_response, ApiError};
use crate::params::{
    form_decode, parse_limit_within, read_query_pairs, set_once, QueryPairs, DEFAULT_LIMIT,
};
use crate::response::{next_live_link, PageRows};
use crate::routes::AppState;
use crate::sessions::decode_page;

/// The largest `limit` of a live sessions page.
pub const MAX_LIVE_LIMIT: u32 = 200;

/// The query parameters of a live sessions request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LiveParams<'a> {
    pub user_id: Option<String>,
    pub limit: u32,
    pub cursor: Option<String>,
    /// Every `name=value` pair but the cursor, as received (the next link repeats them).
    pub kept_pairs: Vec<&'a str>,
}

/// Parses the raw query string of a live sessions request (module contract).
pub fn parse_live_query(raw_query: &str) -> Result<LiveParams<'_>, ApiError> {
    let mut user_id = None;
    let mut limit = None;
    let QueryPairs { cursor, kept_pairs } =
        read_query_pairs(raw_query, |name, raw_value| match name {
            "userId" => set_once(&mut user_id, "userId", parse_user_id(raw_value)?),
            "limit" => set_once(
                &mut limit,
                "limit",
                parse_live_limit(&form_decode(raw_value))?,
            ),
            _ => Ok(()),
        })?;
    Ok(LiveParams {
        user_id,
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        cursor,
        kept_pairs,
    })
}

/// A `userId` query value: percent-decoded (`+` a space), valid UTF-8, 1 to 256 bytes.
fn parse_user_id(raw_value: &str) -> Result<String, ApiError> {
    let spaced = raw_value.replace('+', " ");
    let user_id = percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map_err(|_| ApiError::invalid("userId", "must be valid UTF-8 once percent-decoded"))?;
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
        return Err(ApiError::invalid("userId", "must be 1 to 256 bytes"));
    }
    Ok(user_id.into_owned())
}

fn parse_live_limit(value: &str) -> Result<u32, ApiError> {
    parse_limit_within(value, MAX_LIVE_LIMIT, "must be an integer from 1 to 200")
}

/// The inner statement: per session of the project written within the window, its
/// newest row, its columns aliased `s_<column>` (`session_id` kept), `ended` and
/// `deleted` included, and the number of its rows read (`s_rows`).
static NEWEST_ROWS: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<String> = Session::COLUMNS
        .iter()
        .chain(&["ended", "deleted"])
        .filter(|column| **column != "session_id")
        .map(|column| format!("argMax({column}, version) AS s_{column}"))
        .collect();
    format!(
        "SELECT session_id, {}, count() AS s_rows FROM live_sessions \
         WHERE project_id = ? AND updated_at >= toDateTime(?) GROUP BY session_id",
        columns.join(", ")
    )
});

/// The outer `SELECT`'s [`Session`] columns.
static SESSION_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    Session::COLUMNS
        .iter()
        .map(|column| match *column {
            "session_id" => (*column).to_owned(),
            other => format!("s_{other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
});

/// The live condition on the newest rows, and the `userId` filter when there is one.
fn live_condition(filtered: bool) -> &'static str {
    if filtered {
        "s_ended = 0 AND s_deleted = 0 AND s_user_id = ?"
    } else {
        "s_ended = 0 AND s_deleted = 0"
    }
}

/// Counts the live sessions matching, and the rows read for them. Its placeholders:
/// the user (when filtered), then the project and the window's start.
pub fn total_sql(filtered: bool) -> String {
    format!(
        "SELECT toUInt64(countIf({})) AS total, toUInt64(sum(s_rows)) AS rows_read FROM ({})",
        live_condition(filtered),
        *NEWEST_ROWS
    )
}

/// A page of the live sessions matching, after a position when `after`.
pub fn page_sql(filtered: bool, after: bool) -> String {
    let position = if after {
        " AND (s_start_ts < ? OR (s_start_ts = ? AND session_id > ?))"
    } else {
        ""
    };
    format!(
        "SELECT {} FROM ({}) WHERE {}{position} ORDER BY s_start_ts DESC, session_id LIMIT ?",
        *SESSION_COLUMNS,
        *NEWEST_ROWS,
        live_condition(filtered)
    )
}

/// What one live sessions read asks for.
pub struct LiveQuery<'a> {
    pub project_id: u32,
    /// Rows written at or after this second (epoch) are within the window.
    pub since_seconds: u32,
    pub user_id: Option<&'a str>,
    pub after: Option<Position>,
    /// Sessions to read (the page and one more).
    pub fetch: u32,
}

impl LiveQuery<'_> {
    /// The window's start: `window` before now, on this service's clock.
    pub fn window_start(window: Duration) -> u32 {
        epoch_seconds().saturating_sub(u32::try_from(window.as_secs()).unwrap_or(u32::MAX))
    }

    fn bind_filter(&self, query: Query) -> Query {
        let query = query.bind(self.project_id).bind(self.since_seconds);
        match self.user_id {
            Some(user_id) => query.bind(user_id),
            None => query,
        }
    }
}

#[derive(Row, Deserialize)]
struct Total {
    total: u64,
    rows_read: u64,
}

/// The live sessions matching (their number) and one page of them.
pub async fn fetch_live(
    store: &Store,
    query: &LiveQuery<'_>,
) -> Result<(u64, u64, PageRows), StoreError> {
    let filtered = query.user_id.is_some();
    let counting = store.run(|client| {
        let sql = total_sql(filtered);
        // The user filter comes first in this statement's text.
        let request = match query.user_id {
            Some(user_id) => client.query(&sql).bind(user_id),
            None => client.query(&sql),
        };
        request
            .bind(query.project_id)
            .bind(query.since_seconds)
            .fetch_one::<Total>()
    });
    let reading = store.run(|client| {
        let sql = page_sql(filtered, query.after.is_some());
        let mut request = query.bind_filter(client.query(&sql));
        if let Some(position) = query.after {
            request = request
                .bind(position.start_ts)
                .bind(position.start_ts)
                .bind(position.session_id);
        }
        decode_page(request.bind(query.fetch), query.fetch as usize)
    });
    let (total, rows) = tokio::try_join!(counting, reading)?;
    Ok((total.total, total.rows_read, rows))
}

/// The handler (module contract): key and project (401, 404), parameters and cursor
/// (400), then ClickHouse.
#[instrument(skip_all, fields(project_key = ?project_key))]
pub async fn live_sessions(
    state: &AppState,
    project_key: &str,
    authorization: Option<&str>,
    raw_query: &str,
) -> Result<Response, ApiError> {
    let project_id = state.auth.authorize(authorization, project_key)?;
    let params = parse_live_query(raw_query)?;
    let user_id = params.user_id.as_deref();
    let after = match params.cursor.as_deref() {
        Some(cursor) => Some(
            state
                .cursor_key
                .decode_live(project_key, user_id, cursor)
                .map_err(ApiError::from)?,
        ),
        None => None,
    };
    let query = LiveQuery {
        project_id,
        since_seconds: LiveQuery::window_start(state.live_window),
        user_id,
        after,
        fetch: params.limit + 1,
    };
    let (total, rows_read, mut sessions) = fetch_live(&state.store, &query)
        .await
        .map_err(|error| state.clickhouse_failed(&error, "live sessions"))?;
    state.metrics.live_rows_read.inc_by(rows_read);
    let page_size = params.limit as usize;
    let next_page = if sessions.len() > page_size {
        sessions.truncate(page_size);
        let last = sessions
            .position(page_size - 1)
            .expect("limit is at least 1");
        let cursor = state.cursor_key.encode_live(project_key, user_id, last);
        Some(next_live_link(project_key, &params.kept_pairs, &cursor))
    } else {
        None
    };
    let mut response = json_response(StatusCode::OK, sessions.into_live_body(total));
    if let Some(link) = next_page {
        let link = HeaderValue::from_str(&link).map_err(|_| ApiError::Internal)?;
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameter_of(query: &str) -> &'static str {
        match parse_live_query(query) {
            Err(ApiError::InvalidParameter { parameter, .. }) => parameter,
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn parses_the_filter_the_limit_and_the_cursor() {
        assert_eq!(
            parse_live_query("").unwrap(),
            LiveParams {
                limit: 50,
                ..LiveParams::default()
            }
        );
        let params = parse_live_query("userId=a%40b.c&limit=200&x=1&cursor=abc").unwrap();
        assert_eq!(params.user_id.as_deref(), Some("a@b.c"));
        assert_eq!(params.limit, 200);
        assert_eq!(params.cursor.as_deref(), Some("abc"));
        assert_eq!(
            params.kept_pairs,
            vec!["userId=a%40b.c", "limit=200", "x=1"]
        );
        assert_eq!(
            parse_live_query("userId=a+b%2Fc")
                .unwrap()
                .user_id
                .as_deref(),
            Some("a b/c")
        );
    }

    #[test]
    fn each_bad_parameter_is_named() {
        for (query, parameter) in [
            ("userId=", "userId"),
            ("userId=%FF", "userId"),
            (&format!("userId={}", "x".repeat(257)), "userId"),
            ("userId=a&userId=a", "userId"),
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("limit=x", "limit"),
            ("cursor=a&cursor=b", "cursor"),
        ] {
            assert_eq!(parameter_of(query), parameter, "{query}");
        }
    }

    #[test]
    fn statements_read_the_window_of_one_project_and_bind_every_value() {
        let page = page_sql(true, true);
        assert!(page.contains("WHERE project_id = ? AND updated_at >= toDateTime(?)"));
        assert!(page.contains("ORDER BY s_start_ts DESC, session_id LIMIT ?"));
        assert_eq!(page.matches('?').count(), 7);
        assert_eq!(page_sql(false, false).matches('?').count(), 3);
        assert_eq!(total_sql(true).matches('?').count(), 3);
        assert_eq!(total_sql(false).matches('?').count(), 2);
    }
}
