//! The API's error boundary: every failure a client can see, its status, and the
//! `{"errors": ["…"]}` body (OpenReplay's error shape).
//!
//! Contract: messages are fixed texts chosen here. They name the offending parameter
//! but never carry SQL, server addresses, stack traces, user ids or API keys. Warp's
//! own rejections (unknown path, wrong method on an operational route) get the same
//! JSON shape through [`recover`]. A 405 carries `Allow` with the path's methods (GET;
//! GET and DELETE on a user and on a job). A 503 because the API keys cannot be checked
//! (never loaded, or loaded too long ago) carries `Retry-After`: the next reload is at
//! most that many seconds away. A 503 for load (`admission`: refused, or past the
//! request's deadline) carries `Retry-After: 1`. A 429 (a deletion while the project has
//! `MAX_OPEN_JOBS` open jobs) carries `Retry-After` too: no job of the project ends
//! sooner.

use std::convert::Infallible;

use sessions_shared::clickhouse::StoreError;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Rejection;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("invalid {parameter}: {reason}")]
    InvalidParameter {
        parameter: &'static str,
        reason: &'static str,
    },
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("project not found")]
    ProjectNotFound,
    #[error("not found")]
    NotFound,
    #[error("user not found")]
    UserNotFound,
    #[error("session not found")]
    SessionNotFound,
    #[error("job not found")]
    JobNotFound,
    #[error("job cannot be cancelled")]
    JobNotCancellable,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// The request path or query string is longer than the API reads
    /// (`params::MAX_PATH_BYTES`, `params::MAX_QUERY_BYTES`).
    #[error("{part} too long (at most {max_bytes} bytes)")]
    UriTooLong {
        part: &'static str,
        max_bytes: usize,
    },
    /// A deletion while the project has `MAX_OPEN_JOBS` open jobs.
    #[error("too many open jobs in this project, retry later")]
    TooManyOpenJobs { retry_after_seconds: u64 },
    #[error("service unavailable, try again later")]
    Unavailable,
    /// The API keys cannot be checked: never loaded, or the last successful reload is
    /// older than `AUTH_MAX_AGE_MS`. Same message as [`ApiError::Unavailable`].
    #[error("service unavailable, try again later")]
    KeysUnavailable { retry_after_seconds: u64 },
    /// Refused for load: no admission permit free and the queue full, or none within
    /// `QUEUE_WAIT_MS` (`admission`).
    #[error("overloaded, try again later")]
    Overloaded,
    /// Admitted, but not answered within `REQUEST_DEADLINE_MS` (`admission`).
    #[error("request took too long, try again later")]
    DeadlineExceeded,
    /// A request body over the most the route reads (`projects::MAX_BODY_BYTES`).
    #[error("request body too large (at most {max_bytes} bytes)")]
    PayloadTooLarge { max_bytes: usize },
    /// A project creation while the organization has `MAX_PROJECTS_PER_ORG` projects.
    #[error("the organization has {limit} projects, the most it may have")]
    TooManyProjects { limit: u64 },
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn invalid(parameter: &'static str, reason: &'static str) -> ApiError {
        ApiError::InvalidParameter { parameter, reason }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ProjectNotFound
            | ApiError::NotFound
            | ApiError::UserNotFound
            | ApiError::SessionNotFound
            | ApiError::JobNotFound => StatusCode::NOT_FOUND,
            ApiError::JobNotCancellable | ApiError::TooManyProjects { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::TooManyOpenJobs { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable
            | ApiError::KeysUnavailable { .. }
            | ApiError::Overloaded
            | ApiError::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body: `{"errors":["<message>"]}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "errors": [self.to_string()] }).to_string()
    }

    pub fn into_response(self) -> Response {
        let mut response = json_response(self.status(), self.body());
        match self {
            ApiError::MethodNotAllowed { allow } => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::KeysUnavailable {
                retry_after_seconds,
            }
            | ApiError::TooManyOpenJobs {
                retry_after_seconds,
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            ApiError::Overloaded | ApiError::DeadlineExceeded => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(crate::admission::RETRY_AFTER_SECONDS),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<crate::admission::Refusal> for ApiError {
    fn from(refusal: crate::admission::Refusal) -> Self {
        match refusal {
            crate::admission::Refusal::Deadline => ApiError::DeadlineExceeded,
            _ => ApiError::Overloaded,
        }
    }
}

impl From<crate::cursor::InvalidCursor> for ApiError {
    /// 400 naming `cursor`, whatever was wrong with it (every list's cursors).
    fn from(_: crate::cursor::InvalidCursor) -> Self {
        ApiError::invalid(
            "cursor",
            "is malformed, altered, or belongs to another query",
        )
    }
}

impl From<&StoreError> for ApiError {
    /// Transient trouble (unreachable, too slow, overloaded) is 503; anything else 500.
    fn from(error: &StoreError) -> Self {
        if error.is_transient() {
            ApiError::Unavailable
        } else {
            ApiError::Internal
        }
    }
}

/// A response with a JSON body and `Content-Type: application/json`.
pub fn json_response(status: StatusCode, body: impl Into<Vec<u8>>) -> Response {
    let mut response = Response::new(body.into().into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Turns warp's rejections into the JSON error shape.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if rejection.is_not_found() {
        ApiError::NotFound
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed { allow: "GET" }
    } else if let Some(error) = rejection.find::<ApiError>() {
        error.clone()
    } else {
        tracing::debug!(?rejection, "unhandled rejection");
        ApiError::NotFound
    };
    Ok(error.into_response())
}

impl warp::reject::Reject for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_status_and_json_body() {
        let error = ApiError::invalid("limit", "must be an integer from 1 to 1000");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            error.body(),
            r#"{"errors":["invalid limit: must be an integer from 1 to 1000"]}"#
        );
        assert_eq!(
            ApiError::ProjectNotFound.body(),
            r#"{"errors":["project not found"]}"#
        );
        assert_eq!(ApiError::Unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            ApiError::UserNotFound.body(),
            r#"{"errors":["user not found"]}"#
        );
        assert_eq!(
            ApiError::JobNotFound.body(),
            r#"{"errors":["job not found"]}"#
        );
        assert_eq!(ApiError::JobNotCancellable.status(), StatusCode::CONFLICT);
        assert_eq!(
            ApiError::JobNotCancellable.body(),
            r#"{"errors":["job cannot be cancelled"]}"#
        );
        let response = ApiError::MethodNotAllowed {
            allow: "GET, DELETE",
        }
        .into_response();
        assert_eq!(response.headers()[header::ALLOW], "GET, DELETE");
    }

    #[test]
    fn unchecked_keys_are_503_with_retry_after_and_long_uris_414() {
        let keys = ApiError::KeysUnavailable {
            retry_after_seconds: 2,
        };
        assert_eq!(keys.body(), ApiError::Unavailable.body());
        let response = keys.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let too_long = ApiError::UriTooLong {
            part: "request path",
            max_bytes: 2048,
        };
        assert_eq!(too_long.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(
            too_long.body(),
            r#"{"errors":["request path too long (at most 2048 bytes)"]}"#
        );
    }

    #[test]
    fn too_many_open_jobs_is_429_with_retry_after() {
        let response = ApiError::TooManyOpenJobs {
            retry_after_seconds: 3_632,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3632");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            ApiError::TooManyOpenJobs {
                retry_after_seconds: 1
            }
            .body(),
            r#"{"errors":["too many open jobs in this project, retry later"]}"#
        );
    }

    #[test]
    fn load_refusals_are_503_with_retry_after_and_their_own_messages() {
        use crate::admission::Refusal;
        for (refusal, message) in [
            (Refusal::QueueFull, "overloaded, try again later"),
            (Refusal::QueueWait, "overloaded, try again later"),
            (Refusal::Deadline, "request took too long, try again later"),
        ] {
            let error = ApiError::from(refusal);
            assert_eq!(error.to_string(), message);
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
    }

    #[test]
    fn transient_store_errors_are_503_and_others_500() {
        let timeout = StoreError::Timeout(std::time::Duration::from_secs(1));
        assert_eq!(ApiError::from(&timeout), ApiError::Unavailable);
        let syntax = StoreError::Rejected {
            code: Some(62),
            message: "Syntax error".into(),
        };
        assert_eq!(ApiError::from(&syntax), ApiError::Internal);
    }
}
