//! The warp filters: the API (spec/api.md, spec/api-users.md) and the operational
//! endpoints on one listener, with JSON errors and request metrics around them.
//!
//! Contract for every API path, in this order: a path over 2 KiB (`MAX_PATH_BYTES`)
//! is 414, whatever it names, before it is matched or split; a query string over
//! 8 KiB (`MAX_QUERY_BYTES`) is 414 before it is split or decoded (warp hands it over
//! as one copy, which the HTTP layer bounds with the whole URI at 64 KiB); a method the
//! path does not answer is 405 with `Allow` (GET; GET and DELETE on a user and on a job); the API key is checked
//! (401), then the project (404); then the path's parameters (`userId`, `jobId`) and,
//! for sessions, the query parameters and the cursor (400 naming the parameter); then
//! ClickHouse (503 when it is unreachable or too slow, 500 otherwise). All of it but
//! the 414 runs admitted (`admission`): 503 `overloaded` when the replica has as many
//! requests as it admits and queues, 503 past the request's deadline. Unknown paths
//! are 404 with the same JSON error shape; operational routes are GET only.
//!
//! - `…/users/:userId/sessions`: a page (`sessions`: one request, or a probe and a
//!   window for a heavy user).
//! - `GET …/users/:userId`: the user's statistics (`users`); 404 `user not found`.
//! - `DELETE …/users/:userId`: schedules the deletion of the user's data (`Jobs`), or
//!   returns the one still scheduled; 429 with `Retry-After` while the project has
//!   `MAX_OPEN_JOBS` open jobs.
//! - `GET …/jobs`: a page of the project's jobs, newest first (`limit`, `cursor`,
//!   `Link`, as for sessions).
//! - `GET …/jobs/:jobId`: another project's job is 404 `job not found`, as an unknown
//!   one.
//! - `DELETE …/jobs/:jobId`: cancels a scheduled job in its grace period; 409 after.
//! - `GET …/assist/sessions`: the project's live sessions (`live`).
//! - `GET /api/v1/projects[/:projectKey]`, `POST /api/v1/projects`: the key's
//!   organization's projects (`projects`); only the creation reads a body, after the
//!   key is checked, bounded (413).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sessions_control::jobs::{Cancellation, JobJson, JobPosition, Jobs, Scheduling};
use sessions_shared::clickhouse::{Store, StoreError};
use sessions_shared::clock::epoch_millis;
use sessions_shared::ops_http::{health_route, metrics_route, ready_route};
use tracing::instrument;
use warp::http::{header, HeaderValue, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::admission::Admission;
use crate::auth::AuthCache;
use crate::cursor::{CursorKey, CursorScope, Position};
use crate::error::{json_response, recover, ApiError};
use crate::metrics::Metrics;
use crate::openapi::openapi_route;
use crate::params::{
    check_path_length, check_query_length, decode_user_id, match_api_path, parse_events_query,
    parse_job_id, parse_jobs_query, parse_query, parse_session_id, ApiPath, SessionsPath,
};
use crate::projects::BodyStream;
use crate::response::{data_json, next_events_link, next_jobs_link, next_link};
use crate::session_events;
use crate::sessions::{PageQuery, Pager};
use crate::users::StatsReader;

/// What every request handler shares.
pub struct AppState {
    pub store: Store,
    pub auth: Arc<AuthCache>,
    pub cursor_key: CursorKey,
    /// Reads pages, remembering the users too large for one request.
    pub pager: Pager,
    /// Reads user statistics, heavy users' a few at a time.
    pub stats: StatsReader,
    pub metrics: Metrics,
    /// Admits API requests a bounded number at a time, each under a deadline.
    pub admission: Admission,
    /// Turns for pages of users known to be heavy, inside `admission`.
    pub heavy_pages: Admission,
    /// `DELETION_GRACE_SECS`: from a deletion's scheduling to its start.
    pub deletion_grace: Duration,
    /// `MAX_OPEN_JOBS`: open jobs a project may have before deletions are refused.
    pub max_open_jobs: u64,
    /// The least time a due job takes to end (`DELETION_SETTLE_MS` plus
    /// `JOBS_POLL_MS`): part of a 429's `Retry-After`.
    pub deletion_retry_time: Duration,
    /// `MAX_PROJECTS_PER_ORG`: projects an organization may have before `POST
    /// /api/v1/projects` is refused.
    pub max_projects_per_org: u64,
    /// `LIVE_SESSION_SECS`: how recently a session's last event must have reached the
    /// worker for it to be live.
    pub live_window: Duration,
}

impl AppState {
    /// The API error of a failed ClickHouse request, counted and logged by code only
    /// (the server's message may quote the SQL and its bound user id).
    pub(crate) fn clickhouse_failed(&self, error: &StoreError, what: &'static str) -> ApiError {
        self.metrics.observe_clickhouse_error(error);
        tracing::warn!(code = ?error.code(), transient = error.is_transient(), what, "clickhouse request failed");
        ApiError::from(error)
    }
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
    let auth = Arc::clone(&state.auth);
    // Ready when requests can be answered: the API keys are fresh enough to authorize
    // them (`auth`) and ClickHouse answers.
    let readiness = ready_route(move || {
        let store = store.clone();
        let keys_fresh = auth.is_fresh();
        async move { keys_fresh && store.ping().await.is_ok() }
    });
    let metrics = state.metrics.clone();
    metrics_route(registry)
        .or(health_route())
        .or(readiness)
        .or(openapi_route())
        .or(api_route(state))
        .recover(recover)
        .with(warp::log::custom(move |info| {
            metrics.observe_request(info.path(), info.status(), info.elapsed())
        }))
}

/// A 200 answer `{"data": …}`.
fn data_ok(data: impl serde::Serialize) -> Response {
    json_response(StatusCode::OK, data_json(data))
}

/// Every API path, any method (a wrong method is answered 405 by the handler).
pub fn api_route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    // Every path the operational routes did not take comes here: its length is
    // checked first, so no over-long path is matched, split or logged by route.
    let api_path = warp::path::full().and_then(|path: FullPath| async move {
        check_path_length(path.as_str()).map_err(warp::reject::custom)?;
        match match_api_path(path.as_str()) {
            Some(_) => Ok(path),
            None => Err(warp::reject::not_found()),
        }
    });
    let raw_query = warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw_query: String| async move {
            check_query_length(&raw_query)
                .map(|()| raw_query)
                .map_err(warp::reject::custom)
        });
    // The one header the API reads (not a clone of them all).
    let authorization = warp::header::value("authorization")
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    // The body as a stream, read (bounded) only by the route that takes one.
    let body = warp::body::stream().map(boxed_body);
    // The request's future is boxed, and so is the handler's inside it: warp and hyper
    // move the future they are handed several times before and while polling it, and
    // the handler's (every route's state machine, the ClickHouse reads included) is
    // kilobytes, so unboxed those moves were ~130k instructions of `memcpy` per request,
    // more than the whole stack floor's request (BENCHMARKS.md §6).
    api_path
        .and(warp::method())
        .and(authorization)
        .and(raw_query)
        .and(body)
        .and(with_state(state))
        .then(
            |path: FullPath,
             method: Method,
             authorization: Option<HeaderValue>,
             raw_query: String,
             body: BodyStream,
             state: Arc<AppState>|
             -> BoxFuture<'static, Response> {
                Box::pin(async move {
                    let path = match_api_path(path.as_str()).expect("matched by the filter");
                    let authorization =
                        authorization.as_ref().and_then(|value| value.to_str().ok());
                    let request =
                        Box::pin(api(&state, &method, path, authorization, &raw_query, body));
                    match state.admission.run(request).await {
                        Ok(answer) => answer.unwrap_or_else(ApiError::into_response),
                        Err(refusal) => ApiError::from(refusal).into_response(),
                    }
                })
            },
        )
}

/// A request body as [`BodyStream`]: its chunks as `Bytes`, boxed.
fn boxed_body<Chunk: warp::hyper::body::Buf>(
    stream: impl futures::Stream<Item = Result<Chunk, warp::Error>> + Send + 'static,
) -> BodyStream {
    Box::pin(futures::StreamExt::map(stream, |chunk| {
        chunk.map(|mut buffer| buffer.copy_to_bytes(buffer.remaining()))
    }))
}

/// Dispatches one API request (module contract).
async fn api(
    state: &AppState,
    method: &Method,
    path: ApiPath<'_>,
    authorization: Option<&str>,
    raw_query: &str,
    body: BodyStream,
) -> Result<Response, ApiError> {
    let allowed = match path {
        ApiPath::UserSessions(_)
        | ApiPath::Jobs { .. }
        | ApiPath::SessionEvents { .. }
        | ApiPath::LiveSessions { .. }
        | ApiPath::Project { .. } => method == Method::GET,
        ApiPath::User(_) | ApiPath::Job { .. } => method == Method::GET || method == Method::DELETE,
        ApiPath::Projects => method == Method::GET || method == Method::POST,
    };
    if !allowed {
        return Err(ApiError::MethodNotAllowed {
            allow: path.allowed_methods(),
        });
    }
    match path {
        ApiPath::Projects if method == Method::POST => {
            let body = crate::projects::create(state, authorization, body).await?;
            Ok(json_response(StatusCode::OK, body))
        }
        ApiPath::Projects => {
            let body = crate::projects::list(state, authorization).await?;
            Ok(json_response(StatusCode::OK, body))
        }
        ApiPath::Project { project_key } => {
            let body = crate::projects::get(state, authorization, project_key).await?;
            Ok(json_response(StatusCode::OK, body))
        }
        ApiPath::LiveSessions { project_key } => {
            crate::live::live_sessions(state, project_key, authorization, raw_query).await
        }
        ApiPath::UserSessions(path) => user_sessions(state, path, authorization, raw_query).await,
        ApiPath::User(path) => {
            let project_id = state.auth.authorize(authorization, path.project_key)?;
            let user_id = decode_user_id(path.raw_user_id)?;
            if method == Method::GET {
                user_stats(state, project_id, &user_id).await
            } else {
                delete_user(state, project_id, &user_id).await
            }
        }
        ApiPath::Jobs { project_key } => {
            list_jobs(state, project_key, authorization, raw_query).await
        }
        ApiPath::SessionEvents {
            project_key,
            raw_session_id,
        } => session_events(state, project_key, raw_session_id, authorization, raw_query).await,
        ApiPath::Job {
            project_key,
            raw_job_id,
        } => {
            let project_id = state.auth.authorize(authorization, project_key)?;
            let job_id = parse_job_id(raw_job_id)?;
            if method == Method::GET {
                get_job(state, project_id, job_id).await
            } else {
                cancel_job(state, project_id, job_id).await
            }
        }
    }
}

/// A page of a session's events: 404 unless the project has the session (stored, not
/// deleted), then the events after the cursor, and a `Link` when more follow.
#[instrument(skip_all)]
async fn session_events(
    state: &AppState,
    project_key: &str,
    raw_session_id: &str,
    authorization: Option<&str>,
    raw_query: &str,
) -> Result<Response, ApiError> {
    let project_id = state.auth.authorize(authorization, project_key)?;
    let session_id = parse_session_id(raw_session_id)?;
    let params = parse_events_query(raw_query)?;
    let session_text = session_id.to_string();
    let after = match params.cursor.as_deref() {
        Some(cursor) => Some(
            state
                .cursor_key
                .decode_events(project_key, &session_text, cursor)
                .map_err(ApiError::from)?,
        ),
        None => None,
    };
    let page_size = params.limit as usize;
    let (status, page) = tokio::join!(
        session_events::session_status(&state.store, project_id, session_id),
        session_events::fetch_events(&state.store, project_id, session_id, after, page_size + 1),
    );
    let status = status.map_err(|error| state.clickhouse_failed(&error, "session status"))?;
    if !status.is_listed() {
        return Err(ApiError::SessionNotFound);
    }
    let mut page = page.map_err(|error| state.clickhouse_failed(&error, "session events"))?;
    let next_after = if page.events.len() > page_size {
        page.events.truncate(page_size);
        page.events
            .last()
            .map(session_events::StoredEvent::position)
    } else {
        page.resume_after
    };
    let mut response = json_response(
        StatusCode::OK,
        session_events::page_json(session_id, &page.events),
    );
    if let Some(after) = next_after {
        let cursor = state
            .cursor_key
            .encode_events(project_key, &session_text, after);
        let link = next_events_link(project_key, session_id, &params.kept_pairs, &cursor);
        response.headers_mut().insert(
            header::LINK,
            HeaderValue::from_str(&link).map_err(|_| ApiError::Internal)?,
        );
    }
    Ok(response)
}

#[instrument(skip_all)]
async fn user_stats(
    state: &AppState,
    project_id: u32,
    user_id: &str,
) -> Result<Response, ApiError> {
    let stats = state
        .stats
        .fetch(&state.store, project_id, user_id)
        .await
        .map_err(|error| state.clickhouse_failed(&error, "user stats"))?
        .ok_or(ApiError::UserNotFound)?;
    Ok(data_ok(stats.api(user_id)))
}

#[instrument(skip_all)]
async fn delete_user(
    state: &AppState,
    project_id: u32,
    user_id: &str,
) -> Result<Response, ApiError> {
    let scheduling = Jobs::new(&state.store)
        .schedule_deletion_bounded(
            project_id,
            user_id,
            state.deletion_grace,
            state.max_open_jobs,
        )
        .await
        .map_err(|error| state.clickhouse_failed(&error, "scheduling a deletion"))?;
    match scheduling {
        Scheduling::Scheduled(job) => {
            tracing::info!(job_id = job.job_id, project_id, "user deletion scheduled");
            Ok(data_ok(job.api()))
        }
        Scheduling::Refused(open) => {
            tracing::info!(
                project_id,
                open = open.count,
                "user deletion refused: too many open jobs"
            );
            Err(ApiError::TooManyOpenJobs {
                retry_after_seconds: open
                    .retry_after_seconds(epoch_millis(), state.deletion_retry_time),
            })
        }
    }
}

/// A page of the project's jobs, newest first, and the `Link` to the next one.
#[instrument(skip_all, fields(project_key = ?project_key))]
async fn list_jobs(
    state: &AppState,
    project_key: &str,
    authorization: Option<&str>,
    raw_query: &str,
) -> Result<Response, ApiError> {
    let project_id = state.auth.authorize(authorization, project_key)?;
    let params = parse_jobs_query(raw_query)?;
    let after = match params.cursor.as_deref() {
        Some(cursor) => {
            let position = state
                .cursor_key
                .decode_jobs(project_key, cursor)
                .map_err(ApiError::from)?;
            Some(JobPosition {
                created_at: position.start_ts,
                job_id: position.session_id,
            })
        }
        None => None,
    };
    let page_size = params.limit as usize;
    let mut jobs = Jobs::new(&state.store)
        .page(project_id, after, u64::from(params.limit) + 1)
        .await
        .map_err(|error| state.clickhouse_failed(&error, "listing jobs"))?;
    let next_page = if jobs.len() > page_size {
        jobs.truncate(page_size);
        let last = jobs.last().expect("limit is at least 1");
        let cursor = state.cursor_key.encode_jobs(
            project_key,
            Position {
                start_ts: last.created_at,
                session_id: last.job_id,
            },
        );
        Some(next_jobs_link(project_key, &params.kept_pairs, &cursor))
    } else {
        None
    };
    let views: Vec<JobJson<'_>> = jobs.iter().map(|job| job.api()).collect();
    let mut response = data_ok(views);
    if let Some(link) = next_page {
        let link = HeaderValue::from_str(&link).map_err(|_| ApiError::Internal)?;
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

#[instrument(skip_all, fields(job_id = job_id))]
async fn get_job(state: &AppState, project_id: u32, job_id: u64) -> Result<Response, ApiError> {
    let job = Jobs::new(&state.store)
        .get(project_id, job_id)
        .await
        .map_err(|error| state.clickhouse_failed(&error, "reading a job"))?
        .ok_or(ApiError::JobNotFound)?;
    Ok(data_ok(job.api()))
}

#[instrument(skip_all, fields(job_id = job_id))]
async fn cancel_job(state: &AppState, project_id: u32, job_id: u64) -> Result<Response, ApiError> {
    let outcome = Jobs::new(&state.store)
        .cancel(project_id, job_id)
        .await
        .map_err(|error| state.clickhouse_failed(&error, "cancelling a job"))?;
    match outcome {
        Cancellation::Cancelled(job) => {
            tracing::info!(job_id, project_id, "job cancelled");
            Ok(data_ok(job.api()))
        }
        Cancellation::TooLate(_) => Err(ApiError::JobNotCancellable),
        Cancellation::NotFound => Err(ApiError::JobNotFound),
    }
}

#[instrument(skip_all, fields(project_key = ?path.project_key))]
async fn user_sessions(
    state: &AppState,
    path: SessionsPath<'_>,
    authorization: Option<&str>,
    raw_query: &str,
) -> Result<Response, ApiError> {
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
        Some(cursor) => Some(
            state
                .cursor_key
                .decode(&scope, cursor)
                .map_err(ApiError::from)?,
        ),
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
    let reading = state.pager.fetch_page(&state.store, &query);
    let page = if state.pager.knows_heavy(project_id, &user_id) {
        state.heavy_pages.run(reading).await?
    } else {
        reading.await
    }
    .map_err(|error| state.clickhouse_failed(&error, "sessions page"))?;
    let mut sessions = page.rows;
    // After the page's last session, or, for a page cut short at the round cap (fewer
    // sessions, perhaps none), after the last row it read.
    let next_position = if sessions.len() > page_size {
        sessions.truncate(page_size);
        sessions.position(page_size - 1)
    } else {
        page.resume_after
            .inspect(|_| state.metrics.pages_cut_short.inc())
    };
    let next_page = if let Some(position) = next_position {
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
    tracing::debug!(sessions = sessions.len(), "answered");
    let mut response = json_response(StatusCode::OK, sessions.into_body());
    if let Some(link) = next_page {
        let link = HeaderValue::from_str(&link).map_err(|_| ApiError::Internal)?;
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}
