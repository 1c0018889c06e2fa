//! The projects endpoints through `warp::test::request()` against real ClickHouse, on
//! every engine: the key's organization only, oldest first, 404 for another's, bodies
//! checked field by field, the cap, ids unique under concurrent creations, and a created
//! project served at once by this replica.

use std::collections::BTreeSet;

use crate::common::{body_json, body_text, error_message, Fixture};
use serde_json::{json, Value};
use sessions_testkit::clickhouse::clickhouse_engines;
use sessions_testkit::serial;
use warp::http::Response;
use warp::hyper::body::Bytes;

async fn post(fixture: &Fixture, api_key: &str, body: impl Into<Vec<u8>>) -> Response<Bytes> {
    warp::test::request()
        .method("POST")
        .path("/api/v1/projects")
        .header("authorization", api_key)
        .header("content-type", "application/json")
        .body(body.into())
        .reply(&fixture.service.routes())
        .await
}

#[tokio::test]
async fn an_organization_sees_creates_and_reads_only_its_projects() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "projects").await;
        let other = fixture
            .tenancy()
            .create_organization("other")
            .await
            .unwrap();
        let others_project = fixture
            .tenancy()
            .create_project(other.org_id, "theirs", None)
            .await
            .unwrap();
        // The other organization's key known, before the creations below.
        fixture.service.refresh_auth().await.unwrap();

        let created = post(
            &fixture,
            &fixture.api_key,
            r#"{"name": "app", "platform": "ios"}"#,
        )
        .await;
        assert_eq!(created.status(), 200, "{engine}: {}", body_text(&created));
        let data = body_json(&created)["data"].clone();
        let new_key = data["projectKey"].as_str().unwrap().to_owned();
        assert_eq!(new_key.len(), 20, "{engine}");
        assert!(new_key.bytes().all(|byte| byte.is_ascii_alphanumeric()));
        assert_eq!(
            data,
            json!({"projectKey": new_key, "name": "app", "platform": "ios"}),
            "{engine}"
        );
        let defaulted = post(&fixture, &fixture.api_key, r#"{"name": "shop"}"#).await;
        assert_eq!(body_json(&defaulted)["data"]["platform"], "web", "{engine}");
        let shop_key = body_json(&defaulted)["data"]["projectKey"]
            .as_str()
            .unwrap()
            .to_owned();

        // Served at once by this replica, before any reload of its key cache.
        let sessions = fixture
            .get(&format!("/api/v1/{new_key}/users/u/sessions"))
            .await;
        assert_eq!(sessions.status(), 200, "{engine}: {}", body_text(&sessions));
        assert_eq!(body_text(&sessions), r#"{"data":[]}"#);
        let live = fixture
            .get(&format!("/api/v1/{new_key}/assist/sessions"))
            .await;
        assert_eq!(live.status(), 200, "{engine}: {}", body_text(&live));
        // ... but not for another organization's key.
        let refused = fixture
            .request(
                "GET",
                &format!("/api/v1/{new_key}/users/u/sessions"),
                Some(&other.api_key),
            )
            .await;
        assert_eq!(refused.status(), 404, "{engine}");

        let listed = fixture.get("/api/v1/projects").await;
        assert_eq!(listed.status(), 200, "{engine}");
        assert_eq!(
            body_json(&listed),
            json!({"data": [
                {"projectKey": fixture.project.project_key, "name": "web"},
                {"projectKey": new_key, "name": "app"},
                {"projectKey": shop_key, "name": "shop"},
            ]}),
            "{engine}: the key's organization's, oldest first"
        );

        let one = fixture.get(&format!("/api/v1/projects/{new_key}")).await;
        assert_eq!(one.status(), 200, "{engine}");
        let one = body_json(&one)["data"].clone();
        assert_eq!(one["projectKey"], new_key.as_str());
        assert_eq!(one["name"], "app");
        assert_eq!(one["platform"], "ios");
        assert!(one["projectId"].as_u64().unwrap() > u64::from(others_project.project_id));
        let first = fixture
            .get(&format!("/api/v1/projects/{}", fixture.project.project_key))
            .await;
        assert_eq!(
            body_json(&first)["data"],
            json!({"projectId": fixture.project.project_id,
                   "projectKey": fixture.project.project_key, "name": "web", "platform": "web"}),
            "{engine}: created by sessions-admin's path, web by default"
        );
        for unknown in [others_project.project_key.as_str(), "AAAAAAAAAAAAAAAAAAAA"] {
            let response = fixture.get(&format!("/api/v1/projects/{unknown}")).await;
            assert_eq!(response.status(), 404, "{engine}: {unknown}");
            assert_eq!(error_message(&response), "project not found");
        }
        for path in ["/api/v1/projects", "/api/v1/projects/AAAAAAAAAAAAAAAAAAAA"] {
            let response = fixture.request("GET", path, None).await;
            assert_eq!(response.status(), 401, "{engine}: {path}");
            let response = fixture.request("GET", path, Some("wrong")).await;
            assert_eq!(response.status(), 401, "{engine}: {path}");
        }
        let response = fixture
            .request("DELETE", "/api/v1/projects", Some(&fixture.api_key))
            .await;
        assert_eq!(response.status(), 405, "{engine}");
        assert_eq!(response.headers()["allow"], "GET, POST");
        fixture.finish().await;
    }
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_field_and_large_ones_413() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "project_bodies").await;
        let long_name = json!({ "name": "x".repeat(201) }).to_string();
        for (body, field) in [
            ("", "body"),
            ("name=app", "body"),
            ("[1]", "body"),
            ("{}", "name"),
            (r#"{"name": ""}"#, "name"),
            (r#"{"name": 7}"#, "name"),
            (long_name.as_str(), "name"),
            (r#"{"name": "a", "platform": "android"}"#, "platform"),
        ] {
            let response = post(&fixture, &fixture.api_key, body).await;
            assert_eq!(response.status(), 400, "{engine}: {body}");
            assert!(
                error_message(&response).starts_with(&format!("invalid {field}:")),
                "{engine}: {body}: {}",
                error_message(&response)
            );
        }
        let padded = format!(r#"{{"name": "a"}}{}"#, " ".repeat(64 * 1024));
        let response = post(&fixture, &fixture.api_key, padded).await;
        assert_eq!(response.status(), 413, "{engine}");
        // No key: 401 before the body is looked at.
        let response = post(&fixture, "wrong", "not json").await;
        assert_eq!(response.status(), 401, "{engine}");
        let listed = fixture.get("/api/v1/projects").await;
        assert_eq!(
            body_json(&listed)["data"].as_array().unwrap().len(),
            1,
            "{engine}: nothing created"
        );
        fixture.finish().await;
    }
}

#[tokio::test]
async fn creations_at_once_get_distinct_ids_up_to_the_cap() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::with_settings(engine, &target, "project_cap", |settings| {
            settings.max_projects_per_org = 7;
        })
        .await;
        let routes = fixture.service.routes();
        let requests = (0..6).map(|n| {
            let request = warp::test::request()
                .method("POST")
                .path("/api/v1/projects")
                .header("authorization", fixture.api_key.as_str())
                .body(json!({ "name": format!("p{n}") }).to_string());
            let routes = routes.clone();
            async move { request.reply(&routes).await }
        });
        let answers = futures::future::join_all(requests).await;
        let mut keys = Vec::new();
        for answer in &answers {
            assert_eq!(answer.status(), 200, "{engine}: {}", body_text(answer));
            keys.push(
                body_json(answer)["data"]["projectKey"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let mut ids = BTreeSet::new();
        for key in &keys {
            let one = fixture.get(&format!("/api/v1/projects/{key}")).await;
            ids.insert(body_json(&one)["data"]["projectId"].as_u64().unwrap());
        }
        ids.insert(u64::from(fixture.project.project_id));
        assert_eq!(ids.len(), 7, "{engine}: every project its own id: {ids:?}");
        let refused = post(&fixture, &fixture.api_key, r#"{"name": "one too many"}"#).await;
        assert_eq!(refused.status(), 409, "{engine}: {}", body_text(&refused));
        assert!(error_message(&refused).contains("7 projects"));
        let listed: Value = body_json(&fixture.get("/api/v1/projects").await);
        assert_eq!(listed["data"].as_array().unwrap().len(), 7, "{engine}");
        fixture.finish().await;
    }
}
