//! `sessions-ingest`: a Kafka consumer-group worker that folds tracker events into one
//! exact row per session in ClickHouse. [`exactly_once`] argues why every event counts once.

pub mod aggregator;
pub mod consumer;
pub mod durable_state;
pub mod event_log;
pub mod exactly_once;
pub mod forward;
pub mod home_cache;
pub mod kafka;
pub mod memory;
pub mod metrics;
pub mod parked;
pub mod partitioner;
pub mod pending;
pub mod settings;
pub mod sink;

use std::time::Duration;

use sessions_shared::clickhouse::Store;
use sessions_shared::ops_http;
use sessions_shared::service::migrate_at_start;
use sessions_shared::shutdown::Shutdown;
use tokio::net::TcpListener;
use warp::Filter;

pub use settings::IngestSettings;

/// How long start-up waits for ClickHouse before the worker gives up.
const MIGRATION_PATIENCE: Duration = Duration::from_secs(120);

/// Applies the migrations (waiting at most two minutes for ClickHouse), then consumes
/// until `shutdown`, then flushes, commits and leaves the group
/// (`sessions_shared::service`). The metrics listener is bound by the caller.
pub async fn run(
    settings: IngestSettings,
    metrics_listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let store = Store::new(&settings.clickhouse)?;
    if !migrate_at_start(&store, Some(MIGRATION_PATIENCE), &shutdown).await? {
        return Ok(());
    }
    let metrics = metrics::IngestMetrics::new();

    let ready_store = store.clone();
    let routes = ops_http::metrics_route(metrics.registry.clone())
        .or(ops_http::health_route())
        .or(ops_http::ready_route(move || {
            let store = ready_store.clone();
            async move { store.ping().await.is_ok() }
        }));
    let http = tokio::spawn(
        warp::serve(routes)
            .incoming(metrics_listener)
            .graceful(shutdown.clone().wait())
            .run(),
    );

    let budget = memory::MemoryBudget::new(settings.memory_limit);
    let consumer = kafka::create_consumer(&settings, &budget, &metrics)?;
    let sink = sink::Sink::new(
        store,
        metrics.clone(),
        settings.insert_timeout,
        budget.flush_chunk,
    );
    let forwarder = forward::Forwarder::new(&settings)?;
    tracing::info!(topic = %settings.kafka_topic, group = %settings.kafka_group, "consuming");
    let worker = consumer::Worker::new(
        consumer, sink, forwarder, metrics, budget, settings, shutdown,
    );
    let result = worker.run().await;
    http.abort();
    Ok(result?)
}
