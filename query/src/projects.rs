//! The organization's projects: `GET /api/v1/projects`, `GET /api/v1/projects/:projectKey`
//! and `POST /api/v1/projects`.
//!
//! Contract: the organization is the API key's (401 and 503 as for every route). Lists
//! and single projects are read from ClickHouse (sequentially consistent on a cluster),
//! so a project created on any replica is listed at once; a project of another
//! organization is 404 `project not found`, as an unknown one. A creation reads its
//! body only after the key is checked, at most [`MAX_BODY_BYTES`] of it (413 past
//! that, without reading further), parses it ([`parse_new_project`]: 400 naming
//! `body`, `name` or `platform`), and creates the project through the same code as
//! `sessions-admin project create` (`Tenancy::create_project_of`), bounded by
//! `MAX_PROJECTS_PER_ORG` (409 past it). The created project is added to this
//! replica's key cache (`AuthCache::add_created_project`), so every endpoint here
//! serves it at once; other replicas at their next reload (`AUTH_REFRESH_MS`).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use serde::Serialize;
use sessions_control::tenancy::{NewProject, Platform, Project, Tenancy, TenancyError};
use tracing::instrument;
use warp::hyper::body::Bytes;

use crate::error::ApiError;
use crate::routes::AppState;

/// Largest request body a creation reads: 64 KiB, far above any valid body (a name is
/// at most 200 bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request's body, as warp streams it.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// What `POST /api/v1/projects` asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct ProjectRequest {
    pub name: String,
    pub platform: Platform,
}

/// Parses a creation's body: a JSON object with a string `name` (1 to 200 bytes, not
/// blank) and an optional string `platform` (`web`, the default when absent, or
/// `ios`; `null` is neither); other members are ignored. Each error names the field
/// (`body` when it is not a JSON object).
pub fn parse_new_project(body: &[u8]) -> Result<ProjectRequest, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::invalid("body", "must be a JSON object"))?;
    let object = value
        .as_object()
        .ok_or(ApiError::invalid("body", "must be a JSON object"))?;
    let name = match object.get("name") {
        Some(serde_json::Value::String(name)) => name,
        Some(_) => return Err(ApiError::invalid("name", "must be a string")),
        None => return Err(ApiError::invalid("name", "is required")),
    };
    sessions_control::tenancy::validate_project_name(name).map_err(tenancy_error)?;
    let platform = match object.get("platform") {
        None => Platform::Web,
        Some(serde_json::Value::String(platform)) => {
            Platform::parse(platform).ok_or(ApiError::invalid("platform", "must be web or ios"))?
        }
        Some(_) => return Err(ApiError::invalid("platform", "must be web or ios")),
    };
    Ok(ProjectRequest {
        name: name.clone(),
        platform,
    })
}

/// The API error of a tenancy failure: a field (400), the cap (409), an organization
/// gone (401), the store's (503 or 500), a creation that could not find a free id
/// (503: retry).
fn tenancy_error(error: TenancyError) -> ApiError {
    match error {
        TenancyError::InvalidField { field, reason } => ApiError::invalid(field, reason),
        TenancyError::TooManyProjects { limit } => ApiError::TooManyProjects { limit },
        TenancyError::NotFound(_) => ApiError::Unauthorized,
        TenancyError::Store(error) => ApiError::from(&error),
        TenancyError::InvalidInput(_) | TenancyError::Conflict(_) => ApiError::Unavailable,
    }
}

/// The body, read up to [`MAX_BODY_BYTES`]: 413 as soon as it is longer.
pub async fn read_body(mut body: BodyStream) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| ApiError::invalid("body", "could not be read"))?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge {
                max_bytes: MAX_BODY_BYTES,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedProject<'a> {
    project_key: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProjectJson<'a> {
    project_id: u32,
    project_key: &'a str,
    name: &'a str,
    platform: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedJson<'a> {
    project_key: &'a str,
    name: &'a str,
    platform: &'static str,
}

/// `GET /api/v1/projects`: the organization's projects, oldest first (ids grow with
/// creation).
#[instrument(skip_all)]
pub async fn list(state: &AppState, authorization: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let org_id = state.auth.organization(authorization)?;
    let projects: Vec<Project> = Tenancy::new(&state.store)
        .list_projects(Some(org_id))
        .await
        .map_err(|error| store_failed(state, error, "listing projects"))?;
    let listed: Vec<ListedProject<'_>> = projects
        .iter()
        .map(|project| ListedProject {
            project_key: &project.project_key,
            name: &project.name,
        })
        .collect();
    Ok(crate::response::data_json(listed))
}

/// `GET /api/v1/projects/:projectKey`.
#[instrument(skip_all)]
pub async fn get(
    state: &AppState,
    authorization: Option<&str>,
    project_key: &str,
) -> Result<Vec<u8>, ApiError> {
    let org_id = state.auth.organization(authorization)?;
    let details = Tenancy::new(&state.store)
        .project_of_org(org_id, project_key)
        .await
        .map_err(|error| store_failed(state, error, "reading a project"))?
        .ok_or(ApiError::ProjectNotFound)?;
    Ok(crate::response::data_json(ProjectJson {
        project_id: details.project.project_id,
        project_key: &details.project.project_key,
        name: &details.project.name,
        platform: details.platform.as_str(),
    }))
}

/// `POST /api/v1/projects` (module contract).
#[instrument(skip_all)]
pub async fn create(
    state: &AppState,
    authorization: Option<&str>,
    body: BodyStream,
) -> Result<Vec<u8>, ApiError> {
    let org_id = state.auth.organization(authorization)?;
    let request = parse_new_project(&read_body(body).await?)?;
    let created = Tenancy::new(&state.store)
        .create_project_of(NewProject {
            org_id,
            name: &request.name,
            platform: request.platform,
            project_key: None,
            max_projects_of_org: Some(state.max_projects_per_org),
        })
        .await;
    let project = match created {
        Ok(project) => project,
        Err(TenancyError::TooManyProjects { limit }) => {
            state.metrics.project_creations_refused.inc();
            tracing::info!(org_id, limit, "project creation refused: too many projects");
            return Err(ApiError::TooManyProjects { limit });
        }
        Err(error) => return Err(store_failed(state, error, "creating a project")),
    };
    state
        .auth
        .add_created_project(&project.project_key, project.project_id, org_id);
    state.metrics.projects_created.inc();
    tracing::info!(org_id, project_id = project.project_id, "project created");
    Ok(crate::response::data_json(CreatedJson {
        project_key: &project.project_key,
        name: &project.name,
        platform: request.platform.as_str(),
    }))
}

/// The API error of a failed tenancy call; ClickHouse failures counted and logged by
/// code only.
fn store_failed(state: &AppState, error: TenancyError, what: &'static str) -> ApiError {
    match error {
        TenancyError::Store(error) => state.clickhouse_failed(&error, what),
        other => {
            tracing::warn!(error = %other, what, "project request failed");
            tenancy_error(other)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> &'static str {
        match parse_new_project(body.as_bytes()) {
            Err(ApiError::InvalidParameter { parameter, .. }) => parameter,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_body_names_a_project_and_perhaps_its_platform() {
        assert_eq!(
            parse_new_project(br#"{"name": "shop"}"#),
            Ok(ProjectRequest {
                name: "shop".into(),
                platform: Platform::Web
            })
        );
        assert_eq!(
            parse_new_project(br#"{"name": "app", "platform": "ios", "extra": 1}"#)
                .unwrap()
                .platform,
            Platform::Ios
        );
        let longest = format!(r#"{{"name": "{}"}}"#, "é".repeat(100));
        assert!(parse_new_project(longest.as_bytes()).is_ok());
    }

    #[test]
    fn each_bad_body_names_its_field() {
        for (body, field) in [
            ("", "body"),
            ("not json", "body"),
            ("[]", "body"),
            (r#""name""#, "body"),
            (r#"{"name": "x""#, "body"),
            ("{}", "name"),
            (r#"{"name": ""}"#, "name"),
            (r#"{"name": "   "}"#, "name"),
            (r#"{"name": 5}"#, "name"),
            (r#"{"name": null}"#, "name"),
            (&format!(r#"{{"name": "{}"}}"#, "x".repeat(201)), "name"),
            (r#"{"name": "x", "platform": "android"}"#, "platform"),
            (r#"{"name": "x", "platform": "Web"}"#, "platform"),
            (r#"{"name": "x", "platform": 1}"#, "platform"),
            (r#"{"name": "x", "platform": null}"#, "platform"),
        ] {
            assert_eq!(field_of(body), field, "{body}");
        }
    }

    #[tokio::test]
    async fn a_body_over_64_kib_is_413_and_one_at_it_is_read() {
        let stream = |total: usize| -> BodyStream {
            let chunks: Vec<Result<Bytes, warp::Error>> = (0..total.div_ceil(1000))
                .map(|index| Ok(Bytes::from(vec![b' '; 1000.min(total - index * 1000)])))
                .collect();
            Box::pin(futures::stream::iter(chunks))
        };
        assert_eq!(
            read_body(stream(MAX_BODY_BYTES)).await.unwrap().len(),
            MAX_BODY_BYTES
        );
        assert_eq!(
            read_body(stream(MAX_BODY_BYTES + 1)).await,
            Err(ApiError::PayloadTooLarge {
                max_bytes: MAX_BODY_BYTES
            })
        );
    }
}
