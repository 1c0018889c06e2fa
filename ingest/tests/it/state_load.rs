//! Loading durable session states from real ClickHouse (18.16 and a current engine):
//! the highest version wins, and every key in `session_keys` is added (because
//! a late write from a worker that lost the partition can tie with the new owner's
//! state and win the merge while naming fewer keys; a key it misses would never be
//! tombstoned and the session would stay listed under its old user); and a set too
//! large to sit in its state, rebuilt from its chunks after orphans, retries and two
//! owners writing the same version (`durable_state`, `exactly_once.rs` step 7).

use std::time::Duration;

use serde::Serialize;
use sessions_events::event::{Event, EventKind};
use sessions_events::session::SessionState;
use sessions_ingest::aggregator::{Aggregator, PersistedSession};
use sessions_ingest::durable_state;
use sessions_ingest::metrics::IngestMetrics;
use sessions_ingest::sink::{Sink, SinkError};
use sessions_shared::clickhouse::Row;
use sessions_shared::read_model::SessionKey;
use sessions_testkit::clickhouse::{clickhouse_engines, TestDatabase};
use sessions_testkit::serial;

#[derive(Row, Serialize)]
struct KeyRow {
    session_id: u64,
    project_id: u32,
    user_id: &'static str,
    start_ts: i64,
    written_at: u32,
}

#[derive(Row, Serialize)]
struct StateRow {
    session_id: u64,
    version: u64,
    state: String,
    updated_at: u32,
}

fn page(session_id: u64, index: u64) -> Event<'static> {
    Event {
        project_id: 1,
        session_id,
        index,
        timestamp: 1_000 + index as i64,
        kind: EventKind::Page,
        user_id: None,
        start: None,
    }
}

fn key(user: &str) -> SessionKey {
    SessionKey {
        project_id: 1,
        user_id: user.into(),
        start_ts: 1_000,
    }
}

fn persisted(session_id: u64, events: u64, keys: &[&str]) -> PersistedSession {
    let mut state = SessionState::new(&page(session_id, 0));
    for index in 1..events {
        state.apply(&page(session_id, index));
    }
    let mut persisted = PersistedSession::new(state);
    persisted.written_keys = keys.iter().map(|user| key(user)).collect();
    persisted
}

fn row(persisted: &PersistedSession) -> StateRow {
    StateRow {
        session_id: persisted.state.session_id,
        version: persisted.state.applied_events(),
        state: durable_state::encode(persisted, &persisted.applied_write()),
        updated_at: 1_700_000_000,
    }
}

#[tokio::test]
async fn the_latest_version_wins_and_every_recorded_key_is_added() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let db = TestDatabase::create(&target, "state_load")
            .await
            .expect(engine);
        // Session 1: the state that won names "" and "ann"; a tied state that lost the
        // merge named "late", which only session_keys still knows.
        let rows = [
            row(&persisted(1, 2, &["old-1"])),
            row(&persisted(1, 3, &["", "ann"])),
            row(&persisted(2, 1, &["x"])),
            row(&persisted(2, 1, &["x"])), // a retried write: identical
        ];
        let keys: Vec<KeyRow> = [(1, ""), (1, "late"), (1, "ann"), (1, "late"), (2, "x")]
            .into_iter()
            .map(|(session_id, user_id)| KeyRow {
                session_id,
                project_id: 1,
                user_id,
                start_ts: 1_000,
                written_at: 1_700_000_000,
            })
            .collect();
        db.insert::<KeyRow>("session_keys", &keys).await;
        db.insert::<StateRow>("session_state", &rows).await;

        let sink = Sink::new(
            db.store.clone(),
            IngestMetrics::new(),
            Duration::from_secs(30),
            1 << 20,
        );
        let mut loaded = sink.load(&[1, 2, 3]).await.unwrap();
        loaded.sort_by_key(|p| p.state.session_id);
        assert_eq!(loaded.len(), 2, "{engine}: one state per stored session");
        let users = |p: &PersistedSession| -> Vec<String> {
            let mut users: Vec<String> = p.written_keys.iter().map(|k| k.user_id.clone()).collect();
            users.sort();
            users
        };
        assert_eq!(loaded[0].state.applied_events(), 3, "{engine}");
        assert_eq!(users(&loaded[0]), ["", "ann", "late"], "{engine}");
        assert_eq!(users(&loaded[1]), ["x"], "{engine}");

        // A state that does not decode stops the worker instead of stalling it.
        let corrupt = StateRow {
            session_id: 4,
            version: 9,
            state: "{not a state".into(),
            updated_at: 1_700_000_000,
        };
        db.insert::<StateRow>("session_state", &[corrupt]).await;
        match sink.load(&[4]).await {
            Err(SinkError::CorruptState { session_id: 4, .. }) => {}
            other => panic!("{engine}: expected a corrupt state, got {other:?}"),
        }
        db.drop_database().await;
    }
}

#[derive(Row, Serialize)]
struct ChunkRow {
    session_id: u64,
    version: u64,
    base_version: u64,
    ranges: String,
    written_at: u32,
}

/// The state of applying `indexes` once each, whatever the flushes and owners did.
fn reference(session_id: u64, indexes: &[u64]) -> SessionState {
    let mut state = SessionState::new(&page(session_id, indexes[0]));
    for index in &indexes[1..] {
        state.apply(&page(session_id, *index));
    }
    state
}

async fn flush(aggregator: &mut Aggregator, sink: &Sink) {
    let items = aggregator.flush_batch();
    sink.write_flush(&items, &[]).await.unwrap();
    drop(items);
    aggregator.mark_flushed();
}

fn apply(aggregator: &mut Aggregator, session_id: u64, indexes: &[u64]) {
    let events: Vec<Event<'static>> = indexes.iter().map(|i| page(session_id, *i)).collect();
    aggregator.apply(&events, 0);
}

async fn load_one(sink: &Sink, session_id: u64) -> PersistedSession {
    let mut loaded = sink.load(&[session_id]).await.unwrap();
    assert_eq!(loaded.len(), 1);
    loaded.pop().unwrap()
}

/// A session too sparse to store inline (600 ranges): its set is stored as a checkpoint
/// and deltas. Reloaded after (a) a flush that wrote its chunk but not its state, (b) a
/// retried flush, (c) two owners writing the same version on different chains (a
/// takeover with late writes of the former owner), and after merges, it is always the
/// state of applying the same distinct events once.
#[tokio::test]
async fn chained_states_survive_orphans_retries_and_tied_owners() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let db = TestDatabase::create(&target, "state_chain")
            .await
            .expect(engine);
        let sink = Sink::new(
            db.store.clone(),
            IngestMetrics::new(),
            Duration::from_secs(30),
            1 << 20,
        );
        let session = 7;
        let mut applied: Vec<u64> = (0..600).map(|k| k * 2).collect();
        let mut owner = Aggregator::new();
        apply(&mut owner, session, &applied);
        flush(&mut owner, &sink).await; // a checkpoint at 600
        apply(&mut owner, session, &[1_200, 1_202, 1_204]);
        flush(&mut owner, &sink).await; // a delta 600 → 603
        applied.extend([1_200, 1_202, 1_204]);

        // (a) The next flush writes its chunk, then the worker dies before the state.
        apply(&mut owner, session, &[1_206, 1_208, 1_210]);
        let items = owner.flush_batch();
        let chunk = items[0].applied.chunk.as_ref().expect("a delta");
        assert_eq!((chunk.version, chunk.base_version), (606, 603), "{engine}");
        let orphan = ChunkRow {
            session_id: session,
            version: chunk.version,
            base_version: chunk.base_version,
            ranges: serde_json::to_string(chunk.ranges).unwrap(),
            written_at: 1_700_000_000,
        };
        db.insert::<ChunkRow>("session_applied", &[orphan]).await;
        drop(items);
        drop(owner);
        let loaded = load_one(&sink, session).await;
        assert_eq!(loaded.state, reference(session, &applied), "{engine}: (a)");

        // The next owner replays the lost events and more.
        let mut next_owner = Aggregator::new();
        next_owner.insert_loaded(loaded, None);
        apply(&mut next_owner, session, &[1_206, 1_208, 1_210, 1_212]);
        flush(&mut next_owner, &sink).await;
        applied.extend([1_206, 1_208, 1_210, 1_212]);
        let loaded = load_one(&sink, session).await;
        assert_eq!(
            loaded.state,
            reference(session, &applied),
            "{engine}: replay"
        );

        // (b) A flush written twice (the first answer was lost), then more.
        apply(&mut next_owner, session, &[1_214]);
        let items = next_owner.flush_batch();
        sink.write_flush(&items, &[]).await.unwrap();
        sink.write_flush(&items, &[]).await.unwrap();
        drop(items);
        next_owner.mark_flushed();
        applied.push(1_214);
        let loaded = load_one(&sink, session).await;
        assert_eq!(loaded.state, reference(session, &applied), "{engine}: (b)");

        // (c) A takeover: the new owner loads; the former one keeps writing late. Both
        // reach version 611 on different chains (608 → 611, and 608 → 609 → 611).
        let mut taker = Aggregator::new();
        taker.insert_loaded(loaded, None);
        apply(&mut taker, session, &[1_216, 1_218, 1_220]);
        flush(&mut taker, &sink).await;
        apply(&mut next_owner, session, &[1_216]);
        flush(&mut next_owner, &sink).await;
        apply(&mut next_owner, session, &[1_218, 1_220]);
        flush(&mut next_owner, &sink).await;
        applied.extend([1_216, 1_218, 1_220]);
        for _ in 0..3 {
            let loaded = load_one(&sink, session).await;
            assert_eq!(loaded.state, reference(session, &applied), "{engine}: (c)");
        }
        if !target.is_cluster() {
            for table in ["session_state", "session_applied"] {
                let sql = format!("OPTIMIZE TABLE {table} FINAL");
                db.store.client().query(&sql).execute().await.unwrap();
            }
            let loaded = load_one(&sink, session).await;
            assert_eq!(
                loaded.state,
                reference(session, &applied),
                "{engine}: merged"
            );
        }

        // A chained state whose chain is missing stops the worker.
        let mut lost = PersistedSession::new(reference(8, &applied));
        lost.written_keys = vec![key("")];
        let write = lost.applied_write();
        let lost_row = StateRow {
            session_id: 8,
            version: lost.state.applied_events(),
            state: durable_state::encode(&lost, &write),
            updated_at: 1_700_000_000,
        };
        db.insert::<StateRow>("session_state", &[lost_row]).await;
        match sink.load(&[8]).await {
            Err(SinkError::CorruptState { session_id: 8, .. }) => {}
            other => panic!("{engine}: expected a corrupt state, got {other:?}"),
        }
        db.drop_database().await;
    }
}
