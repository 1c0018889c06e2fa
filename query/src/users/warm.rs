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
//! holds the user. Memory is bounded: at most `budget` sessions held over all users (~50-95 bytes
//! each), plus the folds being read (each stopped past `budget`); the least recently
//! asked for go first, a user asked for nothing in `TTL` is forgotten, and a user
//! larger than the whole budget is not kept (its fold is dropped as soon as it outgrows
//! it, and the statement answers it for the next `TTL`). Each read of rows takes a
//! heavy turn (`turns::HeavyTurns`). Users are held under a keyed hash: nothing here
//! names a user; session ids of a deleted user go at its next request (the deletion's
//! mutation starts the fold over) or with the TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use sessions_shared::clickhouse::{Store, StoreError};
use tokio::sync::Mutex as AsyncMutex;

use super::fold::StatsFold;
use super::stats::UserStats;
use super::turns::HeavyTurns;
use crate::heavy_users::{self, HeavyUsers};

mod replica;

use replica::{falls_over, Replica};

/// How long a user's fold is kept without being asked for.
pub const TTL: Duration = Duration::from_secs(600);
/// Rounds of one answer (each more than the first needs a merge that raced its reads).
const ROUNDS: usize = 4;

struct Held {
    fold: Arc<AsyncMutex<UserFold>>,
    used: Instant,
    sessions: usize,
}

/// A user's fold and the node it reads (found on its first round).
#[derive(Default)]
struct UserFold {
    fold: StatsFold,
    node: Option<usize>,
}

/// Heavy users' folds on this replica.
pub struct WarmStats {
    held: Mutex<HashMap<u64, Held>>,
    budget: usize,
    ttl: Duration,
    /// Users found larger than the budget: the statement answers them until the TTL
    /// has passed. Its keyed hash is the one of `held` too.
    too_large: HeavyUsers<()>,
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
            held: Mutex::new(HashMap::new()),
            budget,
            ttl,
            too_large: HeavyUsers::new(heavy_users::CAPACITY, ttl),
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

    fn key(&self, project_id: u32, user_id: &str) -> u64 {
        self.too_large.key(project_id, user_id)
    }

    /// Whether a fold of this user is held (it is known to be heavy).
    pub fn holds(&self, project_id: u32, user_id: &str) -> bool {
        let key = self.key(project_id, user_id);
        let mut held = self.held.lock().expect("warm stats lock");
        self.forget_idle(&mut held, Instant::now());
        held.contains_key(&key)
    }

    /// Sessions held over all users.
    pub fn sessions(&self) -> usize {
        let held = self.held.lock().expect("warm stats lock");
        total_sessions(&held)
    }

    fn forget_idle(&self, held: &mut HashMap<u64, Held>, now: Instant) {
        held.retain(|_, held| now.saturating_duration_since(held.used) < self.ttl);
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
        let key = self.key(project_id, user_id);
        if self.too_large.get(key, Instant::now()).is_some() {
            return Ok(Warm::TooLarge);
        }
        let fold = {
            let mut held = self.held.lock().expect("warm stats lock");
            let entry = held.entry(key).or_insert_with(|| Held {
                fold: Arc::default(),
                used: Instant::now(),
                sessions: 0,
            });
            entry.used = Instant::now();
            Arc::clone(&entry.fold)
        };
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
        let mut held = self.held.lock().expect("warm stats lock");
        if kept {
            if let Some(entry) = held.get_mut(&key) {
                entry.sessions = sessions;
                entry.used = Instant::now();
            }
            self.keep_within_budget(&mut held, key);
        } else {
            held.remove(&key);
        }
        self.sessions_held.set(total_sessions(&held) as i64);
        drop(held);
        if matches!(answer, Ok(Warm::TooLarge)) {
            self.too_large.remember(key, (), Instant::now());
        }
        answer
    }

    /// Forgets the least recently used folds but `keep` until all fit the budget.
    fn keep_within_budget(&self, held: &mut HashMap<u64, Held>, keep: u64) {
        self.forget_idle(held, Instant::now());
        let mut total = total_sessions(held);
        while total > self.budget {
            let oldest = held
                .iter()
                .filter(|(key, _)| **key != keep)
                .min_by_key(|(_, held)| held.used)
                .map(|(key, held)| (*key, held.sessions));
            let Some((oldest, sessions)) = oldest else {
                break;
            };
            held.remove(&oldest);
            total -= sessions;
        }
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

fn total_sessions(held: &HashMap<u64, Held>) -> usize {
    held.values().map(|held| held.sessions).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(warm: &WarmStats, key: u64, sessions: usize, used: Instant) {
        let mut held = warm.held.lock().unwrap();
        held.insert(
            key,
            Held {
                fold: Arc::default(),
                used,
                sessions,
            },
        );
    }

    fn keys(warm: &WarmStats) -> Vec<u64> {
        let mut keys: Vec<u64> = warm.held.lock().unwrap().keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn the_least_recently_asked_go_first_but_never_the_one_just_answered() {
        let warm = WarmStats::with_ttl(12, Duration::from_secs(60));
        let t0 = Instant::now();
        hold(&warm, 1, 5, t0);
        hold(&warm, 2, 5, t0 + Duration::from_secs(1));
        hold(&warm, 3, 5, t0 + Duration::from_secs(2));
        warm.keep_within_budget(&mut warm.held.lock().unwrap(), 1);
        assert_eq!(keys(&warm), vec![1, 3], "2 was the least recent but 1");
        hold(&warm, 4, 20, t0 + Duration::from_secs(3));
        warm.keep_within_budget(&mut warm.held.lock().unwrap(), 4);
        assert_eq!(keys(&warm), vec![4], "alone over the budget: the others go");
        assert_eq!(warm.sessions(), 20);
    }

    #[test]
    fn idle_users_and_users_too_large_are_forgotten_after_the_ttl() {
        let ttl = Duration::from_secs(1);
        let warm = WarmStats::with_ttl(100, ttl);
        let long_ago = Instant::now() - 2 * ttl;
        hold(&warm, warm.key(1, "idle"), 5, long_ago);
        hold(&warm, warm.key(1, "recent"), 5, Instant::now());
        assert!(!warm.holds(1, "idle"));
        assert!(warm.holds(1, "recent"));
        assert!(!warm.holds(2, "recent"), "the project is part of the key");
        let now = Instant::now();
        warm.too_large.remember(7, (), now);
        assert!(warm.too_large.get(7, now + ttl / 2).is_some());
        assert!(warm.too_large.get(7, now + ttl).is_none());
        assert!(warm.too_large.get(8, now).is_none());
    }
}
