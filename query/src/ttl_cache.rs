//! A map bounded in size and in time, for what a replica remembers about users: heavy
//! users' row spacing (`heavy_users`), their statistics folds and the users too large
//! to fold (`users::warm`).
//!
//! Contract:
//! - **Expiry by age.** An entry is gone `ttl` after its stamp. [`TtlCache::insert`]
//!   and [`TtlCache::touch`] stamp an entry `now`; [`TtlCache::get`] and
//!   [`TtlCache::reweigh`] leave its stamp alone, so the caller chooses whether using
//!   an entry keeps it (a fold asked for) or only learning it again does (a heavy
//!   user's spacing). Every call given a `now` first drops the entries expired by
//!   then, so an expired entry's memory goes at the next call.
//! - **Bound.** At most `capacity` entries, whose weights sum to at most `capacity`:
//!   a weight of 1 per entry makes it a bound on entries, a fold's sessions a bound
//!   on the memory of all folds. Only the entry a call has just inserted or reweighed
//!   may stand over the bound, and then alone (a call never evicts its own entry).
//! - **Eviction rule.** While an insert or a reweigh leaves the cache over its bound,
//!   the entry stamped longest ago goes (ties: the smaller key), other than the one the
//!   call is about. Expired entries went before: they are the oldest stamped.
//!
//! Each entry a call stamps, evicts or drops costs O(log n): a stamp-ordered index
//! beside the map. Not synchronised: callers keep it behind a lock.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A map whose entries expire `ttl` after their stamp, bounded by `capacity` (module
/// header).
pub struct TtlCache<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Every entry's stamp and key, oldest first: the order of expiry and eviction.
    by_stamp: BTreeSet<(Instant, K)>,
    /// The weights of all entries.
    total_weight: usize,
    capacity: usize,
    ttl: Duration,
}

struct Entry<V> {
    value: V,
    weight: usize,
    stamp: Instant,
}

impl<K: Hash + Ord + Clone, V> TtlCache<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> TtlCache<K, V> {
        TtlCache {
            entries: HashMap::new(),
            by_stamp: BTreeSet::new(),
            total_weight: 0,
            capacity,
            ttl,
        }
    }

    /// The entry's value unless it expired by `now`; its stamp stays.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        self.drop_expired(now);
        self.entries.get(key).map(|entry| &entry.value)
    }

    /// The entry's value unless it expired by `now`, stamped `now` (its age starts
    /// over).
    pub fn touch(&mut self, key: &K, now: Instant) -> Option<&mut V> {
        self.drop_expired(now);
        let entry = self.entries.get_mut(key)?;
        self.by_stamp.remove(&(entry.stamp, key.clone()));
        self.by_stamp.insert((now, key.clone()));
        entry.stamp = now;
        Some(&mut entry.value)
    }

    /// Inserts (or replaces) the entry, weighing `weight` and stamped `now`, then
    /// evicts others while over the bound.
    pub fn insert(&mut self, key: K, value: V, weight: usize, now: Instant) {
        self.drop_expired(now);
        self.remove(&key);
        self.by_stamp.insert((now, key.clone()));
        self.total_weight += weight;
        let entry = Entry {
            value,
            weight,
            stamp: now,
        };
        self.entries.insert(key.clone(), entry);
        self.evict_beyond_bound(&key);
    }

    /// Sets the entry's weight (its stamp stays), then evicts others while over the
    /// bound. False when the entry is not held (never inserted, expired or evicted).
    pub fn reweigh(&mut self, key: &K, weight: usize, now: Instant) -> bool {
        self.drop_expired(now);
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        self.total_weight = self.total_weight - entry.weight + weight;
        entry.weight = weight;
        self.evict_beyond_bound(key);
        true
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let entry = self.entries.remove(key)?;
        self.by_stamp.remove(&(entry.stamp, key.clone()));
        self.total_weight -= entry.weight;
        Some(entry.value)
    }

    /// Entries held, counting those expired that no call has dropped yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The weights of all entries held.
    pub fn total_weight(&self) -> usize {
        self.total_weight
    }

    /// The keys held, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }

    fn over_bound(&self) -> bool {
        self.entries.len() > self.capacity || self.total_weight > self.capacity
    }

    /// Evicts the entries stamped longest ago but `keep` until within the bound (or
    /// `keep` is alone).
    fn evict_beyond_bound(&mut self, keep: &K) {
        while self.over_bound() {
            let oldest = self
                .by_stamp
                .iter()
                .map(|(_, key)| key)
                .find(|key| *key != keep)
                .cloned();
            let Some(oldest) = oldest else {
                return;
            };
            self.remove(&oldest);
        }
    }

    /// Drops the entries `ttl` old or older at `now`.
    fn drop_expired(&mut self, now: Instant) {
        while let Some((stamp, key)) = self.by_stamp.first() {
            if now.saturating_duration_since(*stamp) < self.ttl {
                return;
            }
            let key = key.clone();
            self.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn sorted_keys(cache: &TtlCache<u32, &str>) -> Vec<u32> {
        let mut keys: Vec<u32> = cache.keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn an_entry_expires_ttl_after_its_stamp_and_only_insert_and_touch_stamp() {
        let mut cache = TtlCache::new(10, seconds(10));
        let t0 = Instant::now();
        cache.insert(1, "learned", 1, t0);
        cache.insert(2, "used", 1, t0);
        assert_eq!(cache.get(&1, t0 + seconds(9)), Some(&"learned"));
        assert!(cache.touch(&2, t0 + seconds(9)).is_some());
        assert!(cache.reweigh(&1, 1, t0 + seconds(9)));
        assert_eq!(
            cache.get(&1, t0 + seconds(10)),
            None,
            "get and reweigh kept its age"
        );
        assert_eq!(
            cache.get(&2, t0 + seconds(18)),
            Some(&"used"),
            "touch restarted it"
        );
        assert_eq!(cache.get(&2, t0 + seconds(19)), None);
        assert!(!cache.reweigh(&2, 1, t0 + seconds(19)), "expired: not held");
        assert!(
            cache.is_empty(),
            "expired entries are dropped, not kept hidden"
        );
        assert_eq!(cache.total_weight(), 0);
    }

    #[test]
    fn at_most_capacity_entries_the_oldest_stamped_going_first() {
        let mut cache = TtlCache::new(3, seconds(100));
        let t0 = Instant::now();
        for key in 0..3 {
            cache.insert(key, "entry", 1, t0 + seconds(u64::from(key)));
        }
        cache.touch(&0, t0 + seconds(3));
        cache.insert(3, "entry", 1, t0 + seconds(4));
        assert_eq!(
            sorted_keys(&cache),
            vec![0, 2, 3],
            "1 was stamped longest ago"
        );
        cache.insert(3, "replaced", 1, t0 + seconds(5));
        assert_eq!(
            sorted_keys(&cache),
            vec![0, 2, 3],
            "a replacement evicts nothing"
        );
        for key in 10..100 {
            cache.insert(key, "entry", 1, t0 + seconds(6));
            assert!(cache.len() <= 3);
        }
        assert_eq!(sorted_keys(&cache), vec![97, 98, 99]);
    }

    #[test]
    fn every_expired_entry_goes_at_the_next_call_before_any_live_one() {
        let mut cache = TtlCache::new(3, seconds(10));
        let t0 = Instant::now();
        cache.insert(1, "expires", 1, t0);
        cache.insert(2, "expires", 1, t0 + seconds(1));
        cache.insert(3, "lives", 1, t0 + seconds(5));
        cache.insert(4, "new", 1, t0 + seconds(11));
        assert_eq!(
            sorted_keys(&cache),
            vec![3, 4],
            "not only the one over the bound"
        );
        assert_eq!(cache.total_weight(), 2);
    }

    #[test]
    fn weights_sum_to_at_most_capacity_and_a_call_never_evicts_its_own_entry() {
        let mut cache = TtlCache::new(12, seconds(100));
        let t0 = Instant::now();
        cache.insert(1, "a", 0, t0);
        cache.insert(2, "b", 5, t0 + seconds(1));
        cache.insert(3, "c", 5, t0 + seconds(2));
        assert!(cache.reweigh(&1, 5, t0 + seconds(3)));
        assert_eq!(sorted_keys(&cache), vec![1, 3], "2 was the oldest but 1");
        assert_eq!(cache.total_weight(), 10);
        cache.insert(4, "d", 20, t0 + seconds(4));
        assert_eq!(
            sorted_keys(&cache),
            vec![4],
            "alone over the bound: the others go"
        );
        assert_eq!(cache.total_weight(), 20);
        cache.insert(5, "e", 1, t0 + seconds(5));
        assert_eq!(sorted_keys(&cache), vec![5], "the next insert evicts it");
        assert_eq!(cache.remove(&5), Some("e"));
        assert_eq!(cache.total_weight(), 0);
    }

    #[test]
    fn weightless_entries_still_count_against_the_entries() {
        let mut cache = TtlCache::new(2, seconds(100));
        let t0 = Instant::now();
        for key in 0..5 {
            cache.insert(key, "weightless", 0, t0 + seconds(u64::from(key)));
        }
        assert_eq!(sorted_keys(&cache), vec![3, 4]);
    }
}
