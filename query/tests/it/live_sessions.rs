//! Live sessions end to end: tracker events through the real broker and the in-process
//! worker, read back from `GET …/assist/sessions` with a short `LIVE_SESSION_SECS`, on
//! every engine: ended sessions are not live, quiet ones leave the window and a late
//! event brings them back, the `userId` filter, `Link` pages, other projects unseen.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{body_json, body_text, next_link, Fixture};
use rand::Rng;
use serde_json::{json, Value};
use sessions_testkit::clickhouse::clickhouse_engines;
use sessions_testkit::kafka::{brokers, create_producer, create_topic, produce_all};
use sessions_testkit::serial;
use sessions_testkit::worker::{InProcessWorker, WorkerFlags};

/// `LIVE_SESSION_SECS` of these tests.
const WINDOW_SECS: u64 = 4;

/// One tracker event; a `session_start` names its user. Client timestamps are years
/// old: liveness is measured on the service's clock, never on theirs.
fn event(project_id: u32, session_id: u64, index: u64, kind: &str, user: &str) -> Value {
    let mut event = json!({"projectId": project_id, "sessionId": session_id.to_string(),
        "index": index, "timestamp": 1_623_440_000_000_i64 + session_id as i64 * 1000 + index as i64,
        "type": kind});
    if kind == "session_start" {
        event["userId"] = json!(user);
        event["userUuid"] = json!("15bd70f6-aedf-4544-8ae6-57eb66398e94");
        event["userAgent"] =
            json!("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:89.0) Gecko/20100101 Firefox/89.0");
        event["userCountry"] = json!("in");
    }
    event
}

async fn send(topic: &str, events: &[Value]) {
    let producer = create_producer(&brokers()).unwrap();
    let payloads: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|event| {
            (
                event["sessionId"].as_str().unwrap().to_owned(),
                serde_json::to_vec(event).unwrap(),
            )
        })
        .collect();
    produce_all(
        &producer,
        topic,
        payloads
            .iter()
            .map(|(key, payload)| (Some(key.as_str()), payload.as_slice())),
    )
    .await
    .unwrap();
}

/// Every page of `first`, following `Link`: the session ids in order, and each page's
/// `total`.
async fn all_pages(fixture: &Fixture, api_key: &str, first: &str) -> (Vec<u64>, Vec<u64>) {
    let mut ids = Vec::new();
    let mut totals = Vec::new();
    let mut path = Some(first.to_owned());
    while let Some(current) = path.take() {
        let response = fixture.request("GET", &current, Some(api_key)).await;
        assert_eq!(
            response.status(),
            200,
            "{current}: {}",
            body_text(&response)
        );
        let body = body_json(&response);
        totals.push(body["data"]["total"].as_u64().unwrap());
        for session in body["data"]["sessions"].as_array().unwrap() {
            assert_eq!(session.as_object().unwrap().len(), 14, "{session}");
            ids.push(session["sessionId"].as_str().unwrap().parse().unwrap());
        }
        path = next_link(&response);
    }
    (ids, totals)
}

/// Waits (30 s at most) until the live sessions of `path` are `expected`, in order.
async fn wait_for_live(fixture: &Fixture, api_key: &str, path: &str, expected: &[u64], what: &str) {
    let started = Instant::now();
    loop {
        let (ids, totals) = all_pages(fixture, api_key, path).await;
        if ids == expected && totals.iter().all(|total| *total == expected.len() as u64) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}: {what}: live {ids:?} (totals {totals:?}), expected {expected:?}",
            fixture.engine
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_are_those_the_worker_touched_within_the_window_and_not_ended() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::with_settings(engine, &target, "live", |settings| {
            settings.live_session = Duration::from_secs(WINDOW_SECS);
        })
        .await;
        // A project created through the API: the worker takes its events at once.
        let created = warp::test::request()
            .method("POST")
            .path("/api/v1/projects")
            .header("authorization", fixture.api_key.as_str())
            .body(r#"{"name": "live"}"#)
            .reply(&fixture.service.routes())
            .await;
        assert_eq!(created.status(), 200, "{engine}: {}", body_text(&created));
        let key = body_json(&created)["data"]["projectKey"]
            .as_str()
            .unwrap()
            .to_owned();
        let project = body_json(&fixture.get(&format!("/api/v1/projects/{key}")).await)["data"]
            ["projectId"]
            .as_u64()
            .unwrap() as u32;
        let other_project = fixture.project.project_id;

        let topic = format!("t-live-{:08x}", rand::thread_rng().gen::<u32>());
        create_topic(&brokers(), &topic, 2).await.unwrap();
        let worker = InProcessWorker::start(
            WorkerFlags::new(&fixture.db.settings, &brokers(), &topic).settings(&[]),
        )
        .await;

        // Sessions 11..=16 of `project`: 12 ends; 11 and 13 are ann's. Session 11 of
        // the other project (same id) is live there, never here.
        let mut events = Vec::new();
        for (session, user) in [
            (11, "ann"),
            (12, "bob"),
            (13, "ann"),
            (14, "cat"),
            (15, "cat"),
            (16, "cat"),
        ] {
            events.push(event(project, session, 0, "session_start", user));
            events.push(event(project, session, 1, "click", user));
        }
        events.push(event(project, 12, 2, "session_end", "bob"));
        events.push(event(other_project, 11, 0, "session_start", "ann"));
        send(&topic, &events).await;

        let live_path = format!("/api/v1/{key}/assist/sessions");
        // Newest startTs first (the client timestamps grow with the session id).
        wait_for_live(
            &fixture,
            &fixture.api_key,
            &live_path,
            &[16, 15, 14, 13, 11],
            "first events",
        )
        .await;
        let (paged, totals) = all_pages(
            &fixture,
            &fixture.api_key,
            &format!("{live_path}?limit=2&utm=x"),
        )
        .await;
        assert_eq!(paged, [16, 15, 14, 13, 11], "{engine}: pages of 2");
        assert_eq!(totals, [5, 5, 5], "{engine}");
        let (ann, _) = all_pages(
            &fixture,
            &fixture.api_key,
            &format!("{live_path}?userId=ann&limit=1"),
        )
        .await;
        assert_eq!(ann, [13, 11], "{engine}: ann's");
        let (nobody, totals) = all_pages(
            &fixture,
            &fixture.api_key,
            &format!("{live_path}?userId=bob"),
        )
        .await;
        assert_eq!((nobody, totals), (vec![], vec![0]), "{engine}: bob's ended");
        let first = fixture.get(&live_path).await;
        let session = &body_json(&first)["data"]["sessions"][4];
        assert_eq!(session["userCountry"], "IN");
        assert_eq!(session["eventsCount"], 1);
        assert_eq!(session["userBrowser"], "Firefox");
        let other_live = fixture
            .get(&format!(
                "/api/v1/{}/assist/sessions",
                fixture.project.project_key
            ))
            .await;
        assert_eq!(
            body_json(&other_live)["data"]["total"],
            1,
            "{engine}: the other project's own"
        );

        // Only 11 keeps sending: the others go quiet and leave the window.
        let quiet_until = Instant::now() + Duration::from_secs(WINDOW_SECS + 3);
        let mut index = 2;
        while Instant::now() < quiet_until {
            send(&topic, &[event(project, 11, index, "click", "ann")]).await;
            index += 1;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        wait_for_live(
            &fixture,
            &fixture.api_key,
            &live_path,
            &[11],
            "after the others went quiet",
        )
        .await;
        // A late event brings 14 back.
        send(&topic, &[event(project, 14, 2, "input", "cat")]).await;
        wait_for_live(
            &fixture,
            &fixture.api_key,
            &live_path,
            &[14, 11],
            "after a late event",
        )
        .await;
        let body = body_json(&fixture.get(&format!("{live_path}?userId=cat")).await);
        assert_eq!(
            body["data"]["sessions"][0]["eventsCount"], 2,
            "{engine}: its current row"
        );

        // Errors: as for sessions.
        for (query, parameter) in [
            ("limit=201", "limit"),
            ("userId=", "userId"),
            ("cursor=x", "cursor"),
        ] {
            let response = fixture.get(&format!("{live_path}?{query}")).await;
            assert_eq!(response.status(), 400, "{engine}: {query}");
            assert!(
                body_text(&response).contains(parameter),
                "{engine}: {query}"
            );
        }
        let ann_cursor = {
            let response = fixture.get(&format!("{live_path}?limit=1")).await;
            next_link(&response)
                .unwrap()
                .split("cursor=")
                .nth(1)
                .unwrap()
                .to_owned()
        };
        let response = fixture
            .get(&format!("{live_path}?userId=cat&cursor={ann_cursor}"))
            .await;
        assert_eq!(
            response.status(),
            400,
            "{engine}: a cursor of another filter"
        );
        let other_org = fixture
            .tenancy()
            .create_organization("other")
            .await
            .unwrap();
        fixture.service.refresh_auth().await.unwrap();
        let response = fixture
            .request("GET", &live_path, Some(&other_org.api_key))
            .await;
        assert_eq!(response.status(), 404, "{engine}");
        let seen: BTreeSet<u64> = all_pages(&fixture, &fixture.api_key, &live_path)
            .await
            .0
            .into_iter()
            .collect();
        assert!(!seen.contains(&12), "{engine}");

        worker.stop().await;
        fixture.finish().await;
    }
}
