//! A set of event indexes stored as sorted, disjoint, non-adjacent inclusive ranges.
//!
//! Trackers number a session's events 0, 1, 2, …, so the applied set of a session is
//! almost always one range (16 bytes) however many events it holds; gaps from events
//! still in flight cost one range each until they close.
//!
//! Cost: `insert` and `contains` are O(log r) in the number of ranges r, whatever the
//! order of the indexes (a hostile producer may send a million sparse indexes in
//! descending order): up to [`FEW_RANGES`] ranges live in a small sorted vector, more
//! in a B-tree. `len` is O(1). Serialized as a list with one entry per range in both
//! forms, so a stored state does not depend on the form: `[start, end]`, or just the
//! index for a range of one (half the bytes for a sparse set; both read back).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most ranges kept in the vector form (a binary search and a short move).
pub const FEW_RANGES: usize = 32;

#[derive(Clone, Debug, Default)]
pub struct IndexSet {
    ranges: Ranges,
    /// How many indexes the ranges cover.
    count: u64,
}

#[derive(Clone, Debug)]
enum Ranges {
    /// Sorted by start; `ranges[i].1 + 1 < ranges[i + 1].0`.
    Few(Vec<(u64, u64)>),
    /// start → end, with the same invariant.
    Many(BTreeMap<u64, u64>),
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges::Few(Vec::new())
    }
}

impl IndexSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, index: u64) -> bool {
        match &self.ranges {
            Ranges::Few(ranges) => {
                let position = ranges.partition_point(|&(start, _)| start <= index);
                position > 0 && ranges[position - 1].1 >= index
            }
            Ranges::Many(ranges) => ranges
                .range(..=index)
                .next_back()
                .is_some_and(|(_, end)| *end >= index),
        }
    }

    /// Adds `index`; returns false when it was already there.
    pub fn insert(&mut self, index: u64) -> bool {
        let inserted = match &mut self.ranges {
            Ranges::Few(ranges) => insert_into_vec(ranges, index),
            Ranges::Many(ranges) => insert_into_tree(ranges, index),
        };
        if inserted {
            self.count += 1;
            if let Ranges::Few(ranges) = &self.ranges {
                if ranges.len() > FEW_RANGES {
                    self.ranges = Ranges::Many(ranges.iter().copied().collect());
                }
            }
        }
        inserted
    }

    /// How many indexes the set holds.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn range_count(&self) -> usize {
        match &self.ranges {
            Ranges::Few(ranges) => ranges.len(),
            Ranges::Many(ranges) => ranges.len(),
        }
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> Box<dyn Iterator<Item = (u64, u64)> + '_> {
        match &self.ranges {
            Ranges::Few(ranges) => Box::new(ranges.iter().copied()),
            Ranges::Many(ranges) => Box::new(ranges.iter().map(|(start, end)| (*start, *end))),
        }
    }

    /// Heap bytes held (for memory accounting; a B-tree entry is counted at twice its
    /// size, for the nodes' slack and pointers).
    pub fn heap_bytes(&self) -> usize {
        let range = std::mem::size_of::<(u64, u64)>();
        match &self.ranges {
            Ranges::Few(ranges) => ranges.capacity() * range,
            Ranges::Many(ranges) => ranges.len() * 2 * range,
        }
    }

    /// The set of any list of inclusive ranges (unsorted, overlapping or reversed pairs
    /// are normalised, so a stored state can never break the invariant): also the union
    /// of several sets' ranges, in O(r log r).
    pub fn from_ranges(mut pairs: Vec<(u64, u64)>) -> IndexSet {
        for pair in &mut pairs {
            if pair.0 > pair.1 {
                *pair = (pair.1, pair.0);
            }
        }
        pairs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(pairs.len());
        for (start, end) in pairs {
            match merged.last_mut() {
                Some(last) if last.1 == u64::MAX || start <= last.1 + 1 => {
                    last.1 = last.1.max(end);
                }
                _ => merged.push((start, end)),
            }
        }
        let count = merged
            .iter()
            .map(|(start, end)| (end - start).saturating_add(1))
            .fold(0u64, u64::saturating_add);
        let ranges = if merged.len() > FEW_RANGES {
            Ranges::Many(merged.into_iter().collect())
        } else {
            Ranges::Few(merged)
        };
        IndexSet { ranges, count }
    }
}

fn insert_into_vec(ranges: &mut Vec<(u64, u64)>, index: u64) -> bool {
    // First range that starts after `index`.
    let after = ranges.partition_point(|&(start, _)| start <= index);
    if after > 0 && ranges[after - 1].1 >= index {
        return false;
    }
    let joins_previous = after > 0 && ranges[after - 1].1 + 1 == index;
    let joins_next = after < ranges.len() && index + 1 == ranges[after].0;
    match (joins_previous, joins_next) {
        (true, true) => {
            ranges[after - 1].1 = ranges[after].1;
            ranges.remove(after);
        }
        (true, false) => ranges[after - 1].1 = index,
        (false, true) => ranges[after].0 = index,
        (false, false) => ranges.insert(after, (index, index)),
    }
    true
}

fn insert_into_tree(ranges: &mut BTreeMap<u64, u64>, index: u64) -> bool {
    let previous = ranges
        .range(..=index)
        .next_back()
        .map(|(start, end)| (*start, *end));
    if previous.is_some_and(|(_, end)| end >= index) {
        return false;
    }
    let next = index
        .checked_add(1)
        .and_then(|following| ranges.get(&following).map(|end| (following, *end)));
    let joins_previous = previous.filter(|(_, end)| end + 1 == index);
    match (joins_previous, next) {
        (Some((start, _)), Some((next_start, next_end))) => {
            ranges.remove(&next_start);
            ranges.insert(start, next_end);
        }
        (Some((start, _)), None) => {
            ranges.insert(start, index);
        }
        (None, Some((next_start, next_end))) => {
            ranges.remove(&next_start);
            ranges.insert(index, next_end);
        }
        (None, None) => {
            ranges.insert(index, index);
        }
    }
    true
}

impl PartialEq for IndexSet {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.ranges().eq(other.ranges())
    }
}

impl Eq for IndexSet {}

/// One stored range: `[start, end]`, or the index alone for a range of one.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredRange {
    One(u64),
    Many(u64, u64),
}

impl Serialize for IndexSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.ranges().map(|(start, end)| {
            if start == end {
                StoredRange::One(start)
            } else {
                StoredRange::Many(start, end)
            }
        }))
    }
}

impl<'de> Deserialize<'de> for IndexSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = Vec::<StoredRange>::deserialize(deserializer)?;
        let pairs = stored
            .into_iter()
            .map(|range| match range {
                StoredRange::One(index) => (index, index),
                StoredRange::Many(start, end) => (start, end),
            })
            .collect();
        Ok(IndexSet::from_ranges(pairs))
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
            let ranges: Vec<(u64, u64)> = set.ranges().collect();
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].1 + 1 < pair[1].0);
            }
            let json = serde_json::to_string(&set).unwrap();
            let reloaded: IndexSet = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&reloaded, &set);
            prop_assert_eq!(reloaded.len(), set.len());
        }

        /// Many sparse ranges (the tree form) in any order behave like the reference.
        #[test]
        fn the_tree_form_behaves_like_a_btree_set(indexes in proptest::collection::vec(0u64..400, 0..600)) {
            let mut set = IndexSet::new();
            let mut reference = BTreeSet::new();
            for index in indexes {
                let sparse = index * 2 % 401;
                prop_assert_eq!(set.insert(sparse), reference.insert(sparse));
            }
            prop_assert_eq!(set.len(), reference.len() as u64);
            for probe in 0..410 {
                prop_assert_eq!(set.contains(probe), reference.contains(&probe));
            }
            let ranges: Vec<(u64, u64)> = set.ranges().collect();
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].1 + 1 < pair[1].0);
            }
        }
    }

    #[test]
    fn a_million_sparse_descending_indexes_cost_log_time_each() {
        let mut set = IndexSet::new();
        let started = std::time::Instant::now();
        for index in (0..1_000_000u64).rev() {
            assert!(set.insert(index * 2));
        }
        assert_eq!(set.len(), 1_000_000);
        assert_eq!(set.range_count(), 1_000_000);
        // Filling the gaps joins everything into one range.
        for index in 0..999_999u64 {
            assert!(set.insert(index * 2 + 1));
        }
        assert_eq!(set.range_count(), 1);
        assert_eq!(set.len(), 1_999_999);
        // The old vector form moved half the ranges per insert (minutes here); a loose
        // bound that still fails on it, in a debug build on a busy machine.
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn stored_ranges_are_normalised_on_load() {
        let set: IndexSet = serde_json::from_str("[[5,6],[0,2],3,[9,8]]").unwrap();
        assert_eq!(set.ranges().collect::<Vec<_>>(), [(0, 3), (5, 6), (8, 9)]);
        assert_eq!(set.len(), 8);
        assert_eq!(serde_json::to_string(&IndexSet::new()).unwrap(), "[]");
        assert_eq!(serde_json::to_string(&set).unwrap(), "[[0,3],[5,6],[8,9]]");
        let sparse: IndexSet = serde_json::from_str("[1,[3,4],7]").unwrap();
        assert_eq!(serde_json::to_string(&sparse).unwrap(), "[1,[3,4],7]");
        // States stored before single ranges were written short still read back.
        let old: IndexSet = serde_json::from_str("[[1,1],[3,4]]").unwrap();
        assert_eq!(old.ranges().collect::<Vec<_>>(), [(1, 1), (3, 4)]);
    }
}
