//! Load shedding: so that one client's flood cannot slow everyone's requests down, API
//! requests are admitted a bounded number at a time, wait a bounded time in a bounded
//! queue, and run under a deadline.
//!
//! Contract: at most `MAX_IN_FLIGHT` API requests hold a permit at once (every
//! ClickHouse statement of an API request runs under its permit); at most
//! `MAX_QUEUED` wait for one, in arrival order, each at most `QUEUE_WAIT_MS`. A
//! request past either bound is refused at once: [`Refusal::QueueFull`] or
//! [`Refusal::QueueWait`] (503 `overloaded, try again later`). An admitted request
//! that is not answered within `REQUEST_DEADLINE_MS` of its arrival (the queue
//! included) is dropped, its statements with it: [`Refusal::Deadline`] (503). A
//! permit is given back when the request ends, however it ends (answered, past its
//! deadline, or dropped because the client went away). Each refusal is counted by
//! reason; the requests in flight and queued are gauges. The operational routes
//! (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`) take no permit.
//!
//! Pages of users known to be heavy (`heavy_users`: their page is probes and
//! windows, up to `sessions::MAX_PAGE_ROUNDS` rounds) also go through a second,
//! smaller limiter of the same kind (`HEAVY_PAGE_CONCURRENCY` at once, twice as many
//! waiting), inside the first: otherwise they fill every permit under load, each
//! slowed by the others, and light requests wait behind them.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Every value of the `reason` label of `query_requests_shed_total`: the API's
/// limiter's, then the heavy pages' limiter's own.
pub const SHED_REASONS: &[&str] = &[
    "queue_full",
    "queue_wait",
    "deadline",
    "heavy_page_queue_full",
    "heavy_page_queue_wait",
];

/// The `Retry-After` of a refusal, in seconds: one queue wait, by when the queue has
/// turned over.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Why a request was not answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `MAX_QUEUED` requests were already waiting.
    QueueFull,
    /// No permit within `QUEUE_WAIT_MS`.
    QueueWait,
    /// Admitted, but not answered within `REQUEST_DEADLINE_MS`.
    Deadline,
}

/// The bounds (`settings`: `MAX_IN_FLIGHT`, `MAX_QUEUED`, `QUEUE_WAIT_MS`,
/// `REQUEST_DEADLINE_MS`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_in_flight: usize,
    pub max_queued: usize,
    pub queue_wait: Duration,
    pub deadline: Duration,
}

/// The series the limiter keeps up to date.
#[derive(Clone)]
pub struct AdmissionMetrics {
    pub in_flight: IntGauge,
    pub queued: IntGauge,
    /// One per [`Refusal`], in its order.
    pub shed: Vec<IntCounter>,
}

impl AdmissionMetrics {
    /// The API's limiter's reasons, in [`Refusal`]'s order.
    pub const API_REASONS: [&'static str; 3] = ["queue_full", "queue_wait", "deadline"];
    /// The heavy pages' limiter's (its deadline is the request's, which ends first).
    pub const HEAVY_PAGE_REASONS: [&'static str; 3] =
        ["heavy_page_queue_full", "heavy_page_queue_wait", "deadline"];

    /// Resolves `shed`'s series once (every refusal counts one): `reasons` names each
    /// [`Refusal`], in its order.
    pub fn new(
        in_flight: IntGauge,
        queued: IntGauge,
        shed: &IntCounterVec,
        reasons: [&str; 3],
    ) -> AdmissionMetrics {
        AdmissionMetrics {
            in_flight,
            queued,
            shed: reasons
                .iter()
                .map(|reason| shed.with_label_values(&[reason]))
                .collect(),
        }
    }

    /// Series of their own, registered nowhere (tests).
    pub fn unregistered() -> AdmissionMetrics {
        let shed = IntCounterVec::new(prometheus::Opts::new("shed", "shed"), &["reason"])
            .expect("a valid name");
        AdmissionMetrics::new(
            IntGauge::new("in_flight", "in flight").expect("a valid name"),
            IntGauge::new("queued", "queued").expect("a valid name"),
            &shed,
            AdmissionMetrics::API_REASONS,
        )
    }
}

/// The limiter every API request goes through (module contract).
pub struct Admission {
    permits: Semaphore,
    limits: Limits,
    /// Requests waiting for a permit (at most `limits.max_queued`).
    waiting: AtomicUsize,
    metrics: AdmissionMetrics,
}

impl Admission {
    pub fn new(limits: Limits, metrics: AdmissionMetrics) -> Admission {
        Admission {
            permits: Semaphore::new(limits.max_in_flight.max(1)),
            limits,
            waiting: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Runs `work` once admitted, within the deadline counted from now; its output, or
    /// why it was refused (counted). Dropping the returned future at any point gives
    /// back what it holds: its place in the queue or its permit.
    pub async fn run<Work: Future>(&self, work: Work) -> Result<Work::Output, Refusal> {
        let arrival = Instant::now();
        let answer = async {
            let _permit = self.admit().await?;
            tokio::time::timeout_at(arrival + self.limits.deadline, work)
                .await
                .map_err(|_| Refusal::Deadline)
        }
        .await;
        if let Err(refusal) = answer {
            self.metrics.shed[refusal as usize].inc();
        }
        answer
    }

    /// A permit: at once when one is free, else after a bounded wait in the queue.
    async fn admit(&self) -> Result<Permit<'_>, Refusal> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(Permit::new(permit, &self.metrics.in_flight));
        }
        let _place = self.queue()?;
        match tokio::time::timeout(self.limits.queue_wait, self.permits.acquire()).await {
            Ok(permit) => Ok(Permit::new(
                permit.expect("the semaphore is never closed"),
                &self.metrics.in_flight,
            )),
            Err(_) => Err(Refusal::QueueWait),
        }
    }

    /// A place in the queue, unless it is full.
    fn queue(&self) -> Result<Place<'_>, Refusal> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < self.limits.max_queued).then_some(waiting + 1)
            })
            .map_err(|_| Refusal::QueueFull)?;
        self.metrics.queued.inc();
        Ok(Place { admission: self })
    }

    /// Permits free now (tests).
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Requests waiting now (tests).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// A place in the queue, given back when dropped (admitted, timed out or cancelled).
struct Place<'a> {
    admission: &'a Admission,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.admission.waiting.fetch_sub(1, Ordering::AcqRel);
        self.admission.metrics.queued.dec();
    }
}

/// A permit, counted in the in-flight gauge while held.
struct Permit<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    in_flight: &'a IntGauge,
}

impl<'a> Permit<'a> {
    fn new(permit: tokio::sync::SemaphorePermit<'a>, in_flight: &'a IntGauge) -> Permit<'a> {
        in_flight.inc();
        Permit {
            _permit: permit,
            in_flight,
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn admission(max_in_flight: usize, max_queued: usize) -> Arc<Admission> {
        Arc::new(Admission::new(
            Limits {
                max_in_flight,
                max_queued,
                queue_wait: Duration::from_secs(1),
                deadline: Duration::from_secs(10),
            },
            AdmissionMetrics::unregistered(),
        ))
    }

    /// A request that holds its permit until `release` is notified.
    fn held(
        admission: &Arc<Admission>,
        release: &Arc<tokio::sync::Notify>,
    ) -> tokio::task::JoinHandle<Result<(), Refusal>> {
        let admission = Arc::clone(admission);
        let release = Arc::clone(release);
        tokio::spawn(async move { admission.run(release.notified()).await })
    }

    fn shed(admission: &Admission, refusal: Refusal) -> u64 {
        admission.metrics.shed[refusal as usize].get()
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_in_flight_bound_requests_queue_and_past_the_queue_are_shed() {
        let admission = admission(2, 3);
        let release = Arc::new(tokio::sync::Notify::new());
        let requests: Vec<_> = (0..5).map(|_| held(&admission, &release)).collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(admission.available(), 0);
        assert_eq!(admission.waiting(), 3);
        assert_eq!(admission.metrics.in_flight.get(), 2);
        assert_eq!(admission.metrics.queued.get(), 3);
        // The queue is full: the next request is refused at once, without waiting.
        let refused = admission.run(async {}).await;
        assert_eq!(refused, Err(Refusal::QueueFull));
        assert_eq!(shed(&admission, Refusal::QueueFull), 1);
        // Released one at a time, the waiting requests are admitted in turn.
        for _ in 0..5 {
            release.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for request in requests {
            assert_eq!(request.await.unwrap(), Ok(()));
        }
        assert_eq!(admission.available(), 2);
        assert_eq!(admission.waiting(), 0);
        assert_eq!(admission.metrics.in_flight.get(), 0);
        assert_eq!(admission.metrics.queued.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_in_the_queue_at_most_the_queue_wait() {
        let admission = admission(1, 10);
        let release = Arc::new(tokio::sync::Notify::new());
        let holder = held(&admission, &release);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let started = Instant::now();
        let refused = admission.run(async {}).await;
        assert_eq!(refused, Err(Refusal::QueueWait));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(shed(&admission, Refusal::QueueWait), 1);
        assert_eq!(admission.waiting(), 0, "its place is given back");
        release.notify_one();
        assert_eq!(holder.await.unwrap(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_permit_and_the_place_are_given_back_when_the_request_is_dropped() {
        let admission = admission(1, 10);
        // A request cancelled while it holds the permit (the client went away: hyper
        // drops the handler's future), and one cancelled while it waits.
        let holding = tokio::spawn({
            let admission = Arc::clone(&admission);
            async move { admission.run(std::future::pending::<()>()).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let waiting = tokio::spawn({
            let admission = Arc::clone(&admission);
            async move { admission.run(async {}).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!((admission.available(), admission.waiting()), (0, 1));
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(admission.waiting(), 0);
        assert_eq!(admission.metrics.queued.get(), 0);
        holding.abort();
        assert!(holding.await.unwrap_err().is_cancelled());
        assert_eq!(admission.available(), 1);
        assert_eq!(admission.metrics.in_flight.get(), 0);
        // Nothing was refused: cancelled requests are not counted as shed.
        assert!(admission
            .metrics
            .shed
            .iter()
            .all(|counter| counter.get() == 0));
        assert_eq!(admission.run(async { 7 }).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn an_admitted_request_is_dropped_at_its_deadline_counted_from_arrival() {
        let admission = admission(1, 10);
        let release = Arc::new(tokio::sync::Notify::new());
        // Queued 600 ms, then admitted: 9.4 s of the 10 s deadline remain.
        let holder = held(&admission, &release);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let started = Instant::now();
        let slow = tokio::spawn({
            let admission = Arc::clone(&admission);
            async move {
                admission
                    .run(tokio::time::sleep(Duration::from_secs(60)))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        release.notify_one();
        assert_eq!(holder.await.unwrap(), Ok(()));
        assert_eq!(slow.await.unwrap(), Err(Refusal::Deadline));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(shed(&admission, Refusal::Deadline), 1);
        assert_eq!(admission.available(), 1, "the permit is given back");
        // Work within the deadline is answered.
        let quick = admission
            .run(tokio::time::sleep(Duration::from_secs(9)))
            .await;
        assert_eq!(quick, Ok(()));
    }
}
