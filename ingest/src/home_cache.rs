//! The homes of recently seen sessions, so a session's home partition is computed
//! about once, not once per event (the decimal id and its hash cost more than the rest
//! of the home check).
//!
//! Contract: [`HomeCache::home`] answers exactly what [`Router::home_of`] answers for
//! that router. It is a direct-mapped cache keyed by session id and router (the
//! partitioner and the partition count, so a change of count misses): a producer's
//! choice of ids can only make it miss, never answer wrong; its size is fixed.

use crate::forward::Router;

/// Slots (a power of two): a few times the sessions a partition interleaves.
const SLOTS: usize = 1024;

#[derive(Clone, Copy)]
struct Slot {
    session_id: u64,
    /// `None` while the slot is empty.
    router: Option<Router>,
    home: i32,
}

pub struct HomeCache {
    slots: Box<[Slot]>,
}

impl Default for HomeCache {
    fn default() -> Self {
        let empty = Slot {
            session_id: 0,
            router: None,
            home: 0,
        };
        HomeCache {
            slots: vec![empty; SLOTS].into_boxed_slice(),
        }
    }
}

impl HomeCache {
    /// The home of `session_id` under `router`.
    pub fn home(&mut self, router: Router, session_id: u64) -> i32 {
        // Fibonacci hashing: the top bits of the id times 2^64 / φ.
        let index = (session_id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> (64 - SLOTS.trailing_zeros())) as usize;
        let slot = &mut self.slots[index];
        if slot.session_id == session_id && slot.router == Some(router) {
            return slot.home;
        }
        let home = router.home_of(session_id);
        *slot = Slot {
            session_id,
            router: Some(router),
            home,
        };
        home
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioner::Partitioner;

    proptest::proptest! {
        #[test]
        fn answers_what_the_router_answers(
            lookups in proptest::collection::vec((0u64..3_000, 1u32..6, proptest::bool::ANY), 1..400),
        ) {
            let mut cache = HomeCache::default();
            for (session_id, partition_count, fnv) in lookups {
                // Ids that share slots, and routers that change under the cache.
                let session_id = session_id * SLOTS as u64 / 3;
                let partitioner = if fnv { Partitioner::Fnv1a } else { Partitioner::Murmur2 };
                let router = Router { partitioner, partition_count };
                proptest::prop_assert_eq!(cache.home(router, session_id), router.home_of(session_id));
            }
        }
    }
}
