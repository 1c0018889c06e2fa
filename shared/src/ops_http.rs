//! `/metrics`, `/healthz` and `/readyz`, as warp filters both services mount.
//!
//! Contract: `/healthz` answers 200 while the process runs; `/readyz` answers 200 when
//! the readiness probe (ClickHouse answers) succeeded and 503 otherwise, from a probe at
//! most [`READINESS_MAX_AGE`] old: callers (unauthenticated) share one probe at a time,
//! so they cannot turn `/readyz` into a ClickHouse load generator; `/metrics` is the
//! Prometheus text format of the given registry.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use prometheus::{Encoder, Registry, TextEncoder};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

pub fn metrics_route(
    registry: Registry,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).map(move || {
        let mut body = Vec::new();
        let encoder = TextEncoder::new();
        match encoder.encode(&registry.gather(), &mut body) {
            Ok(()) => {
                warp::reply::with_header(body, "content-type", encoder.format_type().to_owned())
                    .into_response()
            }
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    })
}

pub fn health_route() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("healthz").and(warp::get()).map(|| "ok")
}

/// How old a readiness answer may be.
pub const READINESS_MAX_AGE: Duration = Duration::from_secs(1);

/// The last probe's answer and when it was taken; one probe runs at a time.
struct Readiness<F> {
    probe: F,
    last: Mutex<Option<(Instant, bool)>>,
}

impl<F, Fut> Readiness<F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    /// The last answer if it is fresh enough, else a new probe's (callers arriving
    /// meanwhile wait for it and share it).
    async fn check(&self) -> bool {
        let mut last = self.last.lock().await;
        match *last {
            Some((taken, ready)) if taken.elapsed() < READINESS_MAX_AGE => ready,
            _ => {
                let ready = (self.probe)().await;
                *last = Some((Instant::now(), ready));
                ready
            }
        }
    }
}

pub fn ready_route<F, Fut>(
    probe: F,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let readiness = Arc::new(Readiness {
        probe,
        last: Mutex::new(None),
    });
    warp::path!("readyz").and(warp::get()).then(move || {
        let readiness = Arc::clone(&readiness);
        async move {
            if readiness.check().await {
                warp::reply::with_status("ready", StatusCode::OK)
            } else {
                warp::reply::with_status("not ready", StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn readiness_is_probed_at_most_once_a_second_whatever_the_callers() {
        let probes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&probes);
        let readiness = Readiness {
            probe: move || {
                let counted = Arc::clone(&counted);
                async move { counted.fetch_add(1, Ordering::SeqCst) % 2 == 0 }
            },
            last: Mutex::new(None),
        };
        for _ in 0..100 {
            assert!(readiness.check().await, "the first answer, shared");
        }
        assert_eq!(probes.load(Ordering::SeqCst), 1);
        tokio::time::advance(READINESS_MAX_AGE).await;
        assert!(!readiness.check().await, "a second later: a new probe");
        assert_eq!(probes.load(Ordering::SeqCst), 2);
    }
}
