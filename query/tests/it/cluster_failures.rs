//! The guarantees of spec/cluster.md under failure, on the local cluster (2 shards x 2
//! replicas of ClickHouse 18.16 and ZooKeeper, from `scripts/services.sh`): events flow
//! through the real broker and an in-process worker while pages are read from an
//! in-process query service, and
//! - one replica of every shard is SIGKILLed, restarted later;
//! - a whole shard is stopped, restarted later;
//! - the node named first in `CLICKHOUSE_URL` is SIGKILLed, restarted later;
//! - ZooKeeper is stopped for 30 s (replicated tables turn read-only), started again;
//!
//! and every user's sessions come back exactly through the API afterwards, without
//! restarting any service. Also: the node a heavy user's statistics fold reads is
//! SIGKILLed, and the statistics keep coming (from the statement, then from a fold on
//! the other replica). Fails without a cluster (`CLICKHOUSE_CLUSTER_URL`) or the
//! services script (`SESSIONS_SERVICES_SCRIPT`), unless opted out
//! (`sessions_testkit::require`); `scripts/test.sh` sets both. A test
//! that takes a node or ZooKeeper down holds an exclusive turn (every test on the
//! cluster needs all of it), and starts what it stopped again before giving it back.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common;
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use sessions_query::users::StatsReader;
use sessions_shared::clickhouse::{bounded_by, Row};
use sessions_shared::read_model::Session;
use sessions_testkit::api::api_json;
use sessions_testkit::clickhouse::Target;
use sessions_testkit::http::http_get;
use sessions_testkit::kafka::{brokers, create_producer, create_topic, produce_all};
use sessions_testkit::require;
use sessions_testkit::serial;
use sessions_testkit::services::{service, StartOnDrop};
use sessions_testkit::worker::{InProcessWorker, WorkerFlags};
use sessions_testkit::workload::{PlannedMessage, Workload, WorkloadConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NODES: [&str; 4] = ["ch-s1-r1", "ch-s1-r2", "ch-s2-r1", "ch-s2-r2"];

/// Status codes of the pages read during a scenario, with when they were answered.
type Answers = Arc<Mutex<Vec<(Instant, u16)>>>;

/// A database, a project, a topic, a worker and a page reader on the cluster.
struct Scenario {
    fixture: common::Fixture,
    topic: String,
    workload: Workload,
    worker: InProcessWorker,
    stop_reader: watch::Sender<bool>,
    reader: JoinHandle<()>,
    answers: Answers,
}

impl Scenario {
    /// Everything up, a third of the workload produced, the worker and the reader
    /// running, and some sessions visible through the API.
    async fn start(target: &Target, label: &str, seed: u64) -> Scenario {
        let fixture = common::Fixture::new("cluster-18.16", target, label).await;
        let topic = format!("t-{label}-{:08x}", rand::thread_rng().gen::<u32>());
        create_topic(&brokers(), &topic, 3).await.unwrap();
        let workload = Workload::generate(&WorkloadConfig {
            seed,
            project_id: fixture.project.project_id,
            sessions: 150,
            events_per_session: 12,
            users: 15,
            ..WorkloadConfig::default()
        });
        let worker_settings =
            WorkerFlags::new(&fixture.db.settings, &brokers(), &topic).settings(&[]);
        let worker = InProcessWorker::start(worker_settings).await;
        let answers: Answers = Arc::default();
        let (stop_reader, reader_stopped) = watch::channel(false);
        let reader = tokio::spawn(read_pages(
            fixture.service.routes(),
            fixture.api_key.clone(),
            user_paths(&fixture, &workload),
            Arc::clone(&answers),
            reader_stopped,
        ));
        let scenario = Scenario {
            fixture,
            topic,
            workload,
            worker,
            stop_reader,
            reader,
            answers,
        };
        scenario.produce_part(0).await;
        scenario.wait_until_some_sessions_are_visible().await;
        scenario
    }

    /// The `part`-th third of the workload's messages.
    async fn produce_part(&self, part: usize) {
        let third = self.workload.messages.len().div_ceil(3);
        let messages: Vec<&PlannedMessage> = self
            .workload
            .messages
            .iter()
            .skip(part * third)
            .take(third)
            .collect();
        let producer = create_producer(&brokers()).unwrap();
        produce_all(
            &producer,
            &self.topic,
            messages
                .iter()
                .map(|m| (Some(m.key.as_str()), m.payload.as_slice())),
        )
        .await
        .unwrap();
    }

    async fn wait_until_some_sessions_are_visible(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let seen = self
                .answers
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, status)| *status == 200)
                .count();
            if seen > 0 && self.live_session_count().await > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "nothing ingested within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn live_session_count(&self) -> u64 {
        self.fixture
            .db
            .store
            .run(|client| {
                client
                    .query("SELECT uniqExact(session_id) FROM sessions WHERE deleted = 0")
                    .fetch_one::<u64>()
            })
            .await
            .unwrap_or(0)
    }

    /// The worker's failed ClickHouse inserts so far (each one retried).
    async fn insert_failures(&self) -> f64 {
        let page = http_get(self.worker.metrics_address, "/metrics", &[])
            .await
            .expect("worker /metrics")
            .body;
        page.lines()
            .filter(|line| line.starts_with("ingest_clickhouse_insert_failures_total"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The worker's `/readyz` status (it pings ClickHouse through its store).
    async fn worker_ready(&self) -> u16 {
        http_get(self.worker.metrics_address, "/readyz", &[])
            .await
            .map_or(0, |answer| answer.status)
    }

    /// Waits until every user's pages equal the reference, following `next` links.
    async fn wait_until_exact(&self, timeout: Duration) {
        let routes = self.fixture.service.routes();
        let started = Instant::now();
        for (user, expected) in self.workload.expected_by_user() {
            if user.is_empty() {
                continue;
            }
            let expected: Vec<Value> = expected.iter().map(api_json).collect();
            let first = self.fixture.path(&user.replace('@', "%40"), "limit=7");
            loop {
                let actual =
                    common::fetch_all_pages(&routes, &self.fixture.api_key, first.clone()).await;
                if actual.as_ref() == Ok(&expected) {
                    break;
                }
                assert!(
                    started.elapsed() < timeout,
                    "user {user} not exact after {timeout:?}: {}",
                    match actual {
                        Ok(sessions) =>
                            format!("{} sessions, {} expected", sessions.len(), expected.len()),
                        Err(status) => format!("status {status}"),
                    }
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }

    /// Stops the reader and the worker (cleanly: the worker must still be running),
    /// drops the database; returns the reader's answers.
    async fn finish(self) -> Vec<(Instant, u16)> {
        self.stop_reader.send(true).unwrap();
        self.reader.await.unwrap();
        assert!(self.worker.is_running(), "the worker stopped by itself");
        self.worker.stop().await;
        self.fixture.finish().await;
        let answers = self.answers.lock().unwrap().clone();
        answers
    }
}

/// The first page of every user of the workload.
fn user_paths(fixture: &common::Fixture, workload: &Workload) -> Vec<String> {
    workload
        .expected_by_user()
        .keys()
        .filter(|user| !user.is_empty())
        .map(|user| fixture.path(&user.replace('@', "%40"), "limit=50"))
        .collect()
}

/// Reads first pages in turn until told to stop, recording each answer's status.
async fn read_pages(
    routes: impl warp::Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    api_key: String,
    paths: Vec<String>,
    answers: Answers,
    stop: watch::Receiver<bool>,
) {
    for path in paths.iter().cycle() {
        if *stop.borrow() {
            return;
        }
        let response = warp::test::request()
            .method("GET")
            .path(path)
            .header("authorization", &api_key)
            .reply(&routes)
            .await;
        answers
            .lock()
            .unwrap()
            .push((Instant::now(), response.status().as_u16()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The statuses of the pages answered strictly between `from` and `until`.
fn statuses_between(answers: &[(Instant, u16)], from: Instant, until: Instant) -> Vec<u16> {
    answers
        .iter()
        .filter(|(at, _)| *at > from && *at < until)
        .map(|(_, status)| *status)
        .collect()
}

/// The answers that were not 200, by status.
fn failures(answers: &[(Instant, u16)]) -> BTreeMap<u16, usize> {
    let mut failures = BTreeMap::new();
    for (_, status) in answers.iter().filter(|(_, status)| *status != 200) {
        *failures.entry(*status).or_default() += 1;
    }
    failures
}

/// The local cluster and the services script to take its nodes down; without either
/// the test fails, or (opted out, [`require`]) gets `None` to skip.
fn cluster_to_take_down() -> Option<Target> {
    let target = require::cluster("this test")?;
    require::services_script("this test")?;
    Some(target)
}

/// Every node started again when dropped, even if the scenario fails midway. Taken
/// after the test's exclusive turn, so the restart runs before the next test's turn.
fn restart_nodes_on_drop() -> StartOnDrop {
    StartOnDrop::new(&NODES)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_every_shard_killed_loses_nothing_and_the_api_keeps_answering() {
    let _turn = serial::exclusive();
    let Some(target) = cluster_to_take_down() else {
        return;
    };
    let _restart = restart_nodes_on_drop();
    let scenario = Scenario::start(&target, "replica_down", 31).await;

    service("kill9", "ch-s1-r2");
    service("kill9", "ch-s2-r2");
    let killed_at = Instant::now();
    scenario.produce_part(1).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    service("start", "ch-s1-r2");
    service("start", "ch-s2-r2");
    scenario.produce_part(2).await;
    scenario.wait_until_exact(Duration::from_secs(120)).await;

    let answers = scenario.finish().await;
    let during = answers.iter().filter(|(at, _)| *at > killed_at).count();
    assert!(during > 20, "pages were read during the outage ({during})");
    let failed = failures(&answers);
    assert!(
        failed.values().sum::<usize>() <= 2,
        "beyond the requests in flight at the kill, every page is answered: {failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_shard_down_pauses_ingest_and_the_api_answers_503_until_it_returns() {
    let _turn = serial::exclusive();
    let Some(target) = cluster_to_take_down() else {
        return;
    };
    let _restart = restart_nodes_on_drop();
    let scenario = Scenario::start(&target, "shard_down", 32).await;

    service("stop", "ch-s2-r1");
    service("stop", "ch-s2-r2");
    let down_from = Instant::now();
    scenario.produce_part(1).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let down_until = Instant::now();
    service("start", "ch-s2-r1");
    service("start", "ch-s2-r2");
    scenario.produce_part(2).await;
    scenario.wait_until_exact(Duration::from_secs(120)).await;

    let answers = scenario.finish().await;
    let during = statuses_between(&answers, down_from + Duration::from_millis(500), down_until);
    assert!(
        during.len() > 20,
        "pages were read during the outage ({})",
        during.len()
    );
    assert!(
        during.iter().all(|status| *status == 503),
        "with a shard down every page is a 503, never a partial page: {:?}",
        failures(&answers)
    );
    let after = answers.iter().rev().find(|(at, _)| *at > down_until);
    assert_eq!(
        after.map(|(_, status)| *status),
        Some(200),
        "the API recovered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_down_for_30_s_pauses_writes_and_the_api_keeps_answering() {
    let _turn = serial::exclusive();
    let Some(target) = cluster_to_take_down() else {
        return;
    };
    let _restart = restart_nodes_on_drop();
    let scenario = Scenario::start(&target, "zookeeper_down", 33).await;
    let failures_before = scenario.insert_failures().await;

    // Started again when dropped, even if the scenario fails midway.
    let zookeeper = StartOnDrop::new(&["zookeeper"]);
    service("stop", "zookeeper");
    let down_from = Instant::now();
    scenario.produce_part(1).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let down_until = Instant::now();
    drop(zookeeper); // started again
    let failures_during = scenario.insert_failures().await - failures_before;
    scenario.produce_part(2).await;
    scenario.wait_until_exact(Duration::from_secs(180)).await;

    let answers = scenario.finish().await;
    let during = statuses_between(&answers, down_from, down_until);
    assert!(
        during.len() > 100,
        "pages were read during the outage ({})",
        during.len()
    );
    assert!(
        during.iter().all(|status| *status == 200),
        "without ZooKeeper every page is still answered: {:?}",
        failures(&answers)
    );
    assert!(
        failures_during > 0.0,
        "the worker's writes failed (and were retried) while ZooKeeper was down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_node_killed_every_binary_carries_on_through_another() {
    let _turn = serial::exclusive();
    let Some(target) = cluster_to_take_down() else {
        return;
    };
    let _restart = restart_nodes_on_drop();
    let scenario = Scenario::start(&target, "first_node", 33).await;

    service("kill9", "ch-s1-r1");
    let killed_at = Instant::now();
    scenario.produce_part(1).await;

    // The worker answers ready through another node; the admin tool works.
    let deadline = Instant::now() + Duration::from_secs(10);
    while scenario.worker_ready().await != 200 {
        assert!(
            Instant::now() < deadline,
            "the worker is not ready through another node"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admin = admin_binary();
    let flags = scenario.fixture.db.settings.to_args();
    let output = Command::new(&admin)
        .args(&flags)
        .args(["project", "list"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sessions-admin with the first node down: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let projects: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(projects.as_array().map(Vec::len), Some(1));
    let output = Command::new(&admin)
        .args(&flags)
        .args(["org", "create", "--name", "while-a-node-is-down"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    service("start", "ch-s1-r1");
    scenario.produce_part(2).await;
    scenario.wait_until_exact(Duration::from_secs(120)).await;

    let answers = scenario.finish().await;
    let during = answers.iter().filter(|(at, _)| *at > killed_at).count();
    assert!(
        during > 20,
        "pages were read while the node was down ({during})"
    );
    let failed = failures(&answers);
    assert!(
        failed.values().sum::<usize>() <= 2,
        "the query service moved to another node: {failed:?}"
    );
}

/// `sessions-admin`, built beside this test binary by `cargo test --workspace`.
fn admin_binary() -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    let binary = deps
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("sessions-admin"))
        .unwrap();
    assert!(
        binary.exists(),
        "{} missing: run `cargo build -p sessions-control` (scripts/test.sh builds it)",
        binary.display()
    );
    binary
}

#[derive(Row, Deserialize)]
struct Count {
    count: u64,
}

/// Rows of `session_id` in the shard-local table of the node at `url`, tombstones
/// (`deleted` 1) or live rows (0).
async fn local_rows(url: &str, database: &str, session_id: u64, deleted: u8) -> u64 {
    let settings = sessions_shared::config::ClickHouseSettings::new(url, database);
    let store = sessions_shared::clickhouse::Store::new(&settings).unwrap();
    let row: Count = bounded_by(
        Duration::from_secs(10),
        store
            .client()
            .query(
                "SELECT count() AS count FROM sessions_local WHERE session_id = ? AND deleted = ?",
            )
            .bind(session_id)
            .bind(deleted)
            .fetch_one(),
    )
    .await
    .unwrap();
    row.count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_change_moves_a_session_between_shards_and_only_the_new_user_finds_it() {
    // Takes no node down: beside other tests, like every test on the cluster.
    let _turn = serial::shared();
    let Some(target) = require::cluster("this test") else {
        return;
    };
    let fixture = common::Fixture::new("cluster-18.16", &target, "move").await;
    let project_id = fixture.project.project_id;
    // Two users whose rows live on different shards (the `sessions` sharding key).
    let mut users_by_shard: BTreeMap<u64, String> = BTreeMap::new();
    for n in 0..20 {
        let user = format!("mover-{n}@example.com");
        let shard: u64 = fixture
            .db
            .store
            .run(|client| {
                client
                    .query("SELECT toUInt64(cityHash64(toUInt32(?), ?) % 2)")
                    .bind(project_id)
                    .bind(&user)
                    .fetch_one::<u64>()
            })
            .await
            .unwrap();
        users_by_shard.entry(shard).or_insert(user);
    }
    let (old_user, new_user) = (&users_by_shard[&0], &users_by_shard[&1]);

    let topic = format!("t-move-{:08x}", rand::thread_rng().gen::<u32>());
    create_topic(&brokers(), &topic, 2).await.unwrap();
    let worker_settings = WorkerFlags::new(&fixture.db.settings, &brokers(), &topic).settings(&[]);
    let worker = InProcessWorker::start(worker_settings).await;
    let session_id: u64 = 7_770_001_112;
    let event = |index: u64, kind: &str, user: Option<&str>| {
        let mut event = serde_json::json!({"projectId": project_id,
            "sessionId": session_id.to_string(), "index": index,
            "timestamp": 1_700_000_000_000_i64 + index as i64 * 1_000, "type": kind});
        if let Some(user) = user {
            event["userId"] = user.into();
        }
        if kind == "session_start" {
            event["userUuid"] = "5f0c2a4e-8d2b-4c47-9a1e-0b8e2f7d3c11".into();
        }
        serde_json::to_vec(&event).unwrap()
    };
    let key = session_id.to_string();
    let produce = |payloads: Vec<Vec<u8>>| {
        let topic = topic.clone();
        let key = key.clone();
        async move {
            let producer = create_producer(&brokers()).unwrap();
            produce_all(
                &producer,
                &topic,
                payloads.iter().map(|p| (Some(key.as_str()), p.as_slice())),
            )
            .await
            .unwrap();
        }
    };
    let ids_of = |user: &str| {
        let path = fixture.path(&user.replace('@', "%40"), "");
        let routes = fixture.service.routes();
        let api_key = fixture.api_key.clone();
        async move {
            common::fetch_all_pages(&routes, &api_key, path)
                .await
                .map(|sessions| {
                    sessions
                        .iter()
                        .map(|s| s["sessionId"].clone())
                        .collect::<Vec<_>>()
                })
        }
    };
    let wait_for = |user: &str, expected: Vec<Value>| {
        let user = user.to_owned();
        let ids_of = &ids_of;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if ids_of(&user).await.as_ref() == Ok(&expected) {
                    return;
                }
                assert!(Instant::now() < deadline, "{user}: never {expected:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    produce(vec![
        event(0, "session_start", Some(old_user)),
        event(1, "page", None),
    ])
    .await;
    wait_for(old_user, vec![Value::from(key.clone())]).await;
    produce(vec![event(2, "user_id", Some(new_user))]).await;
    wait_for(new_user, vec![Value::from(key.clone())]).await;
    wait_for(old_user, vec![]).await;

    // The tombstone is on the old user's shard (first in remote_servers: shard index
    // 0), the live row on the new user's (the old live row may have been merged away
    // under its tombstone: same sorting key, lower version).
    let urls = target.urls();
    let database = fixture.db.store.database().to_owned();
    assert!(local_rows(&urls[0], &database, session_id, 1).await >= 1);
    assert!(local_rows(&urls[2], &database, session_id, 0).await >= 1);
    assert_eq!(local_rows(&urls[2], &database, session_id, 1).await, 0);

    worker.stop().await;
    fixture.finish().await;
}

/// A heavy user's statistics come from a fold on one replica of its shard: when that
/// node is SIGKILLed the statement answers (through another node), the next request
/// folds the other replica, and every answer is the statement's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folds_node_killed_the_statistics_come_from_another() {
    let _turn = serial::exclusive();
    let Some(target) = cluster_to_take_down() else {
        return;
    };
    let _restart = restart_nodes_on_drop();
    let fixture = common::Fixture::new("cluster-18.16", &target, "fold_node").await;
    let store = &fixture.db.store;
    let project = fixture.project.project_id;
    let rows: Vec<Session> = (0..300)
        .map(|i| {
            common::session(
                project,
                "heavy",
                7_304_000_000_000_000 + i,
                1_000 * i as i64,
            )
        })
        .collect();
    fixture.insert_live(&rows, 1).await;
    let statement = StatsReader::new(1, u64::MAX, store.timeout(), 0);
    let expected = statement.fetch(store, project, "heavy").await.unwrap();
    assert_eq!(expected.map(|stats| stats.session_count), Some(300));
    let warm = StatsReader::new(1, 1, store.timeout(), 10_000);
    assert_eq!(warm.fetch(store, project, "heavy").await.unwrap(), expected);
    assert_eq!(warm.warm().rows_folded(), 300);

    // The fold reads the first node of CLICKHOUSE_URL holding the user (the nodes are
    // listed in the order of NODES).
    let holding = common::nodes_holding(store, "heavy").await;
    let pinned = NODES[holding
        .iter()
        .position(|holds| *holds)
        .expect("a node holds the user")];
    service("kill9", pinned);
    let after_kill = warm.fetch(store, project, "heavy").await;
    assert_eq!(
        after_kill.unwrap(),
        expected,
        "the statement, through another node"
    );
    assert!(!warm.warm().holds(project, "heavy"), "the fold is dropped");
    assert_eq!(warm.warm().rows_folded(), 300);
    let refolded = warm.fetch(store, project, "heavy").await;
    assert_eq!(refolded.unwrap(), expected, "a fold on the other replica");
    assert!(warm.warm().holds(project, "heavy"));
    assert_eq!(
        warm.warm().rows_folded(),
        600,
        "the other replica read once"
    );
    service("start", pinned);
    fixture.finish().await;
}
