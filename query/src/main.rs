//! `sessions-query`: settings, logging, then [`sessions_query::run`] on its listener.

use std::process::ExitCode;

use clap::Parser;
use sessions_query::Settings;
use sessions_shared::service::serve_main;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    sessions_shared::telemetry::init_logging();
    let address = settings.query_addr;
    serve_main(address, |listener, shutdown| {
        sessions_query::run(settings, listener, shutdown)
    })
    .await
}
