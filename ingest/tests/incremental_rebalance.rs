//! Rebalances move only what changes owner. While a producer keeps producing into six
//! partitions, a first worker A owns them all; a worker B joins, a worker C (a process)
//! joins, B is stopped, C is SIGKILLed. With an incremental protocol the partitions A
//! keeps are never revoked from it (their input is neither dropped nor replayed: they
//! keep flowing), each join takes from A only what the newcomer gets, and every
//! session ends exact. Run for the default (`cooperative`: cooperative-sticky on the
//! classic protocol) and for KIP-848's `consumer` protocol.

mod common;

use std::time::{Duration, Instant};

use common::{
    metric_value, produce_throughout, wait_for_sessions, Fixture, InProcessWorker,
};
use sessions_testkit::workload::{Workload, WorkloadConfig};

const PARTITIONS: i32 = 6;

/// Kills the worker process if the test fails before it does.
struct ChildGuard(std::process::Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(assigned now, revoked so far)` of an in-process worker.
async fn partitions(worker: &InProcessWorker) -> (i64, i64) {
    let page = worker.metrics().await;
    (
        metric_value(&page, "ingest_partitions_assigned") as i64,
        metric_value(&page, "ingest_partitions_revoked_total") as i64,
    )
}

/// Polls until `done(assigned A, assigned B or 0)` holds, or panics after `timeout`.
async fn wait_for_assignment(
    what: &str,
    a: &InProcessWorker,
    b: Option<&InProcessWorker>,
    timeout: Duration,
    done: impl Fn(i64, i64) -> bool,
) {
    let started = Instant::now();
    loop {
        let (assigned_a, _) = partitions(a).await;
        let assigned_b = match b {
            Some(b) => partitions(b).await.0,
            None => 0,
        };
        if done(assigned_a, assigned_b) {
            eprintln!("{what}: A owns {assigned_a}, B {assigned_b} after {:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not reached within {timeout:?} (A owns {assigned_a}, B {assigned_b})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rebalances_move_only_what_changes_owner(protocol: &str, seed: u64) {
    let started = Instant::now();
    let fixture = Fixture::new(&common::legacy_target(), "incremental", PARTITIONS).await;
    let workload = Workload::generate(&WorkloadConfig {
        seed,
        sessions: 1_200,
        events_per_session: 20,
        users: 100,
        ..WorkloadConfig::default()
    });
    let producing = produce_throughout(
        fixture.brokers.clone(),
        fixture.topic.clone(),
        workload.messages.clone(),
        Duration::from_secs(45),
    );
    let flags = ["--kafka-group-protocol", protocol];
    let a = InProcessWorker::start(fixture.settings(&flags)).await;
    let all = i64::from(PARTITIONS);
    wait_for_assignment("A alone", &a, None, Duration::from_secs(30), |a, _| a == all).await;
    let (_, revoked_at_start) = partitions(&a).await;
    assert_eq!(revoked_at_start, 0, "nothing revoked from a first member");

    // B joins: A gives up exactly what B gets, and keeps the rest unrevoked.
    let b = InProcessWorker::start(fixture.settings(&flags)).await;
    wait_for_assignment("B joined", &a, Some(&b), Duration::from_secs(60), |a, b| {
        b > 0 && a + b == all
    })
    .await;
    let (a_owns, a_revoked) = partitions(&a).await;
    assert_eq!(
        a_revoked,
        all - a_owns,
        "A lost only the partitions B took"
    );

    // C joins (a process): A and B give up only what C gets.
    let mut c = ChildGuard(fixture.spawn_process(&flags));
    wait_for_assignment("C joined", &a, Some(&b), Duration::from_secs(60), |a, b| {
        a > 0 && b > 0 && a + b < all
    })
    .await;
    let (a_owns_with_c, a_revoked_with_c) = partitions(&a).await;
    let (b_owns_with_c, b_revoked_with_c) = partitions(&b).await;
    assert_eq!(
        a_revoked_with_c - a_revoked,
        a_owns - a_owns_with_c,
        "A lost only the partitions C took"
    );
    assert_eq!(
        b_revoked_with_c,
        all - a_owns - b_owns_with_c,
        "B lost only the partitions C took"
    );

    // B leaves cleanly: its partitions go to A and C, nothing is revoked from A.
    b.stop().await;
    wait_for_assignment("B left", &a, None, Duration::from_secs(60), |a, _| {
        a > a_owns_with_c
    })
    .await;
    assert_eq!(partitions(&a).await.1, a_revoked_with_c, "nothing revoked from A when B left");

    // C is SIGKILLed: once its session times out, A owns everything, still without
    // losing a partition it had.
    c.0.kill().expect("SIGKILL");
    c.0.wait().unwrap();
    wait_for_assignment("C killed", &a, None, Duration::from_secs(60), |a, _| a == all).await;
    assert_eq!(partitions(&a).await.1, a_revoked_with_c, "nothing revoked from A when C died");

    producing.await.expect("producer");
    wait_for_sessions(fixture.store(), &workload.expected_rows(), Duration::from_secs(120)).await;
    a.stop().await;
    eprintln!(
        "incremental rebalances ({protocol}): exact after {:?}",
        started.elapsed()
    );
    fixture.db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_moves_only_what_changes_owner() {
    rebalances_move_only_what_changes_owner("cooperative", 71).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_848_consumer_protocol_moves_only_what_changes_owner() {
    rebalances_move_only_what_changes_owner("consumer", 72).await;
}
