//! End to end through real sockets: `run` on a port-0 listener, and the
//! `sessions-query` binary itself (`--help`, a bad setting, SIGTERM).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{session, Fixture};
use sessions_testkit::clickhouse::clickhouse_engines;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 GET: `(status, lowercase head, body)`.
async fn http_get(
    address: SocketAddr,
    path: &str,
    api_key: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let authorization = api_key
        .map(|key| format!("Authorization: {key}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_ascii_lowercase(), body.to_owned()))
}

#[tokio::test]
async fn serves_on_a_bound_listener_and_stops_on_shutdown() {
    for (engine, url) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &url, "listener").await;
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
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let settings = sessions_query::Settings::new(fixture.db.settings.clone());
        let server = tokio::spawn(sessions_query::run(settings, listener, async {
            let _ = stopped.await;
        }));

        // The auth cache loads right after start.
        let path = fixture.path("u", "limit=1");
        let started = Instant::now();
        let (status, head, body) = loop {
            let answer = http_get(address, &path, Some(&fixture.api_key))
                .await
                .unwrap();
            if answer.0 != 503 || started.elapsed() > Duration::from_secs(5) {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status, 200, "{engine}: {body}");
        assert!(
            head.contains("content-type: application/json"),
            "{engine}: {head}"
        );
        assert!(head.contains("link: </api/v1/"), "{engine}: {head}");
        assert!(
            body.starts_with(r#"{"data":[{"projectId":"#),
            "{engine}: {body}"
        );
        let (status, _, metrics) = http_get(address, "/metrics", None).await.unwrap();
        assert_eq!(status, 200);
        assert!(metrics.contains("query_requests_total"), "{metrics}");
        assert_eq!(
            http_get(address, "/readyz", None).await.unwrap().0,
            200,
            "{engine}"
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("run returns after shutdown")
            .unwrap()
            .unwrap();
        assert!(
            http_get(address, "/healthz", None).await.is_err(),
            "listener closed"
        );
        fixture.finish().await;
    }
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessions-query"));
    command
        .env_remove("QUERY_ADDR")
        .env_remove("CURSOR_SECRET")
        .env_remove("AUTH_REFRESH_MS");
    command
}

#[test]
fn help_lists_every_setting_and_bad_settings_exit_non_zero() {
    let help = binary().arg("--help").output().unwrap();
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
    ] {
        let output = binary().args(bad).output().unwrap();
        assert!(!output.status.success(), "{bad:?}");
        assert!(!output.stderr.is_empty());
    }
}

#[tokio::test]
async fn the_binary_migrates_serves_and_stops_on_sigterm() {
    let (engine, url) = clickhouse_engines().remove(0);
    let fixture = Fixture::new(engine, &url, "binary").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = binary()
        .env("QUERY_ADDR", address.to_string())
        .env("CLICKHOUSE_URL", &url)
        .env("CLICKHOUSE_DATABASE", fixture.db.store.database())
        .env("AUTH_REFRESH_MS", "500")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let path = fixture.path("u", "");
    loop {
        if let Ok((200, _, body)) = http_get(address, &path, Some(&fixture.api_key)).await {
            assert_eq!(body, r#"{"data":[]}"#);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the binary did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
