//! The warp filters: the sessions endpoint and the operational endpoints on one
//! listener, with JSON errors and request metrics around them.
//!
//! Contract for `GET /api/v1/:projectKey/users/:userId/sessions`, in this order: another
//! method on that path is 405; the API key is checked (401), then the project (404);
//! then `userId`, the query parameters and the cursor (400 naming the parameter);
//! then the page's ClickHouse queries (`sessions`: usually a probe and one window; 503
//! when ClickHouse is unreachable or too slow, 500 otherwise). Unknown paths are 404
//! with the same JSON error shape. Every route is GET only: another method on a known
//! path is 405 with `Allow: GET`.

use std::convert::Infallible;
use std::sync::Arc;

use sessions_shared::clickhouse::Store;
use sessions_shared::ops_http::{health_route, metrics_route, ready_route};
use tracing::instrument;
use warp::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::AuthCache;
use crate::cursor::{CursorKey, CursorScope, Position};
use crate::error::{json_response, recover, ApiError};
use crate::metrics::Metrics;
use crate::openapi::openapi_route;
use crate::params::{decode_user_id, match_sessions_path, parse_query, SessionsPath};
use crate::response::{next_link, page_json};
use crate::sessions::{fetch_page, PageQuery};

/// What every request handler shares.
pub struct AppState {
    pub store: Store,
    pub auth: Arc<AuthCache>,
    pub cursor_key: CursorKey,
    pub metrics: Metrics,
}

fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&state))
}

/// Every route of the service, errors recovered into JSON, requests counted and timed.
pub fn routes(
    state: Arc<AppState>,
    registry: prometheus::Registry,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let store = state.store.clone();
    let readiness = ready_route(move || {
        let store = store.clone();
        async move { store.ping().await.is_ok() }
    });
    let metrics = state.metrics.clone();
    metrics_route(registry)
        .or(health_route())
        .or(readiness)
        .or(openapi_route())
        .or(user_sessions_route(state))
        .recover(recover)
        .with(warp::log::custom(move |info| {
            metrics.observe_request(info.path(), info.status(), info.elapsed())
        }))
}

/// The sessions path, any method (a wrong method is answered 405 by the handler).
pub fn user_sessions_route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let sessions_path = warp::path::full().and_then(|path: FullPath| async move {
        match match_sessions_path(path.as_str()) {
            Some(_) => Ok(path),
            None => Err(warp::reject::not_found()),
        }
    });
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();
    sessions_path
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(raw_query)
        .and(with_state(state))
        .then(
            |path: FullPath,
             method: Method,
             headers: HeaderMap,
             raw_query: String,
             state: Arc<AppState>| async move {
                let path = match_sessions_path(path.as_str()).expect("matched by the filter");
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok());
                user_sessions(&state, &method, path, authorization, &raw_query)
                    .await
                    .unwrap_or_else(ApiError::into_response)
            },
        )
}

#[instrument(skip_all, fields(project_key = ?path.project_key))]
async fn user_sessions(
    state: &AppState,
    method: &Method,
    path: SessionsPath<'_>,
    authorization: Option<&str>,
    raw_query: &str,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let project_id = state.auth.authorize(authorization, path.project_key)?;
    let user_id = decode_user_id(path.raw_user_id)?;
    let params = parse_query(raw_query)?;
    let scope = CursorScope {
        project_key: path.project_key,
        user_id: &user_id,
        start_date: params.start_date,
        end_date: params.end_date,
    };
    let after = match params.cursor.as_deref() {
        Some(cursor) => Some(state.cursor_key.decode(&scope, cursor).map_err(|_| {
            ApiError::invalid(
                "cursor",
                "is malformed, altered, or belongs to another query",
            )
        })?),
        None => None,
    };
    let page_size = params.limit as usize;
    let query = PageQuery {
        project_id,
        user_id: &user_id,
        start_date: params.start_date,
        end_date: params.end_date,
        after,
        fetch: params.limit + 1,
    };
    let mut sessions = fetch_page(&state.store, &query).await.map_err(|error| {
        state.metrics.observe_clickhouse_error(&error);
        // The server's message may quote the SQL and its bound user id: log the code only.
        tracing::warn!(code = ?error.code(), transient = error.is_transient(), "sessions query failed");
        ApiError::from(&error)
    })?;
    let next_page = if sessions.len() > page_size {
        sessions.truncate(page_size);
        let last = sessions.last().expect("limit is at least 1");
        let position = Position {
            start_ts: last.start_ts,
            session_id: last.session_id,
        };
        let cursor = state.cursor_key.encode(&scope, position);
        Some(next_link(
            path.project_key,
            &user_id,
            &params.kept_pairs,
            &cursor,
        ))
    } else {
        None
    };
    let mut response = json_response(StatusCode::OK, page_json(&sessions));
    if let Some(link) = next_page {
        let link = HeaderValue::from_str(&link).map_err(|_| ApiError::Internal)?;
        response.headers_mut().insert(header::LINK, link);
    }
    tracing::debug!(sessions = sessions.len(), "answered");
    Ok(response)
}
