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

use crate::common::{assert_counts_agree, served_sessions, wait_for_sessions, Fixture};
use serde_json::Value;
use sessions_query::{QueryService, Settings};
use sessions_shared::read_model::Session;
use sessions_testkit::api::api_json;
use sessions_testkit::clickhouse::clickhouse_engines;
use sessions_testkit::serial;
use sessions_testkit::task::AbortOnDrop;
use sessions_testkit::workload::{scramble, Workload, WorkloadConfig};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projects_sending_the_same_session_ids_keep_separate_exact_sessions() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let started = Instant::now();
        let (fixture, org, [first, second]) =
            Fixture::with_projects(&target, "projects", 4, ["first", "second"]).await;

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
                Order::Mixed => {
                    let both = ours_events.into_iter().chain(theirs_events).collect();
                    messages.extend(scramble(both, group as u64, 0.2));
                }
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
                    let got =
                        served_sessions(&service, &org.api_key, &project.project_key, user).await;
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
