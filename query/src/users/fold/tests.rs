//! The fold against the statistics' definition, on a model of a ReplacingMergeTree
//! table that inserts, merges, mutates, empties and is rebuilt while rounds run.

use proptest::prelude::*;

use super::*;

/// The definition: per session the highest-version row, live winners only.
fn definition<'a>(rows: impl IntoIterator<Item = &'a FoldRow>) -> Option<Stats> {
    let mut winners: HashMap<u64, FoldRow> = HashMap::new();
    for row in rows {
        let winner = winners.entry(row.session_id).or_insert(*row);
        if row.version > winner.version {
            *winner = *row;
        }
    }
    let live: Vec<_> = winners.values().filter(|row| row.deleted == 0).collect();
    let first = live.iter().map(|row| row.start_ts).min()?;
    let last = live
        .iter()
        .map(|row| row.start_ts.wrapping_add(row.duration as i64))
        .max()?;
    Some((live.len() as u64, first, last))
}

/// A part of the model table.
#[derive(Clone, Debug)]
struct Part {
    min: i64,
    max: i64,
    level: u32,
    mutation: u64,
    rows: Vec<FoldRow>,
}

impl Part {
    fn listed(&self) -> ListedPart {
        let mut name = format!("all_{}_{}_{}", self.min, self.max, self.level);
        if self.mutation > 0 {
            name += &format!("_{}", self.mutation);
        }
        ListedPart {
            name,
            min_block: self.min,
            max_block: self.max,
            data_version: if self.mutation > 0 {
                self.mutation
            } else {
                self.min as u64
            },
        }
    }
}

/// A ReplacingMergeTree(version) ordered by (start_ts, session_id), one user's rows.
#[derive(Clone, Debug, Default)]
struct Table {
    generation: u32,
    next_block: i64,
    parts: Vec<Part>,
}

impl Table {
    fn insert(&mut self, rows: Vec<FoldRow>) {
        self.next_block += 1;
        let block = self.next_block;
        self.parts.push(Part {
            min: block,
            max: block,
            level: 0,
            mutation: 0,
            rows,
        });
    }

    /// Merges the part at `at` (modulo) with the next one by block order.
    fn merge(&mut self, at: usize) {
        if self.parts.len() < 2 {
            return;
        }
        self.parts.sort_by_key(|part| part.min);
        let at = at % (self.parts.len() - 1);
        let right = self.parts.remove(at + 1);
        let left = &mut self.parts[at];
        let mut by_key: HashMap<(i64, u64), FoldRow> = HashMap::new();
        for row in left.rows.iter().chain(&right.rows) {
            let kept = by_key.entry((row.start_ts, row.session_id)).or_insert(*row);
            if row.version > kept.version {
                *kept = *row;
            }
        }
        left.max = right.max;
        left.level = left.level.max(right.level) + 1;
        left.mutation = left.mutation.max(right.mutation);
        left.rows = by_key.into_values().collect();
    }

    /// `ALTER TABLE … DELETE WHERE session_id % 3 = residue`: every part is rewritten
    /// at the mutation's number; `drop_empty` removes parts left empty (current servers).
    fn mutate(&mut self, residue: u64, drop_empty: bool) {
        self.next_block += 1;
        let mutation = self.next_block as u64;
        for part in &mut self.parts {
            part.rows.retain(|row| row.session_id % 3 != residue);
            part.mutation = mutation;
        }
        if drop_empty {
            self.parts.retain(|part| !part.rows.is_empty());
        }
    }

    /// A new table under the same name, with the same rows in one part.
    fn rebuild(&mut self) {
        let rows: Vec<FoldRow> = self.rows().copied().collect();
        *self = Table {
            generation: self.generation + 1,
            ..Table::default()
        };
        self.insert(rows);
    }

    fn rows(&self) -> impl Iterator<Item = &FoldRow> {
        self.parts.iter().flat_map(|part| &part.rows)
    }

    fn listing(&self) -> Listing {
        Listing {
            generation: self.generation.to_string(),
            parts: self.parts.iter().map(Part::listed).collect(),
        }
    }

    fn read(&self, listed: &[ListedPart]) -> Vec<FoldRow> {
        self.parts
            .iter()
            .filter(|part| listed.contains(&part.listed()))
            .flat_map(|part| part.rows.clone())
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(Vec<FoldRow>),
    Merge(usize),
    Mutate(u64, bool),
    Rebuild,
    /// A round of the fold, with a change of the table between its listing and its
    /// reads, and one between its reads and the listing after them.
    Round(Option<Change>, Option<Change>),
}

/// What may happen to the table while a round runs.
#[derive(Clone, Debug)]
enum Change {
    Merge(usize),
    Mutate(u64, bool),
    Rebuild,
}

impl Change {
    fn apply(self, table: &mut Table) {
        match self {
            Change::Merge(at) => table.merge(at),
            Change::Mutate(residue, drop_empty) => table.mutate(residue, drop_empty),
            Change::Rebuild => table.rebuild(),
        }
    }
}

fn row() -> impl Strategy<Value = FoldRow> {
    (0u64..12, any::<bool>(), -5i64..5, 0u64..4).prop_map(|(session_id, deleted, start, d)| {
        FoldRow {
            session_id,
            version: 0, // numbered in order of writing below
            deleted: u8::from(deleted && session_id % 2 == 0),
            start_ts: start * 1_000,
            duration: d * 700,
        }
    })
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => any::<usize>().prop_map(Change::Merge),
        1 => (0u64..3, any::<bool>()).prop_map(|(residue, drop)| Change::Mutate(residue, drop)),
        1 => Just(Change::Rebuild),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(row(), 1..6).prop_map(Op::Insert),
        3 => any::<usize>().prop_map(Op::Merge),
        1 => (0u64..3, any::<bool>()).prop_map(|(residue, drop)| Op::Mutate(residue, drop)),
        1 => Just(Op::Rebuild),
        4 => (prop::option::of(change()), prop::option::of(change()))
            .prop_map(|(before, after)| Op::Round(before, after)),
    ]
}

/// When a round's table changes: between its listing and its reads, or between its
/// reads and the listing after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moment {
    BeforeReads,
    AfterReads,
}

/// Rounds until the fold answers, as `warm` runs them; `meanwhile` may change
/// the table at either moment of each round.
fn answer(
    fold: &mut StatsFold,
    table: &mut Table,
    mut meanwhile: impl FnMut(&mut Table, Moment),
) -> Option<Stats> {
    for _ in 0..8 {
        let round = fold.begin(table.listing());
        if round.to_read.is_empty() {
            assert!(fold.end(round, None));
            return fold.stats();
        }
        meanwhile(table, Moment::BeforeReads);
        for row in table.read(&round.to_read) {
            fold.fold(&row);
        }
        meanwhile(table, Moment::AfterReads);
        let after = table.listing();
        if fold.end(round, Some(&after)) {
            return fold.stats();
        }
    }
    panic!("no round answered");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The fold of a table that changes in every way a MergeTree does answers as the
    /// definition over the table's rows, after every round.
    #[test]
    fn the_fold_answers_as_the_definition_whatever_the_table_did(ops in prop::collection::vec(op(), 1..40)) {
        let mut table = Table::default();
        let mut fold = StatsFold::default();
        let mut version = 0;
        for op in ops {
            match op {
                Op::Insert(mut rows) => {
                    for row in &mut rows {
                        version += 2;
                        // Live rows odd, tombstones even, as the worker writes them.
                        row.version = version + u64::from(row.deleted == 0);
                    }
                    table.insert(rows);
                }
                Op::Merge(at) => table.merge(at),
                Op::Mutate(residue, drop_empty) => table.mutate(residue, drop_empty),
                Op::Rebuild => table.rebuild(),
                Op::Round(before, after) => {
                    let (mut before, mut after) = (before, after);
                    let mut expected = None;
                    let answered = answer(&mut fold, &mut table, |table, moment| {
                        let change = match moment {
                            Moment::BeforeReads => before.take(),
                            Moment::AfterReads => after.take(),
                        };
                        if let Some(change) = change {
                            expected.get_or_insert_with(|| definition(table.rows()));
                            change.apply(table);
                        }
                    });
                    // The answer is as of a listing of the round: the table before the
                    // first change or after the last (a merge and a rebuild change no
                    // answer; a mutation does).
                    let now = definition(table.rows());
                    prop_assert!(
                        answered == now || Some(answered) == expected,
                        "{:?} is neither {:?} nor {:?}", answered, now, expected
                    );
                }
            }
        }
        prop_assert_eq!(answer(&mut fold, &mut table, |_, _| {}), definition(table.rows()));
    }

    /// Order and repetition of rows do not change the fold.
    #[test]
    fn order_and_duplicates_do_not_change_the_fold(
        rows in prop::collection::vec(row(), 0..60),
        seed in any::<u64>(),
    ) {
        let rows: Vec<FoldRow> = rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| FoldRow { version: 2 * i as u64 + u64::from(row.deleted == 0), ..row })
            .collect();
        let mut shuffled: Vec<FoldRow> = rows.iter().chain(&rows).copied().collect();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut fold = StatsFold::default();
        for row in &shuffled {
            fold.fold(row);
        }
        prop_assert_eq!(fold.stats(), definition(&rows));
    }
}

#[test]
fn a_merge_is_not_read_again_and_a_mutation_starts_over() {
    let mut table = Table::default();
    let live = |session_id, version, start_ts| FoldRow {
        session_id,
        version,
        deleted: 0,
        start_ts,
        duration: 10,
    };
    table.insert(vec![live(1, 1, 100), live(2, 1, 50)]);
    table.insert(vec![live(3, 1, 70)]);
    let mut fold = StatsFold::default();
    assert_eq!(answer(&mut fold, &mut table, |_, _| {}), Some((3, 50, 110)));
    table.merge(0);
    assert_eq!(fold.plan(&table.listing()), Plan::Read(vec![]), "covered");
    table.insert(vec![live(2, 3, 200)]); // session 2 moved its start
    let Plan::Read(parts) = fold.plan(&table.listing()) else {
        panic!("an insert is read");
    };
    assert_eq!(parts, vec![table.parts[1].listed()]);
    assert_eq!(answer(&mut fold, &mut table, |_, _| {}), Some((3, 70, 210)));
    table.mutate(0, false); // deletes session 3
    assert_eq!(fold.plan(&table.listing()), Plan::StartOver);
    assert_eq!(
        answer(&mut fold, &mut table, |_, _| {}),
        Some((2, 100, 210))
    );
    assert_eq!(fold.sessions(), 2);
    // A part gone with no successor over its blocks: rows are gone.
    table.parts.remove(0);
    assert_eq!(fold.plan(&table.listing()), Plan::StartOver);
    table.rebuild();
    assert_eq!(
        answer(&mut fold, &mut table, |_, _| {}),
        Some((1, 200, 210))
    );
}

#[test]
fn a_part_merged_away_before_it_was_read_is_read_in_its_successor() {
    let mut table = Table::default();
    let row = |session_id, version, deleted| FoldRow {
        session_id,
        version,
        deleted,
        start_ts: 5,
        duration: 1,
    };
    table.insert(vec![row(1, 1, 0)]);
    let mut fold = StatsFold::default();
    assert_eq!(answer(&mut fold, &mut table, |_, _| {}), Some((1, 5, 6)));
    table.insert(vec![row(1, 2, 1)]); // the tombstone of session 1
    let round = fold.begin(table.listing());
    table.merge(0); // before the read: the listed part is gone
    for row in table.read(&round.to_read) {
        fold.fold(&row);
    }
    assert_eq!(fold.stats(), Some((1, 5, 6)), "read nothing");
    assert!(!fold.end(round, Some(&table.listing())));
    assert_eq!(answer(&mut fold, &mut table, |_, _| {}), None);
}
