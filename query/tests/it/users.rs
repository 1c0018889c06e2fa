//! The users and jobs API (spec/api-users.md) on every engine: a user's statistics
//! against the sessions endpoint, the jobs' contract (scheduling, listing, cancelling,
//! projects and organizations), and a deletion job's effect on every table.

use std::time::Duration;

use crate::common::{body_json, error_message, fetch_all_pages, nodes_holding, session, Fixture};
use serde_json::Value;
use sessions_control::jobs::runner::{Attempt, JobRunner, RunnerSettings};
use sessions_control::jobs::{JobStatus, Jobs};
use sessions_query::sessions::SCAN_MAX_ROWS;
use sessions_query::users::StatsReader;
use sessions_query::Settings;
use sessions_shared::clickhouse::{Layout, Store, StoreError};
use sessions_shared::read_model::{Session, SessionRecord};
use sessions_testkit::clickhouse::{clickhouse_engines, Target};
use sessions_testkit::require;
use sessions_testkit::serial;

/// Session ids of the histories (long, so that no other text contains them).
const S11: u64 = 7_301_000_000_000_011;
const S12: u64 = 7_301_000_000_000_012;
const S13: u64 = 7_301_000_000_000_013;
const S21: u64 = 7_301_000_000_000_021;

/// Runs `test` on every engine in parallel.
async fn on_every_engine<F, Fut>(label: &'static str, test: F)
where
    F: Fn(&'static str, Target, &'static str) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let runs: Vec<_> = clickhouse_engines()
        .into_iter()
        .map(|(engine, target)| tokio::spawn(test(engine, target, label)))
        .collect();
    for run in runs {
        run.await.unwrap();
    }
}

/// Settings of a service whose deletions start at once and settle quickly.
fn prompt_deletions(settings: &mut Settings) {
    settings.deletion_grace = Duration::ZERO;
    settings.deletion_settle = Duration::from_millis(300);
    settings.jobs_lease = Duration::from_millis(1_500);
}

fn user_path(fixture: &Fixture, user: &str) -> String {
    format!("/api/v1/{}/users/{user}", fixture.project.project_key)
}

fn jobs_path(fixture: &Fixture) -> String {
    format!("/api/v1/{}/jobs", fixture.project.project_key)
}

/// Moves `session` from where `before` was written to its own key the way the worker
/// does: in one INSERT, a tombstone under the old key and the live row, at
/// `applied_events`.
async fn move_session(fixture: &Fixture, before: &Session, session: &Session, applied_events: u64) {
    fixture.insert_live(std::slice::from_ref(before), 1).await;
    let tombstone = Session::tombstone(before.session_id, &before.key());
    fixture
        .insert(&[
            SessionRecord::tombstone(&tombstone, applied_events, 1),
            SessionRecord::live(session, false, applied_events, 1),
        ])
        .await;
}

/// A history with moves and versions: `alice` has three live sessions, one of which
/// arrived from `carol` (tombstoned there) and one that moved its start; `bob` keeps
/// one session; `carol`'s only session left for `alice`.
async fn write_history(fixture: &Fixture) {
    let project = fixture.project.project_id;
    let mut first = session(project, "alice", S11, 1_000);
    first.duration = 500;
    fixture.insert_live(&[first.clone()], 3).await;
    first.duration = 9_000; // a later version of the same session
    fixture.insert_live(&[first], 7).await;
    // Session 12 started at 5_000 and moved to 4_000 (a late session_start).
    let mut moved = session(project, "alice", S12, 4_000);
    moved.duration = 100;
    move_session(fixture, &session(project, "alice", S12, 5_000), &moved, 4).await;
    // Session 13 was carol's, now alice's.
    let arrived = session(project, "alice", S13, 2_000);
    move_session(fixture, &session(project, "carol", S13, 2_000), &arrived, 2).await;
    fixture
        .insert_live(&[session(project, "bob", S21, 3_000)], 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_stats_agree_with_the_sessions_endpoint() {
    let _turn = serial::shared();
    on_every_engine("stats", |engine, target, label| async move {
        let fixture = Fixture::new(engine, &target, label).await;
        write_history(&fixture).await;
        let routes = fixture.service.routes();
        for user in ["alice", "bob"] {
            let sessions = fetch_all_pages(&routes, &fixture.api_key, fixture.path(user, ""))
                .await
                .unwrap();
            let start = |s: &Value| s["startTs"].as_i64().unwrap();
            let end = |s: &Value| start(s) + s["duration"].as_i64().unwrap();
            let response = fixture.get(&user_path(&fixture, user)).await;
            assert_eq!(response.status(), 200, "{engine} {user}");
            assert_eq!(
                body_json(&response),
                serde_json::json!({"data": {
                    "userId": user,
                    "sessionCount": sessions.len(),
                    "firstSeen": sessions.iter().map(start).min().unwrap(),
                    "lastSeen": sessions.iter().map(end).max().unwrap(),
                }}),
                "{engine} {user}"
            );
        }
        let alice = body_json(&fixture.get(&user_path(&fixture, "alice")).await);
        assert_eq!(alice["data"]["sessionCount"], 3, "{engine}");
        assert_eq!(alice["data"]["firstSeen"], 1_000, "{engine}");
        assert_eq!(
            alice["data"]["lastSeen"], 14_779,
            "{engine}: 2_000 + 12_779"
        );
        // carol's only session left her: she has none.
        for nobody in ["carol", "nobody"] {
            let response = fixture.get(&user_path(&fixture, nobody)).await;
            assert_eq!(response.status(), 404, "{engine} {nobody}");
            assert_eq!(error_message(&response), "user not found");
        }
        let response = fixture.get(&user_path(&fixture, "")).await;
        assert_eq!(response.status(), 400, "{engine}");
        assert!(error_message(&response).contains("userId"));
        let too_long = "x".repeat(257);
        let response = fixture.get(&user_path(&fixture, &too_long)).await;
        assert_eq!(response.status(), 400, "{engine}");
        // Read as heavy users (every bounded statement refused), by the statement run
        // whole or by folds, the statistics are the same; a heavy read waits for its
        // turn one request bound at most.
        let store = &fixture.db.store;
        let project_id = fixture.project.project_id;
        let service_reader = StatsReader::new(2, SCAN_MAX_ROWS, store.timeout(), 0);
        let turn_wait = Duration::from_millis(200);
        let heavy_reader = StatsReader::new(1, 1, turn_wait, 0);
        let warm_reader = StatsReader::new(1, 1, turn_wait, 1_000);
        for user in ["alice", "bob", "carol", "nobody"] {
            let expected = service_reader.fetch(store, project_id, user).await.unwrap();
            for reader in [&heavy_reader, &warm_reader] {
                assert_eq!(
                    reader.fetch(store, project_id, user).await.unwrap(),
                    expected,
                    "{engine} {user}"
                );
            }
        }
        let turn = heavy_reader.heavy_limit().acquire().await.unwrap();
        let waited = heavy_reader.fetch(store, project_id, "alice").await;
        assert!(
            matches!(waited, Err(StoreError::Timeout(wait)) if wait == turn_wait),
            "{engine}: {waited:?}"
        );
        drop(turn);
        let alice_stats = heavy_reader.fetch(store, project_id, "alice").await;
        assert_eq!(alice_stats.unwrap().unwrap().session_count, 3, "{engine}");
        // A fold with nothing new to read needs no turn; a fold's first read does.
        let turn = warm_reader.heavy_limit().acquire().await.unwrap();
        let warm_alice = warm_reader.fetch(store, project_id, "alice").await;
        assert_eq!(warm_alice.unwrap().unwrap().session_count, 3, "{engine}");
        drop(turn);
        let cold_reader = StatsReader::new(1, 1, turn_wait, 1_000);
        let _turn = cold_reader.heavy_limit().acquire().await.unwrap();
        let waited = cold_reader.fetch(store, project_id, "alice").await;
        assert!(
            matches!(waited, Err(StoreError::Timeout(wait)) if wait == turn_wait),
            "{engine}: {waited:?}"
        );
        fixture.finish().await;
    })
    .await;
}

/// Waits until no mutation of the fixture's database is unfinished, on any node.
async fn wait_for_mutations(fixture: &Fixture) {
    let store = &fixture.db.store;
    for _ in 0..600 {
        let mut unfinished = 0;
        for node in 0..store.node_count() {
            unfinished += store
                .run_on_node(node, |client| {
                    client
                        .query(
                            "SELECT count() FROM system.mutations \
                             WHERE database = ? AND is_done = 0",
                        )
                        .bind(store.database())
                        .fetch_one::<u64>()
                })
                .await
                .unwrap();
        }
        if unfinished == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mutations did not finish");
}

/// Runs `sql` on every node (`{table}`: the table storing `sessions` there).
async fn on_each_node(store: &Store, sql: &str) {
    let sql = sql.replace(
        "{table}",
        &format!(
            "{}.{}",
            store.database(),
            store.layout().storage_table("sessions")
        ),
    );
    let failures = store
        .run_on_each_node(|client| client.query(&sql).execute())
        .await;
    assert!(failures.is_empty(), "{sql}: {failures:?}");
}

/// A heavy user's statistics kept as a fold (`warm_stats`) answer as the statement
/// does while the table takes inserts (new sessions, later versions, moves in and out),
/// merges and deletions; a merge costs the fold no read, an insert only its own rows.
/// On a cluster the fold reads one replica of the user's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_users_folded_statistics_follow_inserts_merges_and_deletions() {
    let _turn = serial::shared();
    on_every_engine("warm_stats", |engine, target, label| async move {
        let fixture = Fixture::new(engine, &target, label).await;
        let store = &fixture.db.store;
        let project = fixture.project.project_id;
        let statement = StatsReader::new(1, u64::MAX, store.timeout(), 0);
        let warm = StatsReader::new(1, 1, store.timeout(), 10_000);
        // Background merges stopped until the merge below (on every node): which parts
        // the fold reads is then what the test says (a merge of a read part with one
        // not yet read is read whole: the fold cannot tell their rows apart).
        let one_server = matches!(store.layout(), Layout::SingleNode);
        let merges = |verb: &'static str| async move {
            on_each_node(store, &format!("SYSTEM {verb} MERGES {{table}}")).await;
        };
        merges("STOP").await;
        let base = 7_302_000_000_000_000u64;
        let heavy = |i: u64| {
            let mut row = session(project, "heavy", base + i, 1_000 * i as i64);
            row.duration = i * 3;
            row
        };
        // Three parts of 200 sessions each.
        for part in 0..3u64 {
            let rows: Vec<Session> = (part * 200..(part + 1) * 200).map(heavy).collect();
            fixture.insert_live(&rows, 1).await;
        }
        let check = |step: &'static str| {
            let (statement, warm) = (&statement, &warm);
            async move {
                let expected = statement.fetch(store, project, "heavy").await.unwrap();
                let folded = warm.fetch(store, project, "heavy").await.unwrap();
                assert_eq!(folded, expected, "{engine}: {step}");
                folded
            }
        };
        let first = check("three inserts").await.unwrap();
        assert_eq!(
            (first.session_count, first.first_seen),
            (600, 0),
            "{engine}"
        );
        assert_eq!(warm.warm().rows_folded(), 600, "{engine}");
        assert!(warm.warm().holds(project, "heavy"), "{engine}");
        check("again, nothing new").await;
        assert_eq!(
            warm.warm().rows_folded(),
            600,
            "{engine}: nothing read again"
        );
        // A user larger than the budget: its fold stops past it, the statement answers,
        // and the next request goes straight to the statement.
        let small_budget = StatsReader::new(1, 1, store.timeout(), 100);
        let expected = statement.fetch(store, project, "heavy").await.unwrap();
        for attempt in ["first", "second"] {
            let answer = small_budget.fetch(store, project, "heavy").await.unwrap();
            assert_eq!(
                answer, expected,
                "{engine}: {attempt} request over the budget"
            );
            assert!(!small_budget.warm().holds(project, "heavy"), "{engine}");
            assert_eq!(small_budget.warm().sessions(), 0, "{engine}");
            assert_eq!(
                small_budget.warm().rows_folded(),
                101,
                "{engine}: stopped at the 101st session, then not read again"
            );
        }

        // Later versions (the last session grows), a session moved to another start, the
        // first session moved to another user, and a session arriving from one.
        let mut grown = heavy(599);
        grown.duration = 1_000_000;
        fixture.insert_live(&[grown], 5).await;
        move_session(&fixture, &heavy(0), &session(project, "other", base, 0), 3).await;
        move_session(&fixture, &heavy(10), &heavy_at(heavy(10), 650_000), 4).await;
        let arrived = heavy_at(session(project, "heavy", base + 900, 0), 5);
        move_session(
            &fixture,
            &session(project, "other", base + 900, 5),
            &arrived,
            2,
        )
        .await;
        let after = check("versions and moves").await.unwrap();
        assert_eq!(after.session_count, 600, "{engine}: one left, one arrived");
        assert_eq!(after.first_seen, 5, "{engine}");
        assert_eq!(after.last_seen, 599_000 + 1_000_000, "{engine}");
        let read = warm.warm().rows_folded();
        assert!(
            read < 620,
            "{engine}: only new parts read ({read} rows in all)"
        );

        // A merge of everything: covered, nothing read.
        merges("START").await;
        // On the cluster a plain `OPTIMIZE`, which merges what the leader chooses: after
        // inserts with `insert_quorum`, 18.16's replicated tables answer `OPTIMIZE …
        // FINAL` with "Unknown log entry type: 0" (code 49).
        let optimize = if one_server {
            "OPTIMIZE TABLE {table} FINAL"
        } else {
            "OPTIMIZE TABLE {table}"
        };
        on_each_node(store, optimize).await;
        check("merged").await;
        assert_eq!(
            warm.warm().rows_folded(),
            read,
            "{engine}: a merge is not read again"
        );

        // A deletion (a mutation): the fold starts over and loses the deleted sessions.
        let delete = format!(
            "ALTER TABLE {}.{}{} DELETE WHERE session_id % 7 = 0",
            store.database(),
            store.layout().storage_table("sessions"),
            store.layout().on_cluster()
        );
        store.client().query(&delete).execute().await.unwrap();
        // (On a cluster a part must follow the last one written with `insert_quorum`,
        // or 18.16 never mutates that one: a marker row, as the deletion jobs write.)
        if !one_server {
            let marker = "INSERT INTO {table} (project_id, session_id, deleted) VALUES (0, 0, 1)";
            on_each_node(store, marker).await;
        }
        wait_for_mutations(&fixture).await;
        let deleted = check("after a deletion").await.unwrap();
        assert!(deleted.session_count < 600, "{engine}: {deleted:?}");
        fixture.insert_live(&[heavy(1_000)], 1).await;
        check("an insert after the deletion").await;
        fixture.finish().await;
    })
    .await;
}

/// On a cluster a heavy user's fold reads the first node of `CLICKHOUSE_URL` holding
/// the user's rows: a node that refuses is passed over, and a list without a node of
/// the user's shard leaves the statement to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_on_a_cluster_reads_a_listed_node_of_the_users_shard() {
    let _turn = serial::shared();
    let Some(target) = require::cluster("this test") else {
        return;
    };
    let fixture = Fixture::new("cluster-18.16", &target, "warm_pin").await;
    let store = &fixture.db.store;
    let project = fixture.project.project_id;
    let base = 7_303_000_000_000_000u64;
    let rows: Vec<Session> = (0..300)
        .map(|i| session(project, "heavy", base + i, 1_000 * i as i64))
        .collect();
    fixture.insert_live(&rows, 1).await;
    let statement = StatsReader::new(1, u64::MAX, store.timeout(), 0);
    let expected = statement.fetch(store, project, "heavy").await.unwrap();
    assert_eq!(expected.map(|stats| stats.session_count), Some(300));

    let urls = &fixture.db.settings.clickhouse_url;
    let holding: Vec<(String, bool)> = urls
        .iter()
        .cloned()
        .zip(nodes_holding(store, "heavy").await)
        .collect();
    assert!(holding.iter().any(|(_, holds)| *holds), "{holding:?}");
    assert!(holding.iter().any(|(_, holds)| !*holds), "{holding:?}");
    let store_of = |urls: Vec<String>| {
        let mut settings = fixture.db.settings.clone();
        settings.clickhouse_url = urls;
        Store::new(&settings).unwrap()
    };

    let refusing_first = store_of(
        std::iter::once("http://127.0.0.1:1".to_owned())
            .chain(urls.iter().cloned())
            .collect(),
    );
    let warm = StatsReader::new(1, 1, store.timeout(), 10_000);
    for attempt in ["first", "second"] {
        let folded = warm.fetch(&refusing_first, project, "heavy").await;
        assert_eq!(folded.unwrap(), expected, "{attempt}");
        assert_eq!(warm.warm().rows_folded(), 300, "{attempt}: read once");
    }
    assert!(warm.warm().holds(project, "heavy"));

    let elsewhere = store_of(
        holding
            .iter()
            .filter(|(_, holds)| !*holds)
            .map(|(url, _)| url.clone())
            .collect(),
    );
    let warm = StatsReader::new(1, 1, store.timeout(), 10_000);
    let answered = warm.fetch(&elsewhere, project, "heavy").await;
    assert_eq!(
        answered.unwrap(),
        expected,
        "the statement, through the other shard"
    );
    assert_eq!(warm.warm().rows_folded(), 0);
    assert!(!warm.warm().holds(project, "heavy"));
    fixture.finish().await;
}

/// `session` with another start.
fn heavy_at(mut session: Session, start_ts: i64) -> Session {
    session.start_ts = start_ts;
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_scheduled_listed_and_cancelled_per_project() {
    let _turn = serial::shared();
    on_every_engine("jobs", |engine, target, label| async move {
        let fixture = Fixture::new(engine, &target, label).await;
        write_history(&fixture).await;
        let path = user_path(&fixture, "alice%40example.com");
        let before = sessions_shared::clock::epoch_millis();
        let response = fixture
            .request("DELETE", &path, Some(&fixture.api_key))
            .await;
        assert_eq!(response.status(), 200, "{engine}");
        let job = body_json(&response)["data"].clone();
        let keys: Vec<&String> = job.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 10, "{engine}: {job}");
        assert_eq!(job["status"], "scheduled");
        assert_eq!(job["action"], "delete_user_data");
        assert_eq!(job["referenceId"], "alice@example.com");
        assert_eq!(
            job["description"],
            "Delete user sessions of userId = alice@example.com"
        );
        assert_eq!(job["projectId"], fixture.project.project_id);
        assert_eq!(job["updatedAt"], Value::Null);
        assert_eq!(job["errors"], Value::Null);
        let created = job["createdAt"].as_i64().unwrap();
        assert!(created >= before, "{engine}");
        assert_eq!(
            job["startAt"].as_i64().unwrap(),
            created + 3_600_000,
            "default grace"
        );
        let job_id = job["jobId"].as_u64().unwrap();
        assert!(job_id < 1 << 53, "exact in JavaScript");
        // A second request while it is scheduled returns the same job.
        let again = fixture
            .request("DELETE", &path, Some(&fixture.api_key))
            .await;
        assert_eq!(body_json(&again)["data"], job, "{engine}");
        // Another user's deletion is listed first (newest first).
        tokio::time::sleep(Duration::from_millis(5)).await;
        let bob = fixture
            .request(
                "DELETE",
                &user_path(&fixture, "bob"),
                Some(&fixture.api_key),
            )
            .await;
        let bob = body_json(&bob)["data"].clone();
        let listed = body_json(&fixture.get(&jobs_path(&fixture)).await);
        assert_eq!(listed, serde_json::json!({"data": [bob, job]}), "{engine}");
        let job_path = format!("{}/{job_id}", jobs_path(&fixture));
        assert_eq!(body_json(&fixture.get(&job_path).await)["data"], job);
        for (raw, status, message) in [
            ("abc", 400, "invalid jobId: must be an integer"),
            ("-1", 400, "invalid jobId: must be an integer"),
            ("12", 404, "job not found"),
        ] {
            let response = fixture.get(&format!("{}/{raw}", jobs_path(&fixture))).await;
            assert_eq!(response.status(), status, "{engine} {raw}");
            assert_eq!(error_message(&response), message);
        }
        let post = fixture
            .request("POST", &job_path, Some(&fixture.api_key))
            .await;
        assert_eq!(post.status(), 405);
        assert_eq!(post.headers()["allow"], "GET, DELETE");
        let put = fixture
            .request("PUT", &jobs_path(&fixture), Some(&fixture.api_key))
            .await;
        assert_eq!(put.headers()["allow"], "GET");

        // Another project of the same organization does not see the job.
        let other = fixture
            .tenancy()
            .create_project(fixture.org_id, "other", None)
            .await
            .unwrap();
        // Another organization's key sees neither the project nor anything in it.
        let stranger = fixture.tenancy().create_organization("evil").await.unwrap();
        fixture.service.refresh_auth().await.unwrap();
        let other_job = format!("/api/v1/{}/jobs/{job_id}", other.project_key);
        let response = fixture.get(&other_job).await;
        assert_eq!(response.status(), 404, "{engine}");
        assert_eq!(error_message(&response), "job not found");
        let response = fixture
            .request("DELETE", &other_job, Some(&fixture.api_key))
            .await;
        assert_eq!(error_message(&response), "job not found");
        let other_list = fixture
            .get(&format!("/api/v1/{}/jobs", other.project_key))
            .await;
        assert_eq!(body_json(&other_list), serde_json::json!({"data": []}));
        for (method, target) in [
            ("GET", jobs_path(&fixture)),
            ("GET", job_path.clone()),
            ("DELETE", job_path.clone()),
            ("GET", user_path(&fixture, "alice")),
            ("DELETE", user_path(&fixture, "alice")),
        ] {
            let response = fixture
                .request(method, &target, Some(&stranger.api_key))
                .await;
            assert_eq!(response.status(), 404, "{engine} {method} {target}");
            assert_eq!(error_message(&response), "project not found");
            let response = fixture.request(method, &target, None).await;
            assert_eq!(response.status(), 401, "{engine} {method} {target}");
        }

        // Cancelled within the grace period: nothing runs, nothing is deleted.
        let response = fixture
            .request("DELETE", &job_path, Some(&fixture.api_key))
            .await;
        assert_eq!(response.status(), 200, "{engine}");
        let cancelled = body_json(&response)["data"].clone();
        assert_eq!(cancelled["status"], "cancelled");
        assert!(cancelled["updatedAt"].as_i64().unwrap() >= created);
        let response = fixture
            .request("DELETE", &job_path, Some(&fixture.api_key))
            .await;
        assert_eq!(response.status(), 409, "{engine}");
        assert_eq!(error_message(&response), "job cannot be cancelled");
        // A cancelled job never runs: beside it, an uncancelled one whose grace ends at
        // the same time runs (a runner with no start delay, so only cancellation
        // tells the two apart).
        let jobs = Jobs::new(&fixture.db.store);
        let project = fixture.project.project_id;
        let grace = Duration::from_millis(800);
        let kept = jobs.schedule_deletion(project, "bob", grace).await.unwrap();
        let gone = jobs
            .schedule_deletion(project, "carol", grace)
            .await
            .unwrap();
        let kept_path = format!("{}/{}", jobs_path(&fixture), kept.job_id);
        let response = fixture
            .request("DELETE", &kept_path, Some(&fixture.api_key))
            .await;
        assert_eq!(
            body_json(&response)["data"]["status"],
            "cancelled",
            "{engine}"
        );
        tokio::time::sleep(grace).await;
        let runner = JobRunner::new(
            fixture.db.store.clone(),
            RunnerSettings {
                poll: Duration::from_millis(100),
                lease: Duration::from_secs(5),
                start_delay: Duration::ZERO,
                settle: Duration::from_millis(100),
            },
        );
        assert_eq!(runner.run_due().await.unwrap(), 1, "{engine}: carol's only");
        let kept = jobs.get(project, kept.job_id).await.unwrap().unwrap();
        assert_eq!(kept.status, JobStatus::Cancelled, "{engine}");
        let gone = jobs.get(project, gone.job_id).await.unwrap().unwrap();
        assert_eq!(gone.status, JobStatus::Completed, "{engine}");
        let bob = fixture.get(&user_path(&fixture, "bob")).await;
        assert_eq!(
            body_json(&bob)["data"]["sessionCount"],
            1,
            "{engine}: nothing deleted"
        );
        // A new request schedules a new job (the cancelled one stays cancelled).
        let renewed = fixture
            .request("DELETE", &path, Some(&fixture.api_key))
            .await;
        assert_ne!(body_json(&renewed)["data"]["jobId"], job["jobId"]);
        fixture.finish().await;
    })
    .await;
}

/// A project id no fixture project has.
fn other_project(fixture: &Fixture) -> u32 {
    fixture.project.project_id + 1_000
}

/// Rows of another project's session `session_id` in `table`.
async fn rows_of_project(fixture: &Fixture, table: &str, project_id: u32, session_id: u64) -> u64 {
    let sql = format!(
        "SELECT count() FROM {table} WHERE project_id = {project_id} AND session_id = {session_id}"
    );
    fixture
        .db
        .store
        .client()
        .query(&sql)
        .fetch_one()
        .await
        .unwrap()
}

/// Rows of the user and of their sessions in every table that holds user data, plus
/// another user's and another project's session with the id of one of hers, so the
/// test can tell what a deletion took.
async fn write_user_data(fixture: &Fixture) {
    write_history(fixture).await;
    let store = &fixture.db.store;
    let run = |sql: String| async move {
        store.client().query(&sql).execute().await.unwrap();
    };
    for (session_id, user) in [(S11, "alice"), (S12, "alice"), (S13, "alice"), (S21, "bob")] {
        run(format!(
            "INSERT INTO session_state (session_id, version, state, updated_at) \
             VALUES ({session_id}, 3, '{{\"user\":\"{user}\"}}', now())"
        ))
        .await;
        run(format!(
            "INSERT INTO session_keys (session_id, project_id, user_id, start_ts, written_at) \
             VALUES ({session_id}, {}, '{user}', 1, now())",
            fixture.project.project_id
        ))
        .await;
        run(format!(
            "INSERT INTO session_applied (session_id, version, base_version, ranges, written_at) \
             VALUES ({session_id}, 3, 0, '[[0,2]]', now())"
        ))
        .await;
        run(format!(
            "INSERT INTO project_session_state (project_id, session_id, version, state, updated_at) \
             VALUES ({}, {session_id}, 3, '{{\"user\":\"{user}\"}}', now())",
            fixture.project.project_id
        ))
        .await;
        run(format!(
            "INSERT INTO project_session_applied \
             (project_id, session_id, version, base_version, ranges, written_at) \
             VALUES ({}, {session_id}, 3, 0, '[[0,2]]', now())",
            fixture.project.project_id
        ))
        .await;
    }
    // Another project's session with the id of one of hers: another session.
    run(format!(
        "INSERT INTO project_session_state (project_id, session_id, version, state, updated_at) \
         VALUES ({}, {S11}, 3, '{{}}', now())",
        other_project(fixture)
    ))
    .await;
    run(format!(
        "INSERT INTO session_keys (session_id, project_id, user_id, start_ts, written_at) \
         VALUES ({S11}, {}, 'zed', 1, now())",
        other_project(fixture)
    ))
    .await;
    // Session 13's old key was carol's.
    run(format!(
        "INSERT INTO session_keys (session_id, project_id, user_id, start_ts, written_at) \
         VALUES ({S13}, {}, 'carol', 2000, now())",
        fixture.project.project_id
    ))
    .await;
    let dead_letters = [
        (
            1,
            r#"{"userId": "alice", "type": "session_start"}"#.to_owned(),
        ),
        (2, format!(r#"[{{"sessionId": {S12}, "index": "x"}}]"#)),
        (3, format!(r#"{{"sessionId":"{S13}"}}"#)),
        (4, format!(r#"{{"userId":"bob","sessionId":{S21}}}"#)),
        (5, r#"{"userId":"alic"}"#.to_owned()),
    ];
    for (offset, payload) in dead_letters {
        run(format!(
            "INSERT INTO rejected_events (topic, `partition`, `offset`, element, reason, detail, payload, received_at) \
             VALUES ('t', 0, {offset}, -1, 'invalid', '', '{}', now())",
            payload.replace('\'', "\\'")
        ))
        .await;
    }
}

/// A service whose deletions start at once, on a database holding
/// [`write_user_data`]'s users.
async fn fixture_with_user_data(engine: &'static str, target: &Target, label: &str) -> Fixture {
    let fixture = Fixture::with_settings(engine, target, label, prompt_deletions).await;
    write_user_data(&fixture).await;
    fixture
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_leaves_the_user_nowhere_and_everyone_else_alone() {
    let _turn = serial::shared();
    on_every_engine("erase", |engine, target, label| async move {
        let fixture = fixture_with_user_data(engine, &target, label).await;
        let bob_before = fixture.get(&fixture.path("bob", "")).await;
        let carol_before = fixture.db.residue(&["carol".into()]).await;
        let response = fixture
            .request(
                "DELETE",
                &user_path(&fixture, "alice"),
                Some(&fixture.api_key),
            )
            .await;
        let job = body_json(&response)["data"].clone();
        assert_eq!(job["startAt"], job["createdAt"], "{engine}: no grace");
        let job_path = format!("{}/{}", jobs_path(&fixture), job["jobId"]);
        let response = fixture
            .request("DELETE", &job_path, Some(&fixture.api_key))
            .await;
        assert_eq!(
            response.status(),
            409,
            "{engine}: no grace, no cancellation"
        );

        let runner = fixture.service.job_runner();
        assert_eq!(runner.run_due().await.unwrap(), 1, "{engine}");
        let done = body_json(&fixture.get(&job_path).await)["data"].clone();
        assert_eq!(done["status"], "completed", "{engine}: {done}");
        assert!(done["updatedAt"].as_i64().unwrap() >= job["createdAt"].as_i64().unwrap());
        assert_eq!(done["errors"], Value::Null);

        // Nowhere but the job's own record, and the bare list of deleted sessions.
        let residue = fixture.db.residue(&["alice".into()]).await;
        let tables: Vec<&str> = residue.iter().map(|(table, _)| table.as_str()).collect();
        assert_eq!(tables, ["jobs"], "{engine}: {residue:?}");
        let residue = fixture
            .db
            .residue(&[S12.to_string(), S13.to_string()])
            .await;
        let mut tables: Vec<&str> = residue.iter().map(|(table, _)| table.as_str()).collect();
        tables.retain(|table| !table.starts_with("deleted_sessions"));
        assert_eq!(tables, Vec::<&str>::new(), "{engine}: {residue:?}");
        // Session 11 of her project is gone; another project's session 11 is not hers.
        for table in [
            "project_session_state",
            "project_session_applied",
            "session_keys",
        ] {
            let project = fixture.project.project_id;
            assert_eq!(
                rows_of_project(&fixture, table, project, S11).await,
                0,
                "{engine}: {table}"
            );
        }
        for table in ["project_session_state", "session_keys"] {
            let other = other_project(&fixture);
            assert_eq!(
                rows_of_project(&fixture, table, other, S11).await,
                1,
                "{engine}: {table}"
            );
        }
        for table in ["session_state", "session_applied"] {
            let sql = format!("SELECT count() FROM {table} WHERE session_id = {S11}");
            let left: u64 = fixture
                .db
                .store
                .client()
                .query(&sql)
                .fetch_one()
                .await
                .unwrap();
            assert_eq!(left, 0, "{engine}: the old {table} keeps nothing of hers");
        }
        // Everyone else's data is where it was (carol's old key went with session 13).
        let response = fixture.get(&fixture.path("bob", "")).await;
        assert_eq!(response.body(), bob_before.body(), "{engine}");
        let bob = fixture.db.residue(&["bob".into(), S21.to_string()]).await;
        let bob_tables: Vec<&str> = bob.iter().map(|(table, _)| table.as_str()).collect();
        for table in [
            "sessions",
            "session_keys",
            "session_state",
            "project_session_state",
            "rejected_events",
        ] {
            assert!(
                bob_tables.iter().any(|found| found.starts_with(table)),
                "{engine}: bob lost {table}: {bob:?}"
            );
        }
        let alic = fixture.db.residue(&[r#""alic""#.into()]).await;
        assert!(
            !alic.is_empty(),
            "{engine}: a user id that is a prefix of hers stays"
        );
        assert!(!carol_before.is_empty());
        // The API shows nothing of her.
        let response = fixture.get(&user_path(&fixture, "alice")).await;
        assert_eq!(response.status(), 404, "{engine}");
        let page = fixture.get(&fixture.path("alice", "")).await;
        assert_eq!(body_json(&page), serde_json::json!({"data": []}));
        // Deleting again: a job with nothing left to do.
        let response = fixture
            .request(
                "DELETE",
                &user_path(&fixture, "alice"),
                Some(&fixture.api_key),
            )
            .await;
        assert_ne!(body_json(&response)["data"]["jobId"], job["jobId"]);
        assert_eq!(runner.run_due().await.unwrap(), 1, "{engine}");
        let metrics = fixture.get("/metrics").await;
        let metrics = std::str::from_utf8(metrics.body()).unwrap();
        for (series, value) in [
            (r#"query_job_attempts_total{outcome="completed"}"#, "2"),
            (r#"query_job_attempts_total{outcome="failed"}"#, "0"),
            (r#"query_job_attempts_total{outcome="interrupted"}"#, "0"),
        ] {
            assert!(
                metrics
                    .lines()
                    .any(|line| line == format!("{series} {value}")),
                "{engine}: {series} {value}"
            );
        }
        fixture.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_finish_a_job_once_and_an_interrupted_one_is_resumed() {
    // Alone: a runner is cut after 700 ms of a 1.5 s lease, which must still be held
    // when the next runner looks, and lapsed 1.6 s later; a loaded machine blurs both.
    let _turn = serial::exclusive();
    on_every_engine("runners", |engine, target, label| async move {
        let fixture = fixture_with_user_data(engine, &target, label).await;
        let jobs = Jobs::new(&fixture.db.store);
        let project = fixture.project.project_id;
        let job = jobs
            .schedule_deletion(project, "alice", Duration::ZERO)
            .await
            .unwrap();
        let (first, second) = (fixture.service.job_runner(), fixture.service.job_runner());
        let (a, b) = tokio::join!(first.attempt(&job), second.attempt(&job));
        let mut outcomes = [a.unwrap(), b.unwrap()];
        outcomes.sort_by_key(|outcome| format!("{outcome:?}"));
        assert_eq!(
            outcomes,
            [
                Attempt::Finished(JobStatus::Completed),
                Attempt::LeftToOthers
            ],
            "{engine}"
        );
        let rows = jobs.rows_of(project, job.job_id).await.unwrap();
        let ends = rows.iter().filter(|row| row.status == "completed").count();
        assert_eq!(ends, 1, "{engine}: one outcome");
        assert_eq!(fixture.db.residue(&["alice".into()]).await.len(), 1);

        // A runner that dies mid-job (here: its future dropped) leaves it running;
        // once the lease lapses another runner resumes it and finishes.
        let job = jobs
            .schedule_deletion(project, "bob", Duration::ZERO)
            .await
            .unwrap();
        let cut_short = tokio::time::timeout(Duration::from_millis(700), first.attempt(&job)).await;
        assert!(cut_short.is_err(), "{engine}: still settling when cut");
        let running = jobs.get(project, job.job_id).await.unwrap().unwrap();
        assert_eq!(running.status, JobStatus::Running, "{engine}");
        assert_eq!(
            second.run_due().await.unwrap(),
            0,
            "{engine}: lease still held"
        );
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        assert_eq!(second.run_due().await.unwrap(), 1, "{engine}");
        let done = jobs.get(project, job.job_id).await.unwrap().unwrap();
        assert_eq!(done.status, JobStatus::Completed, "{engine}");
        assert_eq!(done.latest.attempt, 2);
        let residue = fixture.db.residue(&["bob".into()]).await;
        let tables: Vec<&str> = residue.iter().map(|(table, _)| table.as_str()).collect();
        assert_eq!(tables, ["jobs"], "{engine}: {residue:?}");
        fixture.finish().await;
    })
    .await;
}
