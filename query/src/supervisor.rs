//! Background tasks that survive their own panics: [`supervise`] runs a task and, when
//! it panics, logs the panic at error level, counts it in
//! `query_background_task_panics_total{task}`, waits a backoff and starts the task again
//! from scratch.
//!
//! Contract: a task that returns is finished and not restarted; aborting the handle
//! [`supervise`] returns aborts the running attempt too. Restarting is safe for both
//! tasks this service runs, so neither takes the process down:
//! - the key refresher holds nothing but the cache it replaces whole, and its first
//!   reload runs as soon as it starts;
//! - a job runner that dies mid-job leaves a lease that lapses, after which any runner
//!   resumes the job from the start (every step is idempotent,
//!   `sessions_control::jobs::runner`); the restarted runner is a new runner, with a new
//!   id, like one on another replica.

use std::any::Any;
use std::future::Future;
use std::time::Duration;

use prometheus::IntCounterVec;
use tokio::task::{JoinHandle, JoinSet};

/// Wait between a panic and the restart: long enough that a task panicking at once
/// on every start logs once a second rather than spinning, short enough that a
/// one-off panic costs one reload or one poll.
pub const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// Runs `start()` as a task named `task` (a value of `metrics::BACKGROUND_TASKS`),
/// restarting it `backoff` after each panic (module contract).
pub fn supervise<Start, Task>(
    task: &'static str,
    panics: IntCounterVec,
    backoff: Duration,
    start: Start,
) -> JoinHandle<()>
where
    Start: Fn() -> Task + Send + 'static,
    Task: Future<Output = ()> + Send + 'static,
{
    let panics = panics.with_label_values(&[task]);
    tokio::spawn(async move {
        loop {
            // Dropping the set (the supervisor aborted) aborts the attempt.
            let mut attempt = JoinSet::new();
            attempt.spawn(start());
            let Some(outcome) = attempt.join_next().await else {
                return;
            };
            match outcome {
                Ok(()) => return,
                Err(error) if error.is_panic() => {
                    let payload = error.into_panic();
                    let message = panic_message(payload.as_ref());
                    panics.inc();
                    tracing::error!(
                        task,
                        panic = message,
                        backoff_ms = backoff.as_millis(),
                        "background task panicked; restarting it"
                    );
                    tokio::time::sleep(backoff).await;
                }
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            }
        }
    })
}

/// The text a panic was raised with, when it is one.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        return text;
    }
    if let Some(text) = payload.downcast_ref::<String>() {
        return text;
    }
    "(not a string)"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use prometheus::Opts;

    fn panics_counter() -> IntCounterVec {
        IntCounterVec::new(Opts::new("panics_total", "panics"), &["task"]).unwrap()
    }

    #[tokio::test]
    async fn a_task_that_panics_once_is_restarted_and_counted() {
        let panics = panics_counter();
        let starts = Arc::new(AtomicUsize::new(0));
        let counted_starts = Arc::clone(&starts);
        let handle = supervise(
            "job_runner",
            panics.clone(),
            Duration::from_millis(10),
            move || {
                let first = counted_starts.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        panic!("the first attempt fails");
                    }
                }
            },
        );
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("the second attempt returns")
            .unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert_eq!(panics.with_label_values(&["job_runner"]).get(), 1);
        assert_eq!(panics.with_label_values(&["auth_refresher"]).get(), 0);
    }

    #[tokio::test]
    async fn a_task_that_returns_is_not_restarted() {
        let panics = panics_counter();
        let starts = Arc::new(AtomicUsize::new(0));
        let counted_starts = Arc::clone(&starts);
        let handle = supervise(
            "auth_refresher",
            panics.clone(),
            Duration::from_millis(10),
            move || {
                counted_starts.fetch_add(1, Ordering::SeqCst);
                async {}
            },
        );
        handle.await.unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(panics.with_label_values(&["auth_refresher"]).get(), 0);
    }

    #[tokio::test]
    async fn aborting_the_supervisor_aborts_the_running_attempt() {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let running = Arc::new(tokio::sync::Notify::new());
        let (task_dropped, task_running) = (Arc::clone(&dropped), Arc::clone(&running));
        let handle = supervise(
            "auth_refresher",
            panics_counter(),
            RESTART_BACKOFF,
            move || {
                let guard = SetOnDrop(Arc::clone(&task_dropped));
                let running = Arc::clone(&task_running);
                async move {
                    let _guard = guard;
                    running.notify_one();
                    std::future::pending::<()>().await;
                }
            },
        );
        running.notified().await;
        handle.abort();
        assert!(handle.await.unwrap_err().is_cancelled());
        // The attempt is aborted when the supervisor's future is dropped; let it run.
        for _ in 0..100 {
            if dropped.load(Ordering::SeqCst) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(dropped.load(Ordering::SeqCst));
    }
}
