//! A flush writes what changed, not the whole history, counted in bytes.
//! A session of a million sparse indexes (a million ranges: 7.4 MB of JSON, which a flush of
//! the whole set would rewrite) receiving three new events per flush writes a few hundred
//! bytes per flush, and a reload gives exactly the same state. Against real ClickHouse
//! (18.16, a current engine, the cluster when there is one).

use std::time::Duration;

use sessions_events::event::{Event, EventKind};
use sessions_events::identity::SessionIdentity;
use sessions_ingest::aggregator::Aggregator;
use sessions_ingest::metrics::IngestMetrics;
use sessions_ingest::sink::{Sink, APPLIED_TABLE, STATE_TABLE};
use sessions_testkit::clickhouse::{clickhouse_engines, TestDatabase};
use sessions_testkit::serial;

const SESSION: u64 = 4_813_018_042_986_240;
const SPARSE_INDEXES: u64 = 1_000_000;

fn page(index: u64) -> Event<'static> {
    Event {
        project_id: 1,
        session_id: SESSION,
        index,
        timestamp: 1_700_000_000_000 + index as i64,
        kind: EventKind::Page,
        user_id: None,
        start: None,
        texts: Default::default(),
    }
}

/// Bytes of durable state (state JSON and applied chunks) written so far, and rows.
fn written(metrics: &IngestMetrics) -> (u64, u64, u64) {
    let bytes = |table: &str| {
        metrics
            .state_bytes_written
            .with_label_values(&[table])
            .get()
    };
    let rows = |table: &str| metrics.rows_written.with_label_values(&[table]).get();
    (
        bytes(STATE_TABLE) + bytes(APPLIED_TABLE),
        rows(STATE_TABLE),
        rows(APPLIED_TABLE),
    )
}

async fn flush(aggregator: &mut Aggregator, sink: &Sink) {
    let (items, events) = aggregator.flush_with_events();
    sink.write_flush(&items, events, &[]).await.unwrap();
    drop(items);
    aggregator.mark_flushed();
}

#[tokio::test]
async fn a_flush_of_a_million_index_session_writes_what_changed() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let db = TestDatabase::create(&target, "state_deltas")
            .await
            .expect(engine);
        let metrics = IngestMetrics::new();
        let sink = Sink::new(
            db.store.clone(),
            metrics.clone(),
            Duration::from_secs(60),
            1 << 20,
        );
        // Indexes 1,999,998, 1,999,996, …, 0 (as the hostile-input test sends them).
        let mut aggregator = Aggregator::new();
        let descending: Vec<u64> = (0..SPARSE_INDEXES).rev().map(|k| 2 * k).collect();
        for batch in descending.chunks(10_000) {
            let events: Vec<Event<'static>> = batch.iter().map(|i| page(*i)).collect();
            aggregator.apply(&events, 0);
        }
        let whole_state = serde_json::to_string(
            &aggregator
                .state(SessionIdentity::new(1, SESSION))
                .unwrap()
                .state,
        )
        .unwrap()
        .len();
        flush(&mut aggregator, &sink).await;
        let (checkpoint_bytes, _, _) = written(&metrics);
        assert!(
            checkpoint_bytes >= whole_state as u64 - 1_000,
            "{engine}: the first flush writes the whole set, as a checkpoint"
        );

        let mut per_flush = Vec::new();
        for flush_number in 0..5u64 {
            let before = written(&metrics);
            let events: Vec<Event<'static>> = (0..3)
                .map(|k| page(2 * (flush_number * 100_000 + k * 7) + 1))
                .collect();
            aggregator.apply(&events, 0);
            flush(&mut aggregator, &sink).await;
            let after = written(&metrics);
            assert_eq!(after.1 - before.1, 1, "{engine}: one state row");
            assert_eq!(after.2 - before.2, 1, "{engine}: one chunk row, a delta");
            per_flush.push(after.0 - before.0);
        }
        println!(
            "{engine}: whole state {whole_state} bytes (what a flush wrote before), \
             checkpoint flush {checkpoint_bytes} bytes, then per flush of 3 events {per_flush:?}"
        );
        for bytes in &per_flush {
            assert!(
                *bytes < 1_024,
                "{engine}: {bytes} bytes for a flush of 3 events"
            );
        }

        let mut loaded = sink
            .load(&[SessionIdentity::new(1, SESSION)])
            .await
            .unwrap();
        assert_eq!(loaded.len(), 1);
        let reloaded = loaded.pop().unwrap();
        let held = aggregator.state(SessionIdentity::new(1, SESSION)).unwrap();
        assert_eq!(reloaded.state.applied_events(), SPARSE_INDEXES + 15);
        assert!(reloaded.state == held.state, "{engine}: the reload differs");
        db.drop_database().await;
    }
}
