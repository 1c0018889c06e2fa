//! How both services start and stop, so they do it the same way: `main` parses the
//! settings, starts logging and calls [`serve_main`] with the service's `run`.
//!
//! Contract of a service's `run(settings, listener, shutdown)`: the listener is bound
//! by the caller (tests bind port 0); `run` applies the migrations first (waiting for
//! ClickHouse, but returning at once if shutdown is requested meanwhile), then serves
//! until `shutdown`, then stops cleanly. [`serve_main`] turns its result into the
//! process's exit code, after logging the error with its whole chain of causes.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clickhouse::Store;
use crate::migrations::migrate_with_retry;
use crate::shutdown::Shutdown;

/// The body of a service's `main`: signal handlers, the listener on `address`, then
/// `run`; failures are logged and become exit code 1.
pub async fn serve_main<Run, Serving>(address: SocketAddr, run: Run) -> ExitCode
where
    Run: FnOnce(TcpListener, Shutdown) -> Serving,
    Serving: Future<Output = anyhow::Result<()>>,
{
    let started = async {
        let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        run(listener, shutdown).await
    };
    match started.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Applies the migrations at start-up, retrying while ClickHouse is unreachable (for at
/// most `patience`, if given). `Ok(false)` when shutdown was requested first.
pub async fn migrate_at_start(
    store: &Store,
    patience: Option<Duration>,
    shutdown: &Shutdown,
) -> anyhow::Result<bool> {
    tokio::select! {
        migrated = migrate_with_retry(store, patience) => {
            migrated.context("applying migrations")?;
            Ok(true)
        }
        () = shutdown.clone().wait() => Ok(false),
    }
}
