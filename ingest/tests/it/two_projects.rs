//! Sessions belong to their project (docs/events.md, "Sessions belong to their
//! project"): two projects' producers send the same session ids, each with its own
//! events, through the real broker and worker into ClickHouse, on every engine. The
//! indexes of the two projects interleave (one project's are all even, the other's
//! odd), in four groups of session ids that cover every order: the lower-indexed
//! project's events sent first, last, or the other way round, and both projects'
//! events shuffled into batches that mix sessions and projects (some keyless, so
//! events are forwarded to their home partition). Afterwards
//! - every session row of both projects equals its project's reference, field by
//!   field: nothing of one project counted in, moved into or changed the other's;
//! - through the API, each project serves each user (the same user ids in both
//!   projects) exactly that project's sessions, none of the other project's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::{assert_counts_agree, wait_for_sessions, Fixture};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sessions_control::tenancy::Tenancy;
use sessions_query::{QueryService, Settings};
use sessions_shared::read_model::Session;
use sessions_testkit::clickhouse::clickhouse_engines;
use sessions_testkit::serial;
use sessions_testkit::task::AbortOnDrop;
use sessions_testkit::workload::{Workload, WorkloadConfig};

/// How one group of shared session ids is sent.
#[derive(Clone, Copy, Debug)]
enum Order {
    FirstProjectFirst,
    SecondProjectFirst,
    /// Both projects' events shuffled together into mixed batches.
    Mixed,
}

/// One group: its first session id, which project has the lower (even) indexes, and
/// the order its messages are sent in.
const GROUPS: [(u64, bool, Order); 4] = [
    (5_000_000_000_000_000, false, Order::SecondProjectFirst),
    (5_100_000_000_000_000, false, Order::FirstProjectFirst),
    (5_200_000_000_000_000, true, Order::SecondProjectFirst),
    (5_300_000_000_000_000, false, Order::Mixed),
];

/// The workload's events with every index `i` replaced by `2i + odd`: order is kept,
/// so the expected rows are the workload's.
fn with_indexes(workload: &Workload, odd: bool) -> Vec<Value> {
    let mut events = Vec::new();
    for message in &workload.messages {
        let mut remap = |mut event: Value| {
            let index = event["index"].as_u64().unwrap();
            event["index"] = (2 * index + u64::from(odd)).into();
            event
        };
        match serde_json::from_slice(&message.payload).unwrap() {
            Value::Array(batch) => {
                events.push(Value::Array(batch.into_iter().map(&mut remap).collect()))
            }
            event => events.push(remap(event)),
        }
    }
    events
}

fn session_key(event: &Value) -> String {
    let event = if event.is_array() { &event[0] } else { event };
    let session_id = &event["sessionId"];
    session_id
        .as_str()
        .map_or_else(|| session_id.to_string(), str::to_owned)
}

fn keyed(payloads: Vec<Value>) -> Vec<(Option<String>, Vec<u8>)> {
    payloads
        .into_iter()
        .map(|payload| {
            (
                Some(session_key(&payload)),
                serde_json::to_vec(&payload).unwrap(),
            )
        })
        .collect()
}

/// Both projects' events shuffled, in batches of 1 to 6 that mix sessions and
/// projects, keyed by their first event's session; a fifth of them keyless.
fn mixed(first: Vec<Value>, second: Vec<Value>, seed: u64) -> Vec<(Option<String>, Vec<u8>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events: Vec<Value> = Vec::new();
    for payload in first.into_iter().chain(second) {
        match payload {
            Value::Array(batch) => events.extend(batch),
            event => events.push(event),
        }
    }
    events.shuffle(&mut rng);
    let mut messages = Vec::new();
    let mut rest = events.as_slice();
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at(rng.gen_range(1..=6).min(rest.len()));
        rest = tail;
        let key = (!rng.gen_bool(0.2)).then(|| session_key(&batch[0]));
        messages.push((key, serde_json::to_vec(batch).unwrap()));
    }
    messages
}

/// The API's form of a session (docs/api.md).
fn api_json(session: &Session) -> Value {
    serde_json::json!({
        "projectId": session.project_id,
        "sessionId": session.session_id.to_string(),
        "userUuid": session.user_uuid,
        "userId": session.user_id,
        "userAgent": session.user_agent,
        "userOs": session.user_os,
        "userBrowser": session.user_browser,
        "userDevice": session.user_device,
        "userCountry": session.user_country,
        "startTs": session.start_ts,
        "duration": session.duration,
        "eventsCount": session.events_count,
        "pagesCount": session.pages_count,
        "errorsCount": session.errors_count,
    })
}

/// Every session of `user` the sessions endpoint serves under `project_key`,
/// following `next` links.
async fn served(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projects_sending_the_same_session_ids_keep_separate_exact_sessions() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let started = Instant::now();
        let fixture = Fixture::new(&target, "projects", 4).await;
        let tenancy = Tenancy::new(fixture.store());
        let org = tenancy.create_organization("acme").await.unwrap();
        let first = tenancy
            .create_project(org.org_id, "first", None)
            .await
            .unwrap();
        let second = tenancy
            .create_project(org.org_id, "second", None)
            .await
            .unwrap();

        let mut expected: Vec<Session> = Vec::new();
        let mut messages: Vec<(Option<String>, Vec<u8>)> = Vec::new();
        for (group, (first_session_id, first_is_lower, order)) in GROUPS.into_iter().enumerate() {
            let generate = |project_id: u32, seed: u64| {
                Workload::generate(&WorkloadConfig {
                    seed,
                    project_id,
                    sessions: 30,
                    events_per_session: 8,
                    users: 6,
                    first_session_id,
                    ..WorkloadConfig::default()
                })
            };
            let ours = generate(first.project_id, 100 + group as u64);
            let theirs = generate(second.project_id, 200 + group as u64);
            expected.extend(ours.expected_rows());
            expected.extend(theirs.expected_rows());
            let ours_events = with_indexes(&ours, !first_is_lower);
            let theirs_events = with_indexes(&theirs, first_is_lower);
            match order {
                Order::FirstProjectFirst => {
                    messages.extend(keyed(ours_events));
                    messages.extend(keyed(theirs_events));
                }
                Order::SecondProjectFirst => {
                    messages.extend(keyed(theirs_events));
                    messages.extend(keyed(ours_events));
                }
                Order::Mixed => messages.extend(mixed(ours_events, theirs_events, group as u64)),
            }
        }
        fixture.produce_keyed(&messages).await;
        let worker = sessions_testkit::worker::InProcessWorker::start(fixture.settings(&[])).await;
        wait_for_sessions(fixture.store(), &expected, Duration::from_secs(120)).await;
        assert_counts_agree(fixture.store(), Duration::from_secs(30)).await;

        let service = QueryService::new(&Settings::new(fixture.db.settings.clone())).unwrap();
        service.refresh_auth().await.unwrap();
        // Key reloads as in production (keys older than AUTH_MAX_AGE_MS are refused).
        let _key_reloads = AbortOnDrop(service.spawn_auth_refresher());
        let mut by_project_and_user: BTreeMap<(u32, String), Vec<&Session>> = BTreeMap::new();
        for session in &expected {
            by_project_and_user
                .entry((session.project_id, session.user_id.clone()))
                .or_default()
                .push(session);
        }
        let users: std::collections::BTreeSet<&str> = expected
            .iter()
            .map(|session| session.user_id.as_str())
            .filter(|user| !user.is_empty())
            .collect();
        assert!(users.len() >= 4, "{engine}: {users:?}");
        for user in users {
            for project in [&first, &second] {
                let mut wanted: Vec<&Session> = by_project_and_user
                    .get(&(project.project_id, user.to_owned()))
                    .cloned()
                    .unwrap_or_default();
                wanted.sort_by_key(|session| (session.start_ts, session.session_id));
                let wanted: Vec<Value> = wanted.into_iter().map(api_json).collect();
                // On a cluster a replica may still be fetching a part the other
                // acknowledged: ask again for a few seconds.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let got = served(&service, &org.api_key, &project.project_key, user).await;
                    if got == wanted || Instant::now() > deadline {
                        assert_eq!(got, wanted, "{engine}: {user} in {}", project.name);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        worker.stop().await;
        eprintln!(
            "{engine}: {} sessions of two projects exact after {:?}",
            expected.len(),
            started.elapsed()
        );
        fixture.db.drop_database().await;
    }
}
