//! Start-up and shutdown plumbing for `main`: migrations retried while ClickHouse is
//! unreachable, and a shutdown signal (SIGTERM or SIGINT) that several waiters share.
//!
//! Contract: [`migrate_with_retry`] returns once every migration is applied, retries
//! transient errors with exponential backoff (capped at 10 s), and fails at once on a
//! permanent error (the server refused a statement).

use std::time::Duration;

use anyhow::Context;
use sessions_shared::clickhouse::Store;
use tokio::sync::watch;

const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

pub async fn migrate_with_retry(store: &Store) -> anyhow::Result<()> {
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        match sessions_shared::migrations::migrate(store).await {
            Ok(applied) => {
                tracing::info!(applied = applied.len(), "schema is up to date");
                return Ok(());
            }
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "clickhouse not reachable for migrations");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(error) => return Err(error).context("applying migrations"),
        }
    }
}

/// Becomes ready once SIGTERM or SIGINT arrives; clones wait for the same signal.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Installs the signal handlers (call inside the runtime).
    pub fn on_signals() -> std::io::Result<Shutdown> {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let (sender, receiver) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
            }
            let _ = sender.send(true);
        });
        Ok(Shutdown(receiver))
    }

    pub async fn wait(mut self) {
        // An error means the sender is gone, which only happens after it sent.
        let _ = self.0.wait_for(|requested| *requested).await;
    }
}
