//! The ClickHouse side of the events endpoint: whether a project has a session, and
//! one page of the session's events after a position, at a cost that grows with the
//! page, not with the session.
//!
//! Contract:
//! - [`session_status`]: a session is the project's when the worker stored a state for
//!   it (`project_session_state`, written for every session with an applied event)
//!   and no deletion recorded it (`deleted_sessions`). Both reads are ranges of their
//!   tables' primary keys.
//! - [`fetch_events`]: the events of `(project, session)` in `(timestamp,
//!   event_index)` order strictly after the position, at most `fetch`, each
//!   `(timestamp, event_index)` once (rows a retried write left twice before a merge
//!   are one: `LIMIT 1 BY`), or, past [`MAX_ROUNDS`], those found and where to go on.
//!
//! # Cost O(page)
//!
//! ClickHouse 18.16 reads a whole primary-key range before `ORDER BY … LIMIT` (no
//! read-in-order), so "the first `n` after the position" over the rest of a session
//! of a million events would read the rest of the session. Each page is read instead
//! as the sessions pager reads a heavy user (`sessions`): a **probe** takes the
//! `timestamp` of at most `2 × need` rows after the lower bound in storage order
//! (`LIMIT` without `ORDER BY`, one thread: it stops reading early); the **window**
//! ends at the `need`-th smallest of them, so it holds at least `need` rows, and the
//! page statement runs on that range only. When a window yields fewer distinct events
//! than needed (duplicate rows), the next window starts after it with a sample twice
//! as large. When the probe read every row left, the window is the rest.

mod json;
mod statements;

use clickhouse::Row;
use serde::Deserialize;
use sessions_shared::clickhouse::{Store, StoreError};

use crate::cursor::Position;
use crate::sessions::{sample_size, WindowEnd};
pub use json::{page_json, type_name};
pub use statements::{probe_sql, status_sql, window_sql, Lower};

/// Probe and window rounds one page takes at most.
pub const MAX_ROUNDS: u32 = 16;

/// The smallest block a probe reads in (a granule of `session_events`).
const MIN_PROBE_BLOCK: usize = 1024;

/// One stored event, as the page statement reads it (`event_type`: the
/// `session_events` enum's code).
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct StoredEvent {
    pub timestamp: i64,
    pub event_index: u64,
    pub event_type: i8,
    pub url: String,
    pub referrer: String,
    pub label: String,
    pub selector: String,
    pub name: String,
    pub message: String,
    pub payload: String,
}

impl StoredEvent {
    /// Where the next page starts after this event.
    pub fn position(&self) -> Position {
        Position {
            start_ts: self.timestamp,
            session_id: self.event_index,
        }
    }
}

/// What [`session_status`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct SessionStatus {
    /// State rows of the session (any number above 0: the worker stored it).
    pub stored: u64,
    /// Deletion records of the session.
    pub deleted: u64,
}

impl SessionStatus {
    /// Whether the endpoint shows the session.
    pub fn is_listed(&self) -> bool {
        self.stored > 0 && self.deleted == 0
    }
}

/// One page of events, and where to go on when the rounds ran out first.
#[derive(Debug, Default)]
pub struct EventsPage {
    pub events: Vec<StoredEvent>,
    pub resume_after: Option<Position>,
}

/// Whether `project_id` has session `session_id` (module contract).
pub async fn session_status(
    store: &Store,
    project_id: u32,
    session_id: u64,
) -> Result<SessionStatus, StoreError> {
    store
        .run(|client| {
            client
                .query(status_sql())
                .bind(project_id)
                .bind(session_id)
                .bind(session_id)
                .bind(project_id)
                .fetch_one::<SessionStatus>()
        })
        .await
}

/// Up to `fetch` events of the session after `after` (module contract).
pub async fn fetch_events(
    store: &Store,
    project_id: u32,
    session_id: u64,
    after: Option<Position>,
    fetch: usize,
) -> Result<EventsPage, StoreError> {
    let mut events: Vec<StoredEvent> = Vec::with_capacity(fetch.min(1024));
    let mut lower = after.map_or(Lower::Start, Lower::After);
    let mut round = 0;
    while events.len() < fetch {
        let need = fetch - events.len();
        let size = sample_size(need, round);
        let probe = probe_sql(&lower);
        let sample: Vec<i64> = store
            .run(|client| {
                // Blocks no larger than the sample: the read stops after it (the
                // default block of 65,536 rows would be read whole).
                lower
                    .bind(client.query(&probe).bind(project_id).bind(session_id))
                    .bind(size as u64)
                    .with_setting("max_block_size", size.max(MIN_PROBE_BLOCK).to_string())
                    .fetch_all::<i64>()
            })
            .await?;
        let Some(end) = WindowEnd::choose(sample, size, need) else {
            break;
        };
        let upper = (!end.last).then_some(end.start_ts);
        let window = window_sql(&lower, upper.is_some());
        let found: Vec<StoredEvent> = store
            .run(|client| {
                let mut query = lower.bind(client.query(&window).bind(project_id).bind(session_id));
                if let Some(upper) = upper {
                    query = query.bind(upper);
                }
                query.bind(need as u64).fetch_all::<StoredEvent>()
            })
            .await?;
        events.extend(found);
        if end.last {
            break;
        }
        lower = Lower::Beyond(end.start_ts);
        round += 1;
        if round >= MAX_ROUNDS && events.len() < fetch {
            return Ok(EventsPage {
                events,
                resume_after: Some(Position {
                    start_ts: end.start_ts,
                    session_id: u64::MAX,
                }),
            });
        }
    }
    Ok(EventsPage {
        events,
        resume_after: None,
    })
}
