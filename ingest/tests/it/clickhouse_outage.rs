//! ClickHouse stopped for ~10 s mid-stream, then started again: the worker backs off,
//! keeps its offsets, resumes by itself, and every row ends exact.
//!
//! Needs `SESSIONS_SERVICES_SCRIPT` (set by scripts/test.sh; fails without it) to stop
//! and start the local 18.16 server; its turn is exclusive, so no other test runs meanwhile.

use std::time::{Duration, Instant};

use crate::common::{assert_counts_agree, wait_for_sessions, Fixture};
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::require;
use sessions_testkit::serial;
use sessions_testkit::services::{service, StartOnDrop};
use sessions_testkit::worker::{metric_value, InProcessWorker};
use sessions_testkit::workload::{Workload, WorkloadConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_mid_stream_loses_nothing() {
    let _turn = serial::exclusive();
    if require::services_script("this test").is_none() {
        return;
    }
    let fixture = Fixture::new(&legacy_target(), "outage", 2).await;
    let workload = Workload::generate(&WorkloadConfig {
        seed: 21,
        sessions: 600,
        events_per_session: 20,
        ..WorkloadConfig::default()
    });
    let expected = workload.expected_rows();
    let (first, second) = workload.messages.split_at(workload.messages.len() / 2);
    fixture.produce(first).await;
    let worker = InProcessWorker::start(fixture.settings(&[])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let guard = StartOnDrop::new(&["clickhouse"]);
    service("stop", "clickhouse");
    let outage = Instant::now();
    fixture.produce(second).await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    let failures_during = metric_value(
        &worker.metrics().await,
        "ingest_clickhouse_insert_failures_total",
    );
    drop(guard); // starts ClickHouse
    eprintln!("clickhouse was down for {:?}", outage.elapsed());
    assert!(
        failures_during >= 1.0,
        "the worker saw the outage and retried"
    );

    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(90)).await;
    assert_counts_agree(fixture.store(), Duration::from_secs(30)).await;
    worker.stop().await;
    fixture.db.drop_database().await;
}
