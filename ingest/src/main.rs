use anyhow::Context;
use clap::Parser;
use sessions_ingest::IngestSettings;
use sessions_shared::shutdown::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = IngestSettings::parse();
    sessions_shared::telemetry::init_logging();
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", settings.metrics_addr))?;
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    sessions_ingest::run(settings, listener, shutdown.receiver()).await
}
