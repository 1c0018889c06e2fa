//! A shutdown signal (SIGTERM or SIGINT) that several waiters share; both services
//! stop on it (operations.md: the worker flushes, commits and leaves the group; the
//! query service finishes in-flight requests).

use tokio::sync::watch;

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

    /// The underlying receiver: `true` once a signal arrived.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }

    pub async fn wait(mut self) {
        // An error means the sender is gone, which only happens after it sent.
        let _ = self.0.wait_for(|requested| *requested).await;
    }
}
