//! `sessions-ingest`: a Kafka consumer-group worker that folds tracker events into one
//! exact row per session in ClickHouse. See `consumer.rs` for the exactly-once argument.

pub mod aggregator;
pub mod consumer;
pub mod metrics;
pub mod settings;
pub mod sink;

use std::time::Duration;

use sessions_shared::clickhouse::Store;
use sessions_shared::ops_http;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::Filter;

pub use settings::IngestSettings;

/// How long start-up waits for ClickHouse before the worker gives up.
const MIGRATION_PATIENCE: Duration = Duration::from_secs(120);

/// Runs the worker until `shutdown` turns true. The metrics listener is bound by the
/// caller (tests bind port 0).
pub async fn run(
    settings: IngestSettings,
    metrics_listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let store = Store::new(&settings.clickhouse);
    sessions_shared::migrations::migrate_with_retry(&store, Some(MIGRATION_PATIENCE)).await?;
    let metrics = metrics::IngestMetrics::new();

    let ready_store = store.clone();
    let routes = ops_http::metrics_route(metrics.registry.clone())
        .or(ops_http::health_route())
        .or(ops_http::ready_route(move || {
            let store = ready_store.clone();
            async move { store.ping().await.is_ok() }
        }));
    let mut http_shutdown = shutdown.clone();
    let http = tokio::spawn(
        warp::serve(routes)
            .incoming(metrics_listener)
            .graceful(async move {
                let _ = http_shutdown.wait_for(|stop| *stop).await;
            })
            .run(),
    );

    let consumer = consumer::create_consumer(&settings)?;
    let sink = sink::Sink::new(store, metrics.clone(), settings.insert_timeout);
    tracing::info!(topic = %settings.kafka_topic, group = %settings.kafka_group, "consuming");
    let result = consumer::Worker::new(consumer, sink, metrics, settings, shutdown)
        .run()
        .await;
    http.abort();
    result
}
