//! The worker's settings: flags and environment variables (the flag wins), defaults
//! from docs/operations.md plus the project's own knobs (listed in the README).

use std::net::SocketAddr;
use std::time::Duration;

use sessions_shared::config::{parse_positive_millis, parse_seconds, ClickHouseSettings};

use crate::memory::parse_memory_limit;
use crate::partitioner::Partitioner;

/// The consumer group protocol and assignment (`KAFKA_GROUP_PROTOCOL`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupProtocol {
    /// Classic protocol, `cooperative-sticky` assignor: incremental.
    Cooperative,
    /// Classic protocol, `range` assignor: stop-the-world.
    Eager,
    /// KIP-848 consumer protocol (`group.protocol=consumer`): incremental, server-side.
    Consumer,
}

#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "sessions-ingest",
    version,
    about = "Kafka consumer-group worker: tracker events in, exact per-session rows out to ClickHouse"
)]
pub struct IngestSettings {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    #[arg(long, env = "KAFKA_TOPIC", default_value = "tracker-events")]
    pub kafka_topic: String,
    #[arg(long, env = "KAFKA_GROUP", default_value = "sessions-ingest")]
    pub kafka_group: String,
    /// How the consumer group hands partitions out: `cooperative` (classic protocol,
    /// cooperative-sticky: a rebalance revokes only the partitions that change
    /// owner), `eager` (classic protocol, range: every rebalance revokes every
    /// partition) or `consumer` (KIP-848, the broker assigns incrementally; the
    /// session timeout and heartbeat are the broker's settings).
    #[arg(long, env = "KAFKA_GROUP_PROTOCOL", default_value = "cooperative")]
    pub kafka_group_protocol: GroupProtocol,
    /// Kafka group session timeout (classic protocols only).
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value = "30000")]
    pub kafka_session_timeout_ms: u32,
    /// Kafka group heartbeat interval (classic protocols only).
    #[arg(long, env = "KAFKA_HEARTBEAT_INTERVAL_MS", default_value = "3000")]
    pub kafka_heartbeat_interval_ms: u32,
    #[arg(long, env = "KAFKA_MAX_POLL_INTERVAL_MS", default_value = "300000")]
    pub kafka_max_poll_interval_ms: u32,
    /// Longest time the broker may hold a fetch that has nothing new to return
    /// (librdkafka's `fetch.wait.max.ms`, default 500 ms). Apache Kafka answers a held
    /// fetch as soon as data arrives, so this prices an idle worker's empty fetches
    /// (fewer with a longer wait) against a broker that would hold fetches whatever
    /// arrives (each event waiting up to this long).
    #[arg(long, env = "KAFKA_FETCH_WAIT_MS", default_value = "100")]
    pub kafka_fetch_wait_ms: u32,
    /// The producers' partitioner (librdkafka's name): decides each session's home
    /// partition, where its events are applied; events arriving elsewhere are forwarded.
    #[arg(long, env = "KAFKA_PARTITIONER", default_value = "murmur2_random")]
    pub kafka_partitioner: Partitioner,
    #[command(flatten)]
    pub clickhouse: ClickHouseSettings,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "INGEST_METRICS_ADDR", default_value = "127.0.0.1:9091")]
    pub metrics_addr: SocketAddr,
    /// Longest time an event waits in memory before its flush starts (when flushes
    /// fall due by time: `Pending::flush_due_by_time`).
    #[arg(long, env = "FLUSH_INTERVAL_MS", default_value = "500", value_parser = parse_positive_millis)]
    pub flush_interval: Duration,
    /// Flush once this many sessions changed.
    #[arg(long, env = "FLUSH_MAX_SESSIONS", default_value = "20000")]
    pub flush_max_sessions: usize,
    /// Flush once this many message bytes were read since the last flush.
    #[arg(long, env = "FLUSH_MAX_BYTES", default_value = "33554432")]
    pub flush_max_bytes: usize,
    /// Sessions the worker has not touched for this long leave memory (the worker's
    /// clock, not the clients' timestamps).
    #[arg(long, env = "SESSION_IDLE_TIMEOUT_SECS", default_value = "1800", value_parser = parse_seconds)]
    pub session_idle_timeout: Duration,
    /// The worker's memory ceiling in bytes: sessions, pending input, dead letters and
    /// fetched messages share it (see `memory.rs`); reaching it means back-pressure.
    #[arg(long, env = "INGEST_MEMORY_LIMIT_BYTES", default_value = "1073741824", value_parser = parse_memory_limit)]
    pub memory_limit: usize,
    /// Upper bound of one ClickHouse insert, in milliseconds.
    #[arg(long, env = "INSERT_TIMEOUT_MS", default_value = "30000", value_parser = parse_positive_millis)]
    pub insert_timeout: Duration,
    /// Longest backoff between retries while ClickHouse fails.
    #[arg(long, env = "RETRY_MAX_BACKOFF_MS", default_value = "5000", value_parser = parse_positive_millis)]
    pub retry_max_backoff: Duration,
    /// How long shutdown keeps retrying a failing final flush before giving up
    /// (uncommitted input is then replayed by the next owner).
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value = "30", value_parser = parse_seconds)]
    pub shutdown_grace: Duration,
}
