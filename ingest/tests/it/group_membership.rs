//! Two workers in one consumer group, one leaving mid-stream: every session row is
//! exact.

use std::time::{Duration, Instant};

use crate::common::{wait_for_progress, wait_for_sessions, Fixture};
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::serial;
use sessions_testkit::worker::InProcessWorker;
use sessions_testkit::workload::{Workload, WorkloadConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_in_one_group_with_one_leaving_mid_stream() {
    let _turn = serial::shared();
    let started = Instant::now();
    let fixture = Fixture::new(&legacy_target(), "group", 4).await;
    let workload = Workload::generate(&WorkloadConfig {
        seed: 3,
        sessions: 800,
        events_per_session: 20,
        ..WorkloadConfig::default()
    });
    let expected = workload.expected_rows();
    let (first, second) = workload.messages.split_at(workload.messages.len() / 2);
    fixture.produce(first).await;
    let leaving = InProcessWorker::start(fixture.settings(&[])).await;
    let staying = InProcessWorker::start(fixture.settings(&[])).await;
    wait_for_progress(&fixture, 50, Duration::from_secs(30)).await;
    leaving.stop().await;
    fixture.produce(second).await;
    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(120)).await;
    staying.stop().await;
    eprintln!("group test: exact after {:?}", started.elapsed());
    fixture.db.drop_database().await;
}
