//! `sessions-query`: settings, logging, migrations, listener, then [`sessions_query::run`].

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sessions_query::Settings;
use sessions_shared::clickhouse::Store;
use sessions_shared::migrations::migrate_with_retry;
use sessions_shared::shutdown::Shutdown;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    sessions_shared::telemetry::init_logging();
    match start(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(settings: Settings) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    let store = Store::new(&settings.clickhouse);
    tokio::select! {
        migrated = migrate_with_retry(&store, None) => migrated.context("applying migrations")?,
        () = shutdown.clone().wait() => return Ok(()),
    }
    let listener = tokio::net::TcpListener::bind(settings.query_addr)
        .await
        .with_context(|| format!("binding {}", settings.query_addr))?;
    sessions_query::run(settings, listener, shutdown.wait()).await
}
