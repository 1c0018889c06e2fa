//! Losing Kafka brokers while events flow, on the three-broker cluster (replication
//! factor 3, `min.insync.replicas` 2, producers with `acks=all` and idempotence):
//!
//! 1. the leader of a partition the worker reads is SIGKILLed, and started again;
//! 2. one broker is stopped for 30 s, and started again;
//! 3. all three brokers are restarted one after another.
//!
//! A producer keeps producing through each fault; a message whose delivery fails is
//! sent again until the cluster acknowledges it (the worker drops the copies). After
//! each fault, every session row equals the reference computed from the acknowledged
//! messages so far; the worker process never exits; no dead letter is written (every
//! message is healthy).

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{cluster_brokers, produce_throughout, service, wait_for_sessions, Fixture};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde::Deserialize;
use sessions_shared::clickhouse::Row;
use sessions_shared::read_model::Session;
use sessions_testkit::workload::{Workload, WorkloadConfig};

/// Kills the worker process if the test fails before it ends.
struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    fn assert_running(&mut self, when: &str) {
        let exited = self.0.try_wait().expect("worker status");
        assert!(exited.is_none(), "the worker exited {when}: {exited:?}");
    }
}

/// Starts every cluster broker again when dropped, even if the test fails midway.
struct BrokersGuard;
impl Drop for BrokersGuard {
    fn drop(&mut self) {
        service("start", "kafka-cluster");
    }
}

/// Sessions of one phase: their own ids, so phases add up.
fn phase_workload(phase: u64) -> Workload {
    Workload::generate(&WorkloadConfig {
        seed: 500 + phase,
        sessions: 300,
        events_per_session: 20,
        users: 40,
        first_session_id: 7_000_000 + phase * 1_000_000,
        ..WorkloadConfig::default()
    })
}

/// The node id of the leader of `partition` of `topic` (`kafka-b<id>`).
fn leader_of(brokers: &str, topic: &str, partition: i32) -> i32 {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("metadata client");
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .find(|p| p.id() == partition)
        .expect("partition")
        .leader()
}

#[derive(Row, Deserialize)]
struct Count {
    count: u64,
}

async fn dead_letters(fixture: &Fixture) -> u64 {
    fixture
        .store()
        .client()
        .query("SELECT count() AS count FROM rejected_events")
        .fetch_one::<Count>()
        .await
        .expect("count dead letters")
        .count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_lost_while_events_flow_leave_every_session_exact() {
    let started = Instant::now();
    let brokers = cluster_brokers();
    let _restart = BrokersGuard;
    let fixture = Fixture::on_brokers(&brokers, &common::legacy_target(), "brokers", 4).await;
    let mut worker = ChildGuard(fixture.spawn_process(&[]));
    let mut expected: Vec<Session> = Vec::new();

    // 1. SIGKILL the leader of partition 0 while it is read, start it 10 s later.
    let phase = phase_workload(1);
    let producing = produce_throughout(
        brokers.clone(),
        fixture.topic.clone(),
        phase.messages.clone(),
        Duration::from_secs(20),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let leader = leader_of(&brokers, &fixture.topic, 0);
    eprintln!("SIGKILL kafka-b{leader}, the leader of partition 0");
    service("kill9", &format!("kafka-b{leader}"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    service("start", &format!("kafka-b{leader}"));
    let resent = producing.await.expect("producer");
    expected.extend(phase.expected_rows());
    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(180)).await;
    worker.assert_running("after a leader was killed");
    eprintln!(
        "leader killed: exact ({} sessions, {resent} batches sent again) at {:?}",
        expected.len(),
        started.elapsed()
    );

    // 2. Stop one broker (the leader of partition 1 now) for 30 s.
    let phase = phase_workload(2);
    let producing = produce_throughout(
        brokers.clone(),
        fixture.topic.clone(),
        phase.messages.clone(),
        Duration::from_secs(40),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped = leader_of(&brokers, &fixture.topic, 1);
    eprintln!("stopping kafka-b{stopped} for 30 s");
    service("stop", &format!("kafka-b{stopped}"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    service("start", &format!("kafka-b{stopped}"));
    let resent = producing.await.expect("producer");
    expected.extend(phase.expected_rows());
    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(180)).await;
    worker.assert_running("after a broker was stopped for 30 s");
    eprintln!(
        "broker stopped for 30 s: exact ({} sessions, {resent} batches sent again) at {:?}",
        expected.len(),
        started.elapsed()
    );

    // 3. Restart all three brokers one after another (each back before the next stops).
    let phase = phase_workload(3);
    let producing = produce_throughout(
        brokers.clone(),
        fixture.topic.clone(),
        phase.messages.clone(),
        Duration::from_secs(30),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in 1..=3 {
        eprintln!("restarting kafka-b{node}");
        service("restart", &format!("kafka-b{node}"));
    }
    let resent = producing.await.expect("producer");
    expected.extend(phase.expected_rows());
    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(180)).await;
    worker.assert_running("after a rolling restart of the brokers");
    eprintln!(
        "rolling restart: exact ({} sessions, {resent} batches sent again) at {:?}",
        expected.len(),
        started.elapsed()
    );

    assert_eq!(dead_letters(&fixture).await, 0, "healthy events in dead letters");
    fixture.db.drop_database().await;
}
