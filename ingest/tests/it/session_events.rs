//! The second read model end to end, on every engine: a seeded stream (duplicates,
//! every listed type, custom events) through the worker, then
//! - for every session, the stored events agree with its row: `LOCATION` = `pagesCount`,
//!   `LOCATION` + `CLICK` + `INPUT` = `eventsCount`, `ERROR` = `errorsCount`
//!   (`common::assert_counts_agree`, which the fault tests call too);
//! - the events endpoint lists each session's events exactly as they were sent (each
//!   index once, in `(timestamp, messageId)` order, the texts of each type), also
//!   walking small pages through `Link`;
//! - 404 for a session of another project, an unknown one, and 400 for a bad id; a
//!   session with no listed event is `{"data": []}`.

use std::time::Duration;

use crate::common::{assert_counts_agree, wait_for_sessions, Fixture};
use serde_json::Value;
use sessions_query::{QueryService, Settings};
use sessions_testkit::clickhouse::clickhouse_engines;
use sessions_testkit::serial;
use sessions_testkit::task::AbortOnDrop;
use sessions_testkit::worker::InProcessWorker;
use sessions_testkit::workload::{Workload, WorkloadConfig};

struct Api {
    service: QueryService,
    api_key: String,
    /// Key reloads, as in production (keys older than their maximum age are refused).
    _key_reloads: AbortOnDrop,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Option<String>, Value) {
        let response = warp::test::request()
            .path(path)
            .header("authorization", &self.api_key)
            .reply(&self.service.routes())
            .await;
        let link = response
            .headers()
            .get("link")
            .map(|value| value.to_str().unwrap().to_owned());
        let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (response.status().as_u16(), link, body)
    }

    /// Every event of the session through pages of `limit`, following `Link`.
    async fn all_events(&self, project_key: &str, session_id: u64, limit: u32) -> Vec<Value> {
        let mut path = Some(format!(
            "/api/v1/{project_key}/sessions/{session_id}/events?limit={limit}"
        ));
        let mut events = Vec::new();
        while let Some(current) = path.take() {
            let (status, link, body) = self.get(&current).await;
            assert_eq!(status, 200, "{current}: {body}");
            let page = body["data"].as_array().expect("data").clone();
            assert!(page.len() <= limit as usize);
            events.extend(page);
            path = link.map(|link| {
                link.trim_start_matches('<')
                    .split_once('>')
                    .expect("a Link target")
                    .0
                    .to_owned()
            });
        }
        events
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_events_are_stored_once_and_listed_as_sent() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let (fixture, org, [project, other]) =
            Fixture::with_projects(&target, "events", 2, ["web", "other"]).await;
        let workload = Workload::generate(&WorkloadConfig {
            seed: 26,
            project_id: project.project_id,
            sessions: 40,
            events_per_session: 30,
            duplicate_rate: 0.2,
            first_session_id: 2_600_000_000_001,
            ..WorkloadConfig::default()
        });
        fixture.produce(&workload.messages).await;
        let worker = InProcessWorker::start(fixture.settings(&[])).await;
        wait_for_sessions(
            fixture.store(),
            &workload.expected_rows(),
            Duration::from_secs(120),
        )
        .await;
        // A session with only its start: listed, with no events.
        let bare_session = 2_699_999_999_999u64;
        let start = format!(
            r#"{{"type":"session_start","projectId":{},"sessionId":"{bare_session}","index":0,"timestamp":1700000000000,"userUuid":"9cda99e3-3d0b-4428-bcfd-ebf7a2f3614e"}}"#,
            project.project_id
        );
        fixture.produce_raw(&[start.into_bytes()]).await;
        let compared = assert_counts_agree(fixture.store(), Duration::from_secs(30)).await;
        assert!(compared >= 35, "{engine}: {compared} sessions with counts");

        let mut settings = Settings::new(fixture.db.settings.clone());
        settings.deletion_grace = Duration::ZERO;
        let service = QueryService::new(&settings).unwrap();
        service.refresh_auth().await.unwrap();
        let api = Api {
            _key_reloads: AbortOnDrop(service.spawn_auth_refresher()),
            service,
            api_key: org.api_key.clone(),
        };
        let key = &project.project_key;
        let mut listed = 0;
        for (position, session) in workload.sessions.iter().enumerate() {
            let expected = Workload::expected_events(session);
            // Whole pages for most; small pages through the links for some.
            let limit = if position % 5 == 0 { 3 } else { 10_000 };
            let events = api.all_events(key, session.session_id, limit).await;
            assert_eq!(events, expected, "{engine}: session {}", session.session_id);
            listed += events.len();
        }
        assert!(listed > 500, "{engine}: {listed} events listed");
        assert!(
            workload
                .sessions
                .iter()
                .flat_map(Workload::expected_events)
                .any(|event| event["type"] == "CUSTOM"),
            "{engine}: the stream has custom events"
        );

        let first = workload.sessions[0].session_id;
        let bare = format!("/api/v1/{key}/sessions/{bare_session}/events");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (mut status, _, mut body) = api.get(&bare).await;
        while status == 404 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (status, _, body) = api.get(&bare).await;
        }
        assert_eq!(
            (status, body),
            (200, serde_json::json!({"data": []})),
            "{engine}"
        );
        let (status, _, body) = api
            .get(&format!(
                "/api/v1/{}/sessions/{first}/events",
                other.project_key
            ))
            .await;
        assert_eq!(
            (status, body),
            (404, serde_json::json!({"errors": ["session not found"]})),
            "{engine}: another project's session"
        );
        let (status, _, _) = api.get(&format!("/api/v1/{key}/sessions/1/events")).await;
        assert_eq!(status, 404, "{engine}: an unknown session");
        for bad in ["0", "x", "18446744073709551616", "-1"] {
            let (status, _, body) = api
                .get(&format!("/api/v1/{key}/sessions/{bad}/events"))
                .await;
            assert_eq!(status, 400, "{engine}: {bad}");
            assert!(
                body["errors"][0].as_str().unwrap().contains("sessionId"),
                "{body}"
            );
        }
        // A cursor is bound to its session.
        let (_, link, _) = api
            .get(&format!("/api/v1/{key}/sessions/{first}/events?limit=1"))
            .await;
        let cursor = link
            .expect("a next link")
            .split("cursor=")
            .nth(1)
            .unwrap()
            .split('>')
            .next()
            .unwrap()
            .to_owned();
        let second = workload.sessions[1].session_id;
        let (status, _, _) = api
            .get(&format!(
                "/api/v1/{key}/sessions/{second}/events?cursor={cursor}"
            ))
            .await;
        assert_eq!(status, 400, "{engine}: another session's cursor");
        worker.stop().await;
    }
}
