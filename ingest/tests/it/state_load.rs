//! Loading durable session states from real ClickHouse (18.16 and a current engine):
//! the highest version wins, and every key in `session_keys` is added (because
//! a late write from a worker that lost the partition can tie with the new owner's
//! state and win the merge while naming fewer keys; a key it misses would never be
//! tombstoned and the session would stay listed under its old user); and a set too
//! large to sit in its state, rebuilt from its chunks after orphans, retries and two
//! owners writing the same version (`durable_state`, `exactly_once.rs` step 7). Two
//! projects' sessions of one id are stored, loaded and erased apart, and states stored
//! before sessions were identified by project are copied by the migration and load.

use std::time::Duration;

use serde::Serialize;
use sessions_events::event::{Event, EventKind};
use sessions_events::identity::SessionIdentity;
use sessions_events::session::SessionState;
use sessions_ingest::aggregator::{Aggregator, PersistedSession};
use sessions_ingest::durable_state;
use sessions_ingest::metrics::IngestMetrics;
use sessions_ingest::sink::{Sink, SinkError, APPLIED_TABLE, STATE_TABLE};
use sessions_shared::clickhouse::Row;
use sessions_shared::migrations::{render, MIGRATIONS};
use sessions_shared::read_model::SessionKey;
use sessions_testkit::clickhouse::{clickhouse_engines, Target, TestDatabase};
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
    project_id: u32,
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
        texts: Default::default(),
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

/// Session `session_id` of project 1.
fn id(session_id: u64) -> SessionIdentity {
    SessionIdentity::new(1, session_id)
}

fn row(persisted: &PersistedSession) -> StateRow {
    StateRow {
        project_id: persisted.state.project_id(),
        session_id: persisted.state.session_id,
        version: persisted.state.applied_events(),
        state: durable_state::encode(persisted, &persisted.applied_write()),
        updated_at: 1_700_000_000,
    }
}

/// A migrated database of the test's own on `target`, and a sink on it as the worker
/// builds one (30 s insert timeout, 1 MiB flush chunks).
async fn database_and_sink(target: &Target, engine: &str, label: &str) -> (TestDatabase, Sink) {
    let db = TestDatabase::create(target, label).await.expect(engine);
    let sink = Sink::new(
        db.store.clone(),
        IngestMetrics::new(),
        Duration::from_secs(30),
        1 << 20,
    );
    (db, sink)
}

#[tokio::test]
async fn the_latest_version_wins_and_every_recorded_key_is_added() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let (db, sink) = database_and_sink(&target, engine, "state_load").await;
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
        db.insert::<StateRow>(STATE_TABLE, &rows).await;

        let mut loaded = sink.load(&[id(1), id(2), id(3)]).await.unwrap();
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
            project_id: 1,
            session_id: 4,
            version: 9,
            state: "{not a state".into(),
            updated_at: 1_700_000_000,
        };
        db.insert::<StateRow>(STATE_TABLE, &[corrupt]).await;
        match sink.load(&[id(4)]).await {
            Err(SinkError::CorruptState { identity, .. }) if identity == id(4) => {}
            other => panic!("{engine}: expected a corrupt state, got {other:?}"),
        }
        db.drop_database().await;
    }
}

#[derive(Row, Serialize)]
struct ChunkRow {
    project_id: u32,
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
    let (items, events) = aggregator.flush_with_events();
    sink.write_flush(&items, events, &[]).await.unwrap();
    drop(items);
    aggregator.mark_flushed();
}

fn apply(aggregator: &mut Aggregator, session_id: u64, indexes: &[u64]) {
    let events: Vec<Event<'static>> = indexes.iter().map(|i| page(session_id, *i)).collect();
    aggregator.apply(&events, 0);
}

async fn load_one(sink: &Sink, session_id: u64) -> PersistedSession {
    let mut loaded = sink.load(&[id(session_id)]).await.unwrap();
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
        let (db, sink) = database_and_sink(&target, engine, "state_chain").await;
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
            project_id: 1,
            session_id: session,
            version: chunk.version,
            base_version: chunk.base_version,
            ranges: serde_json::to_string(chunk.ranges).unwrap(),
            written_at: 1_700_000_000,
        };
        db.insert::<ChunkRow>(APPLIED_TABLE, &[orphan]).await;
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
        let (items, events) = next_owner.flush_with_events();
        sink.write_flush(&items, events, &[]).await.unwrap();
        sink.write_flush(&items, events, &[]).await.unwrap();
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
            for table in [STATE_TABLE, APPLIED_TABLE] {
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
            project_id: 1,
            session_id: 8,
            version: lost.state.applied_events(),
            state: durable_state::encode(&lost, &write),
            updated_at: 1_700_000_000,
        };
        db.insert::<StateRow>(STATE_TABLE, &[lost_row]).await;
        match sink.load(&[id(8)]).await {
            Err(SinkError::CorruptState { identity, .. }) if identity == id(8) => {}
            other => panic!("{engine}: expected a corrupt state, got {other:?}"),
        }
        db.drop_database().await;
    }
}

/// Two projects' sessions of one id are two sessions: each flushed, loaded, marked
/// deleted and erased by its identity, never found for the other.
#[tokio::test]
async fn two_projects_sessions_of_one_id_are_stored_loaded_and_erased_apart() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let (db, sink) = database_and_sink(&target, engine, "state_projects").await;
        let (ours, theirs) = (SessionIdentity::new(1, 9), SessionIdentity::new(2, 9));
        let theirs_page = |index| Event {
            project_id: 2,
            ..page(9, index)
        };
        let mut aggregator = Aggregator::new();
        // Project 2's indexes are lower and more: nothing of it may reach project 1's.
        aggregator.apply(&[page(9, 5), page(9, 6)], 0);
        aggregator.apply(&[theirs_page(0), theirs_page(1), theirs_page(5)], 0);
        flush(&mut aggregator, &sink).await;
        let mut loaded = sink.load(&[ours, theirs]).await.unwrap();
        loaded.sort_by_key(|persisted| persisted.state.identity());
        let identities: Vec<(SessionIdentity, u64)> = loaded
            .iter()
            .map(|p| (p.state.identity(), p.state.applied_events()))
            .collect();
        assert_eq!(identities, [(ours, 2), (theirs, 3)], "{engine}");
        assert_eq!(loaded[0].state, aggregator.state(ours).unwrap().state);
        assert_eq!(loaded[1].state, aggregator.state(theirs).unwrap().state);
        assert_eq!(sink.load(&[ours]).await.unwrap().len(), 1, "{engine}");

        // Project 2's session is deleted: project 1's is not.
        db.store
            .client()
            .query("INSERT INTO deleted_sessions (session_id, project_id, deleted_at) VALUES (9, 2, now())")
            .execute()
            .await
            .unwrap();
        let deleted = sink.deleted_among(&[ours, theirs]).await.unwrap();
        assert_eq!(
            deleted.into_iter().collect::<Vec<_>>(),
            [theirs],
            "{engine}"
        );
        sink.erase(&[theirs]).await.unwrap();
        let left = sink.load(&[ours, theirs]).await.unwrap();
        assert_eq!(left.len(), 1, "{engine}");
        assert_eq!(left[0].state.identity(), ours, "{engine}");
        let rows = db.live_sessions().await;
        let projects: Vec<(u32, u64)> = rows.iter().map(|s| (s.project_id, s.session_id)).collect();
        assert_eq!(projects, [(1, 9)], "{engine}: project 1's row is kept");
        db.drop_database().await;
    }
}

#[derive(Row, Serialize)]
struct LegacyStateRow {
    session_id: u64,
    version: u64,
    state: String,
    updated_at: u32,
}

#[derive(Row, Serialize)]
struct LegacyChunkRow {
    session_id: u64,
    version: u64,
    base_version: u64,
    ranges: String,
    written_at: u32,
}

/// `persisted` stored as before sessions were identified by project: keyed by session
/// id alone, its JSON naming the project as `"project":[lowest index, projectId]`.
fn legacy_row(persisted: &PersistedSession, version: u64) -> LegacyStateRow {
    let json = durable_state::encode(persisted, &persisted.applied_write());
    let project_id = persisted.state.project_id();
    let field = format!("\"project_id\":{project_id}");
    assert!(json.contains(&field), "{json}");
    LegacyStateRow {
        session_id: persisted.state.session_id,
        version,
        // The state's own field comes first; its keys keep theirs.
        state: json.replacen(&field, &format!("\"project\":[0,{project_id}]"), 1),
        updated_at: 1_700_000_000,
    }
}

/// An upgrade: states and chunks stored in `session_state` and `session_applied` (keyed
/// by session id alone) before `007_project_sessions` are copied by it under the
/// project their state names, and load as they were; copying again (a migration run
/// twice) changes nothing. On every engine and on the cluster.
#[tokio::test]
async fn states_stored_before_project_identity_are_copied_by_the_migration() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let (db, sink) = database_and_sink(&target, engine, "state_upgrade").await;
        // An inline session of project 3, older versions of it, and a chained one of
        // project 4 (600 sparse indexes: a checkpoint and a delta).
        let inline = persisted(21, 5, &["", "ann"]);
        let inline = PersistedSession {
            state: {
                let mut state = SessionState::new(&Event {
                    project_id: 3,
                    ..page(21, 0)
                });
                for index in 1..5 {
                    state.apply(&Event {
                        project_id: 3,
                        ..page(21, index)
                    });
                }
                state
            },
            ..inline
        };
        let older = PersistedSession::new(SessionState::new(&Event {
            project_id: 3,
            ..page(21, 0)
        }));
        let sparse: Vec<u64> = (0..600).map(|k| k * 2).collect();
        let theirs = |index| Event {
            project_id: 4,
            ..page(22, index)
        };
        let mut chained_owner = Aggregator::new();
        chained_owner.apply(&sparse.iter().map(|i| theirs(*i)).collect::<Vec<_>>(), 0);
        let checkpoint = {
            let items = chained_owner.flush_batch();
            let chunk = items[0].applied.chunk.as_ref().expect("a checkpoint");
            LegacyChunkRow {
                session_id: 22,
                version: chunk.version,
                base_version: chunk.base_version,
                ranges: serde_json::to_string(chunk.ranges).unwrap(),
                written_at: 1_700_000_000,
            }
        };
        chained_owner.mark_flushed();
        chained_owner.apply(&[theirs(1_201), theirs(1_203)], 0);
        let items = chained_owner.flush_batch();
        let delta_chunk = items[0].applied.chunk.as_ref().expect("a delta");
        let delta = LegacyChunkRow {
            session_id: 22,
            version: delta_chunk.version,
            base_version: delta_chunk.base_version,
            ranges: serde_json::to_string(delta_chunk.ranges).unwrap(),
            written_at: 1_700_000_000,
        };
        let chained_json = durable_state::encode(items[0].persisted, &items[0].applied);
        let chained_state = items[0].persisted.state.clone();
        drop(items);
        let chained_row = LegacyStateRow {
            session_id: 22,
            version: chained_state.applied_events(),
            state: chained_json.replacen("\"project_id\":4", "\"project\":[0,4]", 1),
            updated_at: 1_700_000_000,
        };
        let marker = LegacyStateRow {
            session_id: 0,
            version: 0,
            state: String::new(),
            updated_at: 0,
        };
        db.insert::<LegacyStateRow>(
            "session_state",
            &[
                legacy_row(&older, 1),
                legacy_row(&inline, 5),
                chained_row,
                marker,
            ],
        )
        .await;
        db.insert::<LegacyChunkRow>("session_applied", &[checkpoint, delta])
            .await;

        let migration = MIGRATIONS
            .iter()
            .find(|migration| migration.name == "007_project_sessions")
            .unwrap();
        let copies: Vec<String> = render(migration.sql, db.store.database(), db.store.layout())
            .unwrap()
            .into_iter()
            .filter(|statement| statement.starts_with("INSERT INTO "))
            .collect();
        assert_eq!(copies.len(), 2, "{engine}");
        let wanted = [SessionIdentity::new(3, 21), SessionIdentity::new(4, 22)];
        for run in 0..2 {
            for copy in &copies {
                db.store.client().query(copy).execute().await.unwrap();
            }
            let mut loaded = sink
                .load(&[wanted[0], wanted[1], SessionIdentity::new(4, 21), id(22)])
                .await
                .unwrap();
            loaded.sort_by_key(|persisted| persisted.state.identity());
            assert_eq!(
                loaded.len(),
                2,
                "{engine} run {run}: the owners' sessions only"
            );
            assert_eq!(loaded[0].state, inline.state, "{engine} run {run}");
            assert_eq!(loaded[0].written_keys, inline.written_keys);
            assert_eq!(loaded[1].state, chained_state, "{engine} run {run}");
        }
        db.drop_database().await;
    }
}
