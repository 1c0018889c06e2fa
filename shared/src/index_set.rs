//! A set of event indexes stored as sorted, disjoint, non-adjacent inclusive ranges.
//!
//! Trackers number a session's events 0, 1, 2, …, so the applied set of a session is
//! almost always one range (16 bytes) however many events it holds; gaps from events
//! still in flight cost one range each until they close.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IndexSet {
    /// Sorted by start; `ranges[i].1 + 1 < ranges[i + 1].0`.
    ranges: Vec<(u64, u64)>,
}

impl IndexSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, index: u64) -> bool {
        let position = self.ranges.partition_point(|&(start, _)| start <= index);
        position > 0 && self.ranges[position - 1].1 >= index
    }

    /// Adds `index`; returns false when it was already there.
    pub fn insert(&mut self, index: u64) -> bool {
        // First range that starts after `index`.
        let after = self.ranges.partition_point(|&(start, _)| start <= index);
        if after > 0 && self.ranges[after - 1].1 >= index {
            return false;
        }
        let joins_previous = after > 0 && self.ranges[after - 1].1 + 1 == index;
        let joins_next = after < self.ranges.len() && index + 1 == self.ranges[after].0;
        match (joins_previous, joins_next) {
            (true, true) => {
                self.ranges[after - 1].1 = self.ranges[after].1;
                self.ranges.remove(after);
            }
            (true, false) => self.ranges[after - 1].1 = index,
            (false, true) => self.ranges[after].0 = index,
            (false, false) => self.ranges.insert(after, (index, index)),
        }
        true
    }

    /// How many indexes the set holds.
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|&(start, end)| end - start + 1)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Heap bytes held (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.ranges.capacity() * std::mem::size_of::<(u64, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn contiguous_indexes_make_one_range() {
        let mut set = IndexSet::new();
        for index in [3, 1, 2, 0, 5, 4] {
            assert!(set.insert(index));
        }
        assert!(!set.insert(2));
        assert_eq!(set.range_count(), 1);
        assert_eq!(set.len(), 6);
    }

    #[test]
    fn extremes() {
        let mut set = IndexSet::new();
        assert!(set.insert(u64::MAX));
        assert!(set.insert(0));
        assert!(set.contains(u64::MAX) && set.contains(0) && !set.contains(1));
        assert_eq!(set.len(), 2);
    }

    proptest! {
        #[test]
        fn behaves_like_a_btree_set(indexes in proptest::collection::vec(0u64..64, 0..200)) {
            let mut set = IndexSet::new();
            let mut reference = BTreeSet::new();
            for index in indexes {
                prop_assert_eq!(set.insert(index), reference.insert(index));
            }
            prop_assert_eq!(set.len(), reference.len() as u64);
            for probe in 0..70 {
                prop_assert_eq!(set.contains(probe), reference.contains(&probe));
            }
            for pair in set.ranges.windows(2) {
                prop_assert!(pair[0].1 + 1 < pair[1].0);
            }
        }
    }
}
