//! Heavy users' statistics kept warm on a replica: a [`StatsFold`] per user, refreshed
//! on every request by reading only the parts written since (`fold` says why that
//! is exact), so that asking again for a million-session user costs one listing of the
//! table's parts and the user's rows in new parts, not a pass over all of its rows.
//!
//! Contract: answers are the statement's (`users::USER_STATS_SQL`) as of the listing
//! the last round began with, on the one node the fold reads (`replica`: on a cluster
//! one replica of the user's shard, whose answers are that replica's, as a page's are
//! the replica's it reaches). A cluster node that refuses, or lost ZooKeeper, drops
//! the fold and the statement answers (it fails over); so it does when no listed node
//! holds the user. Memory is bounded: the folds are a [`TtlCache`] weighing each by
//! its sessions, so at most `budget` sessions are held over all users (~50-95 bytes
//! each), plus the folds being read (each stopped past `budget`); the least recently
//! asked for go first, a user asked for nothing in `TTL` is forgotten, and a user
//! larger than the whole budget is not kept (its fold is dropped as soon as it outgrows
//! it, and the statement answers it for the next `TTL`: at most
//! `heavy_users::CAPACITY` such users are remembered). Each read of rows takes a
//! heavy turn (`turns::HeavyTurns`). Users are held under their keys
//! (`heavy_users::UserKeys`): nothing here names a user; session ids of a deleted user
//! go at its next request (the deletion's mutation starts the fold over) or with the
//! TTL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use sessions_shared::clickhouse::{Store, StoreError};
use tokio::sync::Mutex as AsyncMutex;

use super::fold::StatsFold;
use super::stats::UserStats;
use super::turns::HeavyTurns;
use crate::heavy_users::{self, UserKeys};
use crate::ttl_cache::TtlCache;

mod replica;

use replica::{falls_over, Replica};

/// How long a user's fold is kept without being asked for.
pub const TTL: Duration = Duration::from_secs(600);
/// Rounds of one answer (each more than the first needs a merge that raced its reads).
const ROUNDS: usize = 4;

/// A user's fold, shared by the requests for the user (one reads at a time).
type SharedFold = Arc<AsyncMutex<UserFold>>;

/// A user's fold and the node it reads (found on its first round).
#[derive(Default)]
struct UserFold {
    fold: StatsFold,
    node: Option<usize>,
}

/// Heavy users' folds on this replica.
pub struct WarmStats {
    keys: UserKeys,
    /// Each user's fold, weighing its sessions (`budget` in all), stamped whenever the
    /// user is asked for.
    folds: Mutex<TtlCache<u64, SharedFold>>,
    budget: usize,
    /// Users found larger than the budget: the statement answers them until the TTL
    /// has passed.
    too_large: Mutex<TtlCache<u64, ()>>,
    /// Rows folded (how much the folds cost ClickHouse).
    rows_folded: IntCounter,
    /// Sessions held.
    sessions_held: IntGauge,
}

/// What the warm path made of a request.
pub enum Warm {
    /// The statistics (`None`: no live session).
    Answer(Option<UserStats>),
    /// The user is larger than the budget: ask the statement.
    TooLarge,
    /// The table's parts kept merging away under the fold's reads: ask the statement.
    Unsettled,
    /// On a cluster, no node of `CLICKHOUSE_URL` holds the user's rows, or the one the
    /// fold read refused or lost ZooKeeper: ask the statement (it fails over).
    Unpinned,
}

impl WarmStats {
    /// Folds of at most `budget` sessions in all (0: none is ever kept).
    pub fn new(budget: usize) -> WarmStats {
        WarmStats::with_ttl(budget, TTL)
    }

    pub fn with_ttl(budget: usize, ttl: Duration) -> WarmStats {
        WarmStats {
            keys: UserKeys::default(),
            folds: Mutex::new(TtlCache::new(budget, ttl)),
            budget,
            too_large: Mutex::new(TtlCache::new(heavy_users::CAPACITY, ttl)),
            rows_folded: IntCounter::new("rows_folded", "unregistered").expect("valid"),
            sessions_held: IntGauge::new("sessions_held", "unregistered").expect("valid"),
        }
    }

    /// Counts rows folded and sessions held in these metrics.
    pub fn counting_in(self, rows_folded: IntCounter, sessions_held: IntGauge) -> WarmStats {
        WarmStats {
            rows_folded,
            sessions_held,
            ..self
        }
    }

    /// Rows folded since the start.
    pub fn rows_folded(&self) -> u64 {
        self.rows_folded.get()
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// Whether a fold of this user is held (it is known to be heavy).
    pub fn holds(&self, project_id: u32, user_id: &str) -> bool {
        let key = self.keys.key(project_id, user_id);
        let mut folds = self.folds.lock().expect("warm stats lock");
        folds.get(&key, Instant::now()).is_some()
    }

    /// Sessions held over all users.
    pub fn sessions(&self) -> usize {
        self.folds.lock().expect("warm stats lock").total_weight()
    }

    /// The user's statistics from its fold (made on first use), reading rows in
    /// `turns`.
    pub async fn answer(
        &self,
        store: &Store,
        project_id: u32,
        user_id: &str,
        turns: &HeavyTurns,
    ) -> Result<Warm, StoreError> {
        let key = self.keys.key(project_id, user_id);
        let now = Instant::now();
        if self.known_too_large(key, now) {
            return Ok(Warm::TooLarge);
        }
        let fold = self.fold_of(key, now);
        let mut user = fold.lock().await;
        let answer = match self
            .refresh(&mut user, store, project_id, user_id, turns)
            .await
        {
            Ok(Warm::Answer(_)) if user.fold.sessions() > self.budget => Ok(Warm::TooLarge),
            Err(error) if falls_over(store, &error) => Ok(Warm::Unpinned),
            answer => answer,
        };
        let kept = matches!(answer, Ok(Warm::Answer(_)));
        if !kept {
            // Too large, unsettled, unpinned, or a failure left rows in the fold that no
            // round accounts for (a request waiting on this fold must not build on
            // them): start over, on whichever node holds the user next time.
            *user = UserFold::default();
        }
        let sessions = user.fold.sessions();
        drop(user);
        self.settle(key, kept.then_some(sessions), Instant::now());
        if matches!(answer, Ok(Warm::TooLarge)) {
            let mut too_large = self.too_large.lock().expect("warm stats lock");
            too_large.insert(key, (), 1, Instant::now());
        }
        answer
    }

    fn known_too_large(&self, key: u64, now: Instant) -> bool {
        let mut too_large = self.too_large.lock().expect("warm stats lock");
        too_large.get(&key, now).is_some()
    }

    /// The user's fold, stamped `now` (asked for); a new one, weighing nothing until it
    /// is read, when none is held.
    fn fold_of(&self, key: u64, now: Instant) -> SharedFold {
        let mut folds = self.folds.lock().expect("warm stats lock");
        if let Some(fold) = folds.touch(&key, now) {
            return Arc::clone(fold);
        }
        let fold = SharedFold::default();
        folds.insert(key, Arc::clone(&fold), 0, now);
        fold
    }

    /// Records what an answer left of the user's fold: kept (`Some` of its sessions),
    /// it weighs its sessions and is stamped `now`, and the least recently asked for go
    /// while the folds are over budget, never this one; otherwise it is dropped. A fold
    /// evicted while it was read stays out.
    fn settle(&self, key: u64, kept_sessions: Option<usize>, now: Instant) {
        let mut folds = self.folds.lock().expect("warm stats lock");
        match kept_sessions {
            Some(sessions) => {
                if folds.touch(&key, now).is_some() {
                    folds.reweigh(&key, sessions, now);
                }
            }
            None => {
                folds.remove(&key);
            }
        }
        self.sessions_held.set(folds.total_weight() as i64);
    }

    async fn refresh(
        &self,
        user: &mut UserFold,
        store: &Store,
        project_id: u32,
        user_id: &str,
        turns: &HeavyTurns,
    ) -> Result<Warm, StoreError> {
        let replica = match user.node {
            Some(node) => Replica::on_node(store, node),
            None => match Replica::holding(store, project_id, user_id).await? {
                Some(replica) => {
                    user.node = Some(replica.node());
                    replica
                }
                None => return Ok(Warm::Unpinned),
            },
        };
        let fold = &mut user.fold;
        let mut listing = replica.list_parts().await?;
        for _ in 0..ROUNDS {
            let round = fold.begin(listing);
            if round.to_read.is_empty() {
                fold.end(round, None);
                return Ok(Warm::Answer(fold.stats().map(UserStats::from)));
            }
            let _turn = turns.take().await?;
            if fold.sessions() == 0 {
                let rows = replica
                    .count_rows(project_id, user_id, &round.to_read)
                    .await?;
                fold.reserve(rows.min(self.budget as u64 + 1) as usize);
            }
            let (rows, whole) = replica
                .read_rows(fold, project_id, user_id, &round.to_read, self.budget)
                .await?;
            self.rows_folded.inc_by(rows);
            if !whole {
                return Ok(Warm::TooLarge);
            }
            listing = replica.list_parts().await?;
            if fold.end(round, Some(&listing)) {
                return Ok(Warm::Answer(fold.stats().map(UserStats::from)));
            }
        }
        Ok(Warm::Unsettled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(warm: &WarmStats, key: u64, used: Instant) {
        let mut folds = warm.folds.lock().unwrap();
        folds.insert(key, SharedFold::default(), 0, used);
    }

    fn keys(warm: &WarmStats) -> Vec<u64> {
        let mut keys: Vec<u64> = warm.folds.lock().unwrap().keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn the_least_recently_asked_go_first_but_never_the_one_just_answered() {
        let warm = WarmStats::with_ttl(12, Duration::from_secs(60));
        let t0 = Instant::now();
        hold(&warm, 1, t0);
        hold(&warm, 2, t0 + Duration::from_secs(1));
        hold(&warm, 3, t0 + Duration::from_secs(2));
        warm.settle(2, Some(5), t0 + Duration::from_secs(1));
        warm.settle(3, Some(5), t0 + Duration::from_secs(2));
        warm.settle(1, Some(5), t0);
        assert_eq!(keys(&warm), vec![1, 3], "2 was the least recent but 1");
        hold(&warm, 4, t0 + Duration::from_secs(3));
        warm.settle(4, Some(20), t0 + Duration::from_secs(3));
        assert_eq!(keys(&warm), vec![4], "alone over the budget: the others go");
        assert_eq!(warm.sessions(), 20);
    }

    #[test]
    fn idle_users_and_users_too_large_are_forgotten_after_the_ttl() {
        let ttl = Duration::from_secs(1);
        let warm = WarmStats::with_ttl(100, ttl);
        let long_ago = Instant::now() - 2 * ttl;
        hold(&warm, warm.keys.key(1, "idle"), long_ago);
        hold(&warm, warm.keys.key(1, "recent"), Instant::now());
        assert!(!warm.holds(1, "idle"));
        assert!(warm.holds(1, "recent"));
        assert!(!warm.holds(2, "recent"), "the project is part of the key");
        let now = Instant::now();
        let mut too_large = warm.too_large.lock().unwrap();
        too_large.insert(7, (), 1, now);
        assert!(too_large.get(&7, now + ttl / 2).is_some());
        assert!(too_large.get(&7, now + ttl).is_none());
        assert!(too_large.get(&8, now).is_none());
    }
}
