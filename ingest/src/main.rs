//! `sessions-ingest`: settings, logging, then [`sessions_ingest::run`] on its listener.

use std::process::ExitCode;

use clap::Parser;
use sessions_ingest::IngestSettings;
use sessions_shared::service::serve_main;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let settings = IngestSettings::parse();
    sessions_shared::telemetry::init_logging();
    let address = settings.metrics_addr;
    serve_main(address, |listener, shutdown| {
        sessions_ingest::run(settings, listener, shutdown)
    })
    .await
}
