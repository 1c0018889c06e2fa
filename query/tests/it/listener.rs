//! End to end through real sockets: `run` on a port-0 listener, and the
//! `sessions-query` binary itself (`--help`, a bad setting, SIGTERM).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{query_binary, session, Fixture, QueryProcess};
use sessions_testkit::clickhouse::{clickhouse_engines, legacy_target};
use sessions_testkit::http::http_get;
use sessions_testkit::serial;

#[tokio::test]
async fn serves_on_a_bound_listener_and_stops_on_shutdown() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "listener").await;
        let project_id = fixture.project.project_id;
        fixture
            .insert_live(
                &[
                    session(project_id, "u", 1, 10),
                    session(project_id, "u", 2, 20),
                ],
                1,
            )
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let settings = sessions_query::Settings::new(fixture.db.settings.clone());
        let server = tokio::spawn(sessions_query::run(settings, listener, stopped.into()));

        // The auth cache loads right after start.
        let path = fixture.path("u", "limit=1");
        let authorization = [("Authorization", fixture.api_key.as_str())];
        let started = Instant::now();
        let answer = loop {
            let answer = http_get(address, &path, &authorization).await.unwrap();
            if answer.status != 503 || started.elapsed() > Duration::from_secs(5) {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(answer.status, 200, "{engine}: {}", answer.body);
        assert!(
            answer
                .header("content-type")
                .is_some_and(|content_type| content_type.starts_with("application/json")),
            "{engine}: {answer:?}"
        );
        assert!(
            answer
                .header("link")
                .is_some_and(|link| link.starts_with("</api/v1/")),
            "{engine}: {answer:?}"
        );
        assert!(
            answer.body.starts_with(r#"{"data":[{"projectId":"#),
            "{engine}: {}",
            answer.body
        );
        let metrics = http_get(address, "/metrics", &[]).await.unwrap();
        assert_eq!(metrics.status, 200);
        assert!(
            metrics.body.contains("query_requests_total"),
            "{}",
            metrics.body
        );
        assert_eq!(
            http_get(address, "/readyz", &[]).await.unwrap().status,
            200,
            "{engine}"
        );

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("run returns after shutdown")
            .unwrap()
            .unwrap();
        assert!(
            http_get(address, "/healthz", &[]).await.is_err(),
            "listener closed"
        );
        fixture.finish().await;
    }
}

#[test]
fn help_lists_every_setting_and_bad_settings_exit_non_zero() {
    let _turn = serial::shared();
    let help = query_binary().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for setting in [
        "QUERY_ADDR",
        "CURSOR_SECRET",
        "AUTH_REFRESH_MS",
        "CLICKHOUSE_URL",
        "CLICKHOUSE_DATABASE",
        "CLICKHOUSE_TIMEOUT_MS",
    ] {
        assert!(
            text.contains(setting),
            "{setting} missing from --help:\n{text}"
        );
    }
    for bad in [
        ["--query-addr", "nowhere"],
        ["--auth-refresh-ms", "0"],
        ["--clickhouse-url", "ftp://x"],
        ["--cursor-secret", "shorter-than-32-bytes"],
    ] {
        let output = query_binary().args(bad).output().unwrap();
        assert!(!output.status.success(), "{bad:?}");
        assert!(!output.stderr.is_empty());
    }
    // Without a cursor key it refuses to start (and never reaches ClickHouse).
    let output = query_binary()
        .env_remove("CURSOR_SECRET")
        .args([
            "--query-addr",
            "127.0.0.1:0",
            "--clickhouse-url",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CURSOR_SECRET is required"), "{stderr}");
}

#[tokio::test]
async fn the_binary_migrates_serves_and_stops_on_sigterm() {
    let _turn = serial::shared();
    let fixture = Fixture::new("clickhouse-18.16", &legacy_target(), "binary").await;
    let mut process = QueryProcess::spawn(&fixture);
    let body = process
        .wait_until_serving(&fixture, &fixture.path("u", ""))
        .await;
    assert_eq!(body, r#"{"data":[]}"#);
    let child = &mut process.child;
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(5),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    fixture.finish().await;
}
