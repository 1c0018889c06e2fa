//! A heavy user's statistics kept as a fold over the `sessions` table's parts, so that
//! asking again reads only what was written since (pure: no I/O; `warm` drives it).
//!
//! Contract. A [`StatsFold`] holds, per session, the highest-`version` row seen among
//! the user's rows (ties keep the first seen, as arbitrary as the statement's `argMax`;
//! the worker writes equal versions of a session only as equal rows) and the
//! statistics of those winners (live count, smallest `start_ts`, largest
//! `start_ts + duration`). Folding a row twice, or rows in any order, gives the same
//! fold. It also records which block numbers of the table its rows came from
//! ([`Coverage`]), so that a listing of the table's active parts tells what is left to
//! read ([`StatsFold::plan`]).
//!
//! Why a fold over parts is exact. A MergeTree part holds the rows of a contiguous range
//! of insert block numbers and never changes; the table's active parts partition the
//! blocks written so far (on one replica of a replicated table, the blocks it has: a
//! part it still lacks is read when it arrives; names and blocks are the same on
//! every replica, the replication log deciding merges and mutations, but a fold must
//! list and read one replica). What happens to a block's rows afterwards:
//! - a merge drops, at one key, rows of a lower (or equal) version than another row of
//!   that key: never a session's winner, so a fold that saw the dropped rows is still
//!   right (merged parts are recognised by their block range and not read again);
//! - a mutation (`ALTER … DELETE`, the deletion jobs) removes rows. A part's
//!   `data_version` says which mutations its rows reflect (a mutated part carries the
//!   mutation's number, every other part its first block), so a part over blocks the
//!   fold read at a lower `data_version` means rows may be gone: the fold starts over;
//! - a part that disappears with no successor over its blocks (an emptied part, a
//!   dropped partition) also means rows are gone: the fold starts over;
//! - a new table under the same name (`sessions-admin rebuild-sessions` swaps one in)
//!   has another `generation`: the fold starts over.
//!
//! A part listed, then read, is folded only if a listing after the read still shows it
//! active (a part merged away between the listing and the read would have been read as
//! empty): otherwise its successor is read on the next round.

use std::collections::HashMap;

use serde::Deserialize;
use sessions_shared::clickhouse::Row;

/// An active part of the `sessions` table, as `system.parts` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct ListedPart {
    pub name: String,
    pub min_block: i64,
    pub max_block: i64,
    /// The mutations its rows reflect: every one numbered up to this.
    pub data_version: u64,
}

impl ListedPart {
    /// Its blocks and data version, as a [`Coverage`] range.
    fn range(&self) -> (i64, i64, u64) {
        (self.min_block, self.max_block, self.data_version)
    }
}

/// The table's active parts at one moment, and which table that is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Changes when another table takes the name (its metadata's time of creation).
    pub generation: String,
    pub parts: Vec<ListedPart>,
}

/// A row of the user's, as the fold needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct FoldRow {
    pub session_id: u64,
    pub version: u64,
    pub deleted: u8,
    pub start_ts: i64,
    pub duration: u64,
}

/// One round of reading: the listing it answers for and the parts it must read.
#[derive(Clone, Debug)]
pub struct Round {
    pub listing: Listing,
    pub to_read: Vec<ListedPart>,
}

/// What a fold must do to answer for a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Forget everything and read every part (then plan again).
    StartOver,
    /// Read the user's rows of these parts (none: the fold already answers).
    Read(Vec<ListedPart>),
}

/// The block ranges a fold has read, each with the `data_version` it was read at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    generation: Option<String>,
    /// Ranges of parts read whole: their blocks need no reading again.
    ranges: Vec<(i64, i64, u64)>,
    /// Ranges of parts read but not seen active after the read (a merge or a mutation
    /// replaced them meanwhile): their rows are in the fold, so a mutation or a gap over
    /// them starts over as over `ranges`, but they are read again in their successor
    /// (which then stands for them).
    unconfirmed: Vec<(i64, i64, u64)>,
}

impl Coverage {
    fn covers(&self, min: i64, max: i64) -> bool {
        // Ranges are disjoint (they were parts of one listing, or parts read after it).
        let mut next = min;
        let mut sorted: Vec<_> = self
            .ranges
            .iter()
            .filter(|range| overlaps(range, min, max))
            .collect();
        sorted.sort_unstable();
        for (lo, hi, _) in sorted {
            if *lo > next {
                return false;
            }
            next = next.max(hi.saturating_add(1));
            if next > max {
                return true;
            }
        }
        next > max
    }

    /// Every range whose rows are in the fold, read whole or not.
    fn folded(&self) -> impl Iterator<Item = &(i64, i64, u64)> {
        self.ranges.iter().chain(&self.unconfirmed)
    }
}

/// Whether a range shares a block with `min..=max`.
fn overlaps(&(lo, hi, _): &(i64, i64, u64), min: i64, max: i64) -> bool {
    hi >= min && lo <= max
}

/// One session's winning row among the user's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Winner {
    version: u64,
    live: bool,
    start_ts: i64,
    end_ts: i64,
}

/// A user's statistics as a fold over the table's parts.
#[derive(Debug, Default)]
pub struct StatsFold {
    winners: HashMap<u64, Winner>,
    coverage: Coverage,
    live: u64,
    first_seen: i64,
    last_seen: i64,
    /// A retracted winner held an extreme: recompute both from the winners.
    extremes_stale: bool,
}

/// The statistics a fold answers: (live sessions, first seen, last seen).
pub type Stats = (u64, i64, i64);

impl StatsFold {
    /// Sessions held (the fold's size).
    pub fn sessions(&self) -> usize {
        self.winners.len()
    }

    /// Makes room for `sessions` more sessions at once (a first read knows how many
    /// rows it will fold: growing the map step by step costs a first read ~40% more
    /// time and leaves the smaller maps' memory with the allocator).
    pub fn reserve(&mut self, sessions: usize) {
        self.winners.reserve(sessions);
    }

    /// What to read to answer for `listing`.
    pub fn plan(&self, listing: &Listing) -> Plan {
        let coverage = &self.coverage;
        if coverage.generation.is_none() {
            return Plan::Read(listing.parts.clone());
        }
        if coverage.generation.as_deref() != Some(listing.generation.as_str()) {
            return Plan::StartOver;
        }
        let listed = Coverage {
            ranges: listing.parts.iter().map(ListedPart::range).collect(),
            ..Coverage::default()
        };
        if coverage
            .folded()
            .any(|(lo, hi, _)| !listed.covers(*lo, *hi))
        {
            return Plan::StartOver;
        }
        let mutated = listing.parts.iter().any(|part| {
            coverage
                .folded()
                .filter(|range| overlaps(range, part.min_block, part.max_block))
                .any(|(_, _, read_at)| *read_at < part.data_version)
        });
        if mutated {
            return Plan::StartOver;
        }
        Plan::Read(
            listing
                .parts
                .iter()
                .filter(|part| !coverage.covers(part.min_block, part.max_block))
                .cloned()
                .collect(),
        )
    }

    /// Forgets everything (a [`Plan::StartOver`]).
    pub fn start_over(&mut self) {
        *self = StatsFold::default();
    }

    /// Folds one of the user's rows.
    pub fn fold(&mut self, row: &FoldRow) {
        let candidate = Winner {
            version: row.version,
            live: row.deleted == 0,
            start_ts: row.start_ts,
            end_ts: row.start_ts.wrapping_add(row.duration as i64),
        };
        let before = match self.winners.get_mut(&row.session_id) {
            Some(winner) if winner.version >= candidate.version => return,
            Some(winner) => Some(std::mem::replace(winner, candidate)),
            None => {
                self.winners.insert(row.session_id, candidate);
                None
            }
        };
        if candidate.live {
            self.add(candidate);
        }
        if let Some(before) = before.filter(|before| before.live) {
            self.retract(before, Some(candidate).filter(|winner| winner.live));
        }
    }

    fn add(&mut self, winner: Winner) {
        if self.live == 0 {
            (self.first_seen, self.last_seen) = (winner.start_ts, winner.end_ts);
        } else {
            self.first_seen = self.first_seen.min(winner.start_ts);
            self.last_seen = self.last_seen.max(winner.end_ts);
        }
        self.live += 1;
    }

    /// Takes a live winner back; `replacement` is the live winner that took its place
    /// (already added), if any: an extreme it holds too stays known.
    fn retract(&mut self, winner: Winner, replacement: Option<Winner>) {
        self.live -= 1;
        let first_lost = winner.start_ts == self.first_seen
            && replacement.is_none_or(|new| new.start_ts != self.first_seen);
        let last_lost = winner.end_ts == self.last_seen
            && replacement.is_none_or(|new| new.end_ts != self.last_seen);
        if first_lost || last_lost {
            self.extremes_stale = true;
        }
    }

    /// Begins a round of reading for `listing` (starting over first if it must).
    pub fn begin(&mut self, listing: Listing) -> Round {
        let to_read = match self.plan(&listing) {
            Plan::Read(parts) => parts,
            Plan::StartOver => {
                self.start_over();
                listing.parts.clone()
            }
        };
        Round { listing, to_read }
    }

    /// Ends a round whose parts were read (every row of the user's folded); `after` is
    /// a listing taken after the reads (`None` when there was nothing to read). True
    /// when the fold answers for the round's listing: every part read was still active
    /// after (so it was read whole); otherwise another round reads what replaced it.
    pub fn end(&mut self, round: Round, after: Option<&Listing>) -> bool {
        let still_active = |part: &&ListedPart| {
            after.is_some_and(|after| {
                after.generation == round.listing.generation && after.parts.contains(part)
            })
        };
        let (read, unconfirmed): (Vec<ListedPart>, Vec<ListedPart>) = round
            .to_read
            .into_iter()
            .partition(|part| still_active(&part));
        self.mark_read(&round.listing, &read, &unconfirmed);
        unconfirmed.is_empty()
    }

    /// Records that `read` of `listing`'s parts were read whole and `unconfirmed` read
    /// but maybe not whole, and that its other parts were covered already (`plan` said
    /// so) or are left to read.
    fn mark_read(&mut self, listing: &Listing, read: &[ListedPart], unconfirmed: &[ListedPart]) {
        let coverage = &mut self.coverage;
        // Covered parts stand for the ranges they cover (read at a data version at
        // least theirs: `plan` checked), which keeps the ranges as few as the parts.
        let mut ranges: Vec<(i64, i64, u64)> = listing
            .parts
            .iter()
            .filter(|part| coverage.covers(part.min_block, part.max_block))
            .chain(read)
            .map(ListedPart::range)
            .collect();
        ranges.sort_unstable();
        ranges.dedup();
        let read_whole = Coverage {
            ranges,
            ..Coverage::default()
        };
        // An unconfirmed range stays until parts read whole cover it: their rows hold
        // its winners (no mutation between, `plan` checked).
        let unconfirmed = coverage
            .unconfirmed
            .iter()
            .copied()
            .chain(unconfirmed.iter().map(ListedPart::range))
            .filter(|(lo, hi, _)| !read_whole.covers(*lo, *hi))
            .collect();
        *coverage = Coverage {
            generation: Some(listing.generation.clone()),
            unconfirmed,
            ..read_whole
        };
    }

    /// The statistics, `None` without a live session.
    pub fn stats(&mut self) -> Option<Stats> {
        if self.live == 0 {
            return None;
        }
        if self.extremes_stale {
            let live = self.winners.values().filter(|winner| winner.live);
            let (first, last) = live.fold((i64::MAX, i64::MIN), |(first, last), winner| {
                (first.min(winner.start_ts), last.max(winner.end_ts))
            });
            (self.first_seen, self.last_seen) = (first, last);
            self.extremes_stale = false;
        }
        Some((self.live, self.first_seen, self.last_seen))
    }
}

#[cfg(test)]
mod tests;
