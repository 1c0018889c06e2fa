use clap::Parser;
use sessions_ingest::IngestSettings;
use tokio::sync::watch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = IngestSettings::parse();
    sessions_shared::telemetry::init_logging();
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", settings.metrics_addr))?;
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; stopping");
        let _ = stop.send(true);
    });
    sessions_ingest::run(settings, listener, shutdown).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
