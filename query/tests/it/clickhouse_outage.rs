//! ClickHouse 18.16 really stopped and started again under a running service: 503 while
//! it is down, normal answers once it is back, without restarting the service.
//!
//! This stops a shared server through the script that manages it, named by
//! `SESSIONS_SERVICES_SCRIPT` (scripts/test.sh sets it); without it, or when the server
//! at `CLICKHOUSE_URL` is not the one the script stops, the test fails (unless opted
//! out, `sessions_testkit::require`). Its
//! turn is exclusive, so no other test of the binary runs during the outage (and cargo
//! runs the crates' test binaries one after another). A lock file serializes runs of
//! this test from concurrent test processes, and a guard starts ClickHouse again even
//! if an assertion fails. The outage lasts about as long as the server takes to stop
//! and start (~3 s).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{error_message, session, session_ids, Fixture};
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::require::{self, Requirement};
use sessions_testkit::serial;
use sessions_testkit::services;

const LOCK_STALE_AFTER: Duration = Duration::from_secs(120);

/// Held while ClickHouse may be down; starts it again and releases the lock on drop.
struct Outage {
    lock: PathBuf,
}

impl Outage {
    async fn begin() -> Outage {
        let lock = std::env::temp_dir().join("sessions-query-clickhouse-outage.lock");
        let waiting = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(_) => break,
                Err(_) => {
                    let stale = std::fs::metadata(&lock)
                        .and_then(|metadata| metadata.modified())
                        .map(|modified| modified.elapsed().unwrap_or_default() > LOCK_STALE_AFTER)
                        .unwrap_or(false);
                    if stale {
                        let _ = std::fs::remove_file(&lock);
                    }
                    assert!(
                        waiting.elapsed() < LOCK_STALE_AFTER * 2,
                        "outage lock held too long"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Outage { lock }
    }

    fn services(&self, action: &str) -> bool {
        services::run(action, &["clickhouse"])
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.services("start") {
            eprintln!("could not start clickhouse again with services.sh");
        }
        let _ = std::fs::remove_file(&self.lock);
    }
}

#[tokio::test]
async fn answers_503_while_clickhouse_is_down_and_recovers_after() {
    let _turn = serial::exclusive();
    if require::services_script("this test").is_none() {
        return;
    }
    let target = legacy_target();
    // Keys stay usable through the whole outage (the longest maximum age), so the 503
    // below is ClickHouse's, not stale keys' (fail closed has its own tests).
    let fixture = Fixture::with_settings("clickhouse-18.16", &target, "outage", |settings| {
        settings.auth_max_age = Some(Duration::from_secs(60));
    })
    .await;
    fixture
        .insert_live(&[session(fixture.project.project_id, "u", 1, 10)], 1)
        .await;
    let path = fixture.path("u", "");
    assert_eq!(session_ids(&fixture.get(&path).await), ["1"]);

    {
        let outage = Outage::begin().await;
        assert!(outage.services("stop"), "stopping clickhouse failed");
        if fixture.db.store.ping().await.is_ok() {
            let why = format!(
                "ClickHouse at {:?} still answers after `services.sh stop clickhouse`: \
                 it is not the server the script manages",
                target.urls()
            );
            drop(outage);
            fixture.finish().await;
            require::missing(Requirement::Services, &why, "this test");
            return;
        }
        let response = fixture.get(&path).await;
        assert_eq!(response.status(), 503);
        assert_eq!(
            error_message(&response),
            "service unavailable, try again later"
        );
        assert_eq!(fixture.request("GET", "/readyz", None).await.status(), 503);
        let metrics = fixture.request("GET", "/metrics", None).await;
        let text = common::body_text(&metrics);
        assert!(
            text.contains(r#"query_clickhouse_errors_total{kind="unavailable"} 1"#),
            "{text}"
        );
        // Dropping the guard starts ClickHouse again.
    }

    let back = Instant::now();
    loop {
        let response = fixture.get(&path).await;
        if response.status() == 200 {
            assert_eq!(session_ids(&response), ["1"]);
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "no recovery within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `/readyz` answers from a probe at most a second old.
    let ready_by = Instant::now() + Duration::from_secs(3);
    while fixture.request("GET", "/readyz", None).await.status() != 200 {
        assert!(Instant::now() < ready_by, "/readyz did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fixture.finish().await;
}
