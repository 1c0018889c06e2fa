//! The ingest worker as the tests run it: its flags for a test (fast flushes, short
//! group timeouts), and the worker in the test's own process (`sessions_ingest::run`
//! on a port-0 metrics listener), stopped the way SIGTERM stops it. A test that needs
//! a worker process (to SIGKILL it) builds its command from the same flags.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use sessions_ingest::IngestSettings;
use sessions_shared::config::ClickHouseSettings;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::http_get;

/// A worker's flags under test: the ClickHouse settings of the test's database, its
/// topic on `brokers`, the group `<topic>-group`, flushes every 200 ms, a 6 s group
/// session, retries backing off at most 1 s, metrics on a free port.
#[derive(Clone, Debug)]
pub struct WorkerFlags {
    flags: Vec<(&'static str, String)>,
}

impl WorkerFlags {
    pub fn new(clickhouse: &ClickHouseSettings, brokers: &str, topic: &str) -> WorkerFlags {
        let mut flags = clickhouse.to_flags();
        flags.extend([
            ("--kafka-brokers", brokers.to_owned()),
            ("--kafka-topic", topic.to_owned()),
            ("--kafka-group", format!("{topic}-group")),
            ("--kafka-session-timeout-ms", "6000".into()),
            ("--kafka-heartbeat-interval-ms", "3000".into()),
            ("--metrics-addr", "127.0.0.1:0".into()),
            ("--flush-interval", "200".into()),
            ("--retry-max-backoff", "1000".into()),
        ]);
        WorkerFlags { flags }
    }

    /// The command-line arguments: these flags, except those `extra` sets itself, then
    /// `extra` (`["--session-idle-timeout", "1"]`).
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(flag, _)| !extra.contains(flag))
            .flat_map(|(flag, value)| [flag.to_string(), value.clone()])
            .chain(extra.iter().map(|arg| arg.to_string()))
            .collect()
    }

    /// The worker's settings parsed from [`WorkerFlags::args`].
    pub fn settings(&self, extra: &[&str]) -> IngestSettings {
        let program = std::iter::once("sessions-ingest".to_owned());
        IngestSettings::try_parse_from(program.chain(self.args(extra))).expect("worker settings")
    }
}

/// A worker running in this process. The first one installs the process's log
/// subscriber (`RUST_LOG`, default `info`, on stderr) for every test of the binary.
pub struct InProcessWorker {
    pub metrics_address: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InProcessWorker {
    pub async fn start(settings: IngestSettings) -> InProcessWorker {
        sessions_shared::telemetry::init_logging();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_address = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(sessions_ingest::run(settings, listener, shutdown.into()));
        InProcessWorker {
            metrics_address,
            stop,
            task,
        }
    }

    /// Whether it is still running (it stops only when told to, or on a fatal error).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Graceful stop, as on SIGTERM: flush, commit, leave the group. Panics unless it
    /// ends cleanly within 60 s.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("worker stops in time")
            .expect("worker task")
            .expect("worker ends cleanly");
    }

    /// The worker's /metrics page.
    pub async fn metrics(&self) -> String {
        http_get(self.metrics_address, "/metrics", &[])
            .await
            .expect("GET /metrics")
            .body
    }
}

/// The value of one sample line of a Prometheus text page (`name{labels} value`).
pub fn metric_value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in metrics"))
}
