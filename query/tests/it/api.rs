//! Handler tests through `warp::test::request()` (no socket) against real ClickHouse:
//! every status the endpoint answers, on both engines.

use crate::common;
use crate::common::{body_text, error_message, session, session_ids, Fixture};
use sessions_testkit::clickhouse::clickhouse_engines;
use sessions_testkit::serial;

#[tokio::test]
async fn each_bad_parameter_is_a_400_naming_it() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "params").await;
        let other_query_cursor = {
            fixture
                .insert_live(
                    &[
                        session(fixture.project.project_id, "u", 1, 10),
                        session(fixture.project.project_id, "u", 2, 20),
                    ],
                    1,
                )
                .await;
            let first = fixture.get(&fixture.path("u", "limit=1")).await;
            let link = common::next_link(&first).expect("a next page");
            link.split("cursor=").nth(1).unwrap().to_owned()
        };
        let long_user = "x".repeat(257);
        let cases: Vec<(String, &str)> = vec![
            (fixture.path("", ""), "userId"),
            (fixture.path(&long_user, ""), "userId"),
            (fixture.path("%FF%FE", ""), "userId"),
            (fixture.path("u", "start_date=abc"), "start_date"),
            (fixture.path("u", "start_date=-1"), "start_date"),
            (fixture.path("u", "start_date=1.5"), "start_date"),
            (fixture.path("u", "end_date=tomorrow"), "end_date"),
            (fixture.path("u", "end_date=-10"), "end_date"),
            (fixture.path("u", "start_date=20&end_date=10"), "start_date"),
            (fixture.path("u", "limit=0"), "limit"),
            (fixture.path("u", "limit=1001"), "limit"),
            (fixture.path("u", "limit=abc"), "limit"),
            (fixture.path("u", "cursor=garbage"), "cursor"),
            (fixture.path("u", "cursor="), "cursor"),
            // Tampered: one character of a real cursor changed.
            (
                fixture.path("u", &format!("cursor={}", flip_last(&other_query_cursor))),
                "cursor",
            ),
            // A valid cursor used with another user, other dates, another project.
            (
                fixture.path("v", &format!("cursor={other_query_cursor}")),
                "cursor",
            ),
            (
                fixture.path("u", &format!("start_date=0&cursor={other_query_cursor}")),
                "cursor",
            ),
            (
                fixture.path("u", &format!("end_date=99&cursor={other_query_cursor}")),
                "cursor",
            ),
        ];
        for (path, parameter) in cases {
            let response = fixture.get(&path).await;
            assert_eq!(
                response.status(),
                400,
                "{engine} {path}: {}",
                body_text(&response)
            );
            let message = error_message(&response);
            assert!(message.contains(parameter), "{engine} {path}: {message}");
        }
        // A cursor from another project (same user, same dates) is refused too.
        let tenancy = fixture.tenancy();
        let other_project = tenancy
            .create_project(fixture.org_id, "other", None)
            .await
            .unwrap();
        fixture.service.refresh_auth().await.unwrap();
        let path = format!(
            "/api/v1/{}/users/u/sessions?cursor={other_query_cursor}",
            other_project.project_key
        );
        let response = fixture.get(&path).await;
        assert_eq!(response.status(), 400, "{engine}");
        assert!(error_message(&response).contains("cursor"));
        // Changing only the limit between pages is fine.
        let response = fixture
            .get(&fixture.path("u", &format!("limit=5&cursor={other_query_cursor}")))
            .await;
        assert_eq!(session_ids(&response), vec!["2"], "{engine}");
        fixture.finish().await;
    }
}

fn flip_last(cursor: &str) -> String {
    let mut bytes = cursor.as_bytes().to_vec();
    let last = bytes.last_mut().unwrap();
    *last = if *last == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn authentication_and_project_errors() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "auth").await;
        let path = fixture.path("u", "");
        for authorization in [
            None,
            Some(""),
            Some("Bearer "),
            Some("not-a-key"),
            Some("Bearer not-a-key"),
        ] {
            let response = fixture.request("GET", &path, authorization).await;
            assert_eq!(response.status(), 401, "{engine} {authorization:?}");
            assert_eq!(error_message(&response), "missing or invalid API key");
        }
        // Both forms of a good key work.
        let raw = fixture.request("GET", &path, Some(&fixture.api_key)).await;
        assert_eq!(raw.status(), 200, "{engine}");
        assert_eq!(raw.headers()["content-type"], "application/json");
        assert_eq!(body_text(&raw), r#"{"data":[]}"#);
        assert!(raw.headers().get("link").is_none());
        let bearer = fixture
            .request("GET", &path, Some(&format!("Bearer {}", fixture.api_key)))
            .await;
        assert_eq!(bearer.status(), 200, "{engine}");

        // 401 comes before 404: an unknown key on an unknown project is 401.
        let unknown_project = "/api/v1/AAAAAAAAAAAAAAAAAAAA/users/u/sessions";
        let response = fixture.request("GET", unknown_project, Some("nope")).await;
        assert_eq!(response.status(), 401, "{engine}");
        let unknown = fixture.get(unknown_project).await;
        assert_eq!(unknown.status(), 404, "{engine}");

        // Another organization's project looks exactly like an unknown one.
        let tenancy = fixture.tenancy();
        let other_org = tenancy.create_organization("other").await.unwrap();
        let foreign = tenancy
            .create_project(other_org.org_id, "theirs", None)
            .await
            .unwrap();
        fixture.service.refresh_auth().await.unwrap();
        let foreign_path = format!("/api/v1/{}/users/u/sessions", foreign.project_key);
        let response = fixture.get(&foreign_path).await;
        assert_eq!(response.status(), 404, "{engine}");
        assert_eq!(response.body(), unknown.body());
        assert_eq!(error_message(&response), "project not found");
        // Their key opens their project and not ours.
        let theirs = fixture
            .request("GET", &foreign_path, Some(&other_org.api_key))
            .await;
        assert_eq!(theirs.status(), 200, "{engine}");
        let ours = fixture
            .request("GET", &path, Some(&other_org.api_key))
            .await;
        assert_eq!(ours.status(), 404, "{engine}");

        // A revoked key is refused once the cache reloads.
        tenancy.revoke_key(&fixture.api_key).await.unwrap();
        fixture.service.refresh_auth().await.unwrap();
        let revoked = fixture.get(&path).await;
        assert_eq!(revoked.status(), 401, "{engine}");
        fixture.finish().await;
    }
}

#[tokio::test]
async fn methods_paths_and_operational_endpoints() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "routes").await;
        let path = fixture.path("u", "");
        for method in [
            "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "QUERY",
        ] {
            let response = fixture.request(method, &path, Some(&fixture.api_key)).await;
            assert_eq!(response.status(), 405, "{engine} {method}");
            assert_eq!(error_message(&response), "method not allowed");
            assert_eq!(response.headers()["allow"], "GET", "{engine} {method}");
        }
        for unknown in [
            "/",
            "/api/v1",
            "/api/v1/x/user/u",
            "/api/v1/x/users/u/sessions/extra",
            "/api/v1/x/jobs/1/extra",
            "/nope?x=1",
        ] {
            let response = fixture.get(unknown).await;
            assert_eq!(response.status(), 404, "{engine} {unknown}");
            assert_eq!(error_message(&response), "not found");
        }
        let response = fixture.request("POST", "/nope", None).await;
        assert_eq!(response.status(), 404, "{engine}");
        for operational in ["/metrics", "/healthz", "/readyz", "/openapi.json"] {
            let response = fixture.request("POST", operational, None).await;
            assert_eq!(response.status(), 405, "{engine} {operational}");
            assert_eq!(response.headers()["allow"], "GET", "{engine} {operational}");
            assert_eq!(error_message(&response), "method not allowed");
        }

        assert_eq!(fixture.request("GET", "/healthz", None).await.status(), 200);
        assert_eq!(
            fixture.request("GET", "/readyz", None).await.status(),
            200,
            "{engine}"
        );
        let metrics = fixture.request("GET", "/metrics", None).await;
        assert_eq!(metrics.status(), 200);
        let text = body_text(&metrics);
        for expected in [
            r#"query_requests_total{route="user_sessions",status="405"} 7"#,
            r#"query_requests_total{route="other",status="404"}"#,
            r#"query_requests_total{route="healthz",status="200"} 1"#,
            "query_request_duration_seconds_bucket{route=\"user_sessions\"",
        ] {
            assert!(
                text.contains(expected),
                "{engine}: {expected} missing in\n{text}"
            );
        }
        assert!(!text.contains(&fixture.api_key));
        fixture.finish().await;
    }
}

#[tokio::test]
async fn unreachable_clickhouse_is_503_and_an_unloaded_cache_too() {
    let _turn = serial::shared();
    // Nothing listens on port 1: every ClickHouse request fails at once.
    let settings =
        sessions_shared::config::ClickHouseSettings::new("http://127.0.0.1:1", "nowhere");
    let service =
        sessions_query::QueryService::new(&sessions_query::Settings::new(settings)).unwrap();
    assert!(service.refresh_auth().await.is_err());
    let routes = service.routes();
    let path = "/api/v1/3sWXSsqHgSKnE87YkNJK/users/u/sessions";
    let response = warp::test::request()
        .path(path)
        .header("authorization", "some-key")
        .reply(&routes)
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        error_message(&response),
        "service unavailable, try again later"
    );
    // Without a key it is still 401: the key check needs no ClickHouse.
    let response = warp::test::request().path(path).reply(&routes).await;
    assert_eq!(response.status(), 401);
    let ready = warp::test::request().path("/readyz").reply(&routes).await;
    assert_eq!(ready.status(), 503);
    assert_eq!(
        warp::test::request()
            .path("/healthz")
            .reply(&routes)
            .await
            .status(),
        200
    );
}
