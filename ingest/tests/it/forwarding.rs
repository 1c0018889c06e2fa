//! One writer per session whatever the producers send: three worker processes read a
//! stream of batches that mix sessions (keyed by their first event's session) and
//! keyless messages, so every session's events arrive on every partition; one worker
//! is SIGKILLed mid-stream. Every session row is exact, which holds only if each
//! session is applied by one worker (events forwarded to their session's home
//! partition, carriers committed after the forward).

use std::time::{Duration, Instant};

use crate::common::{assert_counts_agree, wait_for_progress, wait_for_sessions, Fixture};
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::serial;
use sessions_testkit::workload::{Workload, WorkloadConfig};

/// Kills the worker processes if the test fails before it does.
struct Workers(Vec<std::process::Child>);
impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_and_keyless_batches_with_three_workers_and_a_kill_stay_exact() {
    let _turn = serial::shared();
    let started = Instant::now();
    let fixture = Fixture::new(&legacy_target(), "forward", 6).await;
    let workload = Workload::generate(&WorkloadConfig {
        seed: 1_234,
        sessions: 600,
        events_per_session: 20,
        users: 100,
        ..WorkloadConfig::default()
    });
    let expected = workload.expected_rows();
    let messages = workload.scrambled_messages(7, 0.3);
    let (first, second) = messages.split_at(messages.len() / 2);
    fixture.produce_keyed(first).await;
    let mut workers = Workers((0..3).map(|_| fixture.spawn_process(&[])).collect());
    wait_for_progress(&fixture, 20, Duration::from_secs(60)).await;
    // SIGKILL one worker mid-stream (after progress, before the end).
    workers.0[0].kill().expect("SIGKILL");
    workers.0[0].wait().unwrap();
    fixture.produce_keyed(second).await;
    // A replacement joins at once; the broker hands the killed member's partitions
    // over when its session timeout (6 s here) runs out.
    workers.0[0] = fixture.spawn_process(&[]);
    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(180)).await;
    assert_counts_agree(fixture.store(), Duration::from_secs(30)).await;
    for child in &mut workers.0 {
        let pid = child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
    }
    for child in &mut workers.0 {
        let status = child.wait().unwrap();
        assert!(status.success(), "clean exit on SIGTERM: {status}");
    }
    eprintln!(
        "forwarding test: {} events in {} messages, exact after {:?}",
        workload.events_sent,
        messages.len(),
        started.elapsed()
    );
    fixture.db.drop_database().await;
}
