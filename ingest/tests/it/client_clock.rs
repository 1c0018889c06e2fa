//! One client's clock cannot disturb other sessions: among normal
//! traffic, one event ten years ahead and one from 1971; after housekeeping has run
//! (every 5 s), no session was evicted, and every row is exact, the two odd sessions'
//! included.

use std::time::Duration;

use crate::common::{wait_for_sessions, Fixture};
use sessions_shared::read_model::Session;
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::serial;
use sessions_testkit::worker::{metric_value, InProcessWorker};
use sessions_testkit::workload::{Workload, WorkloadConfig};

fn page(session_id: u64, timestamp: i64) -> Vec<u8> {
    format!(
        r#"{{"projectId":1,"sessionId":"{session_id}","index":0,"timestamp":{timestamp},"type":"page"}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_or_far_past_timestamp_evicts_nobody_else() {
    let _turn = serial::shared();
    let fixture = Fixture::new(&legacy_target(), "clock", 2).await;
    let workload = Workload::generate(&WorkloadConfig {
        seed: 8,
        sessions: 200,
        events_per_session: 10,
        ..WorkloadConfig::default()
    });
    let ten_years_ahead = 1_700_000_000_000 + 10 * 365 * 86_400_000;
    let far_past = 31_536_000_000; // 1971
    let (first, second) = workload.messages.split_at(workload.messages.len() / 2);
    fixture.produce(first).await;
    fixture
        .produce_raw(&[page(7, ten_years_ahead), page(8, far_past)])
        .await;
    fixture.produce(second).await;
    let worker = InProcessWorker::start(fixture.settings(&[])).await;

    let mut expected = workload.expected_rows();
    for (session_id, start_ts) in [(7, ten_years_ahead), (8, far_past)] {
        expected.push(Session {
            project_id: 1,
            session_id,
            start_ts,
            events_count: 1,
            pages_count: 1,
            ..Session::default()
        });
    }
    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(60)).await;
    // Let housekeeping run at least once more after everything was applied.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let metrics = worker.metrics().await;
    assert_eq!(metric_value(&metrics, "ingest_sessions_evicted_total"), 0.0);
    assert_eq!(
        metric_value(&metrics, "ingest_sessions_in_memory"),
        expected.len() as f64
    );
    worker.stop().await;
    fixture.db.drop_database().await;
}
