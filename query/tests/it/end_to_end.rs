//! End to end: seeded tracker events produced to the real broker → `sessions-ingest`
//! → ClickHouse → `sessions-query` returns the reference result for every user,
//! following `Link` pages.

use std::time::{Duration, Instant};

use crate::common;
use rand::Rng;
use serde_json::Value;
use sessions_control::tenancy::Tenancy;
use sessions_testkit::api::api_json;
use sessions_testkit::clickhouse::{layouts, Target, TestDatabase};
use sessions_testkit::kafka::{brokers, create_producer, create_topic, produce_all};
use sessions_testkit::serial;
use sessions_testkit::task::AbortOnDrop;
use sessions_testkit::worker::{InProcessWorker, WorkerFlags};
use sessions_testkit::workload::{Workload, WorkloadConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_through_kafka_and_ingest_come_back_exactly_from_the_api() {
    let _turn = serial::shared();
    for (layout, target) in layouts() {
        let started = Instant::now();
        end_to_end(&target).await;
        eprintln!(
            "{layout}: exact through the API after {:?}",
            started.elapsed()
        );
    }
}

async fn end_to_end(target: &Target) {
    let brokers = brokers();
    let db = TestDatabase::create(target, "e2e").await.unwrap();
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

    let ingest_settings = WorkerFlags::new(&db.settings, &brokers, &topic).settings(&[]);
    let ingest = InProcessWorker::start(ingest_settings).await;

    let service =
        sessions_query::QueryService::new(&sessions_query::Settings::new(db.settings.clone()))
            .unwrap();
    service.refresh_auth().await.unwrap();
    let _key_reloads = AbortOnDrop(service.spawn_auth_refresher());
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
            let actual = common::fetch_all_pages(&routes, &org.api_key, first.clone())
                .await
                .unwrap_or_else(|status| panic!("{first}: status {status}"));
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
