//! A user deleted while their sessions still receive events (spec/api-users.md), on
//! every engine (18.16, the current engine, the local cluster): the worker process is
//! SIGKILLed while the job runs, events of the deleted sessions (re-sent originals and
//! new indexes) are produced during and after the job, and afterwards
//! - no endpoint shows the user or those sessions, and a direct search of every table
//!   finds the user id only in `jobs` and the session ids only in `deleted_sessions`;
//! - every other user's sessions are exact, and each user's statistics equal the
//!   reference computed from the seeded stream;
//! - a session of the same user id first seen after the job is kept.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{assert_counts_agree, served_sessions, wait_for_sessions, ChildGuard, Fixture};
use serde_json::Value;
use sessions_query::{QueryService, Settings};
use sessions_shared::read_model::Session;
use sessions_testkit::clickhouse::clickhouse_engines;
use sessions_testkit::serial;
use sessions_testkit::task::AbortOnDrop;
use sessions_testkit::workload::{PlannedMessage, Workload, WorkloadConfig};

/// The API in-process, with deletions that start at once and settle in a second.
struct Api {
    service: QueryService,
    api_key: String,
    project_key: String,
    /// The service's key reloads, as in production: keys older than the service's
    /// maximum age are refused (fail closed), and the test is longer than that.
    _key_reloads: AbortOnDrop,
}

impl Api {
    async fn request(&self, method: &str, path: &str) -> (u16, Value) {
        let response = warp::test::request()
            .method(method)
            .path(path)
            .header("authorization", &self.api_key)
            .reply(&self.service.routes())
            .await;
        let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (response.status().as_u16(), body)
    }

    fn user(&self, user: &str) -> String {
        format!("/api/v1/{}/users/{user}", self.project_key)
    }

    /// Every session of `user` through the sessions endpoint, following `next` links.
    async fn sessions(&self, user: &str) -> Vec<Value> {
        served_sessions(&self.service, &self.api_key, &self.project_key, user).await
    }
}

/// Users none of whose sessions ever left them for another user id: a session that
/// moved away keeps the old id in its key history (README, "Deleting a user's data").
fn users_that_kept_their_sessions(workload: &Workload) -> BTreeSet<String> {
    let mut left: BTreeSet<String> = BTreeSet::new();
    for session in &workload.sessions {
        for event in &session.events {
            if let Some(user) = event["userId"].as_str() {
                if user != session.expected.user_id {
                    left.insert(user.to_owned());
                }
            }
        }
    }
    workload
        .expected_by_user()
        .into_keys()
        .filter(|user| !user.is_empty() && !left.contains(user))
        .collect()
}

/// Events of `sessions` no one sent before: a copy of one of each session's events
/// (not its start, end or user change) under a new index.
fn new_indexes(
    workload: &Workload,
    sessions: &BTreeSet<u64>,
    first_index: u64,
) -> Vec<PlannedMessage> {
    workload
        .sessions
        .iter()
        .filter(|session| sessions.contains(&session.session_id))
        .map(|session| {
            let mut event = session
                .events
                .iter()
                .find(|event| matches!(event["type"].as_str(), Some("page" | "click" | "input")))
                .or_else(|| session.events.last())
                .unwrap()
                .clone();
            event["index"] = first_index.into();
            event["type"] = "click".into();
            PlannedMessage {
                key: session.session_id.to_string(),
                payload: serde_json::to_vec(&event).unwrap(),
            }
        })
        .collect()
}

/// The messages of a workload that carry events of `sessions` (re-sent as they were).
fn resent(workload: &Workload, sessions: &BTreeSet<u64>) -> Vec<PlannedMessage> {
    workload
        .messages
        .iter()
        .filter(|message| sessions.contains(&message.key.parse().unwrap()))
        .cloned()
        .collect()
}

/// Sessions of user `sentinel-…` with ids from `first_id`: produced last, seen live
/// only once every partition processed what was produced before them.
fn sentinels(first_id: u64) -> Workload {
    Workload::generate(&WorkloadConfig {
        seed: first_id,
        sessions: 40,
        events_per_session: 3,
        users: 1,
        user_prefix: "sentinel-".into(),
        first_session_id: first_id,
        ..WorkloadConfig::default()
    })
}

fn expect_stats(sessions: &[Session]) -> Value {
    serde_json::json!({
        "sessionCount": sessions.len(),
        "firstSeen": sessions.iter().map(|s| s.start_ts).min().unwrap(),
        "lastSeen": sessions.iter().map(|s| s.start_ts + s.duration as i64).max().unwrap(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_stays_deleted_through_late_events_and_a_sigkill() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let started = Instant::now();
        let (fixture, org, [project]) =
            Fixture::with_projects(&target, "erasure", 4, ["web"]).await;
        let workload = Workload::generate(&WorkloadConfig {
            seed: 2026,
            project_id: project.project_id,
            sessions: 240,
            events_per_session: 10,
            users: 24,
            ..WorkloadConfig::default()
        });
        let by_user = workload.expected_by_user();
        let candidates = users_that_kept_their_sessions(&workload);
        let victim = candidates
            .iter()
            .max_by_key(|user| by_user[*user].len())
            .expect("a user who kept their sessions")
            .clone();
        let victim_sessions: BTreeSet<u64> =
            by_user[&victim].iter().map(|s| s.session_id).collect();
        assert!(victim_sessions.len() >= 5, "{engine}: {victim_sessions:?}");

        fixture.produce(&workload.messages).await;
        let mut worker = ChildGuard(fixture.spawn_process(&[]));
        wait_for_sessions(
            fixture.store(),
            &workload.expected_rows(),
            Duration::from_secs(120),
        )
        .await;

        let mut settings = Settings::new(fixture.db.settings.clone());
        settings.deletion_grace = Duration::ZERO;
        settings.deletion_settle = Duration::from_millis(2_000);
        settings.jobs_lease = Duration::from_millis(3_000);
        let service = QueryService::new(&settings).unwrap();
        service.refresh_auth().await.unwrap();
        let api = Api {
            _key_reloads: AbortOnDrop(service.spawn_auth_refresher()),
            service,
            api_key: org.api_key.clone(),
            project_key: project.project_key.clone(),
        };

        // Statistics of every user equal the reference computed from the stream. The
        // API reads any replica (README, "Running on a cluster"): on a cluster one may
        // still be fetching a part the other acknowledged, so each user is asked until
        // its statistics are the reference, for a few seconds at most.
        for (user, sessions) in &by_user {
            if user.is_empty() {
                continue;
            }
            let encoded = user.replace('@', "%40");
            let mut expected = expect_stats(sessions);
            expected["userId"] = user.as_str().into();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (status, body) = api.request("GET", &api.user(&encoded)).await;
                assert_eq!(status, 200, "{engine} {user}");
                if body["data"] == expected || Instant::now() > deadline {
                    assert_eq!(body["data"], expected, "{engine} {user}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }

        // Delete the victim; the job runs while their sessions keep receiving events.
        let victim_path = api.user(&victim.replace('@', "%40"));
        let (status, job) = api.request("DELETE", &victim_path).await;
        assert_eq!(status, 200, "{engine}");
        let job_path = format!("/api/v1/{}/jobs/{}", api.project_key, job["data"]["jobId"]);
        let runner = api.service.job_runner();
        let running = tokio::spawn(async move {
            while runner.run_due().await.unwrap_or(0) == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        fixture.produce(&resent(&workload, &victim_sessions)).await;
        fixture
            .produce(&new_indexes(&workload, &victim_sessions, 500))
            .await;
        // SIGKILL the worker once the job has started, while it settles.
        let deadline = Instant::now() + Duration::from_secs(30);
        while api.request("GET", &job_path).await.1["data"]["status"] != "running" {
            assert!(Instant::now() < deadline, "{engine}: the job never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worker.0.kill().unwrap();
        worker.0.wait().unwrap();
        fixture
            .produce(&new_indexes(&workload, &victim_sessions, 501))
            .await;
        let mut worker = ChildGuard(fixture.spawn_process(&[]));
        tokio::time::timeout(Duration::from_secs(120), running)
            .await
            .expect("the job finishes")
            .unwrap();
        let (_, done) = api.request("GET", &job_path).await;
        assert_eq!(done["data"]["status"], "completed", "{engine}: {done}");

        // After the job: more of the deleted sessions' events, then sentinels.
        fixture.produce(&resent(&workload, &victim_sessions)).await;
        fixture
            .produce(&new_indexes(&workload, &victim_sessions, 502))
            .await;
        let first_sentinels = sentinels(9_100_000_000_000_000);
        fixture.produce(&first_sentinels.messages).await;
        let mut expected: Vec<Session> = workload
            .expected_rows()
            .into_iter()
            .filter(|session| !victim_sessions.contains(&session.session_id))
            .chain(first_sentinels.expected_rows())
            .collect();
        wait_for_sessions(fixture.store(), &expected, Duration::from_secs(120)).await;
        assert_counts_agree(fixture.store(), Duration::from_secs(30)).await;

        assert!(api.sessions(&victim).await.is_empty(), "{engine}");
        let (status, _) = api.request("GET", &victim_path).await;
        assert_eq!(status, 404, "{engine}");
        let residue = fixture.db.residue(std::slice::from_ref(&victim)).await;
        let tables: Vec<&str> = residue.iter().map(|(table, _)| table.as_str()).collect();
        assert_eq!(tables, ["jobs"], "{engine}: {residue:?}");
        let ids: Vec<String> = victim_sessions.iter().map(u64::to_string).collect();
        let residue = fixture.db.residue(&ids).await;
        let mut tables: Vec<&str> = residue.iter().map(|(table, _)| table.as_str()).collect();
        tables.retain(|table| !table.starts_with("deleted_sessions"));
        assert!(tables.is_empty(), "{engine}: {residue:?}");
        for (user, sessions) in &by_user {
            if *user != victim && !user.is_empty() {
                let served = api.sessions(user).await;
                let ids: Vec<&str> = served
                    .iter()
                    .map(|s| s["sessionId"].as_str().unwrap())
                    .collect();
                let wanted: Vec<String> =
                    sessions.iter().map(|s| s.session_id.to_string()).collect();
                assert_eq!(ids, wanted, "{engine} {user}");
            }
        }

        // A session of the same user id first seen after the job is new data: kept.
        let mut comeback = workload
            .sessions
            .iter()
            .find(|session| session.session_id == *victim_sessions.first().unwrap())
            .unwrap()
            .clone();
        let new_id = 9_200_000_000_000_001_u64;
        let messages: Vec<PlannedMessage> = comeback
            .events
            .iter()
            .map(|event| {
                let mut event = event.clone();
                event["sessionId"] = new_id.to_string().into();
                PlannedMessage {
                    key: new_id.to_string(),
                    payload: serde_json::to_vec(&event).unwrap(),
                }
            })
            .collect();
        comeback.expected.session_id = new_id;
        fixture.produce(&messages).await;
        expected.push(comeback.expected.clone());
        wait_for_sessions(fixture.store(), &expected, Duration::from_secs(60)).await;
        let served = api.sessions(&victim).await;
        assert_eq!(served.len(), 1, "{engine}");
        assert_eq!(served[0]["sessionId"], new_id.to_string());
        let (_, stats) = api.request("GET", &victim_path).await;
        assert_eq!(stats["data"]["sessionCount"], 1, "{engine}");

        std::process::Command::new("kill")
            .args(["-TERM", &worker.0.id().to_string()])
            .status()
            .unwrap();
        assert!(worker.0.wait().unwrap().success(), "{engine}: clean exit");
        eprintln!(
            "{engine}: {} sessions of {victim} deleted, exact after {:?}",
            victim_sessions.len(),
            started.elapsed()
        );
        fixture.db.drop_database().await;
    }
}
