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

use crate::cursor::Position;
use crate::heavy_users::{Density, HeavyUsers};
use crate::metrics::PAGE_STATEMENTS;
use crate::own_task::on_its_own_task;
use crate::response::PageRows;

mod answer;
mod statements;

pub use answer::PageDecoder;
use statements::{bind_filter, SAMPLE_PER_SESSION};
pub use statements::{
    bounded_sql, probe_sql, refused, sample_size, whole_range_sql, window_sql, Lower, PageQuery,
    WholeRangeStatements, WindowEnd, SCAN_MAX_ROWS, TOO_MANY_ROWS,
};

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

/// The sessions `request` answers, written out as they are decoded (`answer`): a
/// page statement's, or any statement's whose columns are `Session::COLUMNS`. Read on
/// a task of its own (`own_task`: the answer's many wake-ups poll the read alone).
pub(crate) async fn decode_page(
    request: Query,
    expected: usize,
) -> clickhouse::error::Result<PageRows> {
    // Boxed: the read's state is kilobytes, and the spawn would move it twice.
    on_its_own_task(Box::pin(read_page(request, expected)))
        .await
        .unwrap_or_else(|| {
            Err(clickhouse::error::Error::Custom(
                "the runtime is stopping".into(),
            ))
        })
}

/// [`decode_page`]'s read, in place.
async fn read_page(request: Query, expected: usize) -> clickhouse::error::Result<PageRows> {
    let mut answer = request.fetch_bytes("RowBinary")?;
    let mut page = PageDecoder::new(expected);
    while let Some(chunk) = answer.next().await? {
        page.feed(&chunk)?;
    }
    page.finish()
        .map_err(|_| clickhouse::error::Error::NotEnoughData)
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
    /// The first statement of a page, bounded to `scan_max_rows`, per shape.
    whole_range: WholeRangeStatements,
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
            whole_range: WholeRangeStatements::new(scan_max_rows),
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
                let sql = self.whole_range.get(query);
                match run_page(store, query, &query.start(), None, sql, wanted).await {
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
