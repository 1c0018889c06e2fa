//! `sessions-query`: the HTTP service behind the API (`…/users/:userId/sessions`, a
//! user's statistics and deletion, the jobs; spec/api.md and spec/api-users.md), plus
//! `/metrics`, `/healthz`, `/readyz` and `/openapi.json` (the OpenAPI 3.1 document of all
//! of them) on the same listener, and a job runner.
//!
//! Contract: [`run`] serves on a listener the caller bound (tests bind port 0) until
//! `shutdown` completes, then stops accepting and lets in-flight requests finish. API
//! keys and projects are reloaded in the background (see [`auth`]); a page costs one
//! ClickHouse request, or a probe and a window for a user too large for one (see
//! [`sessions`]). API requests are admitted a bounded number at a time, each under a
//! deadline ([`admission`]); connections are bounded in number and in the time their
//! headers take (`sessions_shared::http_server`). Every replica runs due jobs
//! (`sessions_control::jobs::runner`: each job once, one outcome). The key refresher and
//! the job runner are supervised: a panic is logged, counted and the task restarted
//! (see [`supervisor`]).

pub mod admission;
pub mod auth;
pub mod cursor;
pub mod error;
pub mod heavy_users;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod own_task;
pub mod params;
pub mod projects;
pub mod response;
pub mod routes;
pub mod session_events;
pub mod sessions;
pub mod settings;
pub mod supervisor;
pub mod ttl_cache;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sessions_control::jobs::runner::{JobRunner, RunnerSettings};
use sessions_control::tenancy::TenancyError;
use sessions_shared::clickhouse::Store;
use sessions_shared::http_server::{self, ConnectionLimits};
use sessions_shared::service::migrate_at_start;
use sessions_shared::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use warp::{Filter, Reply};

pub use settings::Settings;

use admission::{Admission, AdmissionMetrics, Limits};
use auth::AuthCache;
use cursor::CursorKey;
use metrics::Metrics;
use routes::AppState;
use sessions::Pager;
use users::StatsReader;

/// One service instance: its state and its own metrics registry.
pub struct QueryService {
    state: Arc<AppState>,
    registry: prometheus::Registry,
    auth_refresh: Duration,
    runner: RunnerSettings,
}

impl QueryService {
    pub fn new(settings: &Settings) -> anyhow::Result<QueryService> {
        let registry = prometheus::Registry::new();
        let metrics = Metrics::register(&registry).context("registering metrics")?;
        let auth_max_age = settings
            .auth_snapshot_max_age()
            .map_err(anyhow::Error::msg)?;
        let auth = Arc::new(AuthCache::new(settings.auth_refresh, auth_max_age));
        let aged = Arc::clone(&auth);
        Metrics::register_api_keys_age(&registry, move || aged.age())
            .context("registering metrics")?;
        let cursor_key = CursorKey::new(settings.cursor_key_bytes().map_err(anyhow::Error::msg)?);
        let state = AppState {
            store: Store::new(&settings.clickhouse)?,
            auth,
            cursor_key,
            pager: Pager::default().counting_in(metrics.page_statements.clone()),
            stats: StatsReader::new(
                usize::from(settings.heavy_stats_concurrency),
                sessions::SCAN_MAX_ROWS,
                settings.clickhouse.clickhouse_timeout,
                settings.stats_cache_sessions,
            )
            .counting_in(
                metrics.stats_fold_rows.clone(),
                metrics.stats_fold_sessions.clone(),
            ),
            admission: Admission::new(
                Limits {
                    max_in_flight: usize::from(settings.max_in_flight),
                    max_queued: settings.max_queued as usize,
                    queue_wait: settings.queue_wait,
                    deadline: settings.request_deadline,
                },
                AdmissionMetrics::new(
                    metrics.requests_in_flight.clone(),
                    metrics.requests_queued.clone(),
                    &metrics.requests_shed,
                    AdmissionMetrics::API_REASONS,
                ),
            ),
            heavy_pages: Admission::new(
                Limits {
                    max_in_flight: usize::from(settings.heavy_page_concurrency),
                    max_queued: usize::from(settings.heavy_page_concurrency) * 2,
                    queue_wait: settings.queue_wait,
                    deadline: settings.request_deadline,
                },
                AdmissionMetrics::new(
                    metrics.heavy_pages_in_flight.clone(),
                    metrics.heavy_pages_queued.clone(),
                    &metrics.requests_shed,
                    AdmissionMetrics::HEAVY_PAGE_REASONS,
                ),
            ),
            metrics,
            deletion_grace: settings.deletion_grace,
            max_open_jobs: settings.max_open_jobs,
            deletion_retry_time: settings.deletion_settle + settings.jobs_poll,
            max_projects_per_org: settings.max_projects_per_org,
            live_window: settings.live_session,
        };
        // A cancellation accepted just before a job's start has landed within two
        // request bounds: a runner waits that long after the start.
        let runner = RunnerSettings {
            poll: settings.jobs_poll,
            lease: settings.jobs_lease,
            start_delay: settings.clickhouse.clickhouse_timeout * 2,
            settle: settings.deletion_settle,
        };
        Ok(QueryService {
            state: Arc::new(state),
            registry,
            auth_refresh: settings.auth_refresh,
            runner,
        })
    }

    /// Every route, ready for `warp::serve` or `warp::test::request()`.
    pub fn routes(
        &self,
    ) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
        routes::routes(Arc::clone(&self.state), self.registry.clone())
    }

    /// Loads API keys and projects once (tests call this instead of waiting).
    pub async fn refresh_auth(&self) -> Result<(), TenancyError> {
        self.state.auth.refresh(&self.state.store).await
    }

    /// This replica's job runner (tests drive it with `run_due`).
    pub fn job_runner(&self) -> JobRunner {
        new_job_runner(&self.state, &self.runner)
    }

    /// Runs due jobs every `JOBS_POLL_MS` until `shutdown`, supervised: a new runner
    /// after a panic.
    pub fn spawn_job_runner(&self, shutdown: Shutdown) -> JoinHandle<()> {
        let state = Arc::clone(&self.state);
        let runner = self.runner.clone();
        supervisor::supervise(
            "job_runner",
            self.state.metrics.background_task_panics.clone(),
            supervisor::RESTART_BACKOFF,
            move || new_job_runner(&state, &runner).run_forever(shutdown.clone()),
        )
    }

    /// Reloads API keys and projects every `AUTH_REFRESH_MS`, starting now, supervised:
    /// restarted (reloading at once) after a panic.
    pub fn spawn_auth_refresher(&self) -> JoinHandle<()> {
        let state = Arc::clone(&self.state);
        let period = self.auth_refresh;
        supervisor::supervise(
            "auth_refresher",
            self.state.metrics.background_task_panics.clone(),
            supervisor::RESTART_BACKOFF,
            move || {
                Arc::clone(&state.auth).refresh_forever(
                    state.store.clone(),
                    period,
                    state.metrics.clone(),
                )
            },
        )
    }
}

fn new_job_runner(state: &AppState, settings: &RunnerSettings) -> JobRunner {
    JobRunner::new(state.store.clone(), settings.clone())
        .counting_in(state.metrics.job_attempts.clone())
        .counting_mutations_in(state.metrics.deletion_mutations.clone())
}

/// Applies the migrations (waiting for ClickHouse as long as it takes), then serves
/// until `shutdown`, then drains in-flight requests (`sessions_shared::service`).
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    if settings.cursor_secret.is_none() && settings.allow_built_in_cursor_key {
        tracing::warn!(
            "CURSOR_SECRET is not set: cursors are signed with a built-in, public key \
             (ALLOW_BUILT_IN_CURSOR_KEY, development only)"
        );
    }
    let service = QueryService::new(&settings)?;
    if !migrate_at_start(&service.state.store, None, &shutdown).await? {
        return Ok(());
    }
    let refresher = service.spawn_auth_refresher();
    let runner = service.spawn_job_runner(shutdown.clone());
    let address = listener
        .local_addr()
        .context("reading the listener's address")?;
    tracing::info!(%address, "sessions-query listening");
    let limits = ConnectionLimits {
        max_connections: settings.max_connections as usize,
        header_read_timeout: settings.header_read_timeout,
    };
    http_server::serve(service.routes(), listener, limits, shutdown.wait()).await;
    refresher.abort();
    runner.abort();
    tracing::info!("sessions-query stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sessions_control::tenancy::hash_api_key;
    use sessions_shared::config::ClickHouseSettings;

    use super::*;
    use crate::auth::TenancySnapshot;

    const PROJECT_KEY: &str = "3sWXSsqHgSKnE87YkNJK";

    /// A service that is never connected: what is under test answers before ClickHouse.
    fn service() -> QueryService {
        let clickhouse = ClickHouseSettings::new("http://127.0.0.1:9", "unused".to_owned());
        QueryService::new(&Settings::new(clickhouse)).unwrap()
    }

    fn loaded(service: &QueryService, seconds_ago: u64) {
        let loaded_at = Instant::now()
            .checked_sub(Duration::from_secs(seconds_ago))
            .unwrap();
        let snapshot = TenancySnapshot::new(
            [(hash_api_key("key"), 1)],
            [(PROJECT_KEY.to_owned(), 10, 1)],
        );
        service.state.auth.replace_loaded_at(snapshot, loaded_at);
    }

    fn errors_of(body: &[u8]) -> Vec<String> {
        let body: serde_json::Value = serde_json::from_slice(body).unwrap();
        serde_json::from_value(body["errors"].clone()).unwrap()
    }

    #[tokio::test]
    async fn keys_older_than_the_max_age_are_503_with_retry_after_and_healthz_stays_200() {
        let service = service();
        let routes = service.routes();
        // A bad user id is answered after the key check, without ClickHouse.
        let bad_user = format!("/api/v1/{PROJECT_KEY}/users/%FF/sessions");
        let request = || {
            warp::test::request()
                .path(&bad_user)
                .header("authorization", "key")
        };
        loaded(&service, 8);
        let stale = request().reply(&routes).await;
        assert_eq!(stale.status(), 503);
        assert_eq!(stale.headers()["retry-after"], "2");
        assert_eq!(stale.headers()["content-type"], "application/json");
        assert_eq!(
            errors_of(stale.body()),
            ["service unavailable, try again later"]
        );
        let health = warp::test::request().path("/healthz").reply(&routes).await;
        assert_eq!(health.status(), 200);
        let ready = warp::test::request().path("/readyz").reply(&routes).await;
        assert_eq!(ready.status(), 503);
        let metrics = warp::test::request().path("/metrics").reply(&routes).await;
        let text = std::str::from_utf8(metrics.body()).unwrap();
        let age: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix("query_api_keys_age_seconds "))
            .expect("the age is exported")
            .parse()
            .unwrap();
        assert!(age >= 8.0, "{age}");
        // A newer successful load (within the 7 s default) lets keys through again.
        loaded(&service, 6);
        assert_eq!(request().reply(&routes).await.status(), 400);
    }

    #[tokio::test]
    async fn over_long_paths_and_query_strings_are_414_before_authentication() {
        let routes = service().routes();
        for path in [
            "/".repeat(60_000),
            format!("/api/v1/{PROJECT_KEY}/users/{}/sessions", "u".repeat(2100)),
            format!(
                "/api/v1/{PROJECT_KEY}/users/u/sessions?x={}",
                "a".repeat(8200)
            ),
        ] {
            let response = warp::test::request().path(&path).reply(&routes).await;
            assert_eq!(response.status(), 414, "{} bytes", path.len());
            assert_eq!(response.headers()["content-type"], "application/json");
            let errors = errors_of(response.body());
            assert!(
                errors[0].ends_with("too long (at most 2048 bytes)")
                    || errors[0] == "query string too long (at most 8192 bytes)",
                "{errors:?}"
            );
        }
        // Just under the caps, the request goes on to the key check.
        let near_the_caps = format!(
            "/api/v1/{PROJECT_KEY}/users/u/sessions?x={}",
            "a".repeat(8000)
        );
        let response = warp::test::request()
            .path(&near_the_caps)
            .reply(&routes)
            .await;
        assert_eq!(response.status(), 401);
    }
}
