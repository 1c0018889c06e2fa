//! Who may read what: API keys and projects, cached in memory and reloaded in the
//! background.
//!
//! Contract: a request is authorized without touching ClickHouse. The cache holds the
//! SHA-256 hashes of the active keys (with their organization) and every project, and
//! is replaced as a whole every `AUTH_REFRESH_MS`, so a created or revoked key takes
//! effect within one period plus one ClickHouse round trip (under 5 s). A failed reload
//! keeps the previous snapshot, but only up to `AUTH_MAX_AGE_MS` after the start of the
//! last successful one ([`snapshot_is_fresh`]): past that age, as before the first
//! successful load, every request with a key answers 503 with `Retry-After`, so a key
//! revoked during a ClickHouse outage stops working within that age instead of never.
//! Order of checks: API key present (401), snapshot fresh (503), key known (401), then
//! project (404 for an unknown project and for another organization's project alike).
//!
//! A key presented again is not hashed again: each snapshot remembers the keys it has
//! resolved ([`ResolvedKeys`]: the key as presented, found by a keyed hash and compared
//! in constant time, with its organization). It remembers only keys it holds, so at most
//! one entry per active key, and it is part of the snapshot: a reload starts with none,
//! so a revoked key stops working exactly when it did without it. Keys are never logged
//! or printed (no `Debug` shows them).
//!
//! A project this replica created (`POST /api/v1/projects`) is usable here at once:
//! [`AuthCache::add_created_project`] keeps it beside the snapshot until a reload that
//! started [`CREATED_PROJECT_HOLD`] after its creation has been swapped in, so a reload
//! already under way when it was created (or read from a lagging replica) cannot hide
//! it. Other replicas see it at their next reload, within `AUTH_REFRESH_MS`.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sessions_control::tenancy::{hash_api_key, Tenancy, TenancyError};
use sessions_shared::clickhouse::Store;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// How long after its creation a project created here is kept beside the reloaded
/// snapshots: longer than a reload takes, so the snapshot that replaces it holds it.
pub const CREATED_PROJECT_HOLD: Duration = Duration::from_secs(60);

/// A project created by this replica, not yet in a snapshot for sure.
#[derive(Clone, Debug)]
struct CreatedProject {
    project_key: String,
    project_id: u32,
    org_id: u64,
    created_at: Instant,
}

/// One consistent view of the tenancy tables.
#[derive(Debug, Default)]
pub struct TenancySnapshot {
    /// Hex SHA-256 of each active key → its organization.
    org_by_key_hash: HashMap<String, u64>,
    /// Project key → (project id, organization).
    project_by_key: HashMap<String, (u32, u64)>,
    /// The keys of `org_by_key_hash` presented so far, as presented.
    resolved: ResolvedKeys,
}

/// Keys a snapshot has resolved to their organization, as presented (module header):
/// found by a keyed hash (std's SipHash with this memo's random keys) and confirmed by
/// a constant-time comparison of the whole key, so a presented key matches only
/// itself. Only keys the snapshot holds are added, so it is bounded by them.
#[derive(Default)]
struct ResolvedKeys {
    hasher: RandomState,
    /// Keyed hash of the key → the key and its organization.
    by_hash: RwLock<HashMap<u64, ResolvedKey>>,
}

/// A key as presented, and its organization.
type ResolvedKey = (Box<[u8]>, u64);

impl std::fmt::Debug for ResolvedKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ResolvedKeys(***)")
    }
}

impl ResolvedKeys {
    /// The organization of `api_key`, if it was resolved before.
    fn get(&self, api_key: &str) -> Option<u64> {
        let slot = self.hasher.hash_one(api_key);
        let by_hash = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        let (key, org_id) = by_hash.get(&slot)?;
        bool::from(key.ct_eq(api_key.as_bytes())).then_some(*org_id)
    }

    /// Remembers that `api_key` is `org_id`'s (replacing another key of the same hash,
    /// which then is resolved by its SHA-256 again).
    fn insert(&self, api_key: &str, org_id: u64) {
        let slot = self.hasher.hash_one(api_key);
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(slot, (api_key.as_bytes().into(), org_id));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_hash.read().unwrap().len()
    }
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
            resolved: ResolvedKeys::default(),
        }
    }

    fn organization_of(&self, api_key: &str) -> Option<u64> {
        if let Some(org_id) = self.resolved.get(api_key) {
            return Some(org_id);
        }
        let presented = hash_api_key(api_key);
        let (stored, org_id) = self.org_by_key_hash.get_key_value(&presented)?;
        let org_id =
            bool::from(stored.as_bytes().ct_eq(presented.as_bytes())).then_some(*org_id)?;
        self.resolved.insert(api_key, org_id);
        Some(org_id)
    }

    /// The project id `api_key` may read under `project_key`.
    pub fn authorize(&self, api_key: &str, project_key: &str) -> Result<u32, ApiError> {
        let org_id = self
            .organization_of(api_key)
            .ok_or(ApiError::Unauthorized)?;
        self.project_of(org_id, project_key)
            .ok_or(ApiError::ProjectNotFound)
    }

    /// The id of `org_id`'s project `project_key`, if the snapshot holds it.
    fn project_of(&self, org_id: u64, project_key: &str) -> Option<u32> {
        match self.project_by_key.get(project_key) {
            Some(&(project_id, owner)) if owner == org_id => Some(project_id),
            _ => None,
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

/// Whether a snapshot whose load started at `loaded_at` may still authorize a request
/// at `now`: its age is at most `max_age`. A `now` before `loaded_at` (a request that
/// read the clock before a reload finished) is age zero.
pub fn snapshot_is_fresh(loaded_at: Instant, now: Instant, max_age: Duration) -> bool {
    now.saturating_duration_since(loaded_at) <= max_age
}

/// A snapshot and when the load that read it started (its data is at least that old).
struct Loaded {
    snapshot: Arc<TenancySnapshot>,
    loaded_at: Instant,
}

/// The shared, periodically replaced snapshot.
pub struct AuthCache {
    loaded: RwLock<Option<Loaded>>,
    /// `AUTH_MAX_AGE_MS`: past it the snapshot authorizes nothing.
    max_age: Duration,
    /// `Retry-After` of a 503 for unchecked keys: the reload period, in whole seconds
    /// rounded up (the next reload is at most that far away).
    retry_after_seconds: u64,
    /// The age reported before any load is the time since the cache was made.
    created_at: Instant,
    /// Projects created by this replica, until a snapshot surely holds them.
    created_projects: RwLock<Vec<CreatedProject>>,
}

impl AuthCache {
    /// An empty cache reloaded every `refresh_period`, whose snapshot authorizes
    /// requests until it is `max_age` old.
    pub fn new(refresh_period: Duration, max_age: Duration) -> AuthCache {
        let period_millis = u64::try_from(refresh_period.as_millis()).unwrap_or(u64::MAX);
        AuthCache {
            loaded: RwLock::new(None),
            max_age,
            retry_after_seconds: period_millis.div_ceil(1000).max(1),
            created_at: Instant::now(),
            created_projects: RwLock::new(Vec::new()),
        }
    }

    /// Swaps in a snapshot loaded now.
    pub fn replace(&self, snapshot: TenancySnapshot) {
        self.replace_loaded_at(snapshot, Instant::now());
    }

    /// Swaps in `snapshot`, whose load started at `loaded_at`, unless the cache already
    /// holds a newer one (two reloads finishing out of order).
    pub fn replace_loaded_at(&self, snapshot: TenancySnapshot, loaded_at: Instant) {
        // Writers only assign under the lock, so a poisoned lock still holds a whole
        // value: recover it rather than failing every request after one panic.
        let mut loaded = self.loaded.write().unwrap_or_else(PoisonError::into_inner);
        if loaded
            .as_ref()
            .is_some_and(|current| current.loaded_at > loaded_at)
        {
            return;
        }
        *loaded = Some(Loaded {
            snapshot: Arc::new(snapshot),
            loaded_at,
        });
        drop(loaded);
        self.created_projects
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|created| loaded_at < created.created_at + CREATED_PROJECT_HOLD);
    }

    /// Makes a project this replica just created usable here at once (module header).
    pub fn add_created_project(&self, project_key: &str, project_id: u32, org_id: u64) {
        self.created_projects
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(CreatedProject {
                project_key: project_key.to_owned(),
                project_id,
                org_id,
                created_at: Instant::now(),
            });
    }

    /// The snapshot, if one was loaded and is fresh at `now`.
    fn fresh_snapshot(&self, now: Instant) -> Option<Arc<TenancySnapshot>> {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        let loaded = loaded.as_ref()?;
        snapshot_is_fresh(loaded.loaded_at, now, self.max_age).then(|| Arc::clone(&loaded.snapshot))
    }

    /// Whether requests can be authorized now (readiness).
    pub fn is_fresh(&self) -> bool {
        self.fresh_snapshot(Instant::now()).is_some()
    }

    /// How old the snapshot is now; before any load, how long the cache has existed.
    pub fn age(&self) -> Duration {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        let since = loaded
            .as_ref()
            .map_or(self.created_at, |loaded| loaded.loaded_at);
        since.elapsed()
    }

    /// Checks the `Authorization` header against `project_key`: 401, 404 or 503 (never
    /// loaded, or too old), else the project id.
    pub fn authorize(&self, header: Option<&str>, project_key: &str) -> Result<u32, ApiError> {
        self.authorize_at(header, project_key, Instant::now())
    }

    /// [`AuthCache::authorize`] at `now`.
    pub fn authorize_at(
        &self,
        header: Option<&str>,
        project_key: &str,
        now: Instant,
    ) -> Result<u32, ApiError> {
        let (snapshot, org_id) = self.organization_at(header, now)?;
        if let Some(project_id) = snapshot.project_of(org_id, project_key) {
            return Ok(project_id);
        }
        self.created_projects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|created| created.project_key == project_key && created.org_id == org_id)
            .map(|created| created.project_id)
            .ok_or(ApiError::ProjectNotFound)
    }

    /// The organization of the `Authorization` header's key: 401 or 503 as
    /// [`AuthCache::authorize`], without a project.
    pub fn organization(&self, header: Option<&str>) -> Result<u64, ApiError> {
        self.organization_at(header, Instant::now())
            .map(|(_, org_id)| org_id)
    }

    fn organization_at(
        &self,
        header: Option<&str>,
        now: Instant,
    ) -> Result<(Arc<TenancySnapshot>, u64), ApiError> {
        let api_key = api_key_from_header(header).ok_or(ApiError::Unauthorized)?;
        let snapshot = self.fresh_snapshot(now).ok_or(ApiError::KeysUnavailable {
            retry_after_seconds: self.retry_after_seconds,
        })?;
        let org_id = snapshot
            .organization_of(api_key)
            .ok_or(ApiError::Unauthorized)?;
        Ok((snapshot, org_id))
    }

    /// Loads keys and projects from ClickHouse and swaps them in, stamped with the
    /// load's start.
    pub async fn refresh(&self, store: &Store) -> Result<(), TenancyError> {
        let started = Instant::now();
        let tenancy = Tenancy::new(store);
        let keys = tenancy.active_keys().await?;
        let projects = tenancy.list_projects(None).await?;
        self.replace_loaded_at(
            TenancySnapshot::new(
                keys.into_iter().map(|key| (key.key_hash, key.org_id)),
                projects
                    .into_iter()
                    .map(|project| (project.project_key, project.project_id, project.org_id)),
            ),
            started,
        );
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
                        tracing::warn!(%error, max_age_ms = self.max_age.as_millis(), "auth cache refresh failed; keeping the previous snapshot until it is max_age_ms old");
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
    fn a_resolved_key_is_remembered_by_its_snapshot_and_only_a_known_one() {
        let snapshot = snapshot();
        for _ in 0..3 {
            assert_eq!(snapshot.organization_of("key-of-org-1"), Some(1));
            assert_eq!(snapshot.organization_of("unknown"), None);
            assert_eq!(snapshot.organization_of("key-of-org-1 "), None);
            assert_eq!(snapshot.organization_of(""), None);
        }
        assert_eq!(snapshot.resolved.len(), 1);
        assert_eq!(snapshot.organization_of("key-of-org-2"), Some(2));
        assert_eq!(snapshot.resolved.len(), 2);
        // Unknown keys, however many, are never remembered.
        for attempt in 0..1000 {
            assert_eq!(snapshot.organization_of(&format!("guess-{attempt}")), None);
        }
        assert_eq!(snapshot.resolved.len(), 2);
    }

    #[test]
    fn a_remembered_key_matches_only_itself() {
        let snapshot = snapshot();
        // Another key filed under the slot of "key-of-org-2" (as a hash collision
        // would): "key-of-org-2" is not taken for it, and is resolved by its hash.
        let slot = snapshot.resolved.hasher.hash_one("key-of-org-2");
        snapshot
            .resolved
            .by_hash
            .write()
            .unwrap()
            .insert(slot, (b"key-of-org-1".as_slice().into(), 1));
        assert_eq!(snapshot.resolved.get("key-of-org-2"), None);
        assert_eq!(snapshot.organization_of("key-of-org-2"), Some(2));
        assert_eq!(snapshot.resolved.get("key-of-org-2"), Some(2));
    }

    #[test]
    fn a_revoked_key_stops_at_the_reload_even_when_remembered() {
        let cache = AuthCache::new(PERIOD, MAX_AGE);
        let now = Instant::now();
        cache.replace_loaded_at(snapshot(), now);
        assert_eq!(
            cache.authorize_at(Some("key-of-org-1"), "projectOfOrg1xxxxxxx", now),
            Ok(10)
        );
        assert_eq!(
            cache.authorize_at(Some("Bearer key-of-org-1"), "projectOfOrg1xxxxxxx", now),
            Ok(10)
        );
        // The next snapshot no longer holds the key (revoked), whatever the last one
        // remembered.
        let revoked = TenancySnapshot::new(
            [(hash_api_key("key-of-org-2"), 2)],
            [
                ("projectOfOrg1xxxxxxx".to_owned(), 10, 1),
                ("projectOfOrg2xxxxxxx".to_owned(), 20, 2),
            ],
        );
        cache.replace_loaded_at(revoked, now);
        assert_eq!(
            cache.authorize_at(Some("key-of-org-1"), "projectOfOrg1xxxxxxx", now),
            Err(ApiError::Unauthorized)
        );
        // And a remembered key is refused like any other once the snapshot is too old.
        assert_eq!(
            cache.authorize_at(Some("key-of-org-2"), "projectOfOrg2xxxxxxx", now),
            Ok(20)
        );
        assert_eq!(
            cache.authorize_at(
                Some("key-of-org-2"),
                "projectOfOrg2xxxxxxx",
                now + MAX_AGE + Duration::from_millis(1)
            ),
            Err(ApiError::KeysUnavailable {
                retry_after_seconds: 2
            })
        );
    }

    const PERIOD: Duration = Duration::from_millis(2000);
    const MAX_AGE: Duration = Duration::from_millis(7000);

    fn seconds_before(now: Instant, seconds: u64) -> Instant {
        now.checked_sub(Duration::from_secs(seconds))
            .expect("the monotonic clock is past a few seconds")
    }

    #[test]
    fn a_snapshot_is_fresh_up_to_its_max_age_inclusive() {
        let loaded_at = Instant::now();
        let max_age = Duration::from_secs(7);
        assert!(snapshot_is_fresh(loaded_at, loaded_at, max_age));
        assert!(snapshot_is_fresh(loaded_at, loaded_at + max_age, max_age));
        assert!(!snapshot_is_fresh(
            loaded_at,
            loaded_at + max_age + Duration::from_millis(1),
            max_age
        ));
        assert!(!snapshot_is_fresh(
            loaded_at,
            loaded_at + Duration::from_secs(3600),
            max_age
        ));
        // A reload that finished after the request read the clock.
        assert!(snapshot_is_fresh(
            loaded_at + Duration::from_secs(1),
            loaded_at,
            max_age
        ));
    }

    #[test]
    fn a_stale_snapshot_authorizes_nothing_and_answers_503_with_retry_after() {
        let cache = AuthCache::new(PERIOD, MAX_AGE);
        let now = Instant::now();
        cache.replace_loaded_at(snapshot(), seconds_before(now, 8));
        let stale = Err(ApiError::KeysUnavailable {
            retry_after_seconds: 2,
        });
        assert_eq!(
            cache.authorize_at(Some("key-of-org-1"), "projectOfOrg1xxxxxxx", now),
            stale
        );
        // Revoked since (unknown to the stale snapshot) or not: no key is let through.
        assert_eq!(cache.authorize_at(Some("unknown"), "p", now), stale);
        assert_eq!(
            cache.authorize_at(None, "p", now),
            Err(ApiError::Unauthorized)
        );
        assert!(!cache.is_fresh());
        assert!(cache.age() >= Duration::from_secs(8));
        // A successful reload makes it answer again.
        cache.replace_loaded_at(snapshot(), seconds_before(now, 6));
        assert_eq!(
            cache.authorize_at(Some("key-of-org-1"), "projectOfOrg1xxxxxxx", now),
            Ok(10)
        );
        assert!(cache.is_fresh());
    }

    #[test]
    fn an_older_load_does_not_replace_a_newer_one() {
        let cache = AuthCache::new(PERIOD, MAX_AGE);
        let now = Instant::now();
        cache.replace_loaded_at(snapshot(), seconds_before(now, 1));
        cache.replace_loaded_at(TenancySnapshot::default(), seconds_before(now, 9));
        assert_eq!(
            cache.authorize_at(Some("key-of-org-1"), "projectOfOrg1xxxxxxx", now),
            Ok(10)
        );
    }

    #[test]
    fn a_project_created_here_is_usable_at_once_and_only_by_its_organization() {
        let cache = AuthCache::new(PERIOD, MAX_AGE);
        let now = Instant::now();
        cache.replace_loaded_at(snapshot(), now);
        cache.add_created_project("createdByOrg1xxxxxxx", 11, 1);
        let later = Instant::now();
        assert_eq!(
            cache.authorize_at(Some("key-of-org-1"), "createdByOrg1xxxxxxx", later),
            Ok(11)
        );
        assert_eq!(
            cache.authorize_at(Some("key-of-org-2"), "createdByOrg1xxxxxxx", later),
            Err(ApiError::ProjectNotFound)
        );
        assert_eq!(
            cache.authorize_at(Some("unknown"), "createdByOrg1xxxxxxx", later),
            Err(ApiError::Unauthorized)
        );
        // A reload that started before the creation, finishing after it, does not hide
        // it; one that started the hold after it does (it holds the project itself).
        cache.replace_loaded_at(snapshot(), Instant::now());
        assert_eq!(
            cache.authorize_at(Some("key-of-org-1"), "createdByOrg1xxxxxxx", Instant::now()),
            Ok(11)
        );
        cache.replace_loaded_at(snapshot(), Instant::now() + CREATED_PROJECT_HOLD);
        assert!(cache.created_projects.read().unwrap().is_empty());
    }

    #[test]
    fn retry_after_is_the_reload_period_rounded_up_to_seconds() {
        let unloaded = |period| {
            AuthCache::new(period, MAX_AGE)
                .authorize(Some("key"), "p")
                .unwrap_err()
        };
        for (period_millis, seconds) in [(1, 1), (1000, 1), (1001, 2), (4000, 4)] {
            assert_eq!(
                unloaded(Duration::from_millis(period_millis)),
                ApiError::KeysUnavailable {
                    retry_after_seconds: seconds
                },
                "{period_millis} ms"
            );
        }
    }

    #[test]
    fn an_unloaded_cache_answers_401_without_key_and_503_with_one() {
        let cache = AuthCache::new(PERIOD, MAX_AGE);
        assert_eq!(cache.authorize(None, "p"), Err(ApiError::Unauthorized));
        assert_eq!(
            cache.authorize(Some("key"), "p"),
            Err(ApiError::KeysUnavailable {
                retry_after_seconds: 2
            })
        );
        assert!(!cache.is_fresh());
        cache.replace(snapshot());
        assert_eq!(
            cache.authorize(Some("Bearer key-of-org-2"), "projectOfOrg2xxxxxxx"),
            Ok(20)
        );
    }
}
