//! Who may read what: API keys and projects, cached in memory and reloaded in the
//! background.
//!
//! Contract: a request is authorized without touching ClickHouse. The cache holds the
//! SHA-256 hashes of the active keys (with their organization) and every project, and
//! is replaced as a whole every `AUTH_REFRESH_MS`, so a created or revoked key takes
//! effect within one period plus one ClickHouse round trip (under 5 s). A failed reload
//! keeps the previous snapshot. Before the first successful load every authenticated
//! request answers 503. Order of checks: API key (401), then project (404 for an unknown
//! project and for another organization's project alike).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sessions_control::tenancy::{hash_api_key, Tenancy, TenancyError};
use sessions_shared::clickhouse::Store;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// One consistent view of the tenancy tables.
#[derive(Debug, Default)]
pub struct TenancySnapshot {
    /// Hex SHA-256 of each active key → its organization.
    org_by_key_hash: HashMap<String, u64>,
    /// Project key → (project id, organization).
    project_by_key: HashMap<String, (u32, u64)>,
}

impl TenancySnapshot {
    pub fn new(
        active_keys: impl IntoIterator<Item = (String, u64)>,
        projects: impl IntoIterator<Item = (String, u32, u64)>,
    ) -> TenancySnapshot {
        TenancySnapshot {
            org_by_key_hash: active_keys.into_iter().collect(),
            project_by_key: projects
                .into_iter()
                .map(|(key, project_id, org_id)| (key, (project_id, org_id)))
                .collect(),
        }
    }

    fn organization_of(&self, api_key: &str) -> Option<u64> {
        let presented = hash_api_key(api_key);
        let (stored, org_id) = self.org_by_key_hash.get_key_value(&presented)?;
        bool::from(stored.as_bytes().ct_eq(presented.as_bytes())).then_some(*org_id)
    }

    /// The project id `api_key` may read under `project_key`.
    pub fn authorize(&self, api_key: &str, project_key: &str) -> Result<u32, ApiError> {
        let org_id = self
            .organization_of(api_key)
            .ok_or(ApiError::Unauthorized)?;
        match self.project_by_key.get(project_key) {
            Some(&(project_id, owner)) if owner == org_id => Ok(project_id),
            _ => Err(ApiError::ProjectNotFound),
        }
    }
}

/// The key in an `Authorization` header: raw, or `Bearer <key>`. `None` when missing
/// or empty.
pub fn api_key_from_header(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    if value.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!key.is_empty()).then_some(key)
}

/// The shared, periodically replaced snapshot.
#[derive(Default)]
pub struct AuthCache {
    snapshot: RwLock<Option<Arc<TenancySnapshot>>>,
}

impl AuthCache {
    pub fn current(&self) -> Option<Arc<TenancySnapshot>> {
        self.snapshot.read().expect("auth cache lock").clone()
    }

    pub fn replace(&self, snapshot: TenancySnapshot) {
        *self.snapshot.write().expect("auth cache lock") = Some(Arc::new(snapshot));
    }

    /// Checks the `Authorization` header against `project_key`: 401, 404 or 503 (never
    /// loaded), else the project id.
    pub fn authorize(&self, header: Option<&str>, project_key: &str) -> Result<u32, ApiError> {
        let api_key = api_key_from_header(header).ok_or(ApiError::Unauthorized)?;
        let snapshot = self.current().ok_or(ApiError::Unavailable)?;
        snapshot.authorize(api_key, project_key)
    }

    /// Loads keys and projects from ClickHouse and swaps them in.
    pub async fn refresh(&self, store: &Store) -> Result<(), TenancyError> {
        let tenancy = Tenancy::new(store);
        let keys = tenancy.active_keys().await?;
        let projects = tenancy.list_projects(None).await?;
        self.replace(TenancySnapshot::new(
            keys.into_iter().map(|key| (key.key_hash, key.org_id)),
            projects
                .into_iter()
                .map(|project| (project.project_key, project.project_id, project.org_id)),
        ));
        Ok(())
    }

    /// Reloads every `period`, forever (the caller aborts the task on shutdown).
    pub async fn refresh_forever(
        self: Arc<Self>,
        store: Store,
        period: Duration,
        metrics: Metrics,
    ) {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticker.tick().await;
            match self.refresh(&store).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("auth cache refresh recovered");
                    }
                    failing = false;
                }
                Err(error) => {
                    metrics.observe_auth_refresh_failure();
                    // Warn once per outage, not every period.
                    if !failing {
                        tracing::warn!(%error, "auth cache refresh failed; keeping the previous snapshot");
                    }
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> TenancySnapshot {
        TenancySnapshot::new(
            [
                (hash_api_key("key-of-org-1"), 1),
                (hash_api_key("key-of-org-2"), 2),
            ],
            [
                ("projectOfOrg1xxxxxxx".to_owned(), 10, 1),
                ("projectOfOrg2xxxxxxx".to_owned(), 20, 2),
            ],
        )
    }

    #[test]
    fn reads_raw_and_bearer_keys() {
        assert_eq!(api_key_from_header(Some("abc")), Some("abc"));
        assert_eq!(api_key_from_header(Some("Bearer abc")), Some("abc"));
        assert_eq!(api_key_from_header(Some("bearer  abc ")), Some("abc"));
        assert_eq!(api_key_from_header(Some("Bearer ")), None);
        assert_eq!(api_key_from_header(Some("  ")), None);
        assert_eq!(api_key_from_header(None), None);
    }

    #[test]
    fn checks_the_key_first_then_the_project() {
        let snapshot = snapshot();
        assert_eq!(
            snapshot.authorize("key-of-org-1", "projectOfOrg1xxxxxxx"),
            Ok(10)
        );
        assert_eq!(
            snapshot.authorize("unknown", "projectOfOrg1xxxxxxx"),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            snapshot.authorize("unknown", "nope"),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            snapshot.authorize("key-of-org-1", "projectOfOrg2xxxxxxx"),
            Err(ApiError::ProjectNotFound)
        );
        assert_eq!(
            snapshot.authorize("key-of-org-1", "nope"),
            Err(ApiError::ProjectNotFound)
        );
    }

    #[test]
    fn an_unloaded_cache_answers_401_without_key_and_503_with_one() {
        let cache = AuthCache::default();
        assert_eq!(cache.authorize(None, "p"), Err(ApiError::Unauthorized));
        assert_eq!(
            cache.authorize(Some("key"), "p"),
            Err(ApiError::Unavailable)
        );
        cache.replace(snapshot());
        assert_eq!(
            cache.authorize(Some("Bearer key-of-org-2"), "projectOfOrg2xxxxxxx"),
            Ok(20)
        );
    }
}
