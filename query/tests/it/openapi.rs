//! The OpenAPI document the service serves is the checked-in `openapi.json`, valid JSON
//! of OpenAPI 3.1, and every path it documents is routed (the other direction, that
//! the service behaves as documented, is `contract_fuzzing.rs`).

use sessions_query::{QueryService, Settings};
use sessions_shared::config::ClickHouseSettings;
use sessions_testkit::serial;

/// A service that is never connected: the routes under test need no ClickHouse.
fn service() -> QueryService {
    let clickhouse = ClickHouseSettings::new("http://127.0.0.1:9", "unused".to_owned());
    QueryService::new(&Settings::new(clickhouse)).unwrap()
}

#[tokio::test]
async fn serves_the_checked_in_document() {
    let _turn = serial::shared();
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    let response = warp::test::request()
        .path("/openapi.json")
        .reply(&service().routes())
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(std::str::from_utf8(response.body()).unwrap(), checked_in);
    let document: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_others_are_405() {
    let _turn = serial::shared();
    let document: serde_json::Value =
        serde_json::from_str(sessions_query::openapi::DOCUMENT).unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 12, "{:?}", paths.keys());
    let routes = service().routes();
    for (template, operations) in paths {
        let operations = operations.as_object().unwrap();
        let methods: Vec<String> = operations.keys().map(|m| m.to_uppercase()).collect();
        assert!(methods.contains(&"GET".to_owned()), "{template}");
        let path = template
            .replace("{projectKey}", "3sWXSsqHgSKnE87YkNJK")
            .replace("{userId}", "someone")
            .replace("{jobId}", "12")
            .replace("{sessionId}", "4813018042986240");
        for method in &methods {
            let answer = warp::test::request()
                .method(method)
                .path(&path)
                .reply(&routes)
                .await;
            // Unauthenticated, the API answers 401; ClickHouse is unreachable, so
            // readiness answers 503. None is 404 (not routed) or 405.
            assert!(
                [200, 401, 503].contains(&answer.status().as_u16()),
                "{method} {path}: {}",
                answer.status()
            );
            let documented = operations[&method.to_lowercase()]["responses"]
                .as_object()
                .unwrap()
                .contains_key(answer.status().as_str());
            assert!(
                documented,
                "{method} {path}: {} is not documented",
                answer.status()
            );
        }
        // A method the path does not answer: POST, or PUT where POST is documented.
        let other = if methods.contains(&"POST".to_owned()) {
            "PUT"
        } else {
            "POST"
        };
        let post = warp::test::request()
            .method(other)
            .path(&path)
            .reply(&routes)
            .await;
        assert_eq!(post.status(), 405, "{other} {path}");
        let mut allowed: Vec<&str> = post.headers()["allow"]
            .to_str()
            .unwrap()
            .split(", ")
            .collect();
        allowed.sort_unstable();
        let mut documented: Vec<&str> = methods.iter().map(String::as_str).collect();
        documented.sort_unstable();
        assert_eq!(allowed, documented, "{other} {path}");
    }
}
