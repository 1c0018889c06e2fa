//! The statements of one page, and the window arithmetic, as pure functions: what a
//! page asks for (`PageQuery`), where a window starts and ends, the probe, window and
//! whole-range SQL with their `?` placeholders, and the bound that makes ClickHouse
//! refuse a statement over too many rows. `super` (the pager) runs them; its header
//! says why any window gives the whole range's sessions.

use std::sync::OnceLock;

use sessions_shared::clickhouse::{Query, StoreError};
use sessions_shared::read_model::latest_sessions_sql;

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

impl PageQuery<'_> {
    /// Where the page starts: after the cursor's position, or at the beginning.
    pub(super) fn start(&self) -> Lower {
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

/// Rows the probe reads per session still needed, in the first window.
pub(super) const SAMPLE_PER_SESSION: usize = 2;
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

pub(super) fn bind_filter(
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

/// The first statement of every page ([`bounded_sql`] of [`whole_range_sql`]), built
/// once per shape: its text depends only on which of `start_date`, `end_date` and a
/// cursor the query has (the values are bound), so a page takes it ready-made instead
/// of formatting the column lists and filter again.
pub struct WholeRangeStatements {
    max_rows: u64,
    /// By [`WholeRangeStatements::shape`].
    built: [OnceLock<String>; 8],
}

impl WholeRangeStatements {
    /// The statements bounded to `max_rows` rows.
    pub fn new(max_rows: u64) -> WholeRangeStatements {
        WholeRangeStatements {
            max_rows,
            built: Default::default(),
        }
    }

    /// `bounded_sql(&whole_range_sql(query), max_rows)`.
    pub fn get(&self, query: &PageQuery<'_>) -> &str {
        self.built[Self::shape(query)]
            .get_or_init(|| bounded_sql(&whole_range_sql(query), self.max_rows))
    }

    /// Which statement `query` needs: one bit per optional part of its filter.
    fn shape(query: &PageQuery<'_>) -> usize {
        usize::from(query.start_date.is_some())
            | usize::from(query.end_date.is_some()) << 1
            | usize::from(query.after.is_some()) << 2
    }
}

/// ClickHouse's code for a statement over its `max_rows_to_read`.
pub const TOO_MANY_ROWS: u32 = 158;

/// The rows one statement of a page may cover before the page is read another way:
/// a few granules of 1,024 rows per part (`schemas/002_sessions.sql`).
pub const SCAN_MAX_ROWS: u64 = 16_384;

/// Whether ClickHouse refused a bounded statement for its size.
pub fn refused(error: &StoreError) -> bool {
    error.code() == Some(TOO_MANY_ROWS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_made_statement_is_the_one_built_for_the_query() {
        let statements = WholeRangeStatements::new(77);
        let after = Position {
            start_ts: 5,
            session_id: 6,
        };
        for round in 0..2 {
            for start_date in [None, Some(1)] {
                for end_date in [None, Some(2)] {
                    for after in [None, Some(after)] {
                        let query = PageQuery {
                            start_date,
                            end_date,
                            after,
                            user_id: if round == 0 { "u" } else { "another" },
                            ..base()
                        };
                        assert_eq!(
                            statements.get(&query),
                            bounded_sql(&whole_range_sql(&query), 77)
                        );
                    }
                }
            }
        }
    }

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
