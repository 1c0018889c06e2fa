//! The ingest tests' own helpers: a topic and a database per test (with an
//! organization and projects, for a test through the API), the worker as a
//! child process (the in-process worker and the services script are the test kit's:
//! `sessions_testkit::worker`, `sessions_testkit::services`), producing while a test
//! changes something, waiting for the read model to match a reference, and reading
//! a user's sessions back through the API.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use sessions_control::tenancy::{CreatedOrganization, Project, Tenancy};
use sessions_ingest::IngestSettings;
use sessions_query::QueryService;
use sessions_shared::clickhouse::{Row, Store};
use sessions_shared::read_model::{all_live_sessions_sql, Session};
use sessions_testkit::clickhouse::{Target, TestDatabase};
use sessions_testkit::kafka::{brokers, create_producer, create_topic, produce_all};
use sessions_testkit::worker::WorkerFlags;
use sessions_testkit::workload::PlannedMessage;
use tokio::task::JoinHandle;

/// A topic and a database of the test's own.
pub struct Fixture {
    pub db: TestDatabase,
    pub topic: String,
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
            topic,
            brokers: brokers.to_owned(),
        }
    }

    /// A fixture whose database holds an organization, "acme", with one project for
    /// each of `names`: the tenancy a test needs to read its sessions through the API.
    pub async fn with_projects<const N: usize>(
        target: &Target,
        label: &str,
        partitions: i32,
        names: [&str; N],
    ) -> (Fixture, CreatedOrganization, [Project; N]) {
        let fixture = Fixture::new(target, label, partitions).await;
        let tenancy = Tenancy::new(fixture.store());
        let org = tenancy.create_organization("acme").await.unwrap();
        let mut projects = Vec::with_capacity(N);
        for name in names {
            projects.push(
                tenancy
                    .create_project(org.org_id, name, None)
                    .await
                    .unwrap(),
            );
        }
        let Ok(projects) = <[Project; N]>::try_from(projects) else {
            unreachable!("one project per name");
        };
        (fixture, org, projects)
    }

    /// The flags of a worker of this fixture (fast flushes, short group timeouts).
    fn worker_flags(&self) -> WorkerFlags {
        WorkerFlags::new(&self.db.settings, &self.brokers, &self.topic)
    }

    /// Worker settings for this fixture, `extra` flags replacing its own.
    pub fn settings(&self, extra: &[&str]) -> IngestSettings {
        self.worker_flags().settings(extra)
    }

    /// The worker binary as a child process (for SIGKILL).
    pub fn spawn_process(&self, extra: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_sessions-ingest"))
            .args(self.worker_flags().args(extra))
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

pub async fn live_sessions(store: &Store) -> Vec<Session> {
    store
        .read_your_writes(store.client().query(&all_live_sessions_sql()))
        .fetch_all()
        .await
        .unwrap_or_default()
}

/// Polls until the live sessions equal `expected` (sorted by session id, then project), or panics
/// after `timeout` with the first difference.
pub async fn wait_for_sessions(store: &Store, expected: &[Session], timeout: Duration) {
    let mut expected = expected.to_vec();
    expected.sort_by_key(|s| (s.session_id, s.project_id));
    let started = Instant::now();
    loop {
        let actual = live_sessions(store).await;
        if actual == expected {
            return;
        }
        if started.elapsed() > timeout {
            let by_id: BTreeMap<(u32, u64), &Session> = actual
                .iter()
                .map(|s| ((s.project_id, s.session_id), s))
                .collect();
            let missing = expected
                .iter()
                .filter(|e| !by_id.contains_key(&(e.project_id, e.session_id)))
                .count();
            let wrong: Vec<_> = expected
                .iter()
                .filter_map(|e| {
                    by_id
                        .get(&(e.project_id, e.session_id))
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

#[derive(Debug, Row, Deserialize)]
struct SessionCounts {
    project_id: u32,
    session_id: u64,
    events: u32,
    pages: u32,
    errors: u32,
}

/// For every live session of the database, its row's counts equal what its stored
/// events give (docs/api.md, "A session's events"); returns how many sessions have
/// counts. Reads until both agree for up to `patience` (on a cluster a replica may
/// still be fetching a part), then asserts.
pub async fn assert_counts_agree(store: &Store, patience: Duration) -> usize {
    let events_sql = "SELECT project_id, session_id, \
         toUInt32(countIf(event_type IN ('LOCATION', 'CLICK', 'INPUT'))) AS events, \
         toUInt32(countIf(event_type = 'LOCATION')) AS pages, \
         toUInt32(countIf(event_type = 'ERROR')) AS errors \
         FROM (SELECT DISTINCT project_id, session_id, event_index, event_type FROM session_events) \
         GROUP BY project_id, session_id";
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let rows: BTreeMap<(u32, u64), (u32, u32, u32)> = live_sessions(store)
            .await
            .into_iter()
            .map(|s| {
                let counts = (s.events_count, s.pages_count, s.errors_count);
                ((s.project_id, s.session_id), counts)
            })
            .filter(|(_, counts)| *counts != (0, 0, 0))
            .collect();
        let stored: Vec<SessionCounts> = store
            .read_your_writes(store.client().query(events_sql))
            .fetch_all()
            .await
            .unwrap();
        let events: BTreeMap<(u32, u64), (u32, u32, u32)> = stored
            .into_iter()
            .map(|c| ((c.project_id, c.session_id), (c.events, c.pages, c.errors)))
            .filter(|(_, counts)| *counts != (0, 0, 0))
            .collect();
        if rows == events || tokio::time::Instant::now() >= deadline {
            assert_eq!(rows, events, "session rows against their stored events");
            return rows.len();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
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
    // Sequentially consistent on a cluster, as the service's reads: a replica that
    // has not yet fetched every acknowledged write refuses, and the store tries the next.
    let rows: Vec<SessionIdRow> = store
        .run(|client| {
            store
                .read_your_writes(client.query(
                    "SELECT session_id FROM (SELECT session_id, argMax(deleted, version) AS is_deleted \
                     FROM sessions WHERE project_id = ? AND user_id = ? GROUP BY session_id) \
                     WHERE is_deleted = 0 ORDER BY session_id",
                ))
                .bind(project_id)
                .bind(user_id)
                .fetch_all()
        })
        .await
        .unwrap();
    rows.into_iter().map(|r| r.session_id).collect()
}

/// Every session of `user` the sessions endpoint serves under `project_key`,
/// following `next` links.
pub async fn served_sessions(
    service: &QueryService,
    api_key: &str,
    project_key: &str,
    user: &str,
) -> Vec<Value> {
    let encoded = user.replace('@', "%40");
    let mut path = Some(format!(
        "/api/v1/{project_key}/users/{encoded}/sessions?limit=7"
    ));
    let mut sessions = Vec::new();
    while let Some(current) = path.take() {
        let response = warp::test::request()
            .path(&current)
            .header("authorization", api_key)
            .reply(&service.routes())
            .await;
        assert_eq!(response.status(), 200, "{current}");
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        sessions.extend(body["data"].as_array().unwrap().iter().cloned());
        path = response.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            link[1..link.find('>').unwrap()].to_owned()
        });
    }
    sessions
}
