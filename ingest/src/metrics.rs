//! The worker's Prometheus metrics, defined and registered once per worker on its own
//! registry (so tests can run several workers in one process).
//!
//! Freshness (`ingest_freshness_seconds`) is observed once per Kafka message when the
//! flush that includes it is written: from the message's timestamp to that moment,
//! when its events are queryable. Its buckets have edges at 1 s (the benchmark's goal
//! for p99) and 2 s (the objective the alert watches). `ingest_receive_delay_seconds`,
//! observed when the worker receives the message, is the share of it spent before the
//! worker (the producer's batching, the broker, the fetch); the rest is the wait for
//! and the write of the flush.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use sessions_events::event::RejectReason;

#[derive(Clone)]
pub struct IngestMetrics {
    pub registry: Registry,
    pub messages_consumed: IntCounter,
    pub events_consumed: IntCounter,
    pub events_applied: IntCounter,
    pub events_duplicate: IntCounter,
    pub events_forwarded: IntCounter,
    pub events_stored: IntCounter,
    pub deleted_sessions_dropped: IntCounter,
    pub events_rejected: IntCounterVec,
    pub rows_written: IntCounterVec,
    pub state_bytes_written: IntCounterVec,
    pub insert_duration: Histogram,
    pub freshness: Histogram,
    pub receive_delay: Histogram,
    pub insert_failures: IntCounter,
    pub commit_failures: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub partitions_assigned: IntGauge,
    pub partitions_revoked: IntCounter,
    pub sessions_in_memory: IntGauge,
    pub session_memory_bytes: IntGauge,
    pub sessions_loaded: IntCounter,
    pub sessions_evicted: IntCounter,
    pub flushes: IntCounter,
}

impl IngestMetrics {
    pub fn new() -> IngestMetrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("metric registered once");
            counter
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(gauge.clone()))
                .expect("metric registered once");
            gauge
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry
                .register(Box::new(histogram.clone()))
                .expect("metric registered once");
            histogram
        };
        let messages_consumed = counter("ingest_messages_consumed_total", "Kafka messages read");
        let events_consumed = counter(
            "ingest_events_consumed_total",
            "Valid tracker events decoded",
        );
        let events_applied = counter(
            "ingest_events_applied_total",
            "Events that changed a session (first time seen)",
        );
        let events_duplicate = counter(
            "ingest_events_duplicate_total",
            "Events whose (sessionId, index) was already applied (redelivery or producer duplicate)",
        );
        let events_forwarded = counter(
            "ingest_events_forwarded_total",
            "Events forwarded to their session's home partition (mixed batches, keyless or mis-keyed messages)",
        );
        let events_stored = counter(
            "ingest_events_stored_total",
            "Events of the listed types (page, click, input, error, custom) written to session_events (a flush retried after a failure counts again)",
        );
        let deleted_sessions_dropped = counter(
            "ingest_deleted_sessions_dropped_total",
            "Changed sessions dropped unwritten because a deletion job erased them (late, redelivered or new events of a deleted session)",
        );
        let events_rejected = IntCounterVec::new(
            Opts::new(
                "ingest_events_rejected_total",
                "Rejected messages or batch elements, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(events_rejected.clone()))
            .expect("metric registered once");
        for reason in RejectReason::ALL {
            events_rejected.with_label_values(&[reason.code()]);
        }
        let rows_written = IntCounterVec::new(
            Opts::new(
                "ingest_clickhouse_rows_written_total",
                "Rows written to ClickHouse, by table",
            ),
            &["table"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(rows_written.clone()))
            .expect("metric registered once");
        for table in [
            "sessions",
            crate::sink::STATE_TABLE,
            crate::sink::APPLIED_TABLE,
            "session_keys",
            crate::sink::EVENTS_TABLE,
            "dead_letter_subjects",
            "rejected_events",
        ] {
            rows_written.with_label_values(&[table]);
        }
        let state_bytes_written = IntCounterVec::new(
            Opts::new(
                "ingest_state_bytes_written_total",
                "Bytes of durable session state written (state JSON, applied-index chunks), by table",
            ),
            &["table"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(state_bytes_written.clone()))
            .expect("metric registered once");
        for table in [crate::sink::STATE_TABLE, crate::sink::APPLIED_TABLE] {
            state_bytes_written.with_label_values(&[table]);
        }
        let insert_duration = histogram(
            "ingest_clickhouse_insert_duration_seconds",
            "Time to write one flush to ClickHouse",
            vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        );
        let freshness = histogram(
            "ingest_freshness_seconds",
            "Time from a Kafka message's timestamp to the flush that made its events queryable",
            freshness_buckets(),
        );
        let receive_delay = histogram(
            "ingest_receive_delay_seconds",
            "Time from a Kafka message's timestamp to the worker receiving it",
            freshness_buckets(),
        );
        let insert_failures = counter(
            "ingest_clickhouse_insert_failures_total",
            "Failed ClickHouse writes or loads (retried)",
        );
        let commit_failures = counter(
            "ingest_kafka_commit_failures_total",
            "Failed Kafka offset commits",
        );
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "ingest_consumer_lag",
                "High watermark minus the consumer position, per partition",
            ),
            &["partition"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("metric registered once");
        let partitions_assigned = gauge(
            "ingest_partitions_assigned",
            "Partitions of the topic assigned to this worker",
        );
        let partitions_revoked = counter(
            "ingest_partitions_revoked_total",
            "Partitions revoked from this worker by rebalances (their unwritten input is dropped and replayed by the next owner)",
        );
        let sessions_in_memory = gauge("ingest_sessions_in_memory", "Sessions held in memory");
        let session_memory_bytes = gauge(
            "ingest_session_memory_bytes",
            "Approximate bytes held by in-memory sessions",
        );
        let sessions_loaded = counter(
            "ingest_sessions_loaded_total",
            "Sessions loaded from ClickHouse (late events, restarts)",
        );
        let sessions_evicted = counter(
            "ingest_sessions_evicted_total",
            "Sessions evicted from memory",
        );
        let flushes = counter("ingest_flushes_total", "Flushes written to ClickHouse");
        IngestMetrics {
            registry,
            messages_consumed,
            events_consumed,
            events_applied,
            events_duplicate,
            events_forwarded,
            events_stored,
            deleted_sessions_dropped,
            events_rejected,
            rows_written,
            state_bytes_written,
            insert_duration,
            freshness,
            receive_delay,
            insert_failures,
            commit_failures,
            consumer_lag,
            partitions_assigned,
            partitions_revoked,
            sessions_in_memory,
            session_memory_bytes,
            sessions_loaded,
            sessions_evicted,
            flushes,
        }
    }
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Bucket edges of the freshness histograms, in seconds (1 s: the benchmark's goal for
/// p99; 2 s: the objective the alert watches).
fn freshness_buckets() -> Vec<f64> {
    vec![
        0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0,
    ]
}

/// Seconds from a Kafka timestamp to `now_ms` (0 for a timestamp in the future).
pub fn age_seconds(now_ms: i64, timestamp_ms: i64) -> f64 {
    now_ms.saturating_sub(timestamp_ms).max(0) as f64 / 1000.0
}
