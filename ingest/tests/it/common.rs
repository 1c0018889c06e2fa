//! Test support: unique topics and databases, in-process and child-process workers,
//! and waiting for the read model to match a reference.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::Rng;
use serde::Deserialize;
use sessions_ingest::IngestSettings;
use sessions_shared::clickhouse::{Row, Store};
use sessions_shared::read_model::{all_live_sessions_sql, Session};
use sessions_testkit::clickhouse::{Target, TestDatabase};
use sessions_testkit::http::http_get;
use sessions_testkit::kafka::{create_producer, create_topic, produce_all};
use sessions_testkit::workload::PlannedMessage;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The three-broker Kafka cluster (`scripts/services.sh start kafka-cluster`).
pub fn cluster_brokers() -> String {
    std::env::var("KAFKA_CLUSTER_BROKERS")
        .unwrap_or_else(|_| "127.0.0.1:9201,127.0.0.1:9202,127.0.0.1:9203".into())
}

#[allow(unused_imports)]
pub use sessions_testkit::clickhouse::legacy_target;

/// A topic and a database of the test's own.
pub struct Fixture {
    pub db: TestDatabase,
    pub topic: String,
    pub group: String,
    /// The brokers its topic is on.
    pub brokers: String,
}

impl Fixture {
    pub async fn new(target: &Target, label: &str, partitions: i32) -> Fixture {
        Fixture::on_brokers(&brokers(), target, label, partitions).await
    }

    /// A fixture whose topic is on `brokers`.
    pub async fn on_brokers(
        brokers: &str,
        target: &Target,
        label: &str,
        partitions: i32,
    ) -> Fixture {
        let suffix: u32 = rand::thread_rng().gen();
        let topic = format!("t-{label}-{suffix:08x}");
        create_topic(brokers, &topic, partitions)
            .await
            .expect("create topic");
        let db = TestDatabase::create(target, label)
            .await
            .expect("test database");
        Fixture {
            db,
            group: format!("{topic}-group"),
            topic,
            brokers: brokers.to_owned(),
        }
    }

    /// Worker settings for this fixture (fast flushes, short group timeouts).
    pub fn settings(&self, extra: &[&str]) -> IngestSettings {
        let mut args: Vec<String> = vec!["sessions-ingest".into()];
        for (flag, value) in self.flags_unless_in(extra) {
            args.push(flag.into());
            args.push(value);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        IngestSettings::try_parse_from(args).expect("settings")
    }

    /// The fixture's flags, minus those `extra` sets itself.
    fn flags_unless_in(&self, extra: &[&str]) -> Vec<(&'static str, String)> {
        let mut flags = self.flags();
        flags.retain(|(flag, _)| !extra.contains(flag));
        flags
    }

    fn flags(&self) -> Vec<(&'static str, String)> {
        let mut flags = self.db.settings.to_flags();
        flags.extend([
            ("--kafka-brokers", self.brokers.clone()),
            ("--kafka-topic", self.topic.clone()),
            ("--kafka-group", self.group.clone()),
            ("--kafka-session-timeout-ms", "6000".into()),
            ("--kafka-heartbeat-interval-ms", "3000".into()),
            ("--metrics-addr", "127.0.0.1:0".into()),
            ("--flush-interval", "200".into()),
            ("--retry-max-backoff", "1000".into()),
        ]);
        flags
    }

    /// The worker binary as a child process (for SIGKILL).
    pub fn spawn_process(&self, extra: &[&str]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sessions-ingest"));
        for (flag, value) in self.flags_unless_in(extra) {
            command.arg(flag).arg(value);
        }
        command
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sessions-ingest")
    }

    pub async fn produce(&self, messages: &[PlannedMessage]) {
        self.produce_pairs(
            messages
                .iter()
                .map(|m| (Some(m.key.as_str()), m.payload.as_slice())),
        )
        .await;
    }

    /// Messages with an optional key each (mixed batches, keyless messages).
    pub async fn produce_keyed(&self, messages: &[(Option<String>, Vec<u8>)]) {
        self.produce_pairs(
            messages
                .iter()
                .map(|(key, payload)| (key.as_deref(), payload.as_slice())),
        )
        .await;
    }

    /// Messages without a key.
    pub async fn produce_raw(&self, payloads: &[Vec<u8>]) {
        self.produce_pairs(payloads.iter().map(|p| (None, p.as_slice())))
            .await;
    }

    async fn produce_pairs<'a>(
        &self,
        messages: impl IntoIterator<Item = (Option<&'a str>, &'a [u8])>,
    ) {
        let producer = create_producer(&self.brokers).expect("producer");
        produce_all(&producer, &self.topic, messages)
            .await
            .expect("produce");
    }

    pub fn store(&self) -> &Store {
        &self.db.store
    }
}

/// Produces `messages` to `topic` on `brokers` in 100 paced batches over about
/// `spread` (events flowing while a test changes something); a batch whose delivery
/// fails (a broker lost mid-send) is sent again until all of it is acknowledged, so
/// on return every message is on the broker (some perhaps twice: the worker drops
/// copies). Returns how many batches were sent again.
pub fn produce_throughout(
    brokers: String,
    topic: String,
    messages: Vec<PlannedMessage>,
    spread: Duration,
) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let producer = create_producer(&brokers).expect("producer");
        let batches = 100;
        let batch_size = messages.len().div_ceil(batches).max(1);
        let pause = spread / batches as u32;
        let mut resent = 0;
        for batch in messages.chunks(batch_size) {
            loop {
                match produce_all(&producer, &topic, batch.iter().map(key_and_payload)).await {
                    Ok(_) => break,
                    Err(error) => {
                        eprintln!("a batch was not acknowledged ({error}); sending it again");
                        resent += 1;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            tokio::time::sleep(pause).await;
        }
        resent
    })
}

fn key_and_payload(message: &PlannedMessage) -> (Option<&str>, &[u8]) {
    (Some(message.key.as_str()), message.payload.as_slice())
}

/// `services.sh ACTION clickhouse` (the outage tests).
pub fn clickhouse_service(action: &str) {
    service(action, "clickhouse");
}

/// `services.sh ACTION SERVICE` (the fault tests; `SESSIONS_SERVICES_SCRIPT` names it).
pub fn service(action: &str, service: &str) {
    let script = std::env::var("SESSIONS_SERVICES_SCRIPT").expect("SESSIONS_SERVICES_SCRIPT");
    let status = Command::new("bash")
        .args([script.as_str(), action, service])
        .status()
        .unwrap();
    assert!(status.success(), "services.sh {action} {service}");
}

/// Starts ClickHouse again when dropped, even if the test fails midway.
pub struct ClickHouseRestartGuard;
impl Drop for ClickHouseRestartGuard {
    fn drop(&mut self) {
        clickhouse_service("start");
    }
}

/// A worker process, SIGKILLed when dropped (a test that fails midway leaves none).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Panics if the process has exited; `when` says when, for the message.
    pub fn assert_running(&mut self, when: &str) {
        let exited = self.0.try_wait().expect("worker status");
        assert!(exited.is_none(), "the worker exited {when}: {exited:?}");
    }
}

/// A worker running in this process.
pub struct InProcessWorker {
    stop: watch::Sender<bool>,
    handle: JoinHandle<anyhow::Result<()>>,
    pub metrics_addr: SocketAddr,
}

impl InProcessWorker {
    pub async fn start(settings: IngestSettings) -> InProcessWorker {
        sessions_shared::telemetry::init_logging();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let handle = tokio::spawn(sessions_ingest::run(settings, listener, shutdown.into()));
        InProcessWorker {
            stop,
            handle,
            metrics_addr,
        }
    }

    /// Graceful stop: flush, commit, leave the group.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("worker stops in time")
            .expect("worker task")
            .expect("worker ends cleanly");
    }

    /// The worker's /metrics text.
    pub async fn metrics(&self) -> String {
        http_get(self.metrics_addr, "/metrics", &[])
            .await
            .expect("GET /metrics")
            .body
    }
}

/// The value of one sample line of a Prometheus text page (`name{labels} value`).
pub fn metric_value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in metrics"))
}

pub async fn live_sessions(store: &Store) -> Vec<Session> {
    store
        .client()
        .query(&all_live_sessions_sql())
        .fetch_all()
        .await
        .unwrap_or_default()
}

/// Polls until the live sessions equal `expected` (sorted by session id), or panics
/// after `timeout` with the first difference.
pub async fn wait_for_sessions(store: &Store, expected: &[Session], timeout: Duration) {
    let mut expected = expected.to_vec();
    expected.sort_by_key(|s| s.session_id);
    let started = Instant::now();
    loop {
        let actual = live_sessions(store).await;
        if actual == expected {
            return;
        }
        if started.elapsed() > timeout {
            let by_id: BTreeMap<u64, &Session> = actual.iter().map(|s| (s.session_id, s)).collect();
            let missing = expected
                .iter()
                .filter(|e| !by_id.contains_key(&e.session_id))
                .count();
            let wrong: Vec<_> = expected
                .iter()
                .filter_map(|e| {
                    by_id
                        .get(&e.session_id)
                        .filter(|a| ***a != *e)
                        .map(|a| (e, *a))
                })
                .take(3)
                .collect();
            panic!(
                "after {timeout:?}: {} rows, {} expected, {missing} missing, {} extra; first differences (expected, actual): {wrong:#?}",
                actual.len(),
                expected.len(),
                actual.len().saturating_sub(expected.len() - missing)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polls until more than `more_than` sessions are live (or `timeout` passed); returns
/// the count seen.
pub async fn wait_for_progress(fixture: &Fixture, more_than: usize, timeout: Duration) -> usize {
    let started = Instant::now();
    loop {
        let count = live_sessions(fixture.store()).await.len();
        if count > more_than || started.elapsed() > timeout {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Row, Deserialize)]
struct SessionIdRow {
    session_id: u64,
}

/// Session ids the API's filter logic finds for one user (argMax per session among
/// the rows under that user, tombstones dropped).
pub async fn session_ids_of_user(store: &Store, project_id: u32, user_id: &str) -> Vec<u64> {
    let rows: Vec<SessionIdRow> = store
        .client()
        .query(
            "SELECT session_id FROM (SELECT session_id, argMax(deleted, version) AS is_deleted \
             FROM sessions WHERE project_id = ? AND user_id = ? GROUP BY session_id) \
             WHERE is_deleted = 0 ORDER BY session_id",
        )
        .bind(project_id)
        .bind(user_id)
        .fetch_all()
        .await
        .unwrap();
    rows.into_iter().map(|r| r.session_id).collect()
}
