//! Rebalances move only what changes owner. While a producer keeps producing into six
//! partitions, a first worker A owns them all; a worker B joins, a worker C (a process)
//! joins, B is stopped, C is SIGKILLed. With an incremental protocol the partitions A
//! keeps are never revoked from it (their input is neither dropped nor replayed: they
//! keep flowing), each join takes from A only what the newcomer gets, and every
//! session ends exact. Run for the default (`cooperative`: cooperative-sticky on the
//! classic protocol) and for KIP-848's `consumer` protocol.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::{
    assert_counts_agree, produce_throughout, wait_for_sessions, ChildGuard, Fixture,
};
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::http::{free_loopback_address, http_get};
use sessions_testkit::serial;
use sessions_testkit::worker::{metric_value, InProcessWorker};
use sessions_testkit::workload::{Workload, WorkloadConfig};

const PARTITIONS: i32 = 6;

/// `(assigned now, revoked so far)` of the worker whose metrics are at `addr`
/// (`(0, 0)` while it does not answer: not started yet, or gone).
async fn partitions(addr: SocketAddr) -> (i64, i64) {
    let Ok(answer) = http_get(addr, "/metrics", &[]).await else {
        return (0, 0);
    };
    (
        metric_value(&answer.body, "ingest_partitions_assigned") as i64,
        metric_value(&answer.body, "ingest_partitions_revoked_total") as i64,
    )
}

/// Polls until `done` holds for the partitions assigned to the workers at `members`
/// (in that order), or panics after `timeout`.
async fn wait_for_assignment(
    what: &str,
    members: &[SocketAddr],
    timeout: Duration,
    done: impl Fn(&[i64]) -> bool,
) {
    let started = Instant::now();
    loop {
        let mut assigned = Vec::new();
        for member in members {
            assigned.push(partitions(*member).await.0);
        }
        if done(&assigned) {
            eprintln!("{what}: {assigned:?} after {:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not reached within {timeout:?} (assigned: {assigned:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rebalances_move_only_what_changes_owner(protocol: &str, seed: u64) {
    let started = Instant::now();
    let fixture = Fixture::new(&legacy_target(), "incremental", PARTITIONS).await;
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
    let all = i64::from(PARTITIONS);
    let sum = |assigned: &[i64]| assigned.iter().sum::<i64>();

    let a = InProcessWorker::start(fixture.settings(&flags)).await;
    let a_addr = a.metrics_address;
    wait_for_assignment("A alone", &[a_addr], Duration::from_secs(30), |n| {
        n[0] == all
    })
    .await;
    assert_eq!(
        partitions(a_addr).await.1,
        0,
        "nothing revoked from a first member"
    );

    // B joins: A gives up exactly what B gets, and keeps the rest unrevoked.
    let b = InProcessWorker::start(fixture.settings(&flags)).await;
    let b_addr = b.metrics_address;
    wait_for_assignment(
        "B joined",
        &[a_addr, b_addr],
        Duration::from_secs(60),
        |n| n[1] > 0 && sum(n) == all,
    )
    .await;
    let (a_owns, a_revoked) = partitions(a_addr).await;
    assert_eq!(a_revoked, all - a_owns, "A lost only the partitions B took");

    // C joins (a process): A and B give up only what C gets.
    let c_addr = free_loopback_address();
    let c_metrics = c_addr.to_string();
    let mut c_flags = flags.to_vec();
    c_flags.extend(["--metrics-addr", c_metrics.as_str()]);
    let mut c = ChildGuard(fixture.spawn_process(&c_flags));
    wait_for_assignment(
        "C joined",
        &[a_addr, b_addr, c_addr],
        Duration::from_secs(60),
        |n| n.iter().all(|count| *count > 0) && sum(n) == all,
    )
    .await;
    let (a_owns_with_c, a_revoked_with_c) = partitions(a_addr).await;
    let (b_owns_with_c, b_revoked_with_c) = partitions(b_addr).await;
    let (c_owns, c_revoked) = partitions(c_addr).await;
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
    assert_eq!(c_revoked, 0, "nothing revoked from the newcomer");

    // B leaves cleanly: its partitions go to A and C, nothing is revoked from either.
    b.stop().await;
    wait_for_assignment("B left", &[a_addr, c_addr], Duration::from_secs(60), |n| {
        sum(n) == all
    })
    .await;
    assert_eq!(
        partitions(a_addr).await.1,
        a_revoked_with_c,
        "nothing revoked from A when B left"
    );
    let (c_owns_after_b, c_revoked_after_b) = partitions(c_addr).await;
    assert_eq!(c_revoked_after_b, 0, "nothing revoked from C when B left");
    assert!(c_owns_after_b >= c_owns, "C kept what it had");

    // C is SIGKILLed: once its session times out, A owns everything, still without
    // losing a partition it had.
    c.0.kill().expect("SIGKILL");
    c.0.wait().unwrap();
    wait_for_assignment("C killed", &[a_addr], Duration::from_secs(60), |n| {
        n[0] == all
    })
    .await;
    assert_eq!(
        partitions(a_addr).await.1,
        a_revoked_with_c,
        "nothing revoked from A when C died"
    );

    producing.await.expect("producer");
    wait_for_sessions(
        fixture.store(),
        &workload.expected_rows(),
        Duration::from_secs(120),
    )
    .await;
    assert_counts_agree(fixture.store(), Duration::from_secs(30)).await;
    a.stop().await;
    eprintln!(
        "incremental rebalances ({protocol}): exact after {:?}",
        started.elapsed()
    );
    fixture.db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_moves_only_what_changes_owner() {
    let _turn = serial::shared();
    rebalances_move_only_what_changes_owner("cooperative", 71).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_848_consumer_protocol_moves_only_what_changes_owner() {
    let _turn = serial::shared();
    rebalances_move_only_what_changes_owner("consumer", 72).await;
}
