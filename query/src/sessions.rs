//! The ClickHouse side of one page: a user's live sessions after a position, at a cost
//! that grows with the page, not with the user.
//!
//! Contract (`read_model`): per `session_id`, the row with the highest `version` among
//! the rows that match the filter wins, and the session is dropped when that row is a
//! tombstone. Filters (project, user, `start_ts` bounds, keyset position) apply to the
//! stored rows, so a session moved to another user or start time is found only under
//! its current key. Order is `(start_ts, session_id)` ascending, `session_id` as an
//! unsigned integer. Every value is bound with the client's `?` placeholders; the SQL
//! text is assembled only from fixed fragments (`read_model::latest_sessions_sql`).
//!
//! # Three ways to one page
//!
//! Asking for that over all of a user's rows costs the whole user (a user with a
//! million sessions: ~700 ms for any page). So the whole-range query runs only
//! *bounded* (`max_rows_to_read`): ClickHouse refuses it from its primary index, before
//! reading, when the user's range holds more than [`SCAN_MAX_ROWS`] rows. Most users
//! are far smaller, and their page is that one request: the same statement a client
//! would send, plus the bound. A larger user's page is read from *windows* of
//! `start_ts` after the position, each a range of the primary key:
//!
//! 1. a **probe** reads the `start_ts` of at most `2 × need` rows at or after the
//!    lower bound, in storage order (`LIMIT` without `ORDER BY` stops reading early);
//! 2. the **window** ends at the `need`-th smallest of them (or at the last, when the
//!    probe read every remaining row), so it holds at least `need` rows;
//! 3. the page query runs on the window; when its live sessions fall short (rows of
//!    tombstones and older versions), the next window starts after this one, with a
//!    sample twice as large.
//!
//! The replica remembers such users (`heavy_users`) with the spacing of their rows
//! that the probes measured; their next pages skip the bounded whole-range attempt
//! and first try a window *guessed* from that spacing (again bounded), which holds
//! the page in one request unless the user's rows changed a lot; when it falls short,
//! probes and windows continue after it. Any range of `start_ts` gives exact sessions
//! (below), so a guess can only cost more, never answer differently.
//!
//! A page takes at most [`MAX_PAGE_ROUNDS`] probe and window rounds: a range crowded
//! with dead rows past that is answered with the sessions found so far (perhaps none)
//! and a link that goes on after the last window ([`Page::resume_after`]), so every
//! page's cost is bounded and the walk still ends, exactly.
//!
//! **Why a window gives the same sessions as the whole range.** The worker keeps an
//! invariant (ingest's `exactly_once`, step 4): whenever a session leaves a key
//! (project, user, `start_ts`), the same INSERT writes a tombstone under the old key
//! with a version above every row the session has there. So under every key but the
//! session's current one, the highest row is a tombstone, and under the current one it
//! is the live winner, whose version is the session's highest of all. Hence, for any
//! range of `start_ts` of one user: if the session's winner lies in the range, the
//! range's highest row of the session is that winner; if not, the range's highest row
//! is a tombstone. A window therefore returns exactly the sessions of the whole query
//! whose `start_ts` falls in it, with the same rows; consecutive windows that tile the
//! range after the position return the whole query's sessions in order.
//! `query/tests/windows.rs` holds this against the whole-range query on random
//! histories.

use std::time::Instant;

use prometheus::{IntCounter, IntCounterVec};
use sessions_shared::clickhouse::{Query, Store, StoreError};
use sessions_shared::read_model::{latest_sessions_sql, SessionRef};

use crate::cursor::Position;
use crate::heavy_users::{Density, HeavyUsers};
use crate::metrics::PAGE_STATEMENTS;
use crate::response::PageRows;

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

impl PageQuery<'_> {
    /// Where the page starts: after the cursor's position, or at the beginning.
    fn start(&self) -> Lower {
        self.after.map_or(Lower::Start, Lower::After)
    }
}

/// Where a window starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lower {
    /// At `start_date`, or at the user's first row.
    Start,
    /// After a page's last session (the keyset position).
    After(Position),
    /// After every row up to this `start_ts` (the end of the previous window).
    Beyond(i64),
}

/// The most probe and window rounds one page takes: 16 rounds read at most ~500,000
/// rows of a user's range (the probes double up to [`MAX_SAMPLE`] rows, ten rounds
/// for a default page, then 65,536 rows a round), ~1 s of ClickHouse on 2 cores. A
/// page that falls short after them is answered with the sessions found and a link
/// that goes on after the last row read ([`Page::resume_after`]).
pub const MAX_PAGE_ROUNDS: u32 = 16;

/// One page's sessions, and where the next page starts when this one stopped at the
/// round cap.
#[derive(Debug)]
pub struct Page {
    pub rows: PageRows,
    /// Set when the page stopped after its last round with fewer sessions than asked
    /// (more may follow): the position after every row it read, the last window's
    /// end. `session_id` is `u64::MAX`, so a page after it starts at the next `start_ts`.
    pub resume_after: Option<Position>,
}

impl Page {
    fn whole(rows: PageRows) -> Page {
        Page {
            rows,
            resume_after: None,
        }
    }
}

/// Rows the probe reads per session still needed, in the first window.
const SAMPLE_PER_SESSION: usize = 2;
/// The largest probe: windows after it grow no more.
const MAX_SAMPLE: usize = 1 << 16;

/// A window's end, chosen from a probe's sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowEnd {
    /// The window holds every row with `start_ts` up to this, inclusive.
    pub start_ts: i64,
    /// The probe read every row after the lower bound: no window follows this one.
    pub last: bool,
}

impl WindowEnd {
    /// The end for a probe that asked for `sample_size` rows and got `sample` (any
    /// order): the `need`-th smallest, so that the window holds at least `need` rows,
    /// or the largest when the probe read everything. `None`: no row is left.
    pub fn choose(mut sample: Vec<i64>, sample_size: usize, need: usize) -> Option<WindowEnd> {
        if sample.is_empty() {
            return None;
        }
        let last = sample.len() < sample_size;
        let position = if last {
            sample.len() - 1
        } else {
            need.clamp(1, sample.len()) - 1
        };
        let (_, end, _) = sample.select_nth_unstable(position);
        Some(WindowEnd {
            start_ts: *end,
            last,
        })
    }
}

/// The probe's size in window number `round` (0 first) when `need` sessions are
/// missing: doubling, so that a range crowded with dead rows costs few windows.
pub fn sample_size(need: usize, round: u32) -> usize {
    need.saturating_mul(SAMPLE_PER_SESSION)
        .saturating_mul(1 << round.min(16))
        .clamp(1, MAX_SAMPLE)
}

/// The row filter of `query` from `lower`, up to `upper` (inclusive) when given;
/// `?` placeholders in the order [`bind_filter`] binds them.
fn filter_sql(query: &PageQuery<'_>, lower: &Lower, upper: bool) -> String {
    let mut filter = String::from("project_id = ? AND user_id = ?");
    if query.start_date.is_some() {
        filter.push_str(" AND start_ts >= ?");
    }
    if query.end_date.is_some() {
        filter.push_str(" AND start_ts <= ?");
    }
    match lower {
        Lower::Start => {}
        // The first conjunct is a plain range of the primary key for 18.16's index
        // analysis; the second places the position exactly.
        Lower::After(_) => filter
            .push_str(" AND start_ts >= ? AND (start_ts > ? OR (start_ts = ? AND session_id > ?))"),
        Lower::Beyond(_) => filter.push_str(" AND start_ts > ?"),
    }
    if upper {
        filter.push_str(" AND start_ts <= ?");
    }
    filter
}

fn bind_filter(
    mut request: Query,
    query: &PageQuery<'_>,
    lower: &Lower,
    upper: Option<i64>,
) -> Query {
    request = request.bind(query.project_id).bind(query.user_id);
    if let Some(start_date) = query.start_date {
        request = request.bind(start_date);
    }
    if let Some(end_date) = query.end_date {
        request = request.bind(end_date);
    }
    match lower {
        Lower::Start => {}
        Lower::After(after) => {
            request = request
                .bind(after.start_ts)
                .bind(after.start_ts)
                .bind(after.start_ts)
                .bind(after.session_id)
        }
        Lower::Beyond(start_ts) => request = request.bind(*start_ts),
    }
    if let Some(upper) = upper {
        request = request.bind(upper);
    }
    request
}

/// The SQL of the probe: `start_ts` of at most `?` rows after `lower`, read in storage
/// order by one thread (so that `LIMIT` stops the read early).
pub fn probe_sql(query: &PageQuery<'_>, lower: &Lower) -> String {
    format!(
        "SELECT start_ts FROM sessions WHERE {} LIMIT ? SETTINGS max_threads = 1",
        filter_sql(query, lower, false)
    )
}

/// The SQL of one window: the page query on the rows from `lower` to a `start_ts`
/// bound, its first `?` live sessions.
pub fn window_sql(query: &PageQuery<'_>, lower: &Lower) -> String {
    latest_sessions_sql(
        &filter_sql(query, lower, true),
        "ORDER BY s_start_ts, session_id LIMIT ?",
    )
}

/// The whole-range query (no window): what every window must agree with. Kept as the
/// reference of the tests, and the statement a reader of this module can compare.
pub fn whole_range_sql(query: &PageQuery<'_>) -> String {
    latest_sessions_sql(
        &filter_sql(query, &query.start(), false),
        "ORDER BY s_start_ts, session_id LIMIT ?",
    )
}

/// `sql` refused by ClickHouse, before it reads anything, when its primary-key ranges
/// hold more than `max_rows` rows (error [`TOO_MANY_ROWS`]). A clause of the statement
/// rather than a request setting, so that it binds this statement only.
pub fn bounded_sql(sql: &str, max_rows: u64) -> String {
    format!("{sql} SETTINGS max_rows_to_read = {max_rows}, read_overflow_mode = 'throw'")
}

/// ClickHouse's code for a statement over its `max_rows_to_read`.
pub const TOO_MANY_ROWS: u32 = 158;

/// The rows one statement of a page may cover before the page is read another way:
/// a few granules of 1,024 rows per part (`schemas/002_sessions.sql`).
pub const SCAN_MAX_ROWS: u64 = 16_384;

/// Runs [`whole_range_sql`] (tests compare windows with it).
pub async fn fetch_whole_range(
    store: &Store,
    query: &PageQuery<'_>,
) -> Result<PageRows, StoreError> {
    let sql = whole_range_sql(query);
    run_page(
        store,
        query,
        &query.start(),
        None,
        &sql,
        query.fetch as usize,
    )
    .await
}

/// Runs `sql`, a page statement over the rows from `lower` (up to `upper`, inclusive,
/// when given), for its first `limit` live sessions.
async fn run_page(
    store: &Store,
    query: &PageQuery<'_>,
    lower: &Lower,
    upper: Option<i64>,
    sql: &str,
    limit: usize,
) -> Result<PageRows, StoreError> {
    store
        .run(|client| {
            let request = bind_filter(client.query(sql), query, lower, upper).bind(limit as u64);
            decode_page(request, limit)
        })
        .await
}

/// The sessions `request` answers, written out as they are decoded.
async fn decode_page(request: Query, expected: usize) -> clickhouse::error::Result<PageRows> {
    let mut cursor = request.fetch::<SessionRef<'static>>()?;
    let mut page = PageRows::with_capacity(expected);
    while let Some(session) = cursor.next().await? {
        page.push(&session)?;
    }
    Ok(page)
}

/// Whether ClickHouse refused a bounded statement for its size.
pub fn refused(error: &StoreError) -> bool {
    error.code() == Some(TOO_MANY_ROWS)
}

/// Reads pages, choosing per user the cheapest of three exact ways (module header):
/// - a user not known as heavy: the whole-range query itself, bounded to
///   `scan_max_rows` (one request; refused before reading when the user is larger);
/// - a heavy user whose density is known: a window guessed from it, bounded the same
///   way (one request when it holds the page);
/// - otherwise, or when that fell short: probes and windows.
pub struct Pager {
    heavy: HeavyUsers,
    scan_max_rows: u64,
    /// Probe and window rounds a page may take ([`MAX_PAGE_ROUNDS`]).
    max_rounds: u32,
    /// `query_page_statements_total`'s series, one per kind in
    /// `metrics::PAGE_STATEMENTS`' order (resolved once: every page counts one).
    statements: Vec<IntCounter>,
}

impl Default for Pager {
    fn default() -> Self {
        Pager::new(HeavyUsers::default(), SCAN_MAX_ROWS)
    }
}

impl Pager {
    pub fn new(heavy: HeavyUsers, scan_max_rows: u64) -> Pager {
        Pager {
            heavy,
            scan_max_rows,
            max_rounds: MAX_PAGE_ROUNDS,
            statements: Vec::new(),
        }
    }

    /// At most `rounds` probe and window rounds per page (at least one; tests).
    pub fn with_max_rounds(self, rounds: u32) -> Pager {
        Pager {
            max_rounds: rounds.max(1),
            ..self
        }
    }

    /// Counts the statements pages run, by kind, in `counter` (label `kind`).
    pub fn counting_in(mut self, counter: IntCounterVec) -> Pager {
        self.statements = PAGE_STATEMENTS
            .iter()
            .map(|kind| counter.with_label_values(&[kind]))
            .collect();
        self
    }

    /// Counts one statement of `kind` (one of `metrics::PAGE_STATEMENTS`).
    fn count(&self, kind: &'static str) {
        let known = PAGE_STATEMENTS.iter().position(|known| *known == kind);
        if let Some(counter) = known.and_then(|index| self.statements.get(index)) {
            counter.inc();
        }
    }

    /// Whether this replica knows the user as heavy: its page will be probes and
    /// windows (routes give such pages turns of their own).
    pub fn knows_heavy(&self, project_id: u32, user_id: &str) -> bool {
        let key = self.heavy.key(project_id, user_id);
        self.heavy.get(key, Instant::now()).is_some()
    }

    /// The replica's memory of heavy users (tests seed it).
    pub fn heavy_users(&self) -> &HeavyUsers {
        &self.heavy
    }

    /// One page: `fetch` sessions after the position, or every one left, or, past
    /// the round cap, those found and where to go on.
    pub async fn fetch_page(
        &self,
        store: &Store,
        query: &PageQuery<'_>,
    ) -> Result<Page, StoreError> {
        let key = self.heavy.key(query.project_id, query.user_id);
        let wanted = query.fetch as usize;
        let density = match self.heavy.get(key, Instant::now()) {
            Some(density) => density,
            None => {
                let sql = bounded_sql(&whole_range_sql(query), self.scan_max_rows);
                match run_page(store, query, &query.start(), None, &sql, wanted).await {
                    Err(error) if refused(&error) => {
                        self.count("refused");
                        Density::default()
                    }
                    answer => {
                        self.count("whole_range");
                        return answer.map(Page::whole);
                    }
                }
            }
        };
        let mut sessions = PageRows::with_capacity(wanted);
        let mut lower = query.start();
        let guess = match lower {
            Lower::After(after) => Some(after.start_ts),
            _ => match (query.start_date, density.first_ts) {
                (Some(start_date), Some(first)) => Some(start_date.max(first)),
                (start_date, first) => start_date.or(first),
            },
        }
        .and_then(|lower_ts| density.window_end(lower_ts, wanted * SAMPLE_PER_SESSION));
        if let Some(end) = guess {
            let sql = bounded_sql(&window_sql(query, &lower), self.scan_max_rows);
            match run_page(store, query, &lower, Some(end), &sql, wanted).await {
                Ok(found) => {
                    self.count("guessed_window");
                    sessions.append(found);
                    if sessions.len() >= wanted {
                        return Ok(Page::whole(sessions));
                    }
                    lower = Lower::Beyond(end);
                }
                Err(error) if refused(&error) => self.count("refused"),
                Err(error) => return Err(error),
            }
        }
        let (density, resume_after) = self
            .fetch_windows(store, query, lower, &mut sessions, density)
            .await?;
        self.heavy.remember(key, density, Instant::now());
        Ok(Page {
            rows: sessions,
            resume_after,
        })
    }

    /// Probes and windows from `lower` until `fetch` sessions are found, no row is
    /// left, or `max_rounds` rounds ran (module header); returns the density the last
    /// full probe measured, and where to go on when the rounds ran out.
    async fn fetch_windows(
        &self,
        store: &Store,
        query: &PageQuery<'_>,
        mut lower: Lower,
        sessions: &mut PageRows,
        mut density: Density,
    ) -> Result<(Density, Option<Position>), StoreError> {
        let wanted = query.fetch as usize;
        let mut round = 0;
        while sessions.len() < wanted {
            let need = wanted - sessions.len();
            let size = sample_size(need, round);
            let probe = probe_sql(query, &lower);
            let sample: Vec<i64> = store
                .run(|client| {
                    bind_filter(client.query(&probe), query, &lower, None)
                        .bind(size as u64)
                        .fetch_all::<i64>()
                })
                .await?;
            self.count("probe");
            if sample.len() == size {
                let from_start = lower == Lower::Start && query.start_date.is_none();
                density = Density::from_sample(&sample, from_start, density);
            }
            let Some(end) = WindowEnd::choose(sample, size, need) else {
                break;
            };
            let window = window_sql(query, &lower);
            sessions
                .append(run_page(store, query, &lower, Some(end.start_ts), &window, need).await?);
            self.count("window");
            if end.last {
                break;
            }
            lower = Lower::Beyond(end.start_ts);
            round += 1;
            if round >= self.max_rounds && sessions.len() < wanted {
                let resume_after = Position {
                    start_ts: end.start_ts,
                    session_id: u64::MAX,
                };
                return Ok((density, Some(resume_after)));
            }
        }
        Ok((density, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PageQuery<'static> {
        PageQuery {
            project_id: 1,
            user_id: "u",
            start_date: None,
            end_date: None,
            after: None,
            fetch: 51,
        }
    }

    #[test]
    fn placeholders_follow_the_optional_filters() {
        assert_eq!(probe_sql(&base(), &Lower::Start).matches('?').count(), 3);
        assert_eq!(window_sql(&base(), &Lower::Start).matches('?').count(), 4);
        let full = PageQuery {
            start_date: Some(1),
            end_date: Some(2),
            after: Some(Position {
                start_ts: 1,
                session_id: 2,
            }),
            ..base()
        };
        let after = Lower::After(full.after.unwrap());
        assert_eq!(probe_sql(&full, &after).matches('?').count(), 9);
        assert_eq!(window_sql(&full, &after).matches('?').count(), 10);
        assert_eq!(window_sql(&full, &Lower::Beyond(5)).matches('?').count(), 7);
        assert_eq!(whole_range_sql(&full).matches('?').count(), 9);
        assert!(!window_sql(&full, &after).contains("FINAL"));
        assert!(!probe_sql(&full, &after).contains("ORDER BY"));
    }

    #[test]
    fn a_window_holds_at_least_need_rows_or_everything_left() {
        // A full sample: the need-th smallest, whatever order the rows came in.
        let end = WindowEnd::choose(vec![50, 10, 40, 20, 30, 60], 6, 3).unwrap();
        assert_eq!(
            end,
            WindowEnd {
                start_ts: 30,
                last: false
            }
        );
        // A short sample read everything: the window covers it all and is the last.
        let end = WindowEnd::choose(vec![5, 9, 7], 6, 2).unwrap();
        assert_eq!(
            end,
            WindowEnd {
                start_ts: 9,
                last: true
            }
        );
        assert_eq!(WindowEnd::choose(vec![], 6, 2), None);
        // Ties: the window ends at the tied value and so holds all of them.
        let end = WindowEnd::choose(vec![7, 7, 7, 7], 4, 2).unwrap();
        assert_eq!(end.start_ts, 7);
    }

    #[test]
    fn probes_double_and_stay_bounded() {
        assert_eq!(sample_size(51, 0), 102);
        assert_eq!(sample_size(51, 1), 204);
        assert_eq!(sample_size(1, 0), 2);
        assert_eq!(sample_size(1001, 40), MAX_SAMPLE);
        assert_eq!(sample_size(usize::MAX, 0), MAX_SAMPLE);
    }
}
