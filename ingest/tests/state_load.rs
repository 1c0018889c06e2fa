//! Loading durable session states from real ClickHouse (18.16 and a current engine):
//! the highest version wins, and every key in `session_keys` is added (issue 9, item 8:
//! a late write from a worker that lost the partition can tie with the new owner's
//! state and win the merge while naming fewer keys; a key it misses would never be
//! tombstoned and the session would stay listed under its old user).

use std::time::Duration;

use serde::Serialize;
use sessions_ingest::aggregator::PersistedSession;
use sessions_ingest::metrics::IngestMetrics;
use sessions_ingest::sink::{Sink, SinkError};
use sessions_shared::clickhouse::Row;
use sessions_shared::event::{Event, EventKind};
use sessions_shared::read_model::SessionKey;
use sessions_shared::session::SessionState;
use sessions_testkit::clickhouse::{clickhouse_engines, TestDatabase};

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
        state: serde_json::to_string(persisted).unwrap(),
        updated_at: 1_700_000_000,
    }
}

#[tokio::test]
async fn the_latest_version_wins_and_every_recorded_key_is_added() {
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
