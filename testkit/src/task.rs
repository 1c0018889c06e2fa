//! A background task a test starts beside what it checks (a service's key reloads, a
//! page reader), stopped when its owner is dropped, also when the test fails midway.

use tokio::task::JoinHandle;

/// Aborts the task when dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
