//! A future run as a tokio task of its own, awaited where it was: what keeps a
//! ClickHouse answer's many wake-ups off the request's deep stack of futures.
//!
//! Contract: [`on_its_own_task`] gives the future's output, as awaiting it in place
//! would; dropping the returned future aborts the task (as dropping the future in place
//! would have stopped it); a panic in the task is resumed in the caller. The one
//! difference is cancellation by the runtime itself (it is shutting down): `None`.

use std::future::Future;

use tokio::task::JoinHandle;

/// Aborts the task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work` on a task of its own and waits for its output (module contract).
///
/// Each wake-up of a task polls its whole future, from the top: for a page's
/// ClickHouse read, awaited in place, that was hyper's connection, the graceful
/// shutdown's watch, warp's filters, the admission deadline's timer, the route's and the
/// store's (its own timer too) at each piece of the answer (4 KiB each from a
/// ClickHouse 18.16 server: ~60 for a 1,000-session page). On its own task, only the
/// read is polled then (BENCHMARKS.md §6).
pub async fn on_its_own_task<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let mut task = AbortOnDrop(tokio::spawn(work));
    match (&mut task.0).await {
        Ok(output) => Some(output),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn gives_the_output() {
        assert_eq!(on_its_own_task(async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn dropping_the_wait_stops_the_task() {
        let finished = Arc::new(AtomicBool::new(false));
        let wait = on_its_own_task({
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                finished.store(true, Ordering::SeqCst);
            }
        });
        // Polled once (the task starts), then dropped.
        let _ = tokio::time::timeout(Duration::from_millis(5), wait).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!finished.load(Ordering::SeqCst));
    }

    #[tokio::test]
    #[should_panic(expected = "in the task")]
    async fn a_panic_is_resumed_in_the_caller() {
        on_its_own_task(async { panic!("in the task") }).await;
    }
}
