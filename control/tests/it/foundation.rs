//! Migrations, tenancy and `sessions-admin` against real ClickHouse: the 18.16 server
//! and a current engine (see `sessions_testkit::clickhouse`).

use std::process::Command;

use crate::common::Admin;
use serde::Deserialize;
use serde_json::Value;
use sessions_control::tenancy::{hash_api_key, Tenancy};
use sessions_shared::clickhouse::Row;
use sessions_shared::migrations::{migrate, MIGRATIONS};
use sessions_testkit::clickhouse::{clickhouse_engines, Target, TestDatabase};
use sessions_testkit::serial;

/// A migrated database of the test's own on every engine, with the engine's name and
/// target.
async fn database_on_every_engine(label: &str) -> Vec<(&'static str, Target, TestDatabase)> {
    let mut databases = Vec::new();
    for (engine, target) in clickhouse_engines() {
        let db = TestDatabase::create(&target, label).await.expect(engine);
        databases.push((engine, target, db));
    }
    databases
}

#[derive(Row, Deserialize)]
struct Version {
    version: u32,
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_concurrently() {
    let _turn = serial::shared();
    for (engine, target, db) in database_on_every_engine("migrate").await {
        // Already applied by create(): nothing more to do, twice.
        assert!(migrate(&db.store).await.unwrap().is_empty(), "{engine}");
        assert!(migrate(&db.store).await.unwrap().is_empty(), "{engine}");
        // A fresh database migrated by four processes at once ends complete.
        let fresh = target.settings(format!("{}_c", db.store.database()));
        let store = sessions_shared::clickhouse::Store::new(&fresh).unwrap();
        let results = futures_join_all((0..4).map(|_| {
            let store = store.clone();
            async move { migrate(&store).await }
        }))
        .await;
        for result in results {
            result.unwrap_or_else(|error| panic!("{engine}: {error}"));
        }
        let versions: Vec<Version> = store
            .client()
            .query("SELECT DISTINCT version FROM schema_migrations ORDER BY version")
            .fetch_all()
            .await
            .unwrap();
        let versions: Vec<u32> = versions.into_iter().map(|v| v.version).collect();
        let expected: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, expected, "{engine}");
        for table in [
            "organizations",
            "api_keys",
            "projects",
            "sessions",
            "session_state",
            "project_session_state",
            "project_session_applied",
            "rejected_events",
            "dead_letter_subjects",
        ] {
            store
                .client()
                .query(&format!("SELECT count() FROM {table}"))
                .fetch_one::<u64>()
                .await
                .unwrap_or_else(|error| panic!("{engine}: {table}: {error}"));
        }
        TestDatabase {
            settings: fresh,
            store,
        }
        .drop_database()
        .await;
        db.drop_database().await;
    }
}

async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

#[derive(Row, Deserialize)]
struct StoredKey {
    key_hash: String,
}

#[tokio::test]
async fn api_keys_are_stored_only_as_hashes() {
    let _turn = serial::shared();
    for (engine, _, db) in database_on_every_engine("keys").await {
        let tenancy = Tenancy::new(&db.store);
        let created = tenancy.create_organization("acme").await.unwrap();
        let second = tenancy.create_key(created.org_id).await.unwrap();
        let stored: Vec<StoredKey> = db
            .store
            .client()
            .query("SELECT key_hash FROM api_keys")
            .fetch_all()
            .await
            .unwrap();
        let hashes: Vec<&str> = stored.iter().map(|k| k.key_hash.as_str()).collect();
        assert!(
            hashes.contains(&hash_api_key(&created.api_key).as_str()),
            "{engine}"
        );
        assert!(hashes.contains(&hash_api_key(&second).as_str()), "{engine}");
        // No column of any tenancy table holds a key in clear.
        for table in ["api_keys", "organizations", "projects"] {
            let dump: String = db
                .store
                .client()
                .query(&format!(
                    "SELECT toString(groupArray(tuple(*))) FROM {table}"
                ))
                .fetch_one()
                .await
                .unwrap();
            assert!(
                !dump.contains(&created.api_key) && !dump.contains(&second),
                "{engine}: {table}"
            );
        }
        let active = tenancy.active_keys().await.unwrap();
        assert_eq!(active.len(), 2, "{engine}");
        tenancy.revoke_key(&second).await.unwrap();
        let active = tenancy.active_keys().await.unwrap();
        assert_eq!(active.len(), 1, "{engine}");
        assert_eq!(active[0].key_hash, hash_api_key(&created.api_key));
        db.drop_database().await;
    }
}

fn keys_of(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn sessions_admin_matches_operations_md_field_for_field() {
    let _turn = serial::shared();
    for (engine, _, db) in database_on_every_engine("admin").await {
        let admin = Admin {
            settings: &db.settings,
        };

        let migrated = admin.ok(&["migrate"]);
        assert!(
            migrated["applied"].as_array().unwrap().is_empty(),
            "{engine}"
        );

        let org = admin.ok(&["org", "create", "--name", "Acme"]);
        assert_eq!(keys_of(&org), ["apiKey", "orgId"], "{engine}");
        let org_id = org["orgId"].as_u64().unwrap();
        let api_key = org["apiKey"].as_str().unwrap();
        assert!(api_key.len() >= 32 && api_key.bytes().all(|b| b.is_ascii_alphanumeric()));

        let key = admin.ok(&["key", "create", "--org", &org_id.to_string()]);
        assert_eq!(keys_of(&key), ["apiKey"]);
        assert_ne!(key["apiKey"], org["apiKey"]);
        // The key comes on standard input, never on the command line.
        let key_line = format!("{}\n", key["apiKey"].as_str().unwrap());
        let (success, revoked, stderr) = admin.run_with_input(&["key", "revoke"], &key_line);
        assert!(success, "{stderr}");
        assert_eq!(revoked, serde_json::json!({"revoked": true}));
        assert!(admin
            .fails(&["key", "revoke", "--key", key["apiKey"].as_str().unwrap()])
            .contains("--key"));

        let chosen = admin.ok(&[
            "project",
            "create",
            "--org",
            &org_id.to_string(),
            "--name",
            "web",
            "--key",
            "3sWXSsqHgSKnE87YkNJK",
        ]);
        assert_eq!(keys_of(&chosen), ["projectId", "projectKey"]);
        assert_eq!(chosen["projectKey"], "3sWXSsqHgSKnE87YkNJK");
        let drawn = admin.ok(&[
            "project",
            "create",
            "--org",
            &org_id.to_string(),
            "--name",
            "app",
        ]);
        let drawn_key = drawn["projectKey"].as_str().unwrap();
        assert!(drawn_key.len() == 20 && drawn_key.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(drawn["projectId"], chosen["projectId"]);

        let other_org = admin.ok(&["org", "create", "--name", "Other"]);
        admin.ok(&[
            "project",
            "create",
            "--org",
            &other_org["orgId"].to_string(),
            "--name",
            "theirs",
        ]);

        let all = admin.ok(&["project", "list"]);
        assert_eq!(all.as_array().unwrap().len(), 3, "{engine}");
        let mine = admin.ok(&["project", "list", "--org", &org_id.to_string()]);
        let mine = mine.as_array().unwrap();
        assert_eq!(mine.len(), 2);
        assert_eq!(
            keys_of(&mine[0]),
            ["name", "orgId", "projectId", "projectKey"]
        );
        assert_eq!(mine[0]["projectKey"], "3sWXSsqHgSKnE87YkNJK");
        assert_eq!(mine[0]["orgId"].as_u64(), Some(org_id));

        // Bad input: a clear reason, a non-zero exit, nothing on stdout.
        assert!(admin
            .fails(&["project", "create", "--org", "999", "--name", "x"])
            .contains("organization 999"));
        assert!(admin
            .fails(&[
                "project",
                "create",
                "--org",
                &org_id.to_string(),
                "--name",
                "x",
                "--key",
                "short"
            ])
            .contains("project key"));
        assert!(admin
            .fails(&[
                "project",
                "create",
                "--org",
                &org_id.to_string(),
                "--name",
                "dup",
                "--key",
                "3sWXSsqHgSKnE87YkNJK"
            ])
            .contains("taken"));
        assert!(admin
            .fails(&["key", "create", "--org", "999"])
            .contains("organization 999"));
        assert!(admin
            .fails_with_input(&["key", "revoke"], "not-a-key\n")
            .contains("unknown API key"));
        assert!(admin.fails(&["key", "revoke"]).contains("no key to revoke"));
        assert!(admin
            .fails(&["org", "create", "--name", "  "])
            .contains("name"));
        admin.fails(&["org", "create"]);
        admin.fails(&["project", "create", "--org", "x", "--name", "y"]);
        admin.fails(&["frobnicate"]);

        // User deletion jobs: the API's job, listed newest first per project.
        let project = chosen["projectId"].to_string();
        let job = admin.ok(&["user", "delete", "--project", &project, "--user", "a@b.c"]);
        assert_eq!(job["status"], "scheduled", "{engine}");
        assert_eq!(job["referenceId"], "a@b.c");
        assert_eq!(job["startAt"], job["createdAt"], "no grace by default");
        let again = admin.ok(&["user", "delete", "--project", &project, "--user", "a@b.c"]);
        assert_eq!(again["jobId"], job["jobId"], "{engine}: the scheduled one");
        let later = admin.ok(&[
            "user",
            "delete",
            "--project",
            &project,
            "--user",
            "x",
            "--grace-secs",
            "60",
        ]);
        assert_eq!(
            later["startAt"].as_i64().unwrap() - later["createdAt"].as_i64().unwrap(),
            60_000
        );
        let listed = admin.ok(&["job", "list", "--project", &project]);
        let ids: Vec<&Value> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|job| &job["jobId"])
            .collect();
        assert_eq!(ids, [&later["jobId"], &job["jobId"]], "{engine}");
        let theirs = admin.ok(&["job", "list", "--project", &drawn["projectId"].to_string()]);
        assert_eq!(theirs, serde_json::json!([]));
        assert!(admin
            .fails(&["user", "delete", "--project", "999", "--user", "a"])
            .contains("project 999"));
        assert!(admin
            .fails(&["user", "delete", "--project", &project, "--user", ""])
            .contains("user id"));
        db.drop_database().await;
    }
}

#[test]
fn a_bad_setting_is_refused_with_a_reason() {
    let _turn = serial::shared();
    let output = Command::new(env!("CARGO_BIN_EXE_sessions-admin"))
        .args(["--clickhouse-url", "localhost:8123", "migrate"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("http://"));
    let output = Command::new(env!("CARGO_BIN_EXE_sessions-admin"))
        .env("CLICKHOUSE_DATABASE", "bad;name")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!output.status.success());
}
