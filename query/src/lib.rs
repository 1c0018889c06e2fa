//! `sessions-query`: the HTTP service behind `GET /api/v1/:projectKey/users/:userId/sessions`
//! (the API contract), plus `/metrics`, `/healthz`, `/readyz` and `/openapi.json` (the
//! OpenAPI 3.1 document of all of them) on the same listener.
//!
//! Contract: [`run`] serves on a listener the caller bound (tests bind port 0) until
//! `shutdown` completes, then stops accepting and lets in-flight requests finish. API
//! keys and projects are reloaded in the background (see [`auth`]); a request costs
//! exactly one ClickHouse query (see [`sessions`]).

pub mod auth;
pub mod cursor;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod response;
pub mod routes;
pub mod sessions;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sessions_shared::clickhouse::Store;
use sessions_shared::service::migrate_at_start;
use sessions_shared::shutdown::Shutdown;
use sessions_shared::tenancy::TenancyError;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use warp::{Filter, Reply};

pub use settings::Settings;

use auth::AuthCache;
use cursor::CursorKey;
use metrics::Metrics;
use routes::AppState;

/// One service instance: its state and its own metrics registry.
pub struct QueryService {
    state: Arc<AppState>,
    registry: prometheus::Registry,
    auth_refresh: Duration,
}

impl QueryService {
    pub fn new(settings: &Settings) -> anyhow::Result<QueryService> {
        let registry = prometheus::Registry::new();
        let metrics = Metrics::register(&registry).context("registering metrics")?;
        let cursor_key = match &settings.cursor_secret {
            Some(secret) => CursorKey::new(secret.expose().as_bytes()),
            None => CursorKey::new(cursor::BUILT_IN_SECRET.as_bytes()),
        };
        let state = AppState {
            store: Store::new(&settings.clickhouse)?,
            auth: Arc::new(AuthCache::default()),
            cursor_key,
            metrics,
        };
        Ok(QueryService {
            state: Arc::new(state),
            registry,
            auth_refresh: settings.auth_refresh,
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

    /// Reloads API keys and projects every `AUTH_REFRESH_MS`, starting now.
    pub fn spawn_auth_refresher(&self) -> JoinHandle<()> {
        let auth = Arc::clone(&self.state.auth);
        tokio::spawn(auth.refresh_forever(
            self.state.store.clone(),
            self.auth_refresh,
            self.state.metrics.clone(),
        ))
    }
}

/// Applies the migrations (waiting for ClickHouse as long as it takes), then serves
/// until `shutdown`, then drains in-flight requests (`sessions_shared::service`).
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    if settings.cursor_secret.is_none() {
        tracing::warn!("CURSOR_SECRET is not set: cursors are signed with a built-in key");
    }
    let service = QueryService::new(&settings)?;
    if !migrate_at_start(&service.state.store, None, &shutdown).await? {
        return Ok(());
    }
    let refresher = service.spawn_auth_refresher();
    let address = listener
        .local_addr()
        .context("reading the listener's address")?;
    tracing::info!(%address, "sessions-query listening");
    warp::serve(service.routes())
        .incoming(listener)
        .graceful(shutdown.wait())
        .run()
        .await;
    refresher.abort();
    tracing::info!("sessions-query stopped");
    Ok(())
}
