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

use std::time::{Duration, Instant};

use crate::common::{
    assert_counts_agree, produce_throughout, wait_for_sessions, ChildGuard, Fixture,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde::Deserialize;
use sessions_shared::clickhouse::Row;
use sessions_shared::read_model::Session;
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::kafka::cluster_brokers;
use sessions_testkit::require;
use sessions_testkit::serial;
use sessions_testkit::services::{service, StartOnDrop};
use sessions_testkit::workload::{Workload, WorkloadConfig};
use tokio::task::JoinHandle;

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

/// The worker process and what it must have made exact so far.
struct Run {
    fixture: Fixture,
    worker: ChildGuard,
    expected: Vec<Session>,
    started: Instant,
}

impl Run {
    /// Starts producing phase `number`'s own sessions over about `spread`.
    fn produce_phase(&self, number: u64, spread: Duration) -> (Workload, JoinHandle<usize>) {
        let phase = phase_workload(number);
        let producing = produce_throughout(
            self.fixture.brokers.clone(),
            self.fixture.topic.clone(),
            phase.messages.clone(),
            spread,
        );
        (phase, producing)
    }

    /// Once the phase's producer is done: every session so far exact, the worker alive.
    async fn expect_exact_after(
        &mut self,
        fault: &str,
        phase: Workload,
        producing: JoinHandle<usize>,
    ) {
        let resent = producing.await.expect("producer");
        self.expected.extend(phase.expected_rows());
        wait_for_sessions(
            self.fixture.store(),
            &self.expected,
            Duration::from_secs(180),
        )
        .await;
        assert_counts_agree(self.fixture.store(), Duration::from_secs(30)).await;
        self.worker.assert_running(&format!("after {fault}"));
        eprintln!(
            "{fault}: exact ({} sessions, {resent} batches sent again) at {:?}",
            self.expected.len(),
            self.started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_lost_while_events_flow_leave_every_session_exact() {
    let _turn = serial::exclusive();
    if require::services_script("this test").is_none() {
        return;
    }
    let brokers = cluster_brokers();
    // Every cluster broker started again, even if the test fails midway.
    let _restart = StartOnDrop::new(&["kafka-cluster"]);
    let fixture = Fixture::on_brokers(&brokers, &legacy_target(), "brokers", 4).await;
    let worker = ChildGuard(fixture.spawn_process(&[]));
    let mut run = Run {
        fixture,
        worker,
        expected: Vec::new(),
        started: Instant::now(),
    };
    let topic = run.fixture.topic.clone();

    // 1. SIGKILL the leader of partition 0 while it is read, start it 10 s later.
    let (phase, producing) = run.produce_phase(1, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let leader = leader_of(&brokers, &topic, 0);
    eprintln!("SIGKILL kafka-b{leader}, the leader of partition 0");
    service("kill9", &format!("kafka-b{leader}"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    service("start", &format!("kafka-b{leader}"));
    run.expect_exact_after("a leader was killed", phase, producing)
        .await;

    // 2. Stop one broker (the leader of partition 1 now) for 30 s.
    let (phase, producing) = run.produce_phase(2, Duration::from_secs(40));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped = leader_of(&brokers, &topic, 1);
    eprintln!("stopping kafka-b{stopped} for 30 s");
    service("stop", &format!("kafka-b{stopped}"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    service("start", &format!("kafka-b{stopped}"));
    run.expect_exact_after("a broker was stopped for 30 s", phase, producing)
        .await;

    // 3. Restart all three brokers one after another (each back before the next stops).
    let (phase, producing) = run.produce_phase(3, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in 1..=3 {
        eprintln!("restarting kafka-b{node}");
        service("restart", &format!("kafka-b{node}"));
    }
    run.expect_exact_after("a rolling restart of the brokers", phase, producing)
        .await;

    assert_eq!(
        dead_letters(&run.fixture).await,
        0,
        "healthy events in dead letters"
    );
    let Run { fixture, .. } = run;
    fixture.db.drop_database().await;
}
