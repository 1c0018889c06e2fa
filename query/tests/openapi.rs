//! The OpenAPI document the service serves is the checked-in `openapi.json`, valid JSON
//! of OpenAPI 3.1, and every path it documents is routed (the other direction, that
//! the service behaves as documented, is `contract_fuzzing.rs`).

use sessions_query::{QueryService, Settings};
use sessions_shared::config::ClickHouseSettings;

/// A service that is never connected: the routes under test need no ClickHouse.
fn service() -> QueryService {
    let clickhouse = ClickHouseSettings::new("http://127.0.0.1:9", "unused".to_owned());
    QueryService::new(&Settings::new(clickhouse)).unwrap()
}

#[tokio::test]
async fn serves_the_checked_in_document() {
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
async fn every_documented_path_is_routed_for_get_only() {
    let document: serde_json::Value =
        serde_json::from_str(sessions_query::openapi::DOCUMENT).unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 5, "{:?}", paths.keys());
    let routes = service().routes();
    for (template, operations) in paths {
        let operations = operations.as_object().unwrap();
        assert_eq!(operations.keys().collect::<Vec<_>>(), ["get"], "{template}");
        let path = template
            .replace("{projectKey}", "3sWXSsqHgSKnE87YkNJK")
            .replace("{userId}", "someone");
        let get = warp::test::request().path(&path).reply(&routes).await;
        // Unauthenticated, the sessions route answers 401; ClickHouse is unreachable, so
        // readiness answers 503. None is 404 (not routed) or 405.
        assert!(
            [200, 401, 503].contains(&get.status().as_u16()),
            "GET {path}: {}",
            get.status()
        );
        let documented = operations["get"]["responses"]
            .as_object()
            .unwrap()
            .contains_key(get.status().as_str());
        assert!(documented, "GET {path}: {} is not documented", get.status());
        let post = warp::test::request()
            .method("POST")
            .path(&path)
            .reply(&routes)
            .await;
        assert_eq!(post.status(), 405, "POST {path}");
        assert_eq!(post.headers()["allow"], "GET", "POST {path}");
    }
}
