//! The service's Prometheus metrics, defined and registered in one place.
//!
//! Contract: each service instance registers into its own [`Registry`] (tests build
//! several services in one process). Labels are low-cardinality: `route` is one of
//! [`ROUTES`], `status` an HTTP status code, `kind` a ClickHouse error class, `task` one
//! of [`BACKGROUND_TASKS`]. No key, project or user id ever becomes a label.
//! `query_api_keys_age_seconds` is computed when scraped, so it keeps growing when the
//! reloads stop, whatever the reason.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};
use sessions_shared::clickhouse::StoreError;
use warp::http::StatusCode;

/// Every value of the `kind` label of `query_clickhouse_errors_total` (each series exists
/// from the start, at 0, so rates and dashboards see it before the first failure).
pub const CLICKHOUSE_ERROR_KINDS: &[&str] = &["timeout", "unavailable", "rejected", "malformed"];

/// Every value of the `outcome` label of `query_job_attempts_total` (each from the start).
pub const JOB_OUTCOMES: &[&str] = &["completed", "failed", "interrupted"];

/// Every value of the `kind` label of `query_page_statements_total` (each from the start):
/// the ClickHouse statements pages cost (`sessions::Pager`).
pub const PAGE_STATEMENTS: &[&str] = &[
    "whole_range",
    "refused",
    "guessed_window",
    "probe",
    "window",
];

/// Every value of the `task` label of `query_background_task_panics_total` (each from
/// the start): the supervised background tasks (`crate::supervisor`).
pub const BACKGROUND_TASKS: &[&str] = &["auth_refresher", "job_runner"];

/// Every value of the `route` label.
pub const ROUTES: &[&str] = &[
    "user_sessions",
    "user",
    "jobs",
    "job",
    "session_events",
    "live_sessions",
    "projects",
    "project",
    "metrics",
    "healthz",
    "readyz",
    "openapi",
    "other",
];

#[derive(Clone)]
pub struct Metrics {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    /// Per route, in [`ROUTES`]' order, the series every request of it touches.
    route_series: Arc<[RouteSeries]>,
    clickhouse_errors: IntCounterVec,
    auth_refresh_failures: IntCounter,
    /// Attempts at jobs by this replica's runner, by how they ended.
    pub job_attempts: IntCounterVec,
    /// `ALTER … DELETE` mutations this replica's deletions issued.
    pub deletion_mutations: IntCounter,
    /// ClickHouse statements run for pages, by kind.
    pub page_statements: IntCounterVec,
    /// Heavy users' rows read into this replica's statistics folds.
    pub stats_fold_rows: IntCounter,
    /// Sessions held in this replica's statistics folds.
    pub stats_fold_sessions: IntGauge,
    /// Panics of supervised background tasks, by task.
    pub background_task_panics: IntCounterVec,
    /// API requests refused or dropped for load (`admission`), by reason.
    pub requests_shed: IntCounterVec,
    /// API requests holding an admission permit, and waiting for one.
    pub requests_in_flight: IntGauge,
    pub requests_queued: IntGauge,
    /// Pages of known heavy users holding a turn, and waiting for one.
    pub heavy_pages_in_flight: IntGauge,
    pub heavy_pages_queued: IntGauge,
    /// Pages that stopped at `sessions::MAX_PAGE_ROUNDS` with a link to the rest.
    pub pages_cut_short: IntCounter,
    /// Projects created through the API by this replica.
    pub projects_created: IntCounter,
    /// Project creations refused because the organization has `MAX_PROJECTS_PER_ORG`.
    pub project_creations_refused: IntCounter,
    /// Rows of `live_sessions` read by live-sessions requests (their cost).
    pub live_rows_read: IntCounter,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "query_requests_total",
                "HTTP requests answered, by route and status",
            ),
            &["route", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "query_request_duration_seconds",
                "Time to answer an HTTP request, by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )?;
        let clickhouse_errors = counter_of_each(
            "query_clickhouse_errors_total",
            "Failed ClickHouse requests, by kind (timeout, unavailable, rejected, malformed)",
            "kind",
            CLICKHOUSE_ERROR_KINDS,
        )?;
        let auth_refresh_failures = IntCounter::new(
            "query_auth_cache_refresh_failures_total",
            "Failed reloads of the API keys and projects",
        )?;
        let job_attempts = counter_of_each(
            "query_job_attempts_total",
            "Jobs this replica's runner ran, by how the attempt ended: completed, failed, interrupted (resumed later)",
            "outcome",
            JOB_OUTCOMES,
        )?;
        let deletion_mutations = IntCounter::new(
            "query_deletion_mutations_total",
            "ALTER TABLE ... DELETE mutations issued by this replica's user deletions (one per table per round of a batch, plus one per chunk of dead letters; deletions of users with nothing stored issue none)",
        )?;
        let page_statements = counter_of_each(
            "query_page_statements_total",
            "ClickHouse statements run for pages of sessions, by kind: whole_range (the page in one bounded request), refused (a bounded statement refused as too large), guessed_window, probe, window",
            "kind",
            PAGE_STATEMENTS,
        )?;
        let stats_fold_rows = IntCounter::new(
            "query_stats_fold_rows_total",
            "Heavy users' rows read into this replica's statistics folds (a user's first request reads all of them, later ones only rows in parts not read yet)",
        )?;
        let stats_fold_sessions = IntGauge::new(
            "query_stats_fold_sessions",
            "Sessions held in this replica's statistics folds (at most STATS_CACHE_SESSIONS, plus folds being read)",
        )?;
        let background_task_panics = counter_of_each(
            "query_background_task_panics_total",
            "Panics of this replica's background tasks, by task (auth_refresher, job_runner); each is restarted after a short backoff",
            "task",
            BACKGROUND_TASKS,
        )?;
        let requests_shed = counter_of_each(
            "query_requests_shed_total",
            "API requests answered 503 for load, by reason: queue_full (MAX_QUEUED already waiting), queue_wait (no permit within QUEUE_WAIT_MS), deadline (not answered within REQUEST_DEADLINE_MS), heavy_page_queue_full and heavy_page_queue_wait (the same for a heavy user's page waiting for one of HEAVY_PAGE_CONCURRENCY turns)",
            "reason",
            crate::admission::SHED_REASONS,
        )?;
        let requests_in_flight = IntGauge::new(
            "query_requests_in_flight",
            "API requests holding an admission permit (at most MAX_IN_FLIGHT)",
        )?;
        let requests_queued = IntGauge::new(
            "query_requests_queued",
            "API requests waiting for an admission permit (at most MAX_QUEUED)",
        )?;
        let heavy_pages_in_flight = IntGauge::new(
            "query_heavy_pages_in_flight",
            "Pages of users known to be heavy being read (at most HEAVY_PAGE_CONCURRENCY)",
        )?;
        let heavy_pages_queued = IntGauge::new(
            "query_heavy_pages_queued",
            "Pages of users known to be heavy waiting for their turn (at most twice HEAVY_PAGE_CONCURRENCY)",
        )?;
        let pages_cut_short = IntCounter::new(
            "query_pages_cut_short_total",
            "Pages of a heavy user that stopped after the most probe and window rounds a page may take, answered with the sessions found and a link to the rest",
        )?;
        let projects_created = IntCounter::new(
            "query_projects_created_total",
            "Projects created through POST /api/v1/projects on this replica",
        )?;
        let project_creations_refused = IntCounter::new(
            "query_project_creations_refused_total",
            "POST /api/v1/projects refused (409) because the organization has MAX_PROJECTS_PER_ORG projects",
        )?;
        let live_rows_read = IntCounter::new(
            "query_live_session_rows_read_total",
            "Rows of live_sessions that live-sessions requests read (grows with the live sessions and their flushes within LIVE_SESSION_SECS, never with a project's history)",
        )?;
        registry.register(Box::new(projects_created.clone()))?;
        registry.register(Box::new(project_creations_refused.clone()))?;
        registry.register(Box::new(live_rows_read.clone()))?;
        registry.register(Box::new(requests_shed.clone()))?;
        registry.register(Box::new(requests_in_flight.clone()))?;
        registry.register(Box::new(requests_queued.clone()))?;
        registry.register(Box::new(pages_cut_short.clone()))?;
        registry.register(Box::new(heavy_pages_in_flight.clone()))?;
        registry.register(Box::new(heavy_pages_queued.clone()))?;
        registry.register(Box::new(background_task_panics.clone()))?;
        registry.register(Box::new(stats_fold_rows.clone()))?;
        registry.register(Box::new(stats_fold_sessions.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(job_attempts.clone()))?;
        registry.register(Box::new(deletion_mutations.clone()))?;
        registry.register(Box::new(page_statements.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(clickhouse_errors.clone()))?;
        registry.register(Box::new(auth_refresh_failures.clone()))?;
        Ok(Metrics {
            requests,
            request_duration,
            route_series: ROUTES.iter().map(|_| RouteSeries::default()).collect(),
            clickhouse_errors,
            auth_refresh_failures,
            job_attempts,
            deletion_mutations,
            page_statements,
            stats_fold_rows,
            stats_fold_sessions,
            background_task_panics,
            requests_shed,
            requests_in_flight,
            requests_queued,
            heavy_pages_in_flight,
            heavy_pages_queued,
            pages_cut_short,
            projects_created,
            project_creations_refused,
            live_rows_read,
        })
    }

    /// Registers `query_api_keys_age_seconds`: `age()` read at every scrape.
    pub fn register_api_keys_age(
        registry: &Registry,
        age: impl Fn() -> Duration + Send + Sync + 'static,
    ) -> Result<(), prometheus::Error> {
        let gauge = Gauge::new(
            "query_api_keys_age_seconds",
            "Age of the API keys and projects this replica authorizes with: time since the start of the last successful reload (since the start before any); past AUTH_MAX_AGE_MS requests with a key answer 503",
        )?;
        registry.register(Box::new(ScrapedGauge {
            gauge,
            value: Box::new(move || age().as_secs_f64()),
        }))
    }
    pub fn observe_request(&self, path: &str, status: StatusCode, elapsed: Duration) {
        let route = route_label(path);
        let Some(series) = ROUTES
            .iter()
            .position(|known| *known == route)
            .map(|index| &self.route_series[index])
        else {
            // Not one of ROUTES (`route_labels_are_a_closed_set` says it is): the slow way.
            self.request_duration
                .with_label_values(&[route])
                .observe(elapsed.as_secs_f64());
            self.requests
                .with_label_values(&[route, status.as_str()])
                .inc();
            return;
        };
        series
            .duration
            .get_or_init(|| self.request_duration.with_label_values(&[route]))
            .observe(elapsed.as_secs_f64());
        if status == StatusCode::OK {
            series
                .ok
                .get_or_init(|| self.requests.with_label_values(&[route, "200"]))
                .inc();
        } else {
            self.requests
                .with_label_values(&[route, status.as_str()])
                .inc();
        }
    }

    pub fn observe_clickhouse_error(&self, error: &StoreError) {
        let kind = match error {
            StoreError::Timeout(_) => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Rejected { .. } => "rejected",
            StoreError::Malformed(_) => "malformed",
        };
        self.clickhouse_errors.with_label_values(&[kind]).inc();
    }

    pub fn observe_auth_refresh_failure(&self) {
        self.auth_refresh_failures.inc();
    }
}

/// One route's duration histogram and count of 200 answers, each resolved from its
/// vector on first use: a lookup by label values hashes them and takes a lock, and
/// every request observes both. A series still appears only once observed.
#[derive(Default)]
struct RouteSeries {
    duration: OnceLock<Histogram>,
    ok: OnceLock<IntCounter>,
}

/// A gauge whose value is computed when it is collected.
struct ScrapedGauge {
    gauge: Gauge,
    value: Box<dyn Fn() -> f64 + Send + Sync>,
}

impl Collector for ScrapedGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.set((self.value)());
        self.gauge.collect()
    }
}

/// A counter with one label whose every value exists from the start, at 0 (so rates
/// and dashboards see each series before its first increment).
fn counter_of_each(
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let counter = IntCounterVec::new(Opts::new(name, help), &[label])?;
    for value in values {
        counter.with_label_values(&[value]);
    }
    Ok(counter)
}

/// The `route` label of a request path.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/openapi.json" => "openapi",
        _ => match crate::params::match_api_path(path) {
            Some(api_path) => api_path.route_label(),
            None => "other",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_a_closed_set() {
        assert_eq!(
            route_label("/api/v1/k/users/someone/sessions"),
            "user_sessions"
        );
        assert_eq!(route_label("/metrics"), "metrics");
        assert_eq!(route_label("/api/v1/k/users/someone"), "user");
        assert_eq!(route_label("/api/v1/k/jobs"), "jobs");
        assert_eq!(route_label("/api/v1/k/jobs/12"), "job");
        assert_eq!(
            route_label("/api/v1/k/sessions/12/events"),
            "session_events"
        );
        assert_eq!(route_label("/api/v1/k/users/someone/x"), "other");
        assert_eq!(route_label("/secret-user-id"), "other");
        for path in [
            "/metrics",
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/x",
            "/api/v1/k/users/u/sessions",
            "/api/v1/k/users/u",
            "/api/v1/k/jobs",
            "/api/v1/k/jobs/1",
        ] {
            assert!(ROUTES.contains(&route_label(path)));
        }
    }

    #[test]
    fn two_instances_register_in_their_own_registries() {
        let first = Registry::new();
        let second = Registry::new();
        let metrics = Metrics::register(&first).unwrap();
        Metrics::register(&second).unwrap();
        assert!(
            Metrics::register(&first).is_err(),
            "names are registered once"
        );
        metrics.observe_request("/healthz", StatusCode::OK, Duration::from_millis(3));
        let names: Vec<String> = first
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert!(names.contains(&"query_requests_total".to_owned()));
        assert!(names.contains(&"query_request_duration_seconds".to_owned()));
        let error_kinds = first
            .gather()
            .iter()
            .filter(|family| family.name() == "query_clickhouse_errors_total")
            .map(|family| family.get_metric().len())
            .sum::<usize>();
        assert_eq!(
            error_kinds,
            CLICKHOUSE_ERROR_KINDS.len(),
            "every kind from the start"
        );
    }

    #[test]
    fn the_api_keys_age_is_read_at_each_scrape() {
        let registry = Registry::new();
        let seconds = Arc::new(std::sync::atomic::AtomicU64::new(3));
        let source = Arc::clone(&seconds);
        Metrics::register_api_keys_age(&registry, move || {
            Duration::from_secs(source.load(std::sync::atomic::Ordering::Relaxed))
        })
        .unwrap();
        let age = || {
            registry
                .gather()
                .iter()
                .find(|family| family.name() == "query_api_keys_age_seconds")
                .map(|family| family.get_metric()[0].get_gauge().get_value())
        };
        assert_eq!(age(), Some(3.0));
        seconds.store(12, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(age(), Some(12.0));
    }
}
