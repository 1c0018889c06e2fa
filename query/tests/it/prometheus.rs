//! The ops kit against the real tools (`deploy/`): promtool accepts the scrape config and
//! the alerting rules and passes the rules' unit tests; and a real Prometheus, on a free
//! loopback port with a temporary directory of its own, scrapes a running worker and
//! query service under demo traffic, loads every alert, and evaluates every alert's and
//! every dashboard panel's expression through its HTTP API: each must be accepted, and
//! each panel's must return data.
//!
//! It lives in the query crate because that crate's tests can run both services (the
//! `sessions-query` binary, and the worker in-process with its real metrics listener).
//! `promtool` and `prometheus` come from Debian's `prometheus` package
//! (`scripts/install-deps.sh`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Fixture, QueryProcess};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rand::Rng;
use serde_json::Value;
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::http::{free_loopback_address, http_get};
use sessions_testkit::kafka::{brokers, create_producer, create_topic, produce_all};
use sessions_testkit::serial;
use sessions_testkit::worker::{InProcessWorker, WorkerFlags};
use sessions_testkit::workload::{Workload, WorkloadConfig};
use tokio::sync::watch;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

fn deploy(path: &str) -> PathBuf {
    Path::new(DEPLOY).join(path)
}

/// Runs `promtool ARGS`, panicking with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("promtool not found: run scripts/install-deps.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_config_and_the_rules_and_passes_their_tests() {
    let _turn = serial::shared();
    let config = promtool(&["check", "config", "prometheus.yml"]);
    assert!(config.contains("SUCCESS"), "{config}");
    let rules = promtool(&["check", "rules", "alerts.rules.yml"]);
    let alerts = alert_names().len();
    assert!(
        rules.contains(&format!("SUCCESS: {alerts} rules found")),
        "{rules}"
    );
    let tests = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tests.contains("SUCCESS"), "{tests}");
    // Every alert has a test that expects it to fire.
    let test_file = std::fs::read_to_string(deploy("prometheus/alerts.test.yml")).unwrap();
    for alert in alert_names() {
        assert!(
            test_file.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "{alert} has no test in which it fires"
        );
    }
}

/// The alert names of the rules file (one `- alert: Name` line each).
fn alert_names() -> Vec<String> {
    std::fs::read_to_string(deploy("prometheus/alerts.rules.yml"))
        .unwrap()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

/// A Prometheus server of the test's own; killed and its directory removed on drop.
struct PrometheusServer {
    child: Child,
    address: SocketAddr,
    directory: PathBuf,
}

impl PrometheusServer {
    /// Starts Prometheus with the checked-in config and rules, its targets pointed at
    /// the given services and its intervals shortened to one second.
    fn start(ingest: SocketAddr, query: SocketAddr) -> PrometheusServer {
        let suffix: u32 = rand::thread_rng().gen();
        let directory = std::env::temp_dir().join(format!("sessions-prometheus-{suffix:08x}"));
        std::fs::create_dir_all(&directory).unwrap();
        let config = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
        let mut rewritten = config.clone();
        for (from, to) in [
            ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
            (
                "evaluation_interval: 15s",
                "evaluation_interval: 1s".to_owned(),
            ),
            ("127.0.0.1:9091", ingest.to_string()),
            ("127.0.0.1:8080", query.to_string()),
        ] {
            assert!(rewritten.contains(from), "prometheus.yml has no {from}");
            rewritten = rewritten.replace(from, &to);
        }
        std::fs::write(directory.join("prometheus.yml"), rewritten).unwrap();
        std::fs::copy(
            deploy("prometheus/alerts.rules.yml"),
            directory.join("alerts.rules.yml"),
        )
        .unwrap();
        let address = free_loopback_address();
        let child = Command::new("prometheus")
            .arg("--config.file=prometheus.yml")
            .arg("--storage.tsdb.path=data")
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .current_dir(&directory)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(directory.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus not found: run scripts/install-deps.sh");
        PrometheusServer {
            child,
            address,
            directory,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.directory.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` of the HTTP API, as JSON.
    async fn api(&self, path: &str) -> Value {
        let answer = http_get(self.address, path, &[])
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}\n{}", self.log()));
        serde_json::from_str(&answer.body)
            .unwrap_or_else(|_| panic!("GET {path}: {} {}", answer.status, answer.body))
    }

    /// Evaluates `expression` now: the API's whole answer.
    async fn query(&self, expression: &str) -> Value {
        let encoded = utf8_percent_encode(expression, NON_ALPHANUMERIC);
        self.api(&format!("/api/v1/query?query={encoded}")).await
    }

    async fn wait_until_ready(&self) {
        let started = Instant::now();
        loop {
            if let Ok(answer) = http_get(self.address, "/-/ready", &[]).await {
                if answer.status == 200 {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "prometheus did not become ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// The samples of an instant query's answer that are numbers (not NaN).
fn finite_samples(answer: &Value) -> usize {
    answer["data"]["result"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .filter_map(|one| one["value"][1].as_str())
                .filter_map(|value| value.parse::<f64>().ok())
                .filter(|value| value.is_finite())
                .count()
        })
        .unwrap_or(0)
}

/// Every `(panel title, expression)` of the dashboard, with Grafana's rate interval
/// replaced by a window that covers several one-second scrapes.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/sessions.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut expressions = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expression = target["expr"].as_str().unwrap();
            expressions.push((
                title.to_owned(),
                expression.replace("$__rate_interval", "15s"),
            ));
        }
    }
    expressions
}

/// Demo traffic until `stop`: a few sessions of new events a second into Kafka, and
/// API requests (answered and refused) to the query service.
async fn demo_traffic(
    brokers: String,
    topic: String,
    project_id: u32,
    query: SocketAddr,
    path: String,
    api_key: String,
    mut stop: watch::Receiver<bool>,
) {
    let producer = create_producer(&brokers).unwrap();
    let mut round = 0u64;
    while !*stop.borrow() {
        let workload = Workload::generate(&WorkloadConfig {
            seed: round,
            project_id,
            sessions: 20,
            events_per_session: 10,
            users: 5,
            first_session_id: 4_813_018_042_986_240 + round * 1_000,
            ..WorkloadConfig::default()
        });
        // Collected before the await: a spawned future cannot hold the mapping closure.
        let messages: Vec<(Option<&str>, &[u8])> = workload
            .messages
            .iter()
            .map(|message| (Some(message.key.as_str()), message.payload.as_slice()))
            .collect();
        produce_all(&producer, &topic, messages).await.unwrap();
        for authorization in [api_key.as_str(), api_key.as_str(), "not-a-key"] {
            let _ = http_get(query, &path, &[("Authorization", authorization)]).await;
        }
        // A session's events (the first session of this round), for their panel.
        let project_path = path.split("/users/").next().expect("an API path");
        let first_session = 4_813_018_042_986_240 + round * 1_000;
        let events_path = format!("{project_path}/sessions/{first_session}/events?limit=10");
        let _ = http_get(query, &events_path, &[("Authorization", api_key.as_str())]).await;
        round += 1;
        let _ = tokio::time::timeout(Duration::from_millis(500), stop.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_evaluates_every_panel_and_alert_against_the_running_services() {
    let _turn = serial::shared();
    let brokers = brokers();
    let fixture = Fixture::new("clickhouse-18.16", &legacy_target(), "prometheus").await;
    let topic = format!("t-prometheus-{:08x}", rand::thread_rng().gen::<u32>());
    create_topic(&brokers, &topic, 2).await.unwrap();

    let ingest_settings = WorkerFlags::new(&fixture.db.settings, &brokers, &topic).settings(&[]);
    let ingest = InProcessWorker::start(ingest_settings).await;
    let query = QueryProcess::spawn(&fixture);
    let sessions_path = fixture.path("user-1%40example.com", "limit=5");
    query.wait_until_serving(&fixture, &sessions_path).await;

    let prometheus = PrometheusServer::start(ingest.metrics_address, query.address);
    prometheus.wait_until_ready().await;
    let (stop_traffic, traffic_stop) = watch::channel(false);
    let traffic = tokio::spawn(demo_traffic(
        brokers.clone(),
        topic.clone(),
        fixture.project.project_id,
        query.address,
        sessions_path,
        fixture.api_key.clone(),
        traffic_stop,
    ));

    // Both targets up.
    let started = Instant::now();
    loop {
        let up = prometheus.query("sum(up)").await;
        if up["data"]["result"][0]["value"][1] == "2" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "targets not up: {up}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every panel's expression returns numbers (the lag appears after the worker's first
    // housekeeping, rates after a few scrapes of traffic: wait up to a minute).
    let panels = dashboard_expressions();
    assert!(panels.len() >= 10, "{panels:?}");
    let started = Instant::now();
    let mut without_data = Vec::new();
    loop {
        without_data.clear();
        for (title, expression) in &panels {
            let answer = prometheus.query(expression).await;
            assert_eq!(
                answer["status"], "success",
                "panel {title}: {expression}: {answer}"
            );
            if finite_samples(&answer) == 0 {
                without_data.push(format!("{title}: {expression} → {answer}"));
            }
        }
        if without_data.is_empty() || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        without_data.is_empty(),
        "panels without data:\n{}",
        without_data.join("\n")
    );

    // Every alert is loaded, evaluated by the rule manager without error, and its
    // expression is accepted by the query API.
    let alerts = alert_names();
    let started = Instant::now();
    let loaded = loop {
        let rules = prometheus.api("/api/v1/rules?type=alert").await;
        let loaded: Vec<Value> = rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|group| group["rules"].as_array().unwrap().clone())
            .collect();
        let evaluated = loaded.iter().all(|rule| {
            rule["health"] == "ok" && rule["lastError"].as_str().unwrap_or("").is_empty()
        });
        if (loaded.len() == alerts.len() && evaluated)
            || started.elapsed() > Duration::from_secs(15)
        {
            break loaded;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let loaded_names: Vec<&str> = loaded
        .iter()
        .map(|rule| rule["name"].as_str().unwrap())
        .collect();
    assert_eq!(loaded_names, alerts, "the rules Prometheus loaded");
    for rule in &loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
        let expression = rule["query"].as_str().unwrap();
        let answer = prometheus.query(expression).await;
        assert_eq!(answer["status"], "success", "{expression}: {answer}");
    }

    stop_traffic.send(true).unwrap();
    traffic.await.unwrap();
    ingest.stop().await;
    drop(prometheus);
    drop(query);
    fixture.finish().await;
}
