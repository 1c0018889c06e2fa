//! SIGKILL of the worker process at random points, three times, each followed at once
//! by a new worker process (which waits in the group until the broker expires the dead
//! member), then a last one: every session row is exact.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{
    assert_counts_agree, live_sessions, wait_for_progress, wait_for_sessions, ChildGuard, Fixture,
};
use rand::Rng;
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::serial;
use sessions_testkit::workload::{Workload, WorkloadConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_double_counts_nothing() {
    let _turn = serial::shared();
    let started = Instant::now();
    let fixture = Fixture::new(&legacy_target(), "kill", 4).await;
    let workload = Workload::generate(&WorkloadConfig {
        seed: 99,
        sessions: 1_600,
        events_per_session: 20,
        users: 200,
        ..WorkloadConfig::default()
    });
    let expected = workload.expected_rows();
    let chunks: Vec<_> = workload
        .messages
        .chunks(workload.messages.len() / 4 + 1)
        .collect();
    let mut rng = rand::thread_rng();
    let mut seen = 0;
    for (kill, chunk) in chunks.iter().take(3).enumerate() {
        fixture.produce(chunk).await;
        let mut child = ChildGuard(fixture.spawn_process(&[]));
        // Wait until this worker made progress, then kill it at a random instant.
        let progressed = wait_for_progress(&fixture, seen, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..1_500))).await;
        child.0.kill().expect("SIGKILL");
        child.0.wait().unwrap();
        // A killed process writes nothing more: this is the new baseline.
        seen = live_sessions(fixture.store()).await.len();
        eprintln!(
            "kill {}: after progress to {progressed}, {seen} sessions visible, {:?} in",
            kill + 1,
            started.elapsed()
        );
    }
    fixture.produce(chunks[3]).await;
    let mut child = ChildGuard(fixture.spawn_process(&[]));
    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(180)).await;
    assert_counts_agree(fixture.store(), Duration::from_secs(30)).await;
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    eprintln!(
        "sigkill test: {} events, exact after {:?}",
        workload.events_sent,
        started.elapsed()
    );
    fixture.db.drop_database().await;
}
