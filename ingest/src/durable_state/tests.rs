//! The layout against a simulated store: flushes, crashes between the chunk and the
//! state, retries, takeovers with late writes of the former owner, evictions and
//! reloads. Every load must give the state of the log's distinct events it claims.

use std::borrow::Cow;

use proptest::prelude::*;
use sessions_events::event::{Event, EventKind};

use super::*;

fn event(index: u64) -> Event<'static> {
    let kind = match index % 7 {
        0 => EventKind::Error,
        1 => EventKind::Click,
        _ => EventKind::Page,
    };
    Event {
        project_id: 1,
        session_id: 9,
        index,
        timestamp: 1_000 + (index as i64 * 7919) % 5_000,
        kind,
        user_id: (index % 97 == 3).then(|| Cow::Owned(format!("user-{}", index % 5))),
        start: None,
        texts: Default::default(),
    }
}

/// What ClickHouse holds: state rows and chunk rows, appended (a merge keeps one of
/// equal keys, which changes nothing a load can see: they are equal or both valid).
#[derive(Default)]
struct Store {
    states: Vec<(u64, String)>,
    chunks: Vec<StoredChunk>,
}

impl Store {
    fn write_chunk(&mut self, write: &AppliedWrite<'_>) {
        if let Some(chunk) = &write.chunk {
            self.chunks.push(StoredChunk {
                version: chunk.version,
                base_version: chunk.base_version,
                ranges: serde_json::to_string(chunk.ranges).unwrap(),
            });
        }
    }

    /// A flush; `crash_before_state`: the chunk is written, the state never is.
    fn flush(&mut self, persisted: &mut PersistedSession, crash_before_state: bool) {
        let write = persisted.applied_write();
        self.write_chunk(&write);
        if crash_before_state {
            return;
        }
        let json = encode(persisted, &write);
        self.states.push((persisted.state.applied_events(), json));
        persisted.record_flush_durable();
    }

    /// A load: the highest version wins, any of the tied ones (`tie_pick`).
    fn load(&self, tie_pick: usize) -> Option<PersistedSession> {
        let top = self.states.iter().map(|(version, _)| *version).max()?;
        let tied: Vec<&String> = self
            .states
            .iter()
            .filter(|(version, _)| *version == top)
            .map(|(_, json)| json)
            .collect();
        let decoded = decode(tied[tie_pick % tied.len()]).unwrap();
        let mut persisted = decoded.persisted;
        match decoded.checkpoint_version {
            None => assert_eq!(persisted.state.applied_events(), top),
            Some(checkpoint_version) => {
                let (applied, durable) = rebuild(top, checkpoint_version, &self.chunks)
                    .unwrap_or_else(|error| panic!("{error}"));
                persisted.state.restore_applied(applied);
                persisted.chained = Some(Box::new(Chained {
                    durable,
                    unflushed: IndexSet::new(),
                }));
            }
        }
        Some(persisted)
    }
}

/// The state of the log's first distinct events up to `count` of them.
fn reference(log: &[Event<'static>], count: u64) -> SessionState {
    let mut state = SessionState::new(&log[0]);
    for event in &log[1..] {
        if state.applied_events() == count {
            break;
        }
        state.apply(event);
    }
    assert_eq!(state.applied_events(), count);
    state
}

struct Owner {
    persisted: Option<PersistedSession>,
    /// Next log offset to read.
    position: usize,
    /// Offset after the last message of its last durable flush.
    flushed_position: usize,
}

impl Owner {
    fn read(&mut self, log: &[Event<'static>], count: usize) {
        let end = (self.position + count).min(log.len());
        for event in &log[self.position..end] {
            match &mut self.persisted {
                Some(persisted) => {
                    persisted.apply(event);
                }
                None => self.persisted = Some(PersistedSession::new(SessionState::new(event))),
            }
        }
        self.position = end;
    }
}

/// A sparse log (mostly even indexes, so hundreds of ranges), with duplicates, and a
/// late run of odd indexes that closes gaps (the set can shrink back to inline).
fn sparse_log() -> impl Strategy<Value = Vec<Event<'static>>> {
    (
        Just((0..700u64).map(|k| k * 2).collect::<Vec<_>>()).prop_shuffle(),
        proptest::collection::vec(0u64..1_400, 0..120),
        proptest::collection::vec(0u64..700, 0..700),
    )
        .prop_map(|(evens, duplicates, odds)| {
            let mut indexes = evens;
            for (position, duplicate) in duplicates.into_iter().enumerate() {
                let at = (position * 13) % indexes.len();
                indexes.insert(at, duplicate & !1);
            }
            indexes.extend(odds.into_iter().map(|k| k * 2 + 1));
            indexes.into_iter().map(event).collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_load_rebuilds_the_state_it_claims(
        log in sparse_log(),
        operations in proptest::collection::vec((0u8..7, 1usize..200), 1..40),
    ) {
        let mut store = Store::default();
        let mut committed = 0;
        let mut owner = Owner { persisted: None, position: 0, flushed_position: 0 };
        let mut former: Vec<Owner> = Vec::new();
        let take_over = |store: &Store, committed: usize, pick: usize| -> Owner {
            let persisted = store.load(pick);
            if let Some(loaded) = &persisted {
                let expected = reference(&log, loaded.state.applied_events());
                assert_eq!(&loaded.state, &expected, "a load differs from its version's state");
            }
            Owner { persisted, position: committed, flushed_position: committed }
        };
        for (operation, amount) in operations {
            match operation {
                0 | 1 => owner.read(&log, amount),
                2 => {
                    // A flush, durable; its offsets are committed.
                    if let Some(persisted) = &mut owner.persisted {
                        store.flush(persisted, false);
                        owner.flushed_position = owner.position;
                        committed = owner.position;
                    }
                }
                3 => {
                    // A crash after the chunks, before the state: the next owner replays.
                    if let Some(persisted) = &mut owner.persisted {
                        store.flush(persisted, true);
                    }
                    owner = take_over(&store, committed, amount);
                }
                4 => {
                    // A failed flush retried (the first try wrote its chunk only).
                    if let Some(persisted) = &mut owner.persisted {
                        store.flush(persisted, true);
                        store.flush(persisted, false);
                        owner.flushed_position = owner.position;
                        committed = owner.position;
                    }
                }
                5 => {
                    // A rebalance: the former owner keeps what it read and may write late.
                    let next = take_over(&store, committed, amount);
                    former.push(std::mem::replace(&mut owner, next));
                }
                _ => {
                    if let Some(mut late) = former.pop() {
                        // A late flush of a former owner, after reading a bit further.
                        late.read(&log, amount % 5);
                        if let Some(persisted) = &mut late.persisted {
                            store.flush(persisted, amount % 3 == 0);
                        }
                    } else if owner.flushed_position == owner.position {
                        // Nothing unflushed: evicted, and reloaded by the same owner.
                        let reloaded = take_over(&store, committed, amount);
                        owner.persisted = reloaded.persisted;
                    }
                }
            }
        }
        // The owner reads everything and flushes; a load then holds every event once.
        owner.read(&log, log.len());
        if let Some(persisted) = &mut owner.persisted {
            store.flush(persisted, false);
        }
        let distinct_count = log
            .iter()
            .map(|event| event.index)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let distinct = reference(&log, distinct_count as u64);
        for pick in 0..3 {
            let loaded = store.load(pick).unwrap();
            prop_assert_eq!(&loaded.state, &distinct);
        }
    }
}

fn chained_session(indexes: impl Iterator<Item = u64>) -> PersistedSession {
    let mut indexes = indexes.map(event);
    let mut persisted = PersistedSession::new(SessionState::new(&indexes.next().unwrap()));
    for event in indexes {
        persisted.apply(&event);
    }
    persisted
}

#[test]
fn small_sets_stay_inline_as_before() {
    let persisted = chained_session(0..50);
    let write = persisted.applied_write();
    assert_eq!(write.chunk, None);
    assert_eq!(write.checkpoint_version, None);
    let json = encode(&persisted, &write);
    assert!(json.contains("\"applied\":[[0,49]]"), "{json}");
    assert!(!json.contains("applied_checkpoint"), "{json}");
    let decoded = decode(&json).unwrap();
    assert_eq!(decoded.checkpoint_version, None);
    assert_eq!(decoded.persisted, persisted);
}

#[test]
fn states_stored_before_chunks_still_load() {
    // The JSON main's workers wrote (a state, its keys, its tombstoned keys).
    let json = r#"{"state":{"session_id":9,"applied":[[0,3],7],"project":[0,1],"min_timestamp":5,"max_timestamp":9,"start":null,"user_id":[7,"ann"],"events_count":4,"pages_count":2,"errors_count":1,"ended":false},"written_keys":[{"project_id":1,"user_id":"","start_ts":5},{"project_id":1,"user_id":"ann","start_ts":5}],"tombstoned_keys":[{"project_id":1,"user_id":"","start_ts":5}]}"#;
    let decoded = decode(json).unwrap();
    assert_eq!(decoded.checkpoint_version, None);
    assert_eq!(decoded.persisted.state.applied_events(), 5);
    assert_eq!(decoded.persisted.state.user_id(), "ann");
    assert_eq!(decoded.persisted.written_keys.len(), 2);
    assert_eq!(decoded.persisted.tombstoned_keys.len(), 1);
}

/// A chained state names its checkpoint and holds no ranges; read by a worker that
/// predates chunks it fails to decode (it would otherwise take it for an empty set).
#[test]
fn a_chained_state_holds_no_ranges() {
    let mut persisted = chained_session((0..1_000).map(|k| k * 2));
    let write = persisted.applied_write();
    let chunk = write.chunk.as_ref().unwrap();
    assert_eq!((chunk.version, chunk.base_version), (1_000, 0));
    let json = encode(&persisted, &write);
    assert!(json.len() < 400, "{} bytes: {json}", json.len());
    assert!(!json.contains("\"applied\""));
    assert!(json.contains("\"applied_checkpoint\":1000"));
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct OldStored {
        state: OldState,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct OldState {
        applied: Vec<serde_json::Value>,
    }
    assert!(serde_json::from_str::<OldStored>(&json).is_err());
    persisted.record_flush_durable();
    assert_eq!(persisted.chained.as_ref().unwrap().durable.version, 1_000);
}

/// Writes stay proportional to the events, counted: a session of a million sparse indexes that gets three
/// new events per flush writes a delta of three indexes, until the deltas since the
/// checkpoint outweigh it; over many flushes, the ranges written stay within a small
/// factor of the ranges the events brought.
#[test]
fn a_flush_writes_what_changed_and_checkpoints_when_deltas_outweigh() {
    let mut persisted = chained_session((0..100_000).map(|k| k * 4));
    let write = persisted.applied_write();
    assert_eq!(write.chunk.as_ref().unwrap().ranges.range_count(), 100_000);
    persisted.record_flush_durable();
    let mut written_ranges = 0;
    let mut checkpoints = 0;
    let mut next = 1;
    for _flush in 0..30_000 {
        for _ in 0..3 {
            persisted.apply(&event(next * 4 + 1));
            next += 1;
        }
        let write = persisted.applied_write();
        let chunk = write.chunk.as_ref().unwrap();
        written_ranges += chunk.ranges.range_count() as u64;
        if chunk.base_version == 0 {
            checkpoints += 1;
        } else {
            assert_eq!(chunk.ranges.len(), 3, "a delta holds the new indexes only");
            assert!(encode(&persisted, &write).len() < 500);
        }
        persisted.record_flush_durable();
    }
    // 90,000 new single-index ranges; the checkpoints (~100k ranges each) come about
    // every 100,000 / 7 flushes, so about two were written.
    assert_eq!(checkpoints, 2, "written {written_ranges}");
    assert!(
        written_ranges < 4 * 90_000 + 200_000 * 2,
        "{written_ranges}"
    );
}

fn chunk(version: u64, base_version: u64, ranges: &str) -> StoredChunk {
    StoredChunk {
        version,
        base_version,
        ranges: ranges.into(),
    }
}

#[test]
fn rebuild_follows_any_chain_and_checks_the_count() {
    let chunks = [
        chunk(3, 0, "[0,2,4]"),
        chunk(5, 3, "[6,8]"),
        chunk(5, 3, "[6,8]"),       // a retried write
        chunk(6, 4, "[10]"),        // an orphan on a base that was never written
        chunk(7, 5, "[10,12]"),     // one owner's delta
        chunk(7, 3, "[6,8,10,12]"), // a tied owner's delta from another base
        chunk(9, 7, "[14,16]"),
    ];
    let (applied, durable) = rebuild(9, 3, &chunks).unwrap();
    assert_eq!(applied.len(), 9);
    assert_eq!(durable.checkpoint_version, 3);
    assert_eq!(durable.version, 9);
    // Only the chunks between the checkpoint and the version count.
    assert_eq!(rebuild(7, 3, &chunks).unwrap().0.len(), 7);
    assert_eq!(
        rebuild(9, 4, &chunks),
        Err(ChainError::Missing {
            checkpoint_version: 4,
            version: 9
        })
    );
    assert_eq!(
        rebuild(6, 3, &chunks),
        Err(ChainError::Missing {
            checkpoint_version: 3,
            version: 6
        })
    );
    let short = [chunk(3, 0, "[0,2,4]"), chunk(5, 3, "[6]")];
    assert_eq!(
        rebuild(5, 3, &short),
        Err(ChainError::CountMismatch {
            version: 5,
            found: 4
        })
    );
    let bad = [chunk(3, 0, "[0,2,")];
    assert!(matches!(
        rebuild(3, 3, &bad),
        Err(ChainError::BadChunk { version: 3, .. })
    ));
}
