//! A rebalance during a ClickHouse outage: one worker backs off from
//! a stopped ClickHouse with its partitions paused; ClickHouse comes back and a second
//! worker joins at once. librdkafka keeps a partition's pause flag across revoke and
//! assign, so a worker that thought a revocation unpaused everything never fetched
//! the partitions it got back. Now every partition makes progress and every row ends
//! exact.
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
async fn a_rebalance_during_an_outage_leaves_no_partition_paused() {
    let _turn = serial::exclusive();
    if require::services_script("this test").is_none() {
        return;
    }
    let fixture = Fixture::new(&legacy_target(), "rebalance", 4).await;
    let workload = Workload::generate(&WorkloadConfig {
        seed: 44,
        sessions: 300,
        events_per_session: 20,
        ..WorkloadConfig::default()
    });
    let expected = workload.expected_rows();
    let (first, second) = workload.messages.split_at(workload.messages.len() / 3);
    fixture.produce(first).await;
    // Long backoffs: the rebalance below happens while this worker waits, paused.
    let first_worker =
        InProcessWorker::start(fixture.settings(&["--retry-max-backoff", "15000"])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let guard = StartOnDrop::new(&["clickhouse"]);
    service("stop", "clickhouse");
    let outage = Instant::now();
    fixture.produce(second).await;
    // Wait until the worker has failed five times: its next wait is 6.4 s or more.
    while metric_value(
        &first_worker.metrics().await,
        "ingest_clickhouse_insert_failures_total",
    ) < 5.0
    {
        assert!(
            outage.elapsed() < Duration::from_secs(60),
            "no failure seen"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(guard); // starts ClickHouse
                 // A second worker joins at once: the group rebalances while the first worker is
                 // still paused in its backoff, and the first gets some partitions back.
    let second_worker = InProcessWorker::start(fixture.settings(&[])).await;
    eprintln!("clickhouse was down for {:?}", outage.elapsed());

    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(120)).await;
    assert_counts_agree(fixture.store(), Duration::from_secs(30)).await;
    second_worker.stop().await;
    first_worker.stop().await;
    fixture.db.drop_database().await;
}
