//! A shutdown signal (SIGTERM or SIGINT) that several waiters share; both services
//! stop on it (the operations contract: the worker flushes, commits and leaves the
//! group; the query service finishes in-flight requests).

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

    /// Whether shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once shutdown is requested. A dropped sender counts as a request.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|requested| *requested).await;
    }
}

/// A shutdown driven by hand (tests): send `true` to request it.
impl From<watch::Receiver<bool>> for Shutdown {
    fn from(receiver: watch::Receiver<bool>) -> Self {
        Shutdown(receiver)
    }
}
