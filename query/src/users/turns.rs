//! Turns for reads of heavy users' rows, so that clients asking again and again for a
//! bot's statistics cannot take every core of ClickHouse from the other users.
//!
//! Contract: at most `concurrency` reads hold a turn at a time on this replica (at
//! least one); a request waits for its turn at most `wait` (the service's request
//! bound, `CLICKHOUSE_TIMEOUT_MS`), then fails as a timeout (503).

use std::time::Duration;

use sessions_shared::clickhouse::StoreError;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Turns for reads of heavy users' rows: a few at a time, each waited for at most
/// `wait`.
pub struct HeavyTurns {
    limit: Semaphore,
    wait: Duration,
}

impl HeavyTurns {
    pub fn new(concurrency: usize, wait: Duration) -> HeavyTurns {
        HeavyTurns {
            limit: Semaphore::new(concurrency.max(1)),
            wait,
        }
    }

    /// Waits for a turn; a timeout (503) past `wait`.
    pub async fn take(&self) -> Result<SemaphorePermit<'_>, StoreError> {
        let turn = tokio::time::timeout(self.wait, self.limit.acquire())
            .await
            .map_err(|_| StoreError::Timeout(self.wait))?;
        Ok(turn.expect("the limit is never closed"))
    }

    /// The limit itself (tests hold its permits).
    pub fn limit(&self) -> &Semaphore {
        &self.limit
    }
}
