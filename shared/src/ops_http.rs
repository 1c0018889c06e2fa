//! `/metrics`, `/healthz` and `/readyz`, as warp filters both services mount.
//!
//! Contract: `/healthz` answers 200 while the process runs; `/readyz` answers 200 when
//! the readiness probe (ClickHouse answers) succeeds and 503 otherwise; `/metrics` is
//! the Prometheus text format of the given registry.

use std::future::Future;
use std::sync::Arc;

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

pub fn ready_route<F, Fut>(
    probe: F,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let probe = Arc::new(probe);
    warp::path!("readyz").and(warp::get()).then(move || {
        let probe = Arc::clone(&probe);
        async move {
            if probe().await {
                warp::reply::with_status("ready", StatusCode::OK)
            } else {
                warp::reply::with_status("not ready", StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    })
}
