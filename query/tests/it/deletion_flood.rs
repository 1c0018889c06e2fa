//! A flood of deletions of users nobody stored, as any API key can request, does not
//! hold back the deletion of a real user: the project's open jobs are bounded (429
//! with `Retry-After` past `MAX_OPEN_JOBS`), due deletions are erased together, and a
//! deletion costs ClickHouse a bounded number of mutations (users with nothing stored
//! cost none).

use std::time::{Duration, Instant};

use crate::common::{body_json, error_message, next_link, session, Fixture};
use sessions_query::Settings;
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::serial;

/// Deletions requested for users never seen.
const FLOOD: usize = 10_000;
/// Requests in flight during the flood.
const CONCURRENCY: usize = 8;
/// How long the real user's deletion may take, from its first request to `completed`.
const REAL_DELETION_BOUND: Duration = Duration::from_secs(60);
/// Mutations the whole test may cause: the real user's one round, one per table a
/// deletion mutates (8: `Deletion::deleted_conditions`); a second round (rows
/// written while it ran) would exceed it, and nothing writes the user's rows here.
const MUTATION_BOUND: u64 = 8;
/// A deletion's wait between marking and erasing: seconds, as in production (30 s
/// there), so that a runner paying it once per job cannot pass. Such a runner falls
/// behind the flood, which then fills the project up to `MAX_OPEN_JOBS` (1,000) open
/// jobs ahead of the real one, each costing it 3 s and `CLAIM_SETTLE`: far past
/// `REAL_DELETION_BOUND`. Batched, the runner keeps up with the flood and pays the
/// settle once per batch of up to 1,000: the real deletion takes a few seconds. A
/// settle of a few hundred milliseconds, no longer than a claim's own wait, would
/// leave the per-job cost to `CLAIM_SETTLE` and test the batching far less sharply.
const DELETION_SETTLE: Duration = Duration::from_secs(3);

fn prompt_deletions(settings: &mut Settings) {
    settings.deletion_grace = Duration::ZERO;
    settings.deletion_settle = DELETION_SETTLE;
    settings.jobs_poll = Duration::from_millis(200);
}

fn user_path(fixture: &Fixture, user: &str) -> String {
    format!("/api/v1/{}/users/{user}", fixture.project.project_key)
}

/// Mutations of the fixture's database, from `system.mutations` (one server).
async fn mutations(fixture: &Fixture) -> u64 {
    let store = &fixture.db.store;
    store
        .client()
        .query("SELECT count() FROM system.mutations WHERE database = ?")
        .bind(store.database())
        .fetch_one::<u64>()
        .await
        .unwrap()
}

fn metric(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_user_deletions_does_not_hold_back_a_real_one() {
    let _turn = serial::shared();
    let fixture = Fixture::with_settings(
        "clickhouse-18.16",
        &legacy_target(),
        "flood",
        prompt_deletions,
    )
    .await;
    let project = fixture.project.project_id;
    let real: Vec<_> = (0..20)
        .map(|n| {
            session(
                project,
                "real-user",
                7_303_000_000_000_000 + n,
                1_000 + n as i64,
            )
        })
        .collect();
    fixture.insert_live(&real, 1).await;

    // The runner, as every replica runs it, all along; the flood, accepted up to the
    // bound of open jobs, refused past it; then the real user's deletion, retried
    // while the project is at its bound.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = fixture.service.spawn_job_runner(stopped.into());
    let started = Instant::now();
    let lanes = (0..CONCURRENCY).map(|lane| {
        let fixture = &fixture;
        async move {
            let mut answers = Vec::new();
            for n in (lane..FLOOD).step_by(CONCURRENCY) {
                let response = fixture
                    .request(
                        "DELETE",
                        &user_path(fixture, &format!("nobody-{n}")),
                        Some(&fixture.api_key),
                    )
                    .await;
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|value| value.to_str().unwrap().to_owned());
                let message = if response.status() == 200 {
                    body_json(&response)["data"]["jobId"].to_string()
                } else {
                    error_message(&response)
                };
                answers.push((response.status().as_u16(), retry_after, message));
            }
            answers
        }
    });
    let answers: Vec<_> = futures::future::join_all(lanes)
        .await
        .into_iter()
        .flatten()
        .collect();
    let accepted = answers.iter().filter(|(status, ..)| *status == 200).count();
    eprintln!(
        "flood: {FLOOD} requests in {:.1} s, {accepted} accepted",
        started.elapsed().as_secs_f64()
    );
    let first_request = Instant::now();
    let job = loop {
        let response = fixture
            .request(
                "DELETE",
                &user_path(&fixture, "real-user"),
                Some(&fixture.api_key),
            )
            .await;
        if response.status() == 200 {
            break body_json(&response)["data"].clone();
        }
        assert_eq!(response.status(), 429, "{}", error_message(&response));
        assert!(
            first_request.elapsed() < REAL_DELETION_BOUND,
            "the real deletion was refused for {REAL_DELETION_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let job_path = format!(
        "/api/v1/{}/jobs/{}",
        fixture.project.project_key, job["jobId"]
    );
    let took = loop {
        let status = body_json(&fixture.get(&job_path).await)["data"]["status"].clone();
        if status == "completed" {
            break first_request.elapsed();
        }
        assert!(
            first_request.elapsed() < REAL_DELETION_BOUND,
            "the real user's deletion is still {status} after {REAL_DELETION_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let issued = mutations(&fixture).await;
    eprintln!(
        "real deletion completed {:.1} s after its first request; {issued} mutations in all",
        took.as_secs_f64()
    );
    let page = fixture.get(&fixture.path("real-user", "")).await;
    assert_eq!(body_json(&page), serde_json::json!({"data": []}));
    assert!(issued >= 1, "the real user's rows needed a mutation");
    assert!(
        issued <= MUTATION_BOUND,
        "{issued} mutations for one real deletion"
    );
    let metrics = fixture.get("/metrics").await;
    let metrics = std::str::from_utf8(metrics.body()).unwrap();
    assert_eq!(
        metric(metrics, "query_deletion_mutations_total"),
        Some(issued),
        "the metric counts every ALTER … DELETE"
    );

    // Refusals, if the runner fell behind the flood, were the bound's: 429 with
    // Retry-After and the API's error shape.
    for (status, retry_after, message) in &answers {
        if *status == 200 {
            continue;
        }
        assert_eq!(*status, 429, "{message}");
        let seconds: u64 = retry_after.as_deref().unwrap().parse().unwrap();
        assert!(seconds >= 1);
        assert_eq!(message, "too many open jobs in this project, retry later");
    }

    // Every job is listed once, newest first, across pages; all are done.
    let wait_for_all = Instant::now();
    loop {
        let mut path = format!("/api/v1/{}/jobs?limit=1000", fixture.project.project_key);
        let mut listed = Vec::new();
        loop {
            let response = fixture.get(&path).await;
            assert_eq!(response.status(), 200);
            listed.extend(body_json(&response)["data"].as_array().unwrap().clone());
            match next_link(&response) {
                Some(next) => path = next,
                None => break,
            }
        }
        // Every job the API answered with (two requests in the same millisecond may
        // draw the same id: `Jobs`' contract), each listed once.
        let mut answered: Vec<String> = answers
            .iter()
            .filter(|(status, ..)| *status == 200)
            .map(|(.., job_id)| job_id.clone())
            .chain(std::iter::once(job["jobId"].to_string()))
            .collect();
        answered.sort_unstable();
        answered.dedup();
        let mut listed_ids: Vec<String> =
            listed.iter().map(|job| job["jobId"].to_string()).collect();
        listed_ids.sort_unstable();
        assert_eq!(listed_ids, answered);
        let ids: Vec<u64> = listed
            .iter()
            .map(|job| job["jobId"].as_u64().unwrap())
            .collect();
        assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "newest first");
        if listed.iter().all(|job| job["status"] == "completed") {
            break;
        }
        assert!(wait_for_all.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.send(true).unwrap();
    runner.abort();
    fixture.finish().await;
}

/// The bound counts a project's open jobs only: a repeated request for a user whose
/// deletion is scheduled returns that job (even at the bound), another project is not
/// held back, a cancelled job frees its place; the jobs list pages with `Link`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_open_jobs_are_bounded_and_a_repeated_request_counts_once() {
    let _turn = serial::shared();
    let fixture = Fixture::with_settings("clickhouse-18.16", &legacy_target(), "bound", |s| {
        s.max_open_jobs = 3
    })
    .await;
    let delete = |user: &'static str| {
        let fixture = &fixture;
        async move {
            fixture
                .request("DELETE", &user_path(fixture, user), Some(&fixture.api_key))
                .await
        }
    };
    let mut ids = Vec::new();
    for user in ["u0", "u1", "u2"] {
        let response = delete(user).await;
        assert_eq!(response.status(), 200, "{user}");
        ids.push(body_json(&response)["data"]["jobId"].as_u64().unwrap());
    }
    let refused = delete("u3").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["content-type"], "application/json");
    assert_eq!(
        error_message(&refused),
        "too many open jobs in this project, retry later"
    );
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The earliest job starts in an hour (DELETION_GRACE_SECS), then takes
    // DELETION_SETTLE_MS (30 s) and JOBS_POLL_MS (2 s).
    assert!((3_600..=3_632).contains(&retry_after), "{retry_after}");
    let again = delete("u1").await;
    assert_eq!(again.status(), 200, "a scheduled user's job is returned");
    assert_eq!(body_json(&again)["data"]["jobId"], ids[1]);

    let other = fixture
        .tenancy()
        .create_project(fixture.org_id, "other", None)
        .await
        .unwrap();
    fixture.service.refresh_auth().await.unwrap();
    let elsewhere = fixture
        .request(
            "DELETE",
            &format!("/api/v1/{}/users/u3", other.project_key),
            Some(&fixture.api_key),
        )
        .await;
    assert_eq!(elsewhere.status(), 200, "another project is not held back");

    let jobs = format!("/api/v1/{}/jobs", fixture.project.project_key);
    let cancelled = fixture
        .request(
            "DELETE",
            &format!("{jobs}/{}", ids[0]),
            Some(&fixture.api_key),
        )
        .await;
    assert_eq!(cancelled.status(), 200);
    let now_accepted = delete("u3").await;
    assert_eq!(
        now_accepted.status(),
        200,
        "a cancelled job frees its place"
    );
    ids.push(body_json(&now_accepted)["data"]["jobId"].as_u64().unwrap());

    // Pages of 3, then 1: every job once, newest first; the link keeps the query.
    let first = fixture.get(&format!("{jobs}?limit=3&x=1")).await;
    assert_eq!(first.status(), 200);
    let next = next_link(&first).expect("a second page");
    assert!(
        next.starts_with(&format!("{jobs}?limit=3&x=1&cursor=")),
        "{next}"
    );
    let second = fixture.get(&next).await;
    assert_eq!(next_link(&second), None);
    let listed: Vec<u64> = [&first, &second]
        .iter()
        .flat_map(|page| body_json(page)["data"].as_array().unwrap().clone())
        .map(|job| job["jobId"].as_u64().unwrap())
        .collect();
    let mut newest_first = ids.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(listed, newest_first);
    let whole = fixture.get(&jobs).await;
    assert_eq!(body_json(&whole)["data"].as_array().unwrap().len(), 4);
    assert_eq!(next_link(&whole), None, "50 by default");
    // A cursor of another project, or edited, is 400.
    let cursor = next.rsplit_once("cursor=").unwrap().1;
    let other_jobs = format!("/api/v1/{}/jobs?cursor={cursor}", other.project_key);
    let misplaced = fixture.get(&other_jobs).await;
    assert_eq!(misplaced.status(), 400);
    assert!(error_message(&misplaced).contains("cursor"));
    let edited = fixture.get(&format!("{jobs}?cursor=A{cursor}")).await;
    assert_eq!(edited.status(), 400);
    fixture.finish().await;
}
