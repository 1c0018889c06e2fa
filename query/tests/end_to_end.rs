//! End to end: seeded tracker events produced to the real broker → `sessions-ingest`
//! → ClickHouse → `sessions-query` returns the reference result for every user,
//! following `Link` pages.

mod common;

use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use sessions_shared::read_model::Session;
use sessions_shared::tenancy::Tenancy;
use sessions_testkit::clickhouse::{clickhouse_engines, TestDatabase};
use sessions_testkit::kafka::{create_producer, create_topic, produce_all};
use sessions_testkit::workload::{Workload, WorkloadConfig};

use common::IngestWorker;

fn api_json(session: &Session) -> Value {
    json!({
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

/// Every page of one user's sessions, following `Link: <…>; rel="next"`.
async fn fetch_all_pages(
    routes: &(impl warp::Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible>
          + Clone
          + 'static),
    api_key: &str,
    first_path: String,
) -> Vec<Value> {
    let mut sessions = Vec::new();
    let mut path = Some(first_path);
    while let Some(current) = path.take() {
        let response = warp::test::request()
            .method("GET")
            .path(&current)
            .header("authorization", api_key)
            .reply(routes)
            .await;
        assert_eq!(response.status(), 200, "{current}: {:?}", response.body());
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        sessions.extend(body["data"].as_array().unwrap().iter().cloned());
        path = response.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_owned()
        });
    }
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_through_kafka_and_ingest_come_back_exactly_from_the_api() {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let url = clickhouse_engines()[0].1.clone();
    let db = TestDatabase::create(&url, "e2e").await.unwrap();
    let tenancy = Tenancy::new(&db.store);
    let org = tenancy.create_organization("e2e").await.unwrap();
    let project = tenancy
        .create_project(org.org_id, "web", None)
        .await
        .unwrap();

    let topic = format!("t-e2e-{:08x}", rand::thread_rng().gen::<u32>());
    create_topic(&brokers, &topic, 3).await.unwrap();
    let workload = Workload::generate(&WorkloadConfig {
        seed: 2024,
        project_id: project.project_id,
        sessions: 250,
        events_per_session: 15,
        users: 12,
        ..WorkloadConfig::default()
    });
    let producer = create_producer(&brokers).unwrap();
    produce_all(
        &producer,
        &topic,
        workload
            .messages
            .iter()
            .map(|m| (Some(m.key.as_str()), m.payload.as_slice())),
    )
    .await
    .unwrap();

    let ingest = IngestWorker::start(
        &topic,
        &url,
        db.store.database(),
        &["--flush-interval", "200"],
    )
    .await;

    let service =
        sessions_query::QueryService::new(&sessions_query::Settings::new(db.settings.clone()))
            .unwrap();
    service.refresh_auth().await.unwrap();
    let routes = service.routes();

    let expected_by_user = workload.expected_by_user();
    let started = Instant::now();
    for (user, expected) in expected_by_user.iter().filter(|(user, _)| !user.is_empty()) {
        let expected: Vec<Value> = expected.iter().map(api_json).collect();
        let encoded = user.replace('@', "%40");
        let first = format!(
            "/api/v1/{}/users/{encoded}/sessions?limit=7",
            project.project_key
        );
        loop {
            let actual = fetch_all_pages(&routes, &org.api_key, first.clone()).await;
            if actual == expected {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "user {user}: got {} sessions, expected {}; first expected {:#}, first got {:#}",
                actual.len(),
                expected.len(),
                expected[0],
                actual.first().cloned().unwrap_or(Value::Null)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    ingest.stop().await;
    db.drop_database().await;
}
