//! The ClickHouse side of `GET /api/v1/:projectKey/users/:userId`: a user's statistics.
//!
//! Contract (spec/api-users.md): over the sessions the sessions endpoint returns for
//! the user with no date filter (per `session_id` the highest-`version` row among the
//! user's rows wins, tombstones drop the session), `sessionCount` is their number,
//! `firstSeen` their smallest `startTs`, `lastSeen` their largest `startTs + duration`.
//! `None` when the user has no live session. Values are bound, never spliced.
//!
//! Imports go one way, down this list:
//! - this module: [`StatsReader`], which picks per request the statement or a fold;
//! - [`warm`]: heavy users' folds kept on this replica (`warm::replica`: the node a
//!   fold reads);
//! - [`stats`] (the statistics as a value and as JSON, also from a fold's) and
//!   [`turns`] (the limit on heavy reads), which the modules above share;
//! - [`fold`]: the pure fold over the table's parts, and why it is exact.

pub mod fold;
pub mod stats;
pub mod turns;
pub mod warm;

use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use sessions_shared::clickhouse::{Store, StoreError};
use tokio::sync::Semaphore;

use crate::sessions::{bounded_sql, refused};
use stats::UserStats;
use turns::HeavyTurns;
use warm::{Warm, WarmStats};

/// The statistics query: one pass over the user's rows (their key range). `argMax` per
/// column rather than the pages' `LIMIT 1 BY` (`read_model::latest_sessions_sql`):
/// over a heavy user's million rows the sort costs more than the hash table
/// (BENCHMARKS.md §6).
pub const USER_STATS_SQL: &str = "SELECT count() AS session_count, min(s_start_ts) AS first_seen, \
     max(s_start_ts + toInt64(s_duration)) AS last_seen \
     FROM (SELECT argMax(start_ts, version) AS s_start_ts, argMax(duration, version) AS s_duration, \
     argMax(deleted, version) AS s_deleted FROM sessions WHERE project_id = ? AND user_id = ? \
     GROUP BY session_id) WHERE s_deleted = 0";

/// Reads users' statistics at a bounded cost per replica. The statement runs first
/// bounded (`sessions::bounded_sql`): ClickHouse refuses it before reading when the
/// user's rows exceed the bound. A heavy user's statistics then come from its fold
/// (`warm`: the first request reads the user's rows once and the next ones only
/// the parts written since; on a cluster, on one replica of the user's shard), or, for
/// a user larger than the folds' budget or a cluster whose listed nodes cannot serve a
/// fold, from the statement run whole (its cost grows with the user: ~0.25 µs of
/// ClickHouse CPU per row). Heavy reads take turns (`turns`: at most
/// `HEAVY_STATS_CONCURRENCY` at a time on this replica, each waited for at most one
/// request bound).
pub struct StatsReader {
    heavy: HeavyTurns,
    scan_max_rows: u64,
    warm: WarmStats,
}

impl StatsReader {
    /// A reader keeping folds of at most `warm_budget` sessions (0: none).
    pub fn new(
        heavy_concurrency: usize,
        scan_max_rows: u64,
        turn_wait: Duration,
        warm_budget: usize,
    ) -> StatsReader {
        StatsReader {
            heavy: HeavyTurns::new(heavy_concurrency, turn_wait),
            scan_max_rows,
            warm: WarmStats::new(warm_budget),
        }
    }

    /// Counts the folds' rows and sessions in these metrics.
    pub fn counting_in(self, rows_folded: IntCounter, sessions_held: IntGauge) -> StatsReader {
        StatsReader {
            warm: self.warm.counting_in(rows_folded, sessions_held),
            ..self
        }
    }

    /// The limit on heavy statements in flight (tests hold its permits).
    pub fn heavy_limit(&self) -> &Semaphore {
        self.heavy.limit()
    }

    /// The heavy users' folds.
    pub fn warm(&self) -> &WarmStats {
        &self.warm
    }

    /// The user's statistics, `None` for a user without a live session.
    pub async fn fetch(
        &self,
        store: &Store,
        project_id: u32,
        user_id: &str,
    ) -> Result<Option<UserStats>, StoreError> {
        let warm = self.warm.enabled();
        if !(warm && self.warm.holds(project_id, user_id)) {
            let bounded = bounded_sql(USER_STATS_SQL, self.scan_max_rows);
            match run_stats(store, &bounded, project_id, user_id).await {
                Err(error) if refused(&error) => {}
                answer => return answer,
            }
        }
        if warm {
            let answer = self
                .warm
                .answer(store, project_id, user_id, &self.heavy)
                .await?;
            if let Warm::Answer(stats) = answer {
                return Ok(stats);
            }
        }
        let _turn = self.heavy.take().await?;
        run_stats(store, USER_STATS_SQL, project_id, user_id).await
    }
}

async fn run_stats(
    store: &Store,
    sql: &str,
    project_id: u32,
    user_id: &str,
) -> Result<Option<UserStats>, StoreError> {
    let stats: UserStats = store
        .run(|client| client.query(sql).bind(project_id).bind(user_id).fetch_one())
        .await?;
    Ok((stats.session_count > 0).then_some(stats))
}
