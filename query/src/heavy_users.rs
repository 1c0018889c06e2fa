//! What a replica remembers about *heavy* users: those whose pages cannot be read in
//! one bounded request over their whole range, with how densely their rows lie along
//! `start_ts`, so that their next pages guess a window instead of probing for one.
//!
//! Contract: a bounded map (a [`TtlCache`]: at most `capacity` users, each forgotten
//! `ttl` after it was last learned) from a user's key ([`UserKeys`]) to a [`Density`].
//! It only ever changes what a page *costs*: every window the guesses produce is a
//! range of `start_ts`, and any range gives exact sessions (`sessions` module header).
//! The map holds no user id (a keyed hash, random per process), so a deleted user
//! leaves nothing readable behind; `users::warm` names users by the same keys.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ttl_cache::TtlCache;

/// How a heavy user's rows are spread over `start_ts`, from a probe's sample.
/// The default knows nothing yet: the user was only found too large for one request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Density {
    /// Milliseconds of `start_ts` per stored row (0 when the sample was all ties);
    /// `None` until a probe measured it.
    pub ms_per_row: Option<f64>,
    /// The smallest `start_ts` seen from the start of the user's range (a first
    /// page's window starts there), when a probe from the start has run.
    pub first_ts: Option<i64>,
}

impl Density {
    /// From a probe's sample (any order; at least two rows to measure anything).
    pub fn from_sample(sample: &[i64], from_start: bool, before: Density) -> Density {
        let (Some(min), Some(max)) = (sample.iter().min(), sample.iter().max()) else {
            return before;
        };
        let ms_per_row = if sample.len() < 2 {
            before.ms_per_row
        } else {
            Some((max - min) as f64 / (sample.len() - 1) as f64)
        };
        Density {
            ms_per_row,
            first_ts: if from_start {
                Some(before.first_ts.map_or(*min, |first| first.min(*min)))
            } else {
                before.first_ts
            },
        }
    }

    /// The end of a window from `lower_ts` expected to hold `rows` rows; `None` when
    /// nothing is known yet to guess from.
    pub fn window_end(&self, lower_ts: i64, rows: usize) -> Option<i64> {
        let ms_per_row = self.ms_per_row.filter(|ms| ms.is_finite() && *ms >= 0.0)?;
        let span = (ms_per_row * rows as f64).ceil();
        // Saturating: a sparse user's span may run past the end of time.
        let span = if span >= i64::MAX as f64 {
            i64::MAX
        } else {
            span as i64
        };
        Some(lower_ts.saturating_add(span))
    }
}

/// Keys naming users in a replica's memories: a keyed hash of (project, user), random
/// per process, so that no memory holds a user id.
#[derive(Default)]
pub struct UserKeys {
    hasher: RandomState,
}

impl UserKeys {
    pub fn key(&self, project_id: u32, user_id: &str) -> u64 {
        self.hasher.hash_one((project_id, user_id))
    }
}

/// The replica's memory of heavy users: the spacing of their rows, for their pages.
pub struct HeavyUsers {
    keys: UserKeys,
    /// A user's density, stamped when learned (reading it does not keep it).
    learned: Mutex<TtlCache<u64, Density>>,
}

/// Users remembered at most (~1.5 MiB).
pub const CAPACITY: usize = 10_000;
/// How long a user stays known as heavy without a new probe.
pub const TTL: Duration = Duration::from_secs(600);

impl Default for HeavyUsers {
    fn default() -> Self {
        HeavyUsers::new(CAPACITY, TTL)
    }
}

impl HeavyUsers {
    pub fn new(capacity: usize, ttl: Duration) -> HeavyUsers {
        HeavyUsers {
            keys: UserKeys::default(),
            learned: Mutex::new(TtlCache::new(capacity, ttl)),
        }
    }

    /// The key of a user (`UserKeys`).
    pub fn key(&self, project_id: u32, user_id: &str) -> u64 {
        self.keys.key(project_id, user_id)
    }

    /// What is known of the user, if it is heavy and was learned within the TTL.
    pub fn get(&self, key: u64, now: Instant) -> Option<Density> {
        let mut learned = self.learned.lock().expect("heavy users lock");
        learned.get(&key, now).copied()
    }

    /// Learns (or re-learns) a heavy user. When full, the expired go first, then the
    /// one learned longest ago (`TtlCache`'s eviction rule).
    pub fn remember(&self, key: u64, density: Density, now: Instant) {
        let mut learned = self.learned.lock().expect("heavy users lock");
        learned.insert(key, density, 1, now);
    }

    pub fn len(&self) -> usize {
        self.learned.lock().expect("heavy users lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_gives_the_spacing_of_rows() {
        let density = Density::from_sample(&[40, 10, 30, 20], false, Density::default());
        assert_eq!(density.ms_per_row, Some(10.0));
        assert_eq!(density.first_ts, None);
        assert_eq!(density.window_end(100, 5), Some(150));
        let from_start = Density::from_sample(&[40, 10, 30, 20], true, density);
        assert_eq!(from_start.first_ts, Some(10));
        // A later probe from the start keeps the smallest first row seen.
        let again = Density::from_sample(&[25, 45], true, from_start);
        assert_eq!((again.first_ts, again.ms_per_row), (Some(10), Some(20.0)));
        // Ties only: a window of that one start time.
        let ties = Density::from_sample(&[7, 7, 7], false, Density::default());
        assert_eq!(ties.window_end(7, 100), Some(7));
    }

    #[test]
    fn nothing_to_guess_from_until_a_probe_ran() {
        assert_eq!(Density::default().window_end(0, 10), None);
        let one = Density::from_sample(&[5], true, Density::default());
        assert_eq!(one.window_end(0, 10), None);
        assert_eq!(one.first_ts, Some(5));
        assert_eq!(Density::from_sample(&[], true, one), one);
    }

    #[test]
    fn a_window_end_saturates() {
        let sparse = Density {
            ms_per_row: Some(1e300),
            first_ts: None,
        };
        assert_eq!(sparse.window_end(5, 3), Some(i64::MAX));
        assert_eq!(sparse.window_end(i64::MAX - 1, 1), Some(i64::MAX));
    }

    #[test]
    fn users_are_forgotten_after_the_ttl_and_beyond_capacity() {
        let users = HeavyUsers::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let (a, b, c) = (users.key(1, "a"), users.key(1, "b"), users.key(2, "a"));
        assert_ne!(a, c, "the project is part of the key");
        users.remember(a, Density::default(), t0);
        assert!(users.get(a, t0 + Duration::from_secs(9)).is_some());
        assert!(users.get(a, t0 + Duration::from_secs(10)).is_none());
        users.remember(b, Density::default(), t0 + Duration::from_secs(1));
        users.remember(c, Density::default(), t0 + Duration::from_secs(2));
        assert_eq!(users.len(), 2);
        assert!(
            users.get(a, t0 + Duration::from_secs(2)).is_none(),
            "oldest out"
        );
        assert!(users.get(b, t0 + Duration::from_secs(2)).is_some());
        // Expired entries make room before the oldest live one goes.
        users.remember(a, Density::default(), t0 + Duration::from_secs(11));
        assert!(users.get(c, t0 + Duration::from_secs(11)).is_some());
        assert!(users.get(a, t0 + Duration::from_secs(11)).is_some());
        assert_eq!(users.len(), 2, "b had expired");
    }
}
